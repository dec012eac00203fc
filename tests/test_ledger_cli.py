"""``newsletter ledger migrate/info/copy`` through the CLI, against a SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import pytest

from newsletter.ledger.base import STATES
from newsletter.ledger.migrations import LATEST
from newsletter.ledger.postgres import PostgresLedger
from newsletter.ledger.sqlite import SQLiteLedger
from newsletter.models import Outcome

ISSUE = "2026-11-30-weekly"


def pg_env(url: str) -> dict[str, str]:
    return {"NEWSLETTER_LEDGER_URL": url}


def fill(db) -> None:
    """A ledger mid-send: rows in every state, suppressions (one from a link), a notice, a second issue."""
    db.add_suppression("gone@example.com", "bounced at postmark (hard)", source="postmark")
    db.add_suppression("left@example.com", "unsubscribed", source="link", issue_id=ISSUE)
    db.acquire_lease(ISSUE, "me", stale_after=60)
    db.create_plan(ISSUE, content_hash="h1", subject="Hi", segment="", provider="postmark",
                   emails=[f"r{n}@example.com" for n in range(8)] + ["gone@example.com"])
    db.claim(ISSUE, "b1", ["r0@example.com", "r1@example.com", "r2@example.com", "r3@example.com"], "me")
    db.record(ISSUE, "b1", [Outcome("r0@example.com", "sent", provider_id="pm-0"),
                            Outcome("r1@example.com", "failed", reason="invalid"),
                            Outcome("r2@example.com", "unknown", reason="timeout")], source="postmark")
    db.claim(ISSUE, "b2", ["r4@example.com"], "me")  # left `sending`: in doubt
    db.skip(ISSUE, [("r5@example.com", "unsubscribed")])
    db.release_lease(ISSUE, "me")
    db.mark_noticed(ISSUE, "too-old:2026-11-30")
    db.create_plan("2026-12-07-next", content_hash="h2", subject="Next", segment="vip", emails=["r0@example.com"])


def snapshot(db) -> tuple:
    """Everything a ledger holds that `copy` moves, through the ledger interface."""
    return (db.issues(),
            {i.issue_id: db.rows(i.issue_id, STATES) for i in db.issues()},
            {i.issue_id: db.claim_times(i.issue_id, "sending") for i in db.issues()},
            db.suppressions(), db.mark_noticed(ISSUE, "too-old:2026-11-30"))


def test_migrate_creates_then_has_nothing_to_do_on_postgres(run, pg_url):
    first = run("ledger", "migrate", env=pg_env(pg_url))
    assert first.exit_code == 0 and f"postgresql ledger upgraded from schema version 0 to {LATEST}" in first.output
    again = run("ledger", "migrate", env=pg_env(pg_url))
    assert again.exit_code == 0 and f"at schema version {LATEST}: nothing to do" in again.output
    with PostgresLedger(pg_url, readonly=True) as db:
        assert db.schema_version() == LATEST


def test_migrate_on_sqlite(run, workspace):
    result = run("ledger", "migrate")
    assert result.exit_code == 0 and f"from schema version 0 to {LATEST}" in result.output
    assert (workspace / ".newsletter" / "ledger.sqlite3").exists()


def test_info_shows_backend_version_and_counts_and_never_the_password(run, pg_url):
    with PostgresLedger(pg_url) as db:
        fill(db)
    with_password = pg_url.replace("postgres@", "postgres:s3cretpw@")  # the test server trusts any password
    result = run("ledger", "info", env=pg_env(with_password))
    assert result.exit_code == 0, result.output
    assert "backend:       postgresql" in result.output and f"schema:        version {LATEST}" in result.output
    assert "issues:        2" in result.output and "suppressions:  2" in result.output
    assert "deliveries:    9" in result.output
    assert "s3cretpw" not in result.output and "postgres:****@" in result.output


def test_info_on_an_unmigrated_postgres_database_says_so_and_leaves_it_alone(run, pg_url):
    result = run("ledger", "info", env=pg_env(pg_url))
    assert result.exit_code == 0, result.output
    assert f"schema:        version 0 (this newsletter uses {LATEST}: run `newsletter ledger migrate`)" \
        in result.output and "issues:        0" in result.output
    with PostgresLedger(pg_url) as db:
        assert db.migrated_from == 0  # info created nothing


def test_copy_sqlite_to_postgres_and_back_is_exact_and_refuses_a_non_empty_target(run, workspace, pg_url):
    with SQLiteLedger(workspace / ".newsletter" / "ledger.sqlite3") as db:
        fill(db)
        before = snapshot(db)
    result = run("ledger", "copy", "--to", pg_url)
    assert result.exit_code == 0, result.output
    assert "2 issues, 9 deliveries, 2 suppressions, 1 notice\n" in result.output  # one of a kind: singular
    with PostgresLedger(pg_url) as db:
        assert snapshot(db) == before
    again = run("ledger", "copy", "--to", pg_url)
    assert again.exit_code != 0 and "the target ledger is not empty; nothing was copied" in again.output
    merged = run("ledger", "copy", "--to", pg_url, "--merge")
    assert merged.exit_code == 0 and "0 issues, 0 deliveries, 0 suppressions, 0 notices" in merged.output
    back = run("ledger", "copy", "--to", "back.sqlite3", env=pg_env(pg_url))
    assert back.exit_code == 0, back.output
    with SQLiteLedger(workspace / "back.sqlite3") as db:
        assert snapshot(db) == before


def test_copy_merge_adds_what_the_target_lacks_and_keeps_what_it_has(run, workspace, pg_url):
    with SQLiteLedger(workspace / ".newsletter" / "ledger.sqlite3") as db:
        fill(db)
    with PostgresLedger(pg_url) as db:
        db.add_suppression("gone@example.com", "added by hand", source="manual")
        db.acquire_lease(ISSUE, "me", stale_after=60)
        db.create_plan(ISSUE, content_hash="h1", subject="Hi", segment="", emails=[
            "r0@example.com", "r6@example.com", "extra@example.com", "r7@example.com"])
        db.claim(ISSUE, "t1", ["r6@example.com"], "me")
        db.record(ISSUE, "t1", [Outcome("r6@example.com", "sent", provider_id="pg-6")], source="postmark")
        db.release_lease(ISSUE, "me")
        db.erase_address("r7@example.com")  # erased here: a copy must not bring the address back
    result = run("ledger", "copy", "--to", pg_url, "--merge")
    assert result.exit_code == 0, result.output
    with PostgresLedger(pg_url) as db:
        rows = {r.email: (r.state, r.provider_id) for r in db.rows(ISSUE, STATES)}
        # Sent through the source while pending here: brought forward, or the next run here sends it again.
        assert rows["r0@example.com"] == ("sent", "pm-0")
        assert rows["r6@example.com"] == ("sent", "pg-6")  # further along here than in the source: kept
        assert rows["extra@example.com"] == ("pending", "")  # only here: kept
        assert rows["r4@example.com"][0] == "sending" and rows["r1@example.com"][0] == "failed"  # added
        assert "r7@example.com" not in rows and any(e.startswith("sha256:") for e in rows)
        assert db.issue(ISSUE).planned == len(rows) == 9
        assert {s.email: s.source for s in db.suppressions()} == {"gone@example.com": "manual",
                                                                   "left@example.com": "link"}


def test_copy_merge_into_sqlite_brings_a_pending_row_forward_and_keeps_an_erasure(run, workspace):
    with SQLiteLedger(workspace / ".newsletter" / "ledger.sqlite3") as db:
        fill(db)
    with SQLiteLedger(workspace / "other.sqlite3") as db:
        db.create_plan(ISSUE, content_hash="h1", subject="Hi", segment="", emails=["r0@example.com",
                                                                                    "r7@example.com"])
        db.erase_address("r7@example.com")
    assert run("ledger", "copy", "--to", "other.sqlite3", "--merge").exit_code == 0
    with SQLiteLedger(workspace / "other.sqlite3") as db:
        rows = {r.email: r.state for r in db.rows(ISSUE, STATES)}
        assert rows["r0@example.com"] == "sent" and "r7@example.com" not in rows
        assert db.issue(ISSUE).planned == len(rows) == 8


def test_copy_refuses_a_url_whose_scheme_is_not_postgresql(run, workspace):
    result = run("ledger", "copy", "--to", "postgresq://newsletter@db.example.com/newsletter")
    assert result.exit_code == 1 and "is neither postgresql:// nor a file path; nothing was copied" in result.output
    assert not (workspace / "postgresq:").exists()


def test_copy_refuses_a_password_in_the_target_url(run, pg_url):
    result = run("ledger", "copy", "--to", pg_url.replace("postgres@", "postgres:pw@"))
    assert result.exit_code != 0 and "--to contains a password" in result.output
    assert "pw@" not in result.output.replace("password", "")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_copy_into_itself_is_refused(run, workspace, pg_url, backend):
    env = pg_env(pg_url) if backend == "postgresql" else {}
    target = pg_url if backend == "postgresql" else str(workspace / ".newsletter" / "ledger.sqlite3")
    run("ledger", "migrate", env=env)
    result = run("ledger", "copy", "--to", target, "--merge", env=env)
    assert result.exit_code != 0 and "the target is the ledger being copied" in result.output


def test_info_before_the_first_send_says_the_ledger_is_not_made_yet(run, workspace):
    result = run("ledger", "info")
    assert result.exit_code == 0, result.output
    assert (f"schema:        none yet (the first `newsletter send` creates version {LATEST}; `newsletter ledger "
            "migrate` does it now)") in result.output
    assert not (workspace / ".newsletter" / "ledger.sqlite3").exists()  # info created nothing


def test_a_role_without_rights_gets_what_to_grant_not_a_traceback(run, pg_url):
    import psycopg

    with PostgresLedger(pg_url) as db:
        fill(db)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS norights")
        admin.execute("CREATE ROLE norights LOGIN")
        admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    url = pg_url.replace("postgres@", "norights@")
    for command in (["status"], ["ledger", "info"], ["suppressions", "list"]):
        result = run(*command, env=pg_env(url))
        assert result.exit_code == 1, (command, result.output)
        assert "the PostgreSQL ledger refused this role: permission denied for table" in result.output
        assert "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO this role" in result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1

    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("DROP SCHEMA public CASCADE")
        admin.execute("CREATE SCHEMA public")
        admin.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")  # as PostgreSQL 15 makes a database's own
    result = run("ledger", "migrate", env=pg_env(url))
    assert result.exit_code == 1 and "refused this role: permission denied for schema public" in result.output
    assert "run `newsletter ledger migrate` once as that role" in result.output


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_copy_is_refused_while_a_send_runs_and_copies_nothing(run, workspace, pg_url, backend):
    env = pg_env(pg_url) if backend == "postgresql" else {}
    source = PostgresLedger(pg_url) if backend == "postgresql" else SQLiteLedger(
        workspace / ".newsletter" / "ledger.sqlite3")
    with source as db:
        fill(db)
        db.acquire_lease(ISSUE, "a-live-run", stale_after=60)  # this very process: alive, heartbeat fresh
        result = run("ledger", "copy", "--to", "copy.sqlite3", env=env)
        assert result.exit_code == 1 and f"a send is running on issue {ISSUE} (pid " in result.output
        assert "nothing was copied" in result.output and not (workspace / "copy.sqlite3").exists()
        db.release_lease(ISSUE, "a-live-run")
    assert run("ledger", "copy", "--to", "copy.sqlite3", env=env).exit_code == 0
