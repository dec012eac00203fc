"""The PostgreSQL ledger's connections: one shared under a lock (as it was) against one per thread (as it is).

    python benchmarks/connections.py                        # 4 and 8 threads, 500-recipient batches
    python benchmarks/connections.py --threads 1,4,8 --batch 100 --recipients 100000

A send's worker threads (``[provider] concurrency``) share one ledger. ``PostgresLedger`` gives each
thread that uses it a connection of its own (docs/team.md); before, it ran every transaction on one
connection under a lock, as it still does for a read-only view of an older schema. Each row:
``--threads`` threads claim and record batches of their own slice of one plan (what the send loop
does per batch, with no provider call between) on a fresh database of a throwaway cluster
(``tests/pgserver.py``), through

* ``shared``: the ledger degraded to its one connection under the lock (its read-only-view mode);
* ``per-thread``: the ledger as shipped.

It prints batches/s and the median and 95th percentile of one claim + record. Numbers only;
nothing is asserted. Compare rows of one run: the machine is shared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
ISSUE = "bench-issue"


def shared_ledger(url: str):
    """The ledger with every thread on the connection that opened it, under its lock: what it does for
    a read-only view of an older schema, and what it did for everything before."""
    from newsletter.ledger.postgres import PostgresLedger

    ledger = PostgresLedger(url)
    ledger._shared = ledger._own[threading.current_thread()]
    return ledger


def run_row(url: str, kind: str, threads: int, batch: int, recipients: int) -> dict:
    from newsletter.ledger.postgres import PostgresLedger
    from newsletter.models import Outcome

    emails = [f"reader{n:07d}@example.com" for n in range(recipients)]
    ledger = shared_ledger(url) if kind == "shared" else PostgresLedger(url)
    with ledger:
        ledger.create_plan(ISSUE, content_hash="h", subject="s", segment="", emails=emails)
        ledger.acquire_lease(ISSUE, "bench", stale_after=600)
        slices = [emails[n::threads] for n in range(threads)]
        timings: list[float] = []
        lock = threading.Lock()

        def work(mine: list[str], number: int) -> None:
            for start in range(0, len(mine), batch):
                chunk = mine[start:start + batch]
                began = time.perf_counter()
                batch_id = f"{kind}-{number}-{start}"
                claimed = ledger.claim(ISSUE, batch_id, chunk, "bench")
                ledger.record(ISSUE, batch_id, [Outcome(e, "sent", provider_id="x") for e in claimed],
                              source="bench")
                with lock:
                    timings.append(time.perf_counter() - began)

        workers = [threading.Thread(target=work, args=(mine, n)) for n, mine in enumerate(slices)]
        began = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        seconds = time.perf_counter() - began
        sent = ledger.counts(ISSUE)["sent"]
    timings.sort()
    return {"kind": kind, "threads": threads, "batches": len(timings), "sent": sent, "seconds": seconds,
            "median_ms": statistics.median(timings) * 1000, "p95_ms": timings[int(len(timings) * 0.95)] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="4,8", help="thread counts [4,8]")
    parser.add_argument("--batch", type=int, default=500, help="recipients a batch [500]")
    parser.add_argument("--recipients", type=int, default=100_000, help="plan size of each row [100000]")
    parser.add_argument("--rounds", type=int, default=2, help="rows of each kind, alternated [2]")
    args = parser.parse_args()
    from pgserver import cluster_or_exit

    cluster = cluster_or_exit()
    try:
        rows = [run_row(cluster.new_database(), kind, int(threads), args.batch, args.recipients)
                for threads in args.threads.split(",") for _ in range(args.rounds) for kind in ("shared", "per-thread")]
    finally:
        cluster.stop()
    print(f"{'connections':<12} {'threads':>7} {'batches':>8} {'sent':>8} {'batches/s':>10} {'median ms':>10} "
          f"{'p95 ms':>8}")
    for r in rows:
        print(f"{r['kind']:<12} {r['threads']:>7} {r['batches']:>8} {r['sent']:>8} {r['batches'] / r['seconds']:>10.1f} "
              f"{r['median_ms']:>10.1f} {r['p95_ms']:>8.1f}")


if __name__ == "__main__":
    main()
