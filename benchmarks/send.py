"""Throughput of the send loop, against the cost of personalising alone.

For each list size, in a fresh process (so peak RSS is that size's own):

* baseline: personalise every subscriber of the compiled example issue (no ledger, no provider);
* no-op provider: the whole send path (plan, chunked ledger look-ups, claims, records,
  workers, personalisation) with a provider that accepts every batch at once;
* outbox: the same with the real outbox provider writing fsync'ed ``.eml`` files
  (a smaller list: it measures the disk more than us).

Prints recipients/s, the ratio to the baseline, ledger seconds per batch and peak RSS.
Numbers only; nothing is asserted. Run: ``python benchmarks/send.py [--sizes 10000,200000]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ISSUE = "2026-11-30-weekly"


def make_workspace(root: Path, count: int) -> Path:
    shutil.copy(REPO / "newsletter.toml", root / "newsletter.toml")
    for folder in ("templates", "issues"):
        shutil.copytree(REPO / folder, root / folder)
    (root / "subscribers").mkdir()
    with open(root / "subscribers" / "subscribers.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "name", "status", "tags", "city"])
        for n in range(count):
            writer.writerow([f"reader{n:07d}@example.com", f"Reader {n}", "subscribed", "weekly", "Bristol"])
    return root


def timed(obj, name: str, clock: dict) -> None:
    """Wrap ``obj.name`` so the seconds spent in it add up in ``clock[name]``."""
    original = getattr(obj, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            clock[name] = clock.get(name, 0.0) + time.perf_counter() - start

    setattr(obj, name, wrapper)


def measure(count: int, kind: str) -> dict:
    from newsletter.config import load
    from newsletter.ledger import open_ledger
    from newsletter.models import Outcome
    from newsletter.pipeline import build_issue
    from newsletter.providers.base import Provider
    from newsletter.providers.outbox import OutboxProvider
    from newsletter.sendrun import LeaseKeeper, SendOptions, SendRun
    from newsletter.subscribers import iter_subscribers

    class NoopProvider(Provider):
        name, max_batch, default_rate, idempotent, needs_api_key = "noop", 500, 0.0, True, False

        def send_batch(self, batch, session):
            return [Outcome(m.to, "sent", provider_id="x") for m in batch.messages]

    with tempfile.TemporaryDirectory() as tmp:
        root = make_workspace(Path(tmp), count)
        settings = load(root / "newsletter.toml", env={"NEWSLETTER_SECRET": "bench"})
        build = build_issue(settings, ISSUE)
        result = {"kind": kind, "recipients": count}
        if kind == "baseline":
            from newsletter.pipeline import personalizer

            person = personalizer(settings, build.compiled, secret=b"bench")
            start = time.perf_counter()
            for subscriber in iter_subscribers(settings.workspace_path(settings.subscribers.file)):
                person.message(subscriber)
            result["seconds"] = time.perf_counter() - start
        else:
            provider = NoopProvider(settings) if kind == "noop" else OutboxProvider(settings)
            clock: dict[str, float] = {}
            with open_ledger(settings) as ledger:
                for name in ("create_plan", "lookup", "claim", "record", "skip"):
                    timed(ledger, name, clock)
                start = time.perf_counter()
                run = SendRun(settings, build, provider, ledger, SendOptions(), secret=b"bench")
                with LeaseKeeper(ledger, ISSUE) as keeper:
                    run.freeze_plan()
                    totals = run.send(keeper.holder, on_batch=lambda report: None)
                result["seconds"] = time.perf_counter() - start
                assert totals.sent == count, totals
            result["batches"] = totals.batches
            result["ledger_seconds"] = sum(clock.values())
            result["ledger_ms_per_batch"] = 1000 * (clock.get("claim", 0) + clock.get("record", 0)) / totals.batches
            result["plan_seconds"] = clock.get("create_plan", 0)
        result["per_second"] = count / result["seconds"]
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,200000", help="list sizes for baseline and no-op runs")
    parser.add_argument("--outbox-size", type=int, default=2000, help="list size for the outbox run")
    parser.add_argument("--one", nargs=2, metavar=("KIND", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(int(args.one[1]), args.one[0])))
        return
    jobs = [(kind, int(n)) for n in args.sizes.split(",") for kind in ("baseline", "noop")]
    jobs.append(("outbox", args.outbox_size))
    baseline: dict[int, float] = {}
    print(f"{'run':10} {'recipients':>10} {'seconds':>8} {'per s':>9} {'x base':>7} {'ledger ms/batch':>16} "
          f"{'peak RSS MB':>12}")
    for kind, count in jobs:
        out = subprocess.run([sys.executable, __file__, "--one", kind, str(count)], capture_output=True, text=True,
                             check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        if kind == "baseline":
            baseline[count] = r["per_second"]
        ratio = r["per_second"] / baseline[count] if count in baseline and kind != "baseline" else 1.0
        per_batch = f"{r['ledger_ms_per_batch']:.2f}" if "ledger_ms_per_batch" in r else "-"
        print(f"{kind:10} {count:>10} {r['seconds']:>8.2f} {r['per_second']:>9,.0f} {ratio:>7.2f} {per_batch:>16} "
              f"{r['peak_rss_mb']:>12.0f}")


if __name__ == "__main__":
    main()
