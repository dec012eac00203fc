"""``newsletter report`` without ISSUE: what the provider figures kept in the ledger save (docs/sending.md,
"Kept figures and --refresh").

Plans N issues in a fresh SQLite ledger, then reads the table's provider figures three ways against the
local fake (tests/fakeproviders.py) answering each call after ``--latency`` ms, as a real provider would:
``--refresh`` (every issue asked: what every run cost before the figures were kept), a first run on an
empty ledger (asks and keeps), and a second run within the hour (reuses). Prints the wall time and the
provider calls of each.

    python benchmarks/report.py [--issues 10] [--latency 150] [--provider sendgrid]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakeproviders import FakeProviders  # noqa: E402
from helpers import make_adapter  # noqa: E402

from newsletter.ledger.sqlite import SQLiteLedger  # noqa: E402
from newsletter.report import provider_figures  # noqa: E402

KEY = "bench-report-key"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=10)
    parser.add_argument("--latency", type=float, default=150.0, help="milliseconds the fake waits per call")
    parser.add_argument("--provider", default="sendgrid", choices=["postmark", "sendgrid", "mailgun"])
    args = parser.parse_args()
    with FakeProviders(api_key=KEY) as fake, tempfile.TemporaryDirectory() as folder, \
            SQLiteLedger(Path(folder) / "ledger.sqlite3") as ledger:
        fake.latency = args.latency / 1000
        for n in range(args.issues):
            ledger.create_plan(f"2026-{n + 1:02d}-01-weekly", content_hash="h", subject="S", segment="",
                               emails=[f"r{n}@example.com"])
        records = [s.issue for s in ledger.summaries(args.issues)]
        provider = make_adapter(args.provider, KEY, api_base=fake.url, domain=fake.domain, rate_limit=1000)
        print(f"{args.issues} issues, {args.provider}, {args.latency:g} ms a call")
        for label, refresh in (("--refresh (every run before)", True), ("first run, empty ledger", False),
                               ("second run, within the hour", False)):
            if label.startswith("first"):
                ledger._db.execute("DELETE FROM provider_figures")  # what --refresh kept: start empty
            before, started = len(fake.requests_seen), time.perf_counter()
            provider_figures(provider, records, detail=False, cache=ledger, refresh=refresh)
            took = time.perf_counter() - started
            print(f"  {label:<30} {took * 1000:8.1f} ms  {len(fake.requests_seen) - before:3d} provider calls")
        provider.close()


if __name__ == "__main__":
    main()
