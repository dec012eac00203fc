"""The PostgreSQL ledger's connections: one shared under a lock (as shipped) against a small pool.

    python benchmarks/connections.py                        # 4 and 8 threads, 500-recipient batches
    python benchmarks/connections.py --threads 1,4,8 --batch 100 --recipients 100000

A send's worker threads (``[provider] concurrency``) share one ledger. ``PostgresLedger`` runs
every transaction on one connection under a lock (look-ups on a second one); the alternative is a
small pool, one connection per thread. Each row: ``--threads`` threads claim and record batches
of their own slice of one plan (what the send loop does per batch, with no provider call between)
on a fresh database of a throwaway cluster (``tests/pgserver.py``), through

* ``shared``: the ledger as shipped;
* ``pool``: the same ledger with ``_tx``/``_read`` taking one of ``--threads`` connections from a queue.

It prints batches/s and the median and 95th percentile of one claim + record. Numbers only;
nothing is asserted. Compare rows of one run: the machine is shared.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
ISSUE = "bench-issue"


def pooled_ledger(url: str, size: int):
    """The shipped ledger, but each transaction on a connection of its own from a pool of ``size``."""
    import psycopg

    from newsletter.errors import LedgerError
    from newsletter.ledger.postgres import PostgresLedger

    class PooledLedger(PostgresLedger):
        def __init__(self, url: str):
            self._pool: queue.Queue = queue.Queue()
            self.url = url
            for _ in range(size):
                self._pool.put(self._connect())
            super().__init__(url)  # migrates through _tx: the pool must be there first

        @contextmanager
        def _tx(self):
            db = self._pool.get()
            try:
                with db.transaction():
                    yield db
            except psycopg.Error as err:
                raise LedgerError(f"the PostgreSQL ledger failed: {err}") from err
            finally:
                self._pool.put(db)

        def _read(self, sql, params=()):
            db = self._pool.get()
            try:
                return db.execute(sql, params).fetchall()
            finally:
                self._pool.put(db)

        def close(self):
            while not self._pool.empty():
                self._pool.get().close()
            super().close()

    return PooledLedger(url)


def run_row(url: str, kind: str, threads: int, batch: int, recipients: int) -> dict:
    from newsletter.ledger.postgres import PostgresLedger
    from newsletter.models import Outcome

    emails = [f"reader{n:07d}@example.com" for n in range(recipients)]
    ledger = pooled_ledger(url, threads) if kind == "pool" else PostgresLedger(url)
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
    from pgserver import start_cluster

    cluster, reason = start_cluster()
    if cluster is None:
        raise SystemExit(f"no PostgreSQL server: {reason}")
    try:
        rows = [run_row(cluster.new_database(), kind, int(threads), args.batch, args.recipients)
                for threads in args.threads.split(",") for _ in range(args.rounds) for kind in ("shared", "pool")]
    finally:
        cluster.stop()
    print(f"{'connections':<12} {'threads':>7} {'batches':>8} {'sent':>8} {'batches/s':>10} {'median ms':>10} "
          f"{'p95 ms':>8}")
    for r in rows:
        print(f"{r['kind']:<12} {r['threads']:>7} {r['batches']:>8} {r['sent']:>8} {r['batches'] / r['seconds']:>10.1f} "
              f"{r['median_ms']:>10.1f} {r['p95_ms']:>8.1f}")


if __name__ == "__main__":
    main()
