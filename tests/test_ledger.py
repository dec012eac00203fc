"""The ledger's state machine, lease, suppressions and migrations: one suite, run against a real SQLite
file and a real PostgreSQL server (the ``backend`` fixture; tests/pgserver.py starts the server)."""

from __future__ import annotations

import multiprocessing
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest
from helpers import LedgerClock

from newsletter.errors import LeaseHeld, LedgerError
from newsletter.ledger import open_ledger
from newsletter.ledger.base import CachedFigures, erased_key
from newsletter.ledger.sqlite import SQLiteLedger
from newsletter.ledger.migrations import LATEST, MIGRATIONS, POSTGRES_VARIANTS, steps
from newsletter.ledger.postgres import PostgresLedger
from newsletter.models import Outcome

ISSUE = "2026-11-30-weekly"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    """Where a test's ledger lives: a SQLite file's path, or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return str(tmp_path / "ledger.sqlite3")
    return request.getfixturevalue("pg_url")


def open_at(where: str, **options):
    return PostgresLedger(where, **options) if where.startswith("postgresql://") else SQLiteLedger(where, **options)


def raw(ledger, sql: str, params=()):
    """Change the ledger's tables behind its back (a test's way to age a lease); SQL written with ``?``."""
    if isinstance(ledger, PostgresLedger):
        with ledger._tx(one_statement=True) as db:
            db.execute(sql.replace("?", "%s"), params)
    else:
        ledger._db.execute(sql, params)


def fetch(ledger, sql: str) -> list[tuple]:
    """Read the ledger's tables directly (what its API does not show, e.g. the rows' ids)."""
    return ledger._read(sql) if isinstance(ledger, PostgresLedger) else ledger._db.execute(sql).fetchall()


@pytest.fixture
def ledger(backend):
    with open_at(backend) as db:
        db.acquire_lease(ISSUE, "me", stale_after=60)
        yield db


@pytest.fixture
def sqlite_ledger(tmp_path):
    with SQLiteLedger(tmp_path / "ledger.sqlite3") as db:
        db.acquire_lease(ISSUE, "me", stale_after=60)
        yield db


def plan(ledger, *emails):
    return ledger.create_plan(ISSUE, content_hash="h1", subject="Hi", segment="", emails=emails)


def state(ledger, email):
    rows = ledger.rows(ISSUE, ("pending", "sending", "sent", "failed", "unknown", "skipped"))
    return {r.email: r for r in rows}[email]


def test_plan_freezes_pending_rows_once_per_address_case_insensitively(ledger):
    assert plan(ledger, "Ada@Example.com", "ada@example.com", "bob@example.com") == 2
    assert ledger.counts(ISSUE) == {"pending": 2, "sending": 0, "sent": 0, "failed": 0, "unknown": 0, "skipped": 0}
    record = ledger.issue(ISSUE)
    assert (record.planned, record.content_hash, record.subject) == (2, "h1", "Hi")
    with pytest.raises(LedgerError, match="already has a plan"):
        plan(ledger, "c@example.com")


def test_plan_leaves_out_suppressed_and_erased_addresses(ledger):
    ledger.add_suppression("Bounced@example.com", "hard bounce")
    plan(ledger, "bounced@example.com", "ok@example.com")
    assert [r.email for r in ledger.rows(ISSUE, ("pending",))] == ["ok@example.com"]
    ledger.erase_address("ok@example.com")
    assert ledger.extend_plan(ISSUE, ["ok@example.com", "new@example.com"]) == 1  # the erased one is known
    assert ledger.issue(ISSUE).planned == 2


def test_a_plan_of_many_chunks_keeps_the_list_order_and_its_exclusions_across_them(ledger):
    # PostgreSQL inserts the plan a chunk (1,000 addresses) per statement: a repeat in a later chunk,
    # a suppressed or erased address far down the list, and the order must hold across chunks.
    emails = [f"reader{i:04d}@example.org" for i in range(2500)]
    ledger.add_suppression(emails[1800], "hard bounce")
    assert plan(ledger, *emails[:1500], emails[7].upper(), *emails[1500:]) == 2499
    pending = [r.email for r in ledger.rows(ISSUE, ("pending",))]
    assert len(pending) == 2499 and emails[1800] not in pending
    ids = dict(fetch(ledger, "SELECT email, id FROM deliveries"))
    assert [email for email in sorted(ids, key=ids.get)] == [e for e in emails if e != emails[1800]]  # plan order
    ledger.erase_address(emails[2400])
    assert ledger.extend_plan(ISSUE, [*emails[:2450], "new@example.org"]) == 1  # neither erased nor known again
    assert ledger.issue(ISSUE).planned == 2500


def test_a_plan_of_nobody_is_empty(ledger):
    assert plan(ledger) == 0
    assert ledger.issue(ISSUE).planned == 0
    assert ledger.extend_plan(ISSUE, []) == 0


def test_claim_moves_pending_to_sending_under_the_batch_id(ledger):
    plan(ledger, "a@example.com", "b@example.com")
    assert ledger.claim(ISSUE, "b1", ["A@example.com"], "me") == {"a@example.com"}
    assert (state(ledger, "a@example.com").state, state(ledger, "a@example.com").batch_id) == ("sending", "b1")
    assert ledger.claim(ISSUE, "b2", ["a@example.com", "b@example.com"], "me") == {"b@example.com"}  # never twice
    assert ledger.in_doubt(ISSUE) == {"b1": ["a@example.com"], "b2": ["b@example.com"]}


def utc(when: str) -> datetime:
    return datetime.fromisoformat(when).replace(tzinfo=timezone.utc)


def test_claimed_at_is_the_first_claim_of_that_batch_id_and_later_changes_keep_it(ledger, monkeypatch):
    clock = LedgerClock(monkeypatch)
    plan(ledger, "a@example.com", "b@example.com")
    ledger.claim(ISSUE, "b1", ["a@example.com"], "me")
    clock.at("2026-11-30T09:05:00")
    ledger.claim(ISSUE, "b2", ["b@example.com"], "me")
    assert ledger.claim_times(ISSUE) == {"b1": utc("2026-11-30T09:00:00"), "b2": utc("2026-11-30T09:05:00")}
    clock.at("2026-11-30T10:00:00")
    ledger.mark_attempt(ISSUE, "b1")  # a same-key retry is not a new claim
    ledger.mark_unknown(ISSUE, ["b1"], "run stopped")
    row = state(ledger, "a@example.com")
    assert (row.claimed_at, row.updated_at) == ("2026-11-30T09:00:00+00:00", "2026-11-30T10:00:00+00:00")
    assert ledger.claim_times(ISSUE) == {"b2": utc("2026-11-30T09:05:00")}  # only batches still `sending`
    assert ledger.claim_times(ISSUE, "unknown") == {"b1": utc("2026-11-30T09:00:00")}
    # Back to pending after a transient error, then claimed under a new batch id: a new first claim.
    ledger.record(ISSUE, "b2", [Outcome("b@example.com", "retry")], source="test")
    clock.at("2026-11-30T11:00:00")
    ledger.claim(ISSUE, "b3", ["b@example.com"], "me")
    assert ledger.claim_times(ISSUE) == {"b3": utc("2026-11-30T11:00:00")}


def test_claim_needs_the_lease(ledger):
    plan(ledger, "a@example.com")
    assert ledger.claim(ISSUE, "b1", ["a@example.com"], "somebody-else") == set()
    assert state(ledger, "a@example.com").state == "pending"


@pytest.mark.parametrize("outcome, expected", [("sent", "sent"), ("failed", "failed"), ("retry", "pending"),
                                               ("unknown", "unknown")])
def test_record_moves_sending_to_each_outcome(ledger, outcome, expected):
    plan(ledger, "a@example.com")
    ledger.claim(ISSUE, "b1", ["a@example.com"], "me")
    ledger.record(ISSUE, "b1", [Outcome("A@example.com", outcome, provider_id="pid-1", reason="why")], source="test")
    row = state(ledger, "a@example.com")
    assert (row.state, row.attempts, row.reason) == (expected, 1, "why")
    assert row.provider_id == "pid-1"


@pytest.mark.parametrize("sent", [Outcome("a@example.com", "sent", provider_id="id-1"),  # one plain UPDATE
                                  Outcome("a@example.com", "sent", provider_id="id-1", reason="noted")])  # per row
def test_record_only_touches_rows_of_that_batch_still_sending(ledger, sent):
    plan(ledger, "a@example.com")
    ledger.claim(ISSUE, "b1", ["a@example.com"], "me")
    ledger.record(ISSUE, "other-batch", [sent], source="test")
    assert state(ledger, "a@example.com").state == "sending"
    ledger.record(ISSUE, "b1", [sent], source="test")
    ledger.record(ISSUE, "b1", [Outcome("a@example.com", "failed")], source="test")  # a late duplicate answer
    ledger.record(ISSUE, "b1", [Outcome("a@example.com", "sent", provider_id="id-2")], source="test")  # and again
    row = state(ledger, "a@example.com")
    assert (row.state, row.provider_id, row.attempts) == ("sent", "id-1", 1)


def test_a_batch_sent_under_one_id_records_only_the_rows_it_names(ledger):
    plan(ledger, "a@example.com", "b@example.com", "c@example.com")
    ledger.claim(ISSUE, "b1", ["a@example.com", "b@example.com", "c@example.com"], "me")
    ledger.record(ISSUE, "b1", [Outcome("A@example.com", "sent", provider_id="<batch-id>"),
                                Outcome("b@example.com", "sent", provider_id="<batch-id>")], source="test")
    rows = {e: state(ledger, e) for e in ("a@example.com", "b@example.com", "c@example.com")}
    assert [(r.state, r.provider_id, r.attempts) for r in rows.values()] == [
        ("sent", "<batch-id>", 1), ("sent", "<batch-id>", 1), ("sending", "", 0)]


def test_record_refuses_an_unknown_outcome_state(ledger):
    plan(ledger, "a@example.com")
    ledger.claim(ISSUE, "b1", ["a@example.com"], "me")
    with pytest.raises(LedgerError, match="unknown outcome state 'delivered'"):
        ledger.record(ISSUE, "b1", [Outcome("a@example.com", "delivered")], source="test")
    assert state(ledger, "a@example.com").state == "sending"  # nothing half-written


def test_suppress_outcome_adds_a_suppression_with_the_provider_as_source(ledger):
    plan(ledger, "a@example.com")
    ledger.claim(ISSUE, "b1", ["a@example.com"], "me")
    ledger.record(ISSUE, "b1", [Outcome("a@example.com", "failed", reason="inactive recipient", suppress=True)],
                  source="postmark")
    [s] = ledger.suppressions()
    assert (s.email, s.reason, s.source) == ("a@example.com", "inactive recipient", "postmark")
    assert ledger.is_suppressed("A@EXAMPLE.COM")


def test_skip_only_pending_rows(ledger):
    plan(ledger, "a@example.com", "b@example.com")
    ledger.claim(ISSUE, "b1", ["b@example.com"], "me")
    assert ledger.skip(ISSUE, [("a@example.com", "status is unsubscribed"), ("b@example.com", "x")]) == 1
    assert (state(ledger, "a@example.com").state, state(ledger, "a@example.com").reason) == \
        ("skipped", "status is unsubscribed")
    assert state(ledger, "b@example.com").state == "sending"


def test_in_doubt_batches_become_unknown_and_resend_unknown_makes_them_pending(ledger):
    plan(ledger, "a@example.com", "b@example.com")
    ledger.claim(ISSUE, "b1", ["a@example.com"], "me")
    ledger.claim(ISSUE, "b2", ["b@example.com"], "me")
    assert ledger.mark_unknown(ISSUE, ["b1"], "run stopped") == 1
    assert (state(ledger, "a@example.com").state, state(ledger, "b@example.com").state) == ("unknown", "sending")
    assert ledger.resend_unknown(ISSUE) == 1
    assert state(ledger, "a@example.com").state == "pending"


def test_cancel_closes_pending_rows_makes_in_flight_ones_unknown_and_keeps_the_rest(ledger):
    plan(ledger, "a@example.com", "b@example.com", "c@example.com", "d@example.com")
    ledger.claim(ISSUE, "b1", ["a@example.com"], "me")
    ledger.record(ISSUE, "b1", [Outcome("a@example.com", "sent", provider_id="p1")], source="test")
    ledger.claim(ISSUE, "b2", ["b@example.com"], "me")  # a killed run's batch, in flight
    ledger.fail(ISSUE, [("c@example.com", "bad merge data")])
    assert ledger.issue(ISSUE).cancelled_at == ""
    assert ledger.cancel_plan(ISSUE, "me", "cancelled") == (1, 1)
    assert {e: (state(ledger, e).state, state(ledger, e).reason) for e in
            ("a@example.com", "b@example.com", "c@example.com", "d@example.com")} == {
        "a@example.com": ("sent", ""), "b@example.com": ("unknown", "cancelled"),
        "c@example.com": ("failed", "bad merge data"), "d@example.com": ("skipped", "cancelled")}
    assert ledger.issue(ISSUE).cancelled_at != ""
    assert [r.cancelled_at != "" for r in ledger.issues()] == [True]


def test_cancel_needs_the_lease_and_changes_nothing_without_it(ledger):
    plan(ledger, "a@example.com")
    with pytest.raises(LedgerError):
        ledger.cancel_plan(ISSUE, "somebody-else", "cancelled")
    assert state(ledger, "a@example.com").state == "pending" and ledger.issue(ISSUE).cancelled_at == ""


def test_fail_moves_pending_rows_only_with_the_reason(ledger):
    plan(ledger, "a@example.com", "b@example.com")
    ledger.claim(ISSUE, "b1", ["b@example.com"], "me")
    assert ledger.fail(ISSUE, [("A@example.com", "the subject would contain a line break"),
                               ("b@example.com", "x")]) == 1
    assert (state(ledger, "a@example.com").state, state(ledger, "a@example.com").reason) == \
        ("failed", "the subject would contain a line break")
    assert state(ledger, "b@example.com").state == "sending"  # claimed by a batch: not ours to fail
    assert ledger.fail(ISSUE, []) == 0


def test_retry_failed_moves_unsuppressed_failed_rows_back_to_pending_at_once(ledger):
    plan(ledger, "a@example.com", "b@example.com", "c@example.com")
    ledger.claim(ISSUE, "b1", ["a@example.com", "b@example.com", "c@example.com"], "me")
    ledger.record(ISSUE, "b1", [Outcome("a@example.com", "failed", reason="bad merge value"),
                                Outcome("b@example.com", "failed", reason="hard bounce", suppress=True),
                                Outcome("c@example.com", "sent")], source="t")
    assert ledger.retry_failed(ISSUE) == 1
    a = state(ledger, "a@example.com")
    assert (a.state, a.reason) == ("pending", "sent again after: bad merge value")
    assert state(ledger, "b@example.com").state == "failed"  # suppressed: lift the suppression first
    assert state(ledger, "c@example.com").state == "sent"
    assert ledger.retry_failed(ISSUE) == 0


def test_mark_attempt_counts_a_same_key_retry(ledger):
    plan(ledger, "a@example.com")
    ledger.claim(ISSUE, "b1", ["a@example.com"], "me")
    ledger.mark_attempt(ISSUE, "b1")
    assert (state(ledger, "a@example.com").state, state(ledger, "a@example.com").attempts) == ("sending", 1)


def test_resolve_moves_unknown_rows_only(ledger):
    plan(ledger, "a@example.com", "b@example.com", "c@example.com", "d@example.com")
    ledger.claim(ISSUE, "b1", ["a@example.com", "b@example.com", "c@example.com"], "me")
    ledger.record(ISSUE, "b1", [Outcome(e, "unknown") for e in ("a@example.com", "b@example.com", "c@example.com")],
                  source="t")
    rows = ledger.rows(ISSUE)
    assert [(r.email, r.batch_id) for r in rows] == [("a@example.com", "b1"), ("b@example.com", "b1"),
                                                     ("c@example.com", "b1")]
    changed = ledger.resolve(ISSUE, [Outcome("a@example.com", "sent", provider_id="m-1"),
                                     Outcome("b@example.com", "retry"), Outcome("c@example.com", "failed", reason="x"),
                                     Outcome("d@example.com", "sent")])  # d is pending: untouched
    assert changed == 3
    assert [state(ledger, e).state for e in ("a@example.com", "b@example.com", "c@example.com", "d@example.com")] \
        == ["sent", "pending", "failed", "pending"]
    assert state(ledger, "a@example.com").provider_id == "m-1"


def test_erase_address_replaces_it_with_a_hash_everywhere(ledger):
    plan(ledger, "a@example.com", "b@example.com")
    ledger.create_plan("other", content_hash="h", subject="s", segment="", emails=["A@example.com"])
    assert ledger.erase_address("A@Example.com") == 2
    emails = {r.email for r in ledger.rows(ISSUE, ("pending",))}
    assert emails == {"b@example.com", erased_key("a@example.com")}
    assert erased_key("a@example.com").startswith("sha256:") and "example" not in erased_key("a@example.com")


def test_erase_address_scrubs_the_provider_id_and_reason_that_quote_it(ledger):
    plan(ledger, "grace.o'neil+x@example.org", "b@example.com")
    ledger.claim(ISSUE, "b1", ["grace.o'neil+x@example.org", "b@example.com"], "me")
    ledger.record(ISSUE, "b1", [
        Outcome("grace.o'neil+x@example.org", "failed", provider_id="grace.o_neil+x@example.org--b1.eml",
                reason="Invalid 'To' address: 'Grace.O'Neil+x@Example.org' (see /log?to=grace.o%27neil%2Bx%40example.org)"),
        Outcome("b@example.com", "sent", provider_id="b@example.com--b1.eml", reason="ok")], source="test")
    assert ledger.erase_address("Grace.O'Neil+x@example.org") == 1
    rows = {r.email: r for r in ledger.rows(ISSUE, ("failed", "sent"))}
    erased = rows[erased_key("grace.o'neil+x@example.org")]
    assert (erased.provider_id, erased.reason) == (
        "[erased]--b1.eml", "Invalid 'To' address: '[erased]' (see /log?to=[erased])")
    assert (rows["b@example.com"].provider_id, rows["b@example.com"].reason) == ("b@example.com--b1.eml", "ok")


def test_erase_address_again_after_the_address_came_back(ledger):
    plan(ledger, "a@example.com")
    assert ledger.erase_address("a@example.com") == 1
    ledger.add_skipped(ISSUE, [("a@example.com", "unsubscribed")])  # back in the list, then skipped
    assert ledger.erase_address("a@example.com") == 1  # the newer row replaces the older hash
    assert [(r.email, r.state) for r in ledger.rows(ISSUE, ("pending", "skipped"))] == [
        (erased_key("a@example.com"), "skipped")]


def test_issue_suppressions_count_what_records_the_issue_and_estimate_by_time_only_what_records_none(
        ledger, monkeypatch):
    clock = LedgerClock(monkeypatch)
    later = "2026-12-07-weekly"
    readers = [f"r{n}@example.com" for n in range(5)]
    ledger.create_plan(ISSUE, content_hash="h", subject="S", segment="", emails=readers)
    clock.at("2026-11-30T09:05:00")
    ledger.claim(ISSUE, "b1", readers, "me")
    ledger.record(ISSUE, "b1", [Outcome(e, "sent", provider_id=e) for e in readers], source="mailgun")
    clock.at("2026-12-01T10:00:00")
    ledger.add_suppression("r0@example.com", "unsubscribed", "link", issue_id=ISSUE)
    ledger.add_suppressions([("r1@example.com", "complained at mailgun (complaints)")], "mailgun")  # no issue: by time
    clock.at("2026-12-07T09:00:00")
    ledger.create_plan(later, content_hash="h", subject="S", segment="", emails=readers[2:])
    ledger.acquire_lease(later, "me", stale_after=60)
    ledger.claim(later, "c1", readers[2:], "me")
    ledger.record(later, "c1", [Outcome(e, "sent", provider_id=e) for e in readers[2:]], source="mailgun")
    clock.at("2026-12-08T09:00:00")  # after the next plan: a late click on the first issue's link is still its own
    ledger.add_suppression("r2@example.com", "unsubscribed", "link", issue_id=ISSUE)
    ledger.add_suppressions([("r3@example.com", "unsubscribed at mailgun (unsubscribes)", ISSUE),  # the tag named
                             ("r4@example.com", "bounced at mailgun (bounces: 550)")], "mailgun")
    assert ledger.issue_suppressions(ISSUE) == {("link", "unsubscribed", "issue"): 2,
                                                ("mailgun", "complained", "time"): 1,
                                                ("mailgun", "unsubscribed", "issue"): 1}
    # The later issue went to r2..r4 too: only r4's bounce (no issue recorded) falls in its window.
    assert ledger.issue_suppressions(later) == {("mailgun", "bounced", "time"): 1}
    assert {s.email: s.issue_id for s in ledger.suppressions()}["r3@example.com"] == ISSUE


def test_provider_figures_are_kept_per_issue_and_provider_and_replaced(ledger):
    first = CachedFigures(ISSUE, False, '{"processed":3}', 1_800_000_000.5)
    other = CachedFigures("2026-12-07-weekly", True, '{"processed":9}', 1_800_000_100.25)
    ledger.store_figures("mailgun:mg.example.com", [first, other])
    assert ledger.cached_figures("mailgun:mg.example.com", [ISSUE, "absent"]) == {ISSUE: first}
    assert ledger.cached_figures("mailgun:other.example.com", [ISSUE]) == {}  # another domain's are not these
    newer = CachedFigures(ISSUE, True, '{"processed":4}', 1_800_003_700.0)
    ledger.store_figures("mailgun:mg.example.com", [newer])
    assert ledger.cached_figures("mailgun:mg.example.com", [ISSUE, "2026-12-07-weekly"]) == {
        ISSUE: newer, "2026-12-07-weekly": other}


def test_suppressions_add_remove(ledger):
    assert ledger.add_suppression("x@example.com", "complaint", source="manual")
    assert not ledger.add_suppression("X@example.com", "again")
    assert ledger.suppressed_set() == {"x@example.com"}
    assert ledger.remove_suppression("x@example.com")
    assert not ledger.remove_suppression("x@example.com")
    assert ledger.suppressions() == []


def test_add_suppressions_adds_only_new_addresses_in_one_go_and_keeps_existing_entries(ledger):
    ledger.add_suppression("kept@example.com", "asked by phone", source="manual")
    added = ledger.add_suppressions([("Kept@Example.com", "bounced at sendgrid"), ("new@example.com", "complained"),
                                     ("NEW@example.com", "again")], source="sendgrid")
    assert added == 1
    rows = {s.email: (s.reason, s.source) for s in ledger.suppressions()}
    assert rows == {"kept@example.com": ("asked by phone", "manual"), "new@example.com": ("complained", "sendgrid")}
    assert ledger.add_suppressions([], source="sendgrid") == 0


# -- the lease (one run per issue: SQLite; PostgreSQL registers workers, tests/test_workers.py) --------
def test_a_second_holder_is_refused_while_the_first_is_alive(sqlite_ledger):
    ledger = sqlite_ledger
    with pytest.raises(LeaseHeld, match=f"another run is sending issue {ISSUE}") as info:
        ledger.acquire_lease(ISSUE, "other", stale_after=60)
    assert info.value.exit_code == 75
    assert ledger.heartbeat(ISSUE, "me")


def test_a_lease_whose_process_died_is_taken_over_at_once(tmp_path):
    backend = str(tmp_path / "ledger.sqlite3")
    code = (f"from newsletter.ledger.sqlite import SQLiteLedger; from newsletter.ledger.postgres import PostgresLedger; "
            f"Ledger = PostgresLedger if {backend!r}.startswith('postgresql://') else SQLiteLedger; "
            f"Ledger({backend!r}).acquire_lease({ISSUE!r}, 'dead-run', stale_after=60)")
    subprocess.run([sys.executable, "-c", code], check=True)  # exits without releasing: a dead holder
    with open_at(backend) as db:
        assert db.lease(ISSUE).holder == "dead-run"
        db.acquire_lease(ISSUE, "me", stale_after=60)
        assert db.lease(ISSUE).holder == "me"
        assert not db.heartbeat(ISSUE, "dead-run")  # the old holder learns it lost the lease


def test_a_stale_heartbeat_is_taken_over(sqlite_ledger):
    ledger = sqlite_ledger
    plan(ledger, "a@example.com")
    raw(ledger, "UPDATE leases SET host = 'elsewhere', heartbeat = ?", (time.time() - 120,))
    ledger.acquire_lease(ISSUE, "new", stale_after=60)
    assert ledger.lease(ISSUE).holder == "new"
    assert ledger.claim(ISSUE, "b", ["a@example.com"], "me") == set()  # the old holder is fenced off
    assert ledger.claim(ISSUE, "b", ["a@example.com"], "new") == {"a@example.com"}  # the row was there to claim


def test_a_fresh_heartbeat_on_another_host_is_respected(sqlite_ledger):
    ledger = sqlite_ledger
    raw(ledger, "UPDATE leases SET host = 'elsewhere', pid = 1")
    with pytest.raises(LeaseHeld, match="pid 1 on elsewhere"):
        ledger.acquire_lease(ISSUE, "new", stale_after=60)


def test_a_lease_tells_whether_its_holder_may_still_be_sending(tmp_path):
    from newsletter.ledger.base import Lease

    backend = str(tmp_path / "ledger.sqlite3")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    here = socket.gethostname()
    now = time.time()
    assert Lease(ISSUE, "me", os.getpid(), here, now, now).holder_alive(stale_after=60)
    assert not Lease(ISSUE, "dead", int(gone.stdout), here, now, now).holder_alive(stale_after=60)
    assert Lease(ISSUE, "far", 1, "elsewhere", now - 30, now).holder_alive(stale_after=60, now=now)
    assert not Lease(ISSUE, "far", 1, "elsewhere", now - 90, now).holder_alive(stale_after=60, now=now)
    # a live pid here whose heartbeat stopped (a hung run): what `status` says is what `send` does
    hung = Lease(ISSUE, "hung", os.getpid(), here, now - 90, now - 90)
    assert not hung.holder_alive(stale_after=60, now=now)
    with open_at(backend) as ledger:
        ledger.acquire_lease(ISSUE, "hung", stale_after=60)
        raw(ledger, "UPDATE leases SET heartbeat = heartbeat - 90")
        assert ledger.acquire_lease(ISSUE, "next", stale_after=60).holder == "next"


def test_release_lets_the_next_run_in(ledger):
    ledger.release_lease(ISSUE, "me")
    assert ledger.lease(ISSUE) is None
    ledger.acquire_lease(ISSUE, "next", stale_after=60)


# -- file, pragmas, migrations ----------------------------------------------------------
def test_the_file_is_wal_with_the_latest_schema(tmp_path):
    path = tmp_path / "deep" / "ledger.sqlite3"
    SQLiteLedger(path).close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == LATEST


def _open_at_the_barrier(ledger_class, where, barrier, errors) -> None:
    barrier.wait()
    try:
        ledger_class(where).close()
    except LedgerError as err:
        errors.put(str(err))


def _three_open_at_once(context, ledger_class, where) -> list[str]:
    """Three processes open the ledger at ``where`` at the same moment; the errors they met."""
    errors = context.Queue()
    barrier = context.Barrier(3)
    racers = [context.Process(target=_open_at_the_barrier, args=(ledger_class, where, barrier, errors))
              for _ in range(3)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=60)
        assert racer.exitcode == 0
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    return failures


def test_commands_opening_a_fresh_ledger_at_once_all_wait_their_turn(tmp_path):
    # Switching a new file to WAL does not call SQLite's busy handler: without the ledger's own
    # wait, about one race in four failed with "database is locked" (the second of two crons).
    context = multiprocessing.get_context("fork")
    failures = []
    for round_ in range(20):
        failures += _three_open_at_once(context, SQLiteLedger, tmp_path / f"race{round_}" / "ledger.sqlite3")
    assert failures == []


def version_1_ledger(path) -> None:
    """A ledger as the first release wrote it: schema 1, an issue mid-send."""
    raw = sqlite3.connect(path)
    [(number, _, sql)] = [m for m in MIGRATIONS if m[0] == 1]
    raw.executescript(sql)
    raw.execute("PRAGMA user_version = 1")
    raw.execute("INSERT INTO issues VALUES (?, 'h1', 'Hi', '', 4, '2026-11-30T08:00:00+00:00')", (ISSUE,))
    raw.executemany("INSERT INTO deliveries (issue_id, email, state, batch_id, attempts, provider_id, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, '2026-11-30T09:30:00+00:00')",
                    [(ISSUE, "sent@example.com", "sent", "b1", 1, "pid-1"),
                     (ISSUE, "sending@example.com", "sending", "b2", 0, ""),
                     (ISSUE, "unknown@example.com", "unknown", "b3", 1, ""),
                     (ISSUE, "pending@example.com", "pending", "", 0, "")])
    raw.commit()
    raw.close()


def test_a_version_1_ledger_is_upgraded_in_place_keeping_every_row(tmp_path, monkeypatch):
    path = tmp_path / "ledger.sqlite3"
    version_1_ledger(path)
    before = path.read_bytes()
    with SQLiteLedger(path, readonly=True) as reader:  # status, --dry-run: an upgraded copy in memory
        assert reader.counts(ISSUE)["sending"] == 1 and reader.claim_times(ISSUE) == {"b2": utc("2026-11-30T08:00:00")}
    assert path.read_bytes() == before, "a read-only open changed the file"
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 1
    with SQLiteLedger(path) as db:
        rows = {r.email: r for r in db.rows(ISSUE, ("pending", "sending", "sent", "failed", "unknown"))}
        assert {e: (r.state, r.batch_id, r.attempts, r.provider_id) for e, r in rows.items()} == {
            "sent@example.com": ("sent", "b1", 1, "pid-1"), "sending@example.com": ("sending", "b2", 0, ""),
            "unknown@example.com": ("unknown", "b3", 1, ""), "pending@example.com": ("pending", "", 0, "")}
        # Claimed before claimed_at existed: the plan's creation, never later than the claim (an age
        # that errs old); updated_at (09:30) would have made those batches look younger than they are.
        planned = utc("2026-11-30T08:00:00")
        assert db.claim_times(ISSUE) == {"b2": planned} and db.claim_times(ISSUE, "unknown") == {"b3": planned}
        assert rows["pending@example.com"].claimed_at == ""
        LedgerClock(monkeypatch).at("2026-11-30T10:00:00")
        db.acquire_lease(ISSUE, "me", stale_after=60)
        assert db.claim(ISSUE, "b4", ["pending@example.com"], "me") == {"pending@example.com"}
        assert db.claim_times(ISSUE)["b4"] == utc("2026-11-30T10:00:00")
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == LATEST
    SQLiteLedger(path, readonly=True).close()  # upgraded: readers open it again


def test_a_newer_postgres_schema_is_refused(pg_url):
    PostgresLedger(pg_url).close()
    with PostgresLedger(pg_url) as db:
        raw(db, "INSERT INTO schema_version VALUES (?, 'later')", (LATEST + 1,))
    with pytest.raises(LedgerError, match="newer than this newsletter knows"):
        PostgresLedger(pg_url)


def test_both_dialects_share_one_list_of_versions_and_differ_only_where_noted():
    assert [n for n, _, _ in steps("postgresql")] == [n for n, _, _ in steps("sqlite")] == list(range(1, LATEST + 1))
    for (n, about, lite), (_, about_pg, pg) in zip(steps("sqlite"), steps("postgresql")):
        assert about == about_pg and (pg == lite) == (n not in POSTGRES_VARIANTS)


def test_a_version_1_postgres_ledger_is_upgraded_keeping_every_row(pg_url, monkeypatch):
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as admin:
        for statement in steps("postgresql")[0][2].split(";"):
            if statement.strip():
                admin.execute(statement)
        admin.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        admin.execute("INSERT INTO schema_version VALUES (1, 'then')")
        admin.execute("INSERT INTO issues VALUES (%s, 'h1', 'Hi', '', 2, '2026-11-30T08:00:00+00:00')", (ISSUE,))
        admin.execute("INSERT INTO deliveries (issue_id, email, state, batch_id, updated_at) VALUES "
                      "(%(i)s, 'sending@example.com', 'sending', 'b2', 'x'), (%(i)s, 'pending@example.com', "
                      "'pending', '', 'x')", {"i": ISSUE})
    with PostgresLedger(pg_url, readonly=True) as reader:  # status, --dry-run: upgraded in a transaction never committed
        assert reader.migrated_from == 1 and reader.lookup(ISSUE, ["pending@example.com"]) == {
            "pending@example.com": ("pending", False)}
        assert reader.claim_times(ISSUE) == {"b2": utc("2026-11-30T08:00:00")}
        # The upgraded view exists on one connection only: another thread reads it there too.
        from_a_thread = []
        thread = threading.Thread(target=lambda: from_a_thread.append(reader.claim_times(ISSUE)))
        thread.start()
        thread.join()
        assert from_a_thread == [{"b2": utc("2026-11-30T08:00:00")}]
    with psycopg.connect(pg_url) as look:  # the shared database was left as it was
        assert look.execute("SELECT max(version) FROM schema_version").fetchone() == (1,)
        assert look.execute("SELECT to_regclass('notices')").fetchone() == (None,)
    with PostgresLedger(pg_url) as db:
        assert db.schema_version() == LATEST
        assert db.claim_times(ISSUE) == {"b2": utc("2026-11-30T08:00:00")}
        assert db.counts(ISSUE)["pending"] == 1 and db.issue(ISSUE).provider == ""
        assert db.mark_noticed(ISSUE, "too-old") and not db.mark_noticed(ISSUE, "too-old")
    PostgresLedger(pg_url, readonly=True).close()


def test_a_version_7_postgres_ledger_gets_its_storage_steps_and_a_reader_takes_no_lock_for_them(pg_url):
    import psycopg

    indexes = "SELECT indexname FROM pg_indexes WHERE tablename = 'deliveries' ORDER BY indexname"
    PostgresLedger(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as admin:  # as version 7 left it
        admin.execute("ALTER TABLE deliveries RESET (fillfactor)")
        admin.execute("CREATE INDEX deliveries_by_state ON deliveries(issue_id, state)")
        admin.execute("CREATE INDEX deliveries_by_batch ON deliveries(issue_id, batch_id)")
        admin.execute("ALTER TABLE issues DROP COLUMN cancelled_at")
        admin.execute("DELETE FROM schema_version WHERE version > 7")
    with PostgresLedger(pg_url, readonly=True) as reader:  # status, --dry-run on the older schema
        assert reader.migrated_from == 7 and reader.counts(ISSUE)["pending"] == 0
        with psycopg.connect(pg_url, autocommit=True) as other:  # a planner's ANALYZE, a reader: not held up
            other.execute("SET lock_timeout = '5s'")
            other.execute("ANALYZE deliveries")
            assert other.execute("SELECT count(*) FROM deliveries").fetchone() == (0,)
            assert len(other.execute(indexes).fetchall()) == 4  # nothing dropped for a look
    with PostgresLedger(pg_url) as db:
        assert db.schema_version() == LATEST
        assert db._read("SELECT reloptions FROM pg_class WHERE relname = 'deliveries'") == [(["fillfactor=40"],)]
        assert [name for (name,) in db._read(indexes)] == ["deliveries_issue_id_email_key", "deliveries_pkey"]


def test_processes_migrating_a_fresh_postgres_database_at_once_all_wait_their_turn(pg_cluster, pg_url):
    context = multiprocessing.get_context("spawn")
    failures = []
    for round_ in range(3):
        url = pg_url if round_ == 0 else pg_cluster[0].new_database()
        failures += _three_open_at_once(context, PostgresLedger, url)
        with PostgresLedger(url) as db:
            assert db._read("SELECT version FROM schema_version ORDER BY version") == [
                (n,) for n in range(1, LATEST + 1)]
    assert failures == []


def _claim_all(where, batch, emails, claimed) -> None:
    with open_at(where) as db:
        claimed.put(sorted(db.claim(ISSUE, batch, emails, "me")))


def test_claims_racing_for_the_same_rows_take_each_row_once(ledger, backend):
    emails = [f"r{n}@example.com" for n in range(300)]
    plan(ledger, *emails)
    context = multiprocessing.get_context("spawn")
    claimed = context.Queue()
    racers = [context.Process(target=_claim_all, args=(backend, f"b{n}", emails[n * 50:], claimed))
              for n in range(4)]  # overlapping batches
    for racer in racers:
        racer.start()
    taken = [claimed.get(timeout=60) for _ in racers]
    for racer in racers:
        racer.join(timeout=60)
    every = [e for batch in taken for e in batch]
    assert len(every) == len(set(every)) == 300
    assert ledger.counts(ISSUE)["sending"] == 300


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {LATEST + 1}")
    raw.close()
    with pytest.raises(LedgerError, match="newer than this newsletter knows"):
        SQLiteLedger(path)


def test_readonly_never_creates_the_file(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    with SQLiteLedger(path, readonly=True) as db:
        assert db.issues() == []
    assert not path.exists()


def test_open_ledger_resolves_relative_to_the_workspace(workspace):
    from newsletter.config import load

    settings = load(workspace / "newsletter.toml", env={})
    with open_ledger(settings) as db:
        assert db.url == str(workspace / ".newsletter" / "ledger.sqlite3")
    assert (workspace / ".newsletter" / "ledger.sqlite3").exists()


def test_open_ledger_selects_postgres_by_url(workspace, pg_url):
    from newsletter.config import load

    settings = load(workspace / "newsletter.toml", env={"NEWSLETTER_LEDGER_URL": pg_url})
    with open_ledger(settings) as db:
        assert isinstance(db, PostgresLedger) and db.url == pg_url
        assert db.schema_version() == LATEST
    assert not (workspace / ".newsletter" / "ledger.sqlite3").exists()


def test_open_ledger_refuses_a_url_it_cannot_use(workspace):
    from newsletter.config import load
    from newsletter.errors import ConfigError

    settings = load(workspace / "newsletter.toml", env={"NEWSLETTER_LEDGER_URL": "mysql://u:pw@h/db"})
    with pytest.raises(ConfigError, match=r"'mysql://u:\*\*\*\*@h/db' is neither a file path nor postgresql://"):
        open_ledger(settings)


def test_psycopg_is_imported_only_for_a_postgres_ledger(workspace):
    code = ("import sys; from pathlib import Path; from newsletter.config import load; from newsletter.ledger import open_ledger; "
            "open_ledger(load(Path('newsletter.toml'), env={})).close(); print('psycopg' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=workspace)
    assert done.stdout.strip() == "False"


def test_send_loop_statements_find_rows_by_index_and_never_scan_the_issue(sqlite_ledger):
    """Each statement of the send loop takes a whole batch: the planner, left to itself, scans every
    row of the issue once per address. The statements pin their plans; this keeps them pinned."""
    ledger = sqlite_ledger
    plan(ledger, *[f"r{n}@example.com" for n in range(50)])
    statements: list[str] = []
    for connection in {ledger._db, ledger._lookups}:
        connection.set_trace_callback(statements.append)
    batch = [f"r{n}@example.com" for n in range(10)]
    ledger.lookup(ISSUE, batch)
    ledger.claim(ISSUE, "b1", batch, "me")
    ledger.record(ISSUE, "b1", [Outcome(e, "sent", provider_id="x", suppress=True) for e in batch], source="t")
    ledger.claim(ISSUE, "b2", ["r30@example.com", "r31@example.com"], "me")
    ledger.record(ISSUE, "b2", [Outcome(e, "sent", provider_id="one id") for e in ("r30@example.com",
                                                                                  "r31@example.com")], source="t")
    ledger.skip(ISSUE, [("r20@example.com", "gone")])
    ledger.fail(ISSUE, [("r21@example.com", "bad data")])
    for connection in {ledger._db, ledger._lookups}:
        connection.set_trace_callback(None)
    checked = [sql for sql in statements if sql.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH", "INSERT"))]
    assert len(checked) >= 8
    for sql in checked:
        details = [row[3] for row in ledger._db.execute("EXPLAIN QUERY PLAN " + sql)]
        # a scan of the table, or of the issue's rows through an index on issue_id alone
        issue_scan = re.compile(r"\bSCAN (deliveries|d)\b|\b(deliveries|d) USING .*INDEX \w+ \(issue_id=\?\)")
        assert not any(issue_scan.search(d) for d in details), (sql, details)
    assert state(ledger, "r1@example.com").state == "sent" and ledger.is_suppressed("r1@example.com")
    assert (state(ledger, "r20@example.com").state, state(ledger, "r21@example.com").state) == ("skipped", "failed")
    assert (state(ledger, "r31@example.com").state, state(ledger, "r31@example.com").provider_id) == ("sent", "one id")


def test_the_send_loops_claim_and_record_are_one_statement_each_on_sqlite(sqlite_ledger):
    """Each step of SQLite's gives up the GIL and, holding the ledger's lock, waits to get it back: a batch's
    claim and record are one statement each, in autocommit, with no BEGIN and COMMIT around it. A record
    that writes suppressions with the states stays one transaction of two statements."""
    ledger = sqlite_ledger
    emails = [f"r{n}@example.com" for n in range(6)]
    plan(ledger, *emails)
    found = ledger.lookup_rows(ISSUE, emails)
    rows = [found[email].id for email in emails]

    def statements(action) -> list[str]:
        seen: list[str] = []
        ledger._db.set_trace_callback(seen.append)
        try:
            action()
        finally:
            ledger._db.set_trace_callback(None)
        return [sql.split()[0].upper() for sql in seen]

    assert statements(lambda: ledger.claim_rows(ISSUE, "b1", rows, "me")) == ["UPDATE"]
    assert statements(lambda: ledger.record_rows(ISSUE, "b1", rows[:2], [Outcome(e, "sent", "one id")
                                                                         for e in emails[:2]],
                                                 source="t")) == ["UPDATE"]
    assert statements(lambda: ledger.record_rows(ISSUE, "b1", rows[2:4], [
        Outcome(emails[2], "sent", "id-2"), Outcome(emails[3], "failed", reason="bounced")], source="t")) == ["UPDATE"]
    assert statements(lambda: ledger.record_rows(ISSUE, "b1", rows[4:], [
        Outcome(emails[4], "sent", "id-4"), Outcome(emails[5], "failed", reason="complained", suppress=True)],
        source="t")) == ["BEGIN", "UPDATE", "INSERT", "COMMIT"]
    assert [state(ledger, e).state for e in emails] == ["sent", "sent", "sent", "failed", "sent", "failed"]
    assert ledger.is_suppressed(emails[5]) and not ledger.is_suppressed(emails[3])


def test_quiescent_keeps_every_other_thread_out_of_sqlite_until_it_ends(sqlite_ledger):
    """A fork while another thread is inside SQLite could leave the child a mutex locked for good: the
    send forks its feed while this is held (sending/feedprocess.py)."""
    plan(sqlite_ledger, "a@example.com")
    finished = {name: threading.Event() for name in ("write", "look-up")}
    calls = {"write": lambda: sqlite_ledger.heartbeat(ISSUE, "me"),
             "look-up": lambda: sqlite_ledger.lookup_rows(ISSUE, ["a@example.com"])}
    with sqlite_ledger.quiescent():
        threads = [threading.Thread(target=lambda n=name: (calls[n](), finished[n].set())) for name in calls]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        assert not any(event.is_set() for event in finished.values())
    for thread in threads:
        thread.join(10)
    assert all(event.is_set() for event in finished.values())
