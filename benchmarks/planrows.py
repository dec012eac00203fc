"""The PostgreSQL ledger's plan and per-chunk statements, each against the way it was before, in one run.

    python benchmarks/planrows.py                    # 200,000 readers, 2 rounds
    python benchmarks/planrows.py --readers 50000 --rounds 3

On a fresh database of a throwaway cluster (``tests/pgserver.py``) for every row:

* **Planning** ``--readers`` readers streamed from a generated list (the list's own parser, as a
  send's walk does), through ``create_plan``:
  ``staged``, the whole list copied into a temporary table and then one ``INSERT ... SELECT`` (as it
  was), against ``pipelined``, one ``INSERT ... SELECT`` a chunk of 1,000, pipelined (as it is), so
  the server inserts one chunk while the list is walked for the next.
* **A chunk's statements**, as a worker's walk makes them: for each 1,000 readers a look-up and a
  reservation, then 20 claims and records of 50 (SendGrid's batch in ``benchmarks/scale.py``),
  one thread, no provider call between. ``full pages`` is the table at fillfactor 100 (before
  migration 8), ``pages 40% full`` at 40% with the state and batch indexes migration 9 dropped, ``as
  migrated`` without them: a claim and a record then change no indexed column either, and fit beside
  their rows too. Then what those indexes served, once every row was sent: ``counts`` (status, a run's
  end) and ``in_doubt`` (a run's start).

Prints medians in ms, and the table's size in pages once planned and once every row was sent
(the room a fillfactor leaves costs space). Numbers only; nothing is asserted. Compare rows of one run: the machine is shared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
ISSUE = "2026-11-30-weekly"
HOLDER = "12345-0123456789ab"  # as long as a worker's holder id (pid-uuid)


def staged_insert(self, db, issue_id, emails) -> int:
    """How ``PostgresLedger._insert_pending`` planned before: the whole list staged first."""
    from newsletter.ledger.base import address_key, chunked

    db.execute("CREATE TEMP TABLE IF NOT EXISTS plan_input (ord BIGSERIAL, email TEXT, erased TEXT) "
               "ON COMMIT DELETE ROWS")
    with db.cursor().copy("COPY plan_input (email, erased) FROM STDIN") as copy:
        for chunk in chunked(emails, 5000):
            for email in chunk:
                copy.write_row((address_key(email), ""))
    added = db.execute(
        "INSERT INTO deliveries (issue_id, email, state, updated_at) SELECT %(issue)s, p.email, 'pending', 'now' "
        "FROM plan_input p WHERE NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.email = p.email) "
        "AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.issue_id = %(issue)s AND e.email = p.erased) "
        "ORDER BY p.ord ON CONFLICT (issue_id, email) DO NOTHING", {"issue": issue_id}).rowcount
    db.execute("DELETE FROM plan_input")
    db.execute("ANALYZE deliveries")
    db.execute("UPDATE issues SET planned = (SELECT count(*) FROM deliveries WHERE issue_id = %(issue)s) "
               "WHERE issue_id = %(issue)s", {"issue": issue_id})
    return added


def plan_row(url: str, kind: str, list_path: Path) -> float:
    from newsletter.ledger.postgres import PostgresLedger
    from newsletter.subscribers.reader import iter_subscribers

    ledger = PostgresLedger(url)
    if kind == "staged":
        ledger._insert_pending = staged_insert.__get__(ledger)
    with ledger:
        began = time.perf_counter()
        ledger.create_plan(ISSUE, content_hash="h", subject="s", segment="",
                           emails=(s.email for s in iter_subscribers(list_path)))
        return time.perf_counter() - began


def chunk_row(url: str, fillfactor: int, readers: int, *, step_8_indexes: bool) -> dict[str, float]:
    from newsletter.ledger.postgres import PostgresLedger
    from newsletter.models import Outcome

    emails = [f"reader{n:07d}@example.com" for n in range(readers)]
    with PostgresLedger(url) as ledger:
        with ledger._tx() as db:
            db.execute(f"ALTER TABLE deliveries SET (fillfactor = {fillfactor})")
            if step_8_indexes:  # as the table was before migration 9
                db.execute("CREATE INDEX deliveries_by_state ON deliveries(issue_id, state)")
                db.execute("CREATE INDEX deliveries_by_batch ON deliveries(issue_id, batch_id)")
        ledger.create_plan(ISSUE, content_hash="h", subject="s", segment="", emails=emails)
        ledger.acquire_lease(ISSUE, HOLDER, stale_after=600)
        pages = "SELECT pg_relation_size('deliveries') / 8192"
        planned_pages = ledger._read(pages)[0][0]
        took: dict[str, list[float]] = {name: [] for name in ("look-up", "reservation", "claim", "record",
                                                              "counts", "in_doubt")}

        def timed(name, call):
            began = time.perf_counter()
            result = call()
            took[name].append(time.perf_counter() - began)
            return result

        for start in range(0, readers, 1000):
            chunk = emails[start:start + 1000]
            found = timed("look-up", lambda: ledger.lookup_rows(ISSUE, chunk))
            timed("reservation", lambda: ledger.reserve(ISSUE, HOLDER, [found[e].id for e in chunk]))
            for at in range(0, len(chunk), 50):
                batch, rows, batch_id = chunk[at:at + 50], [found[e].id for e in chunk[at:at + 50]], f"b{start + at}"
                timed("claim", lambda: ledger.claim_rows(ISSUE, batch_id, rows, HOLDER))
                timed("record", lambda: ledger.record_rows(ISSUE, batch_id, rows, [Outcome(e, "sent", "id") for e in batch],
                                                           source="bench", holder=HOLDER))
        sent_pages = ledger._read(pages)[0][0]
        with ledger._tx() as db:
            db.execute("ANALYZE deliveries")
        for _ in range(5):
            timed("counts", lambda: ledger.counts(ISSUE))
            timed("in_doubt", lambda: ledger.in_doubt(ISSUE))
    return {**{name: statistics.median(values) * 1000 for name, values in took.items()},
            "pages": (planned_pages, sent_pages)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readers", type=int, default=200_000, help="plan size [200000]")
    parser.add_argument("--rounds", type=int, default=2, help="rows of each kind, alternated [2]")
    args = parser.parse_args()
    from dispatch import make_workspace
    from pgserver import cluster_or_exit

    cluster = cluster_or_exit()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            list_path = make_workspace(Path(tmp), args.readers) / "subscribers" / "subscribers.csv"
            print(f"planning {args.readers:,} readers from the list (s):")
            for _ in range(args.rounds):
                for kind in ("staged", "pipelined"):
                    print(f"  {kind:<10} {plan_row(cluster.new_database(), kind, list_path):6.2f}", flush=True)
        print("a chunk's statements, median ms (look-up and reservation of 1,000; claim and record of 50; "
              "then counts and in_doubt of the whole issue):")
        for _ in range(args.rounds):
            for fillfactor, indexes, label in ((100, True, "full pages"), (40, True, "pages 40% full"),
                                               (40, False, "as migrated")):
                row = chunk_row(cluster.new_database(), fillfactor, args.readers, step_8_indexes=indexes)
                planned, sent = row.pop("pages")
                print(f"  {label:<15} " + "  ".join(f"{name} {ms:6.2f}" for name, ms in row.items())
                      + f"  table pages: {planned:,} planned, {sent:,} once all were sent", flush=True)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
