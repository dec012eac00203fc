"""The per-recipient work this tool's send cannot skip, timed alone: the floor under any send loop.

    python benchmarks/floor.py                # 100,000 recipients
    python benchmarks/floor.py --recipients 20000

For providers that send the template once (SendGrid, Mailgun) the bare-requests
baseline of ``benchmarks/dispatch.py`` only encodes each recipient's few hundred
bytes. The tool must also, for every recipient: read their row of the list, check
their address, sign their unsubscribe link, write their part of the request, and
claim and record them in the ledger (a 1000-row batch at a time: the two
statements of its exactly-once protocol, committed with ``synchronous=FULL``).
Each step here is the cheapest form of it (one streaming ``csv.reader``, the
personalization written by hand as JSON text, the ledger's two statements with
their arguments built beforehand), without HTTP, threads or progress, the median
of five passes: what remains is the floor. The Python steps share one core (the GIL);
the ledger's SQLite work could run beside them on the second, so the most any
send loop could do is the slower of the two. Compare that with dispatch.py's
"requests /s": a target above it cannot be met in this language, however the
loop is arranged.

Numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
import tempfile
import time
from json.encoder import encode_basestring as quoted  # the C encoder json.dumps uses for a str
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from newsletter.ledger.sqlite import SQLiteLedger  # noqa: E402
from newsletter.models import Outcome  # noqa: E402
from newsletter.subscribers.address import normalise_address  # noqa: E402
from newsletter.unsubscribe import make_token  # noqa: E402

BATCH = 1000
ISSUE = "2026-11-30-weekly"


PASSES = 5


def per_recipient(label: str, fn, items: list) -> tuple[str, float]:
    """Microseconds of CPU per item, the median of PASSES passes."""
    times = []
    for _ in range(PASSES):
        start = time.process_time()
        for item in items:
            fn(item)
        times.append((time.process_time() - start) / len(items) * 1e6)
    return label, statistics.median(times)


def ledger_per_recipient(addresses: list[str]) -> float:
    """Wall microseconds per recipient of claim + record, 1000 at a time, the median of PASSES fresh ledgers."""
    batches = [(f"b{n}", addresses[n:n + BATCH], [Outcome(a, "sent", provider_id="one-id")
                                                   for a in addresses[n:n + BATCH]])
               for n in range(0, len(addresses), BATCH)]
    times = []
    for _ in range(PASSES):
        with tempfile.TemporaryDirectory() as folder:
            ledger = SQLiteLedger(Path(folder) / "ledger.sqlite3")
            ledger.acquire_lease(ISSUE, "floor", stale_after=600)
            ledger.create_plan(ISSUE, content_hash="h", subject="s", segment="", emails=iter(addresses))
            start = time.perf_counter()
            for batch_id, chunk, outcomes in batches:
                ledger.claim(ISSUE, batch_id, chunk, "floor")
                ledger.record(ISSUE, batch_id, outcomes, source="floor")
            times.append((time.perf_counter() - start) / len(addresses) * 1e6)
            ledger.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--recipients", type=int, default=100_000)
    count = parser.parse_args().recipients
    lines = [f"reader{n:07d}@example.com,Reader {n},subscribed,weekly,Bristol\r\n" for n in range(count)]
    rows = list(csv.reader(io.StringIO("".join(lines))))
    addresses = [row[0] for row in rows]
    secret = b"floor-secret"
    url = "https://example.com/unsubscribe?t="

    def personalization(row: list[str]) -> str:  # SendGrid's, by hand: to, subject, headers, substitutions
        link = quoted(url + make_token(row[0], secret, "2026-11-30-weekly"))
        return (f'{{"to":[{{"email":{quoted(row[0])},"name":{quoted(row[1])}}}],"subject":{quoted("News for " + row[1])},'
                f'"headers":{{"List-Unsubscribe":{link}}},"substitutions":{{"-zqh0-":{quoted(row[1])},'
                f'"-zqh1-":{link},"-zqt0-":{quoted(row[1])},"-zqt1-":{link}}}}}')

    reader = csv.reader(iter(lines))
    steps = [
        per_recipient("read the row (one streaming csv.reader)", lambda _: next(reader),
                      range(len(lines) // PASSES)),
        per_recipient("check the address", normalise_address, addresses),
        per_recipient("sign the unsubscribe link", lambda a: make_token(a, secret, "2026-11-30-weekly"), addresses),
        per_recipient("write its part of the request (JSON text)", personalization, rows),
        ("claim and record in the ledger (wall)", ledger_per_recipient(addresses)),
    ]
    python = sum(us for _, us in steps[:-1])
    ledger_us = steps[-1][1]
    best = 1e6 / max(python, ledger_us)  # the two overlapped perfectly, on two cores
    print(f"the floor for {count:,} recipients, no HTTP (microseconds per recipient):")
    for label, us in steps:
        print(f"  {label:<44} {us:6.2f}")
    print(f"\nPython's part {python:.2f} us (one core: the GIL), the ledger's {ledger_us:.2f} us (mostly SQLite, which "
          f"runs beside it; under 1 us of it is Python):\neven overlapped perfectly on two cores, at most "
          f"{best:,.0f} recipients/s; a target of 0.8x a baseline above {best / 0.8:,.0f}/s is out of reach")
    print(json.dumps({"python_us": round(python, 2), "ledger_us": round(ledger_us, 2), "max_per_s": round(best)}))

if __name__ == "__main__":
    main()
