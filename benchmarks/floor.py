"""The per-recipient work no correct send can skip, timed alone: the floor under any send loop.

    python benchmarks/floor.py                # 100,000 recipients
    python benchmarks/floor.py --recipients 20000

For providers that send the template once (SendGrid, Mailgun) the bare-requests
baseline of ``benchmarks/dispatch.py`` only encodes each recipient's few hundred
bytes. The tool must also, for every recipient: read their row of the list, check
their address, sign their unsubscribe link, write their part of the request, and
claim and record them in the ledger (a 1000-row batch at a time). Each step here
is the cheapest form of it (a bare ``csv.reader``, the personalization written
by hand as JSON text, the ledger's two statements), without HTTP, threads or
progress: what remains is the floor. The Python steps share one core (the GIL);
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
import sys
import tempfile
import time
from json.encoder import encode_basestring as quoted  # the C encoder json.dumps uses for a str
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from newsletter.ledger.sqlite import SQLiteLedger  # noqa: E402
from newsletter.models import Outcome  # noqa: E402
from newsletter.subscriber_address import normalise_address  # noqa: E402
from newsletter.unsubscribe import make_token  # noqa: E402

BATCH = 1000
ISSUE = "2026-11-30-weekly"


def per_recipient(label: str, fn, items: list) -> tuple[str, float]:
    start = time.process_time()
    for item in items:
        fn(item)
    return label, (time.process_time() - start) / len(items) * 1e6


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
        link = quoted(url + make_token(row[0], secret))
        return (f'{{"to":[{{"email":{quoted(row[0])},"name":{quoted(row[1])}}}],"subject":{quoted("News for " + row[1])},'
                f'"headers":{{"List-Unsubscribe":{link}}},"substitutions":{{"-zqh0-":{quoted(row[1])},'
                f'"-zqh1-":{link},"-zqt0-":{quoted(row[1])},"-zqt1-":{link}}}}}')

    steps = [
        per_recipient("read the row (csv.reader)", lambda line: next(csv.reader([line])), lines),
        per_recipient("check the address", normalise_address, addresses),
        per_recipient("sign the unsubscribe link", lambda a: make_token(a, secret), addresses),
        per_recipient("write its part of the request (JSON text)", personalization, rows),
    ]
    with tempfile.TemporaryDirectory() as folder:
        ledger = SQLiteLedger(Path(folder) / "ledger.sqlite3")
        ledger.acquire_lease(ISSUE, "floor", stale_after=600)
        ledger.create_plan(ISSUE, content_hash="h", subject="s", segment="", emails=iter(addresses))
        start = time.perf_counter()
        for n in range(0, count, BATCH):
            chunk = addresses[n:n + BATCH]
            ledger.claim(ISSUE, f"b{n}", chunk, "floor")
            ledger.record(ISSUE, f"b{n}", [Outcome(a, "sent", provider_id="one-id") for a in chunk], source="floor")
        steps.append(("claim and record in the ledger (wall)", (time.perf_counter() - start) / count * 1e6))
        ledger.close()
    python = sum(us for _, us in steps[:-1])
    ledger_us = steps[-1][1]
    best = 1e6 / max(python, ledger_us)  # the two overlapped perfectly, on two cores
    print(f"the floor for {count:,} recipients, no HTTP (microseconds per recipient):")
    for label, us in steps:
        print(f"  {label:<44} {us:6.2f}")
    print(f"\nPython's part {python:.2f} us (one core: the GIL), the ledger's {ledger_us:.2f} us (SQLite, which can run "
          f"beside it):\neven overlapped perfectly on two cores, at most {best:,.0f} recipients/s; a target of 0.8x a "
          f"baseline above {best / 0.8:,.0f}/s is out of reach")
    print(json.dumps({"python_us": round(python, 2), "ledger_us": round(ledger_us, 2), "max_per_s": round(best)}))

if __name__ == "__main__":
    main()
