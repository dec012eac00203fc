"""Several workers on one issue of a PostgreSQL ledger (docs/team.md): registrations instead of the lease,
claims fenced by them, dead workers reaped and their batches in doubt adopted by one live worker, rows
reserved per chunk. Against a real server (``pg_url``); SQLite keeps its one lease (tests/test_ledger.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import psycopg
import pytest
from helpers import reserve_by_address

from newsletter.errors import LedgerError, PlanExists
from newsletter.ledger.postgres import PostgresLedger
from newsletter.ledger.sqlite import SQLiteLedger
from newsletter.models import Outcome
from newsletter.sending.lease import LeaseKeeper
from newsletter.sending.ratelimit import TokenBucket

ISSUE = "2026-11-30-weekly"
STALE = 60.0


@pytest.fixture
def pg(pg_url):
    with PostgresLedger(pg_url) as db:
        yield db


def plan(ledger, *emails):
    return ledger.create_plan(ISSUE, content_hash="h1", subject="Hi", segment="", emails=emails)


def register_in_a_process_that_exits(url: str, holder: str) -> None:
    """A worker that registers and dies without leaving (a SIGKILLed run, as far as the ledger can tell)."""
    code = (f"from newsletter.ledger.postgres import PostgresLedger; "
            f"PostgresLedger({url!r}).acquire_lease({ISSUE!r}, {holder!r}, stale_after=60)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_choice_is_a_property_of_the_ledger(pg, tmp_path):
    assert pg.many_workers
    with SQLiteLedger(tmp_path / "l.sqlite3") as lite:
        assert not lite.many_workers


def test_two_workers_register_and_each_claims_only_rows_nobody_holds(pg):
    plan(pg, "a@example.com", "b@example.com", "c@example.com")
    pg.acquire_lease(ISSUE, "w1", stale_after=STALE)
    pg.acquire_lease(ISSUE, "w2", stale_after=STALE)  # no LeaseHeld: one more worker
    assert [w.holder for w in pg.workers(ISSUE)] == ["w1", "w2"]
    assert pg.lease(ISSUE) is None
    assert pg.claim(ISSUE, "b1", ["a@example.com", "b@example.com"], "w1") == {"a@example.com", "b@example.com"}
    assert pg.claim(ISSUE, "b2", ["b@example.com", "c@example.com"], "w2") == {"c@example.com"}
    assert pg.heartbeat(ISSUE, "w1", 12.5)
    assert {w.holder: w.rate for w in pg.workers(ISSUE)} == {"w1": 12.5, "w2": 0.0}
    # neither live worker's batch is in doubt for the other
    assert pg.reap_workers(ISSUE, "w2", stale_after=STALE) == []
    assert pg.adopt_in_doubt(ISSUE, "w2") == {}


def test_a_reaped_worker_claims_nothing_more_and_learns_it(pg):
    plan(pg, "a@example.com", "b@example.com")
    register_in_a_process_that_exits(pg.url, "dead")
    pg.acquire_lease(ISSUE, "live", stale_after=STALE)
    assert pg.reap_workers(ISSUE, "live", stale_after=STALE) == ["dead"]  # pid gone on this host: at once
    assert pg.claim(ISSUE, "b1", ["a@example.com"], "dead") == set()  # fenced off
    assert not pg.heartbeat(ISSUE, "dead")
    assert pg.claim(ISSUE, "b2", ["a@example.com"], "live") == {"a@example.com"}


def test_a_stale_worker_elsewhere_is_reaped_and_a_fresh_one_is_not(pg):
    pg.acquire_lease(ISSUE, "me", stale_after=STALE)
    pg.acquire_lease(ISSUE, "far-fresh", stale_after=STALE)
    pg.acquire_lease(ISSUE, "far-silent", stale_after=STALE)
    with pg._tx() as db:
        db.execute("UPDATE workers SET host = 'elsewhere', pid = 1 WHERE holder LIKE 'far-%%'")
        db.execute("UPDATE workers SET heartbeat = heartbeat - 120 WHERE holder = 'far-silent'")
    assert pg.reap_workers(ISSUE, "me", stale_after=STALE) == ["far-silent"]
    assert sorted(w.holder for w in pg.workers(ISSUE)) == ["far-fresh", "me"]
    # our own registration is never reaped, however old its heartbeat
    with pg._tx(one_statement=True) as db:
        db.execute("UPDATE workers SET heartbeat = heartbeat - 120 WHERE holder = 'me'")
    assert pg.reap_workers(ISSUE, "me", stale_after=STALE) == []


def test_only_a_dead_workers_batches_are_adopted_and_by_one_worker_only(pg):
    plan(pg, "a@example.com", "b@example.com", "c@example.com")
    register_in_a_process_that_exits(pg.url, "dead")
    pg.acquire_lease(ISSUE, "w1", stale_after=STALE)
    pg.acquire_lease(ISSUE, "w2", stale_after=STALE)
    assert pg.claim(ISSUE, "dead-batch", ["a@example.com"], "dead") == {"a@example.com"}
    assert pg.claim(ISSUE, "live-batch", ["b@example.com"], "w1") == {"b@example.com"}
    assert pg.adopt_in_doubt(ISSUE, "w2") == {}  # the dead worker is still registered: not in doubt yet
    pg.reap_workers(ISSUE, "w2", stale_after=STALE)
    assert pg.adopt_in_doubt(ISSUE, "w2") == {"dead-batch": ["a@example.com"]}
    assert pg.adopt_in_doubt(ISSUE, "w1") == {}  # already w2's: resolved once
    assert pg.in_doubt(ISSUE) == {"dead-batch": ["a@example.com"], "live-batch": ["b@example.com"]}


def test_reservations_split_a_chunk_and_a_dead_workers_are_free_again(pg):
    emails = [f"r{n}@example.com" for n in range(6)]
    plan(pg, *emails)
    register_in_a_process_that_exits(pg.url, "dead")
    pg.acquire_lease(ISSUE, "w1", stale_after=STALE)
    assert reserve_by_address(pg, ISSUE, "dead", emails[:2]) == set(emails[:2])
    assert reserve_by_address(pg, ISSUE, "w1", emails[:4]) == set(emails[2:4])  # the dead one is still registered
    assert reserve_by_address(pg, ISSUE, "w1", emails[:4]) == set(emails[2:4])  # asking again changes nothing
    pg.reap_workers(ISSUE, "w1", stale_after=STALE)
    assert reserve_by_address(pg, ISSUE, "w1", emails) == set(emails)  # unregistered holders' reservations are free
    pg.claim(ISSUE, "b", emails[:1], "w1")
    assert reserve_by_address(pg, ISSUE, "w1", emails[:2]) == {emails[1]}  # only pending rows


def test_a_reservation_stays_on_its_rows_pages(pg):
    # The plan's pages are filled to 40% (migration 8): a reservation, which changes no indexed
    # column, fits beside the row it updates, so the server need not touch the indexes (a HOT update).
    # On full pages every reserved row would move to a new page.
    emails = [f"r{n:04d}@example.com" for n in range(2000)]
    plan(pg, *emails)
    pg.acquire_lease(ISSUE, "w1", stale_after=STALE)

    def pages():
        return dict(pg._read("SELECT email, (ctid::text::point)[0] FROM deliveries"))

    before = pages()
    assert len(set(before.values())) > 10  # the plan spans many pages
    assert reserve_by_address(pg, ISSUE, "w1", emails) == set(emails)
    assert pages() == before


def test_a_claim_and_a_record_write_no_index_entry(pg):
    # Migration 9 left no index on what a claim or a record changes (state, batch id): each new row
    # version is written beside the old one and no index grows (HOT updates). With the state and batch
    # indexes of version 8, every row would add an entry to each of the four indexes, twice.
    emails = [f"r{n:04d}@example.com" for n in range(2000)]
    plan(pg, *emails)
    pg.acquire_lease(ISSUE, "w1", stale_after=STALE)

    def index_pages():
        return pg._read("SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) / 8192 FROM pg_index "
                        "WHERE indrelid = 'deliveries'::regclass ORDER BY 1")

    before = index_pages()
    for at in range(0, len(emails), 50):
        batch = emails[at:at + 50]
        assert pg.claim(ISSUE, f"b{at}", batch, "w1") == set(batch)
        pg.record(ISSUE, f"b{at}", [Outcome(e, "sent", "id") for e in batch], source="test", holder="w1")
    assert pg.counts(ISSUE)["sent"] == 2000
    assert index_pages() == before


def test_pending_keys_leave_out_the_rows_other_registered_workers_reserved(pg):
    emails = [f"r{n}@example.com" for n in range(5)]
    plan(pg, *emails)
    register_in_a_process_that_exits(pg.url, "dead")
    pg.acquire_lease(ISSUE, "w1", stale_after=STALE)
    pg.acquire_lease(ISSUE, "w2", stale_after=STALE)
    reserve_by_address(pg, ISSUE, "w2", emails[:1])  # another worker's: its to send
    reserve_by_address(pg, ISSUE, "dead", emails[1:2])  # still registered until reaped
    reserve_by_address(pg, ISSUE, "w1", emails[2:3])  # mine
    reserve_by_address(pg, ISSUE, "w2", emails[3:4])
    pg.claim(ISSUE, "b", emails[3:4], "w2")  # claimed: not pending at all
    assert pg.pending_keys(ISSUE, "w1") == emails[2:3] + emails[4:]
    pg.reap_workers(ISSUE, "w1", stale_after=STALE)
    assert pg.pending_keys(ISSUE, "w1") == emails[1:3] + emails[4:]  # a reaped worker's are free again


def test_a_second_planner_waits_for_the_first_and_finds_its_plan(pg_url):
    first, second = PostgresLedger(pg_url), PostgresLedger(pg_url)
    started = threading.Event()

    def emails_once_the_second_waits():
        # The first planner's transaction is open, its issues row written: its emails come only once the
        # server shows the second planner's backend waiting on a lock, so this order is the one tested.
        started.set()
        with psycopg.connect(pg_url, autocommit=True) as watcher:
            deadline = time.monotonic() + 30
            while not watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                      "AND datname = current_database()").fetchone()[0]:
                assert time.monotonic() < deadline, "the second planner never waited for the first"
                time.sleep(0.01)
        yield from (f"r{n}@example.com" for n in range(100))

    first_failed: list[BaseException] = []

    def first_plans():
        try:
            first.create_plan(ISSUE, content_hash="h1", subject="Hi", segment="",
                              emails=emails_once_the_second_waits())
        except BaseException as err:  # said by the test, not lost in the thread
            first_failed.append(err)
            started.set()

    try:
        errors = []
        thread = threading.Thread(target=first_plans)
        thread.start()
        assert started.wait(30)
        try:
            plan(second, "other@example.com")
        except PlanExists as err:
            errors.append(err)
        thread.join()
        if first_failed:
            raise first_failed[0]
        assert errors, "the second planner must find the first one's plan"
        assert second.counts(ISSUE)["pending"] == 100
    finally:
        first.close()
        second.close()


def test_the_keeper_shares_the_rate_among_live_workers_at_each_heartbeat(pg):
    bucket = TokenBucket(100.0)
    sent = [0]
    with LeaseKeeper(pg, ISSUE, every=0.05) as keeper:
        keeper.on_share = lambda live: bucket.set_rate(100.0 / live)
        keeper.sent = lambda: sent[0]
        pg.acquire_lease(ISSUE, "another", stale_after=STALE)
        deadline = time.monotonic() + 5
        while bucket.rate != 50.0 and time.monotonic() < deadline:
            sent[0] += 10
            time.sleep(0.02)
        assert bucket.rate == 50.0
        pg.release_lease(ISSUE, "another")
        deadline = time.monotonic() + 5
        while bucket.rate != 100.0 and time.monotonic() < deadline:
            sent[0] += 10
            time.sleep(0.02)
        assert bucket.rate == 100.0
        for _ in range(8):
            sent[0] += 10
            time.sleep(0.02)  # beats while sending: a rate above 0
        mine = {w.holder: w.rate for w in pg.workers(ISSUE)}[keeper.holder]
        assert mine > 0  # its recipients/s, as of its last heartbeat
    assert pg.workers(ISSUE) == []  # left at the end


def test_status_lists_the_live_workers_and_leaves_out_a_dead_one(run, pg_url):
    import json
    import os
    import socket

    with PostgresLedger(pg_url) as db:
        plan(db, "a@example.com")
        db.acquire_lease(ISSUE, "w-live", stale_after=STALE)
        db.heartbeat(ISSUE, "w-live", 42.5)
        register_in_a_process_that_exits(pg_url, "w-dead")
    env = {"NEWSLETTER_LEDGER_URL": pg_url}
    text = run("status", ISSUE, env=env)
    assert text.exit_code == 0, text.output
    assert "workers: 1 sending now" in text.output
    assert f"pid {os.getpid()} on {socket.gethostname()}: heartbeat" in text.output
    assert "42.5 recipients/s" in text.output and "(w-live)" in text.output and "w-dead" not in text.output
    as_json = run("status", ISSUE, "--json", env=env)
    [worker] = json.loads(as_json.output)["workers"]
    assert (worker["holder"], worker["pid"], worker["recipients_per_s"]) == ("w-live", os.getpid(), 42.5)
    assert 0 <= worker["heartbeat_age"] < 30


def test_rows_other_live_workers_hold_are_theirs_to_finish(pg):
    emails = [f"r{n}@example.com" for n in range(5)]
    plan(pg, *emails)
    pg.acquire_lease(ISSUE, "me", stale_after=STALE)
    pg.acquire_lease(ISSUE, "other", stale_after=STALE)
    pg.acquire_lease(ISSUE, "silent", stale_after=STALE)
    reserve_by_address(pg, ISSUE, "other", emails[:2])
    pg.claim(ISSUE, "b", emails[:1], "other")  # one claimed, one reserved: both theirs
    reserve_by_address(pg, ISSUE, "silent", emails[2:3])
    with pg._tx(one_statement=True) as db:
        db.execute("UPDATE workers SET heartbeat = heartbeat - 120 WHERE holder = 'silent'")
    reserve_by_address(pg, ISSUE, "me", emails[3:4])
    register_in_a_process_that_exits(pg.url, "dead")  # fresh heartbeat, but its process is gone
    reserve_by_address(pg, ISSUE, "dead", emails[4:5])
    assert pg.others_unfinished(ISSUE, "me", stale_after=STALE) == 2


def test_a_reaped_workers_late_failure_cannot_undo_the_adopters_resend(pg):
    """Worker A's call is out when B reaps it (a laptop asleep) and adopts its batch to resend it under
    the same key. A then records "retry": that must not put the rows back to pending (a second copy
    under a new key later); B's "sent" must land."""
    plan(pg, "a@example.com", "b@example.com")
    pg.acquire_lease(ISSUE, "A", stale_after=STALE)
    pg.acquire_lease(ISSUE, "B", stale_after=STALE)
    found = pg.lookup_rows(ISSUE, ["a@example.com", "b@example.com"])
    rows = [found["a@example.com"].id, found["b@example.com"].id]
    assert pg.claim_rows(ISSUE, "X", rows, "A") == set(rows)
    with pg._tx() as db:
        db.execute("UPDATE workers SET heartbeat = heartbeat - 120, host = 'elsewhere' WHERE holder = 'A'")
    assert pg.reap_workers(ISSUE, "B", stale_after=STALE) == ["A"]
    assert pg.adopt_in_doubt(ISSUE, "B") == {"X": ["a@example.com", "b@example.com"]}
    late = [Outcome(e, "retry", reason="no answer") for e in ("a@example.com", "b@example.com")]
    pg.record(ISSUE, "X", late, source="resend", rows=rows, holder="A")
    assert pg.counts(ISSUE)["sending"] == 2  # still B's batch in flight
    sent = [Outcome(e, "sent", provider_id=f"id-{e}") for e in ("a@example.com", "b@example.com")]
    pg.record(ISSUE, "X", sent, source="resend", rows=rows, holder="B")
    assert pg.counts(ISSUE)["sent"] == 2


def test_heartbeats_go_by_the_servers_clock_not_a_late_hosts(pg, monkeypatch):
    """A worker on a machine whose clock runs an hour late is alive, and is not reaped."""
    plan(pg, "a@example.com")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 3600)
    pg.acquire_lease(ISSUE, "late-host", stale_after=STALE)
    assert pg.heartbeat(ISSUE, "late-host")
    monkeypatch.setattr(time, "time", real)
    with pg._tx() as db:
        db.execute("UPDATE workers SET host = 'elsewhere' WHERE holder = 'late-host'")
    pg.acquire_lease(ISSUE, "me", stale_after=STALE)
    assert pg.reap_workers(ISSUE, "me", stale_after=STALE) == []
    assert abs(pg.clock() - real()) < 5


def test_a_worker_leaving_frees_the_rows_it_reserved_and_did_not_send(pg):
    emails = [f"r{n}@example.com" for n in range(4)]
    plan(pg, *emails)
    pg.acquire_lease(ISSUE, "w1", stale_after=STALE)
    pg.acquire_lease(ISSUE, "w2", stale_after=STALE)
    assert reserve_by_address(pg, ISSUE, "w1", emails) == set(emails)
    assert reserve_by_address(pg, ISSUE, "w2", emails) == set()
    pg.release_lease(ISSUE, "w1")  # --limit reached, or Ctrl-C: it leaves with rows still pending
    assert reserve_by_address(pg, ISSUE, "w2", emails) == set(emails)


def test_restart_is_not_refused_forever_by_a_killed_workers_registration(pg):
    plan(pg, "a@example.com")
    register_in_a_process_that_exits(pg.url, "killed")  # this host, its pid gone
    pg.acquire_lease(ISSUE, "me", stale_after=STALE)
    with pytest.raises(LedgerError, match="1 other worker"):
        pg.drop_plan(ISSUE, "me", only_provider="outbox")
    pg.reap_workers(ISSUE, "me", stale_after=STALE)  # what `send --restart` does first now
    assert pg.drop_plan(ISSUE, "me", only_provider="outbox") == 1


def test_a_summary_counts_in_doubt_only_the_batches_no_live_worker_holds(pg):
    plan(pg, "a@example.com", "b@example.com")
    register_in_a_process_that_exits(pg.url, "dead")
    pg.acquire_lease(ISSUE, "live", stale_after=STALE)
    pg.claim(ISSUE, "dead-batch", ["a@example.com"], "dead")
    pg.claim(ISSUE, "live-batch", ["b@example.com"], "live")
    assert pg.dead_in_doubt(ISSUE, stale_after=STALE) == {"dead-batch": ["a@example.com"]}
    assert set(pg.in_doubt(ISSUE)) == {"dead-batch", "live-batch"}


def test_a_reaped_worker_stops_sending_and_says_it_was_reaped(pg):
    from test_dispatch import EMAILS
    from test_dispatch import ISSUE as DISPATCH_ISSUE
    from test_dispatch import ScriptedProvider, run

    pg.create_plan(DISPATCH_ISSUE, content_hash="h1", subject="Hi", segment="", emails=EMAILS)
    pg.acquire_lease(DISPATCH_ISSUE, "me", stale_after=STALE)
    pg.release_lease(DISPATCH_ISSUE, "me")  # gone from `workers`, as a reaper leaves it
    provider = ScriptedProvider()
    totals = run(pg, provider)
    assert provider.calls == []
    assert isinstance(totals.error, LedgerError) and "reaped this one" in totals.aborted
    assert "rejoin as a worker" in totals.error.hint and "took over" not in totals.aborted
