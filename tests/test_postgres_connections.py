"""The PostgreSQL ledger's connections (docs/team.md): one per thread that uses the ledger, so one
thread's transaction never holds up another's, all closed by ``close()``. Against a real server
(``pg_url``); the read-only view of an older schema, shared by every thread, is in tests/test_ledger.py."""

from __future__ import annotations

import tempfile
import threading
import time

import psycopg
import pytest

from newsletter.errors import LedgerError
from newsletter.ledger.postgres import PostgresLedger
from newsletter.models import Outcome

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



def test_every_connection_of_the_ledger_runs_without_jit(pg):
    """A run's statistics go stale as its rows move, and a cost estimated in millions made the server
    JIT-compile a look-up for longer than it ran (benchmarks/README.md, "Several workers")."""
    def jit_setting():
        with pg._tx() as db:
            return db.execute("SHOW jit").fetchone()[0]

    seen = [jit_setting()]
    in_thread(lambda: seen.append(jit_setting())).join()  # another thread: a connection of its own
    assert seen == ["off", "off"]


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


def test_a_worker_whose_registration_is_gone_claims_nothing(pg):
    assert pg.claim(ISSUE, "b1", EMAILS[:1], "me") == {EMAILS[0]}
    with pg._tx() as db:  # reaped
        db.execute("DELETE FROM workers WHERE holder = 'me'")
    assert pg.claim(ISSUE, "b2", EMAILS[1:], "me") == set()
    # Its own batch again (the path that reads the batch's rows back): none of them either.
    assert pg.claim(ISSUE, "b1", EMAILS, "me") == set()
    assert pg.counts(ISSUE)["sending"] == 1 and pg.counts(ISSUE)["pending"] == 3


def test_a_step_whose_connection_was_lost_does_not_claim_nothing_was_written(pg, pg_url):
    row = pg.lookup_rows(ISSUE, EMAILS[:1])[EMAILS[0]].id  # this thread's connection, open
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND application_name = 'newsletter'")
    with pytest.raises(LedgerError) as lost:  # a claim whose answer never came may have committed
        pg.claim_rows(ISSUE, "b1", [row], "me")
    assert "may or may not have been written" in lost.value.hint
    assert "nothing of this step was written" not in lost.value.hint
    # A step the server answered with an error was rolled back, and says so.
    with PostgresLedger(pg_url) as other, pytest.raises(LedgerError) as refused, other._tx() as db:
        db.execute("SELECT 1 / 0")
    assert refused.value.hint == "nothing of this step was written; run the command again"


@pytest.mark.parametrize("reaped", [True, False])
def test_a_claim_waits_for_a_reaper_holding_its_registration_then_claims_nothing_once_reaped(pg, pg_url, reaped):
    claimed, claimer = [], None
    with psycopg.connect(pg_url, autocommit=True) as reaper:
        try:
            with reaper.transaction():  # what reap_workers does: the registration FOR UPDATE, then its DELETE
                reaper.execute("SELECT 1 FROM workers WHERE issue_id = %s AND holder = 'me' FOR UPDATE", (ISSUE,))
                claimer = in_thread(lambda: claimed.append(pg.claim(ISSUE, "b1", EMAILS[:2], "me")))
                assert waits_on(pg_url, "tuple", "transactionid"), "the claim did not wait for the reaper's lock"
                if reaped:
                    reaper.execute("DELETE FROM workers WHERE issue_id = %s AND holder = 'me'", (ISSUE,))
        finally:  # the reaper's transaction ended (committed, or rolled back by a failed assert)
            if claimer is not None:
                claimer.join()
    # The claim read its snapshot before it waited: it must not take the rows of a registration deleted since.
    assert claimed == [set() if reaped else set(EMAILS[:2])]
    assert pg.counts(ISSUE)["sending"] == (0 if reaped else 2)


def round_trips(pg: PostgresLedger, action) -> int:
    """How many times ``action`` waited for the server on this thread's connection: libpq's trace of it,
    where the server ends each exchange with ReadyForQuery."""
    db = pg._own[threading.current_thread()]
    with tempfile.TemporaryFile("w+") as trace:
        db.pgconn.trace(trace.fileno())
        try:
            action()
        finally:
            db.pgconn.untrace()
        trace.seek(0)
        return trace.read().count("ReadyForQuery")


def test_the_send_loops_ledger_calls_are_one_round_trip_each(pg):
    """Each round trip of a worker thread gives up the GIL and waits for it back: a batch's reservation,
    claim and record (all sent) are one statement each, with no BEGIN and COMMIT around it."""
    found = pg.lookup_rows(ISSUE, EMAILS)
    rows = [found[email].id for email in EMAILS]
    got = []
    assert round_trips(pg, lambda: got.append(pg.reserve(ISSUE, "me", rows))) == 1
    assert round_trips(pg, lambda: got.append(pg.claim_rows(ISSUE, "b1", rows, "me"))) == 1
    assert round_trips(pg, lambda: pg.record_rows(ISSUE, "b1", rows, [Outcome(e, "sent", "id-1") for e in EMAILS],
                                                  source="test", holder="me")) == 1
    assert round_trips(pg, lambda: got.append(pg.heartbeat(ISSUE, "me"))) == 1
    assert got == [set(rows), set(rows), True] and pg.counts(ISSUE)["sent"] == 4
