"""The PostgreSQL ledger's connections (docs/team.md): one per thread that uses the ledger, so one
thread's transaction never holds up another's, all closed by ``close()``. Against a real server
(``pg_url``); the read-only view of an older schema, shared by every thread, is in tests/test_ledger.py."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from newsletter.errors import LedgerError
from newsletter.ledger.postgres import PostgresLedger

ISSUE = "2026-11-30-weekly"
EMAILS = [f"r{n}@example.com" for n in range(4)]


@pytest.fixture
def pg(pg_url):
    with PostgresLedger(pg_url) as db:
        db.create_plan(ISSUE, content_hash="h1", subject="Hi", segment="", emails=EMAILS)
        db.acquire_lease(ISSUE, "me", stale_after=60)
        yield db


def ledger_backends(url: str) -> int:
    """How many server processes serve the ledger's connections (``application_name`` newsletter)."""
    with psycopg.connect(url, autocommit=True) as look:
        return look.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND application_name = 'newsletter'").fetchone()[0]


def backends_become(url: str, expected: int) -> int:
    """The count once it reaches ``expected`` (a closed connection's server process exits a moment after)."""
    for _ in range(200):
        if (found := ledger_backends(url)) == expected:
            return found
        time.sleep(0.05)
    return found


def in_thread(action, *, until: threading.Event | None = None) -> threading.Thread:
    """Run ``action`` in a new thread, which then waits for ``until`` (if given) before it ends."""
    def run() -> None:
        action()
        if until is not None:
            until.wait()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_transaction_held_open_in_one_thread_does_not_hold_up_another_threads_claim(pg):
    holding, release, claimed = threading.Event(), threading.Event(), threading.Event()
    got = []

    def hold_a_transaction() -> None:  # `ledger copy` streaming rows: its transaction stays open meanwhile
        rows = pg.dump_rows("deliveries")
        next(rows)
        holding.set()
        release.wait()
        rows.close()

    def claim() -> None:
        got.append(pg.claim(ISSUE, "b1", EMAILS[:2], "me"))
        claimed.set()

    holder = in_thread(hold_a_transaction)
    assert holding.wait(timeout=30)
    claimer = in_thread(claim)
    try:
        # On one shared connection the claim would wait for the other thread's transaction to end.
        assert claimed.wait(timeout=30), "the claim waited for another thread's open transaction"
    finally:
        release.set()
        holder.join()
        claimer.join()
    assert got == [set(EMAILS[:2])] and pg.counts(ISSUE)["sending"] == 2


def test_each_thread_has_its_own_connection_and_close_leaves_none_open(pg, pg_url):
    assert ledger_backends(pg_url) == 1  # the thread that opened it
    done = threading.Event()
    workers = [in_thread(lambda: pg.counts(ISSUE), until=done) for _ in range(2)]
    assert backends_become(pg_url, 3) == 3
    done.set()
    for worker in workers:
        worker.join()
    # A new thread's first use closes the connections of threads that have ended.
    in_thread(lambda: pg.workers(ISSUE)).join()
    assert backends_become(pg_url, 2) == 2
    pg.close()
    assert backends_become(pg_url, 0) == 0
    with pytest.raises(LedgerError, match="used after it was closed"):
        pg.counts(ISSUE)
    assert ledger_backends(pg_url) == 0



HOLD = 4242  # the advisory lock a trigger waits for inside a claim: the claim stays in flight meanwhile


class ClaimInFlight:
    """A claim by ``me`` of two rows, held inside its transaction (after it locked its registration) by a
    trigger on its UPDATE of deliveries that waits for an advisory lock another connection holds."""

    def __init__(self, pg: PostgresLedger, url: str):
        self.admin = psycopg.connect(url, autocommit=True)
        self.admin.execute("CREATE FUNCTION hold_claims() RETURNS trigger LANGUAGE plpgsql AS "
                           f"$$ BEGIN PERFORM pg_advisory_xact_lock({HOLD}); RETURN NEW; END $$")
        self.admin.execute("CREATE TRIGGER hold BEFORE UPDATE ON deliveries FOR EACH ROW "
                           "EXECUTE FUNCTION hold_claims()")
        self.admin.execute("SELECT pg_advisory_lock(%s)", (HOLD,))
        self.claimed: list[set[str]] = []
        self.thread = in_thread(lambda: self.claimed.append(pg.claim(ISSUE, "b1", EMAILS[:2], "me")))

    def finish(self) -> None:
        if not self.admin.closed:
            self.admin.execute("SELECT pg_advisory_unlock(%s)", (HOLD,))
            self.admin.close()
            self.thread.join()


@pytest.fixture
def claim_in_flight(pg, pg_url):
    claim = ClaimInFlight(pg, pg_url)
    try:
        assert waits_on(pg_url, "advisory")
        yield claim
    finally:
        claim.finish()


def waits_on(url: str, *wait_events: str) -> bool:
    """Whether a ledger connection comes to wait for a lock of one of these kinds (within 10 s)."""
    for _ in range(200):
        with psycopg.connect(url, autocommit=True) as look:
            if look.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
                            "application_name = 'newsletter' AND wait_event_type = 'Lock' "
                            "AND wait_event = ANY(%s)", (list(wait_events),)).fetchone()[0]:
                return True
        time.sleep(0.05)
    return False


def test_a_heartbeat_does_not_wait_for_a_claim_in_flight(pg, claim_in_flight):
    beaten = threading.Event()
    beater = in_thread(lambda: pg.heartbeat(ISSUE, "me") and beaten.set())
    try:
        assert beaten.wait(timeout=30), "the heartbeat waited for the worker's own claim"
    finally:
        claim_in_flight.finish()
        beater.join()


def test_a_reaper_waits_for_a_claim_in_flight_which_then_stands(pg, pg_url):
    with pg._tx() as db:  # "me" looks dead: silent, on another host (its registration is still there)
        db.execute("UPDATE workers SET host = 'elsewhere', pid = 1, heartbeat = heartbeat - 120 WHERE holder = 'me'")
    claim, reaped = ClaimInFlight(pg, pg_url), []
    reaper = None
    try:
        assert waits_on(pg_url, "advisory")
        reaper = in_thread(lambda: reaped.append(pg.reap_workers(ISSUE, "reaper", stale_after=60)))
        assert waits_on(pg_url, "tuple", "transactionid"), "the reaper did not wait for the claim in flight"
    finally:
        claim.finish()
        if reaper is not None:
            reaper.join()
    assert reaped == [["me"]] and claim.claimed == [set(EMAILS[:2])]
    assert pg.claim(ISSUE, "b2", EMAILS[2:], "me") == set()  # reaped: it claims nothing more
