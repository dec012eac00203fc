"""A ledger an older newsletter wrote (schema 2, tests/fixtures/ledgers/README.md) opens and migrates to
schema 3: each issue is bound to the provider its rows prove, or ``unknown`` (docs/sending.md)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from newsletter.errors import LedgerError
from newsletter.ledger.migrations import LATEST
from newsletter.ledger.sqlite import SQLiteLedger

FIXTURE = Path(__file__).parent / "fixtures" / "ledgers" / "v2-outbox-postmark-mailgun.sqlite3"
EXPECTED = {"2026-11-30-weekly": ("outbox", ""), "2026-12-07-postmark": ("unknown", ""),
            "2026-12-14-mailgun": ("mailgun", "mg.example.com"), "2026-12-21-mixed": ("unknown", "")}


@pytest.fixture
def old_ledger(workspace) -> Path:
    path = workspace / ".newsletter" / "ledger.sqlite3"
    path.parent.mkdir()
    shutil.copy(FIXTURE, path)
    return path


def rows(path: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_the_fixture_is_what_the_older_version_wrote():
    assert rows(FIXTURE, "PRAGMA user_version") == [(2,)]
    assert "provider" not in [c[1] for c in rows(FIXTURE, "PRAGMA table_info(issues)")]


def test_an_older_ledger_migrates_and_keeps_every_row(old_ledger):
    deliveries = rows(old_ledger, "SELECT * FROM deliveries ORDER BY id")
    suppressions = rows(old_ledger, "SELECT email, reason, source, created_at FROM suppressions")
    with SQLiteLedger(old_ledger) as ledger:
        assert {r.issue_id: (r.provider, r.provider_scope) for r in ledger.issues()} == EXPECTED
        assert ledger.counts("2026-12-07-postmark")["pending"] == 2
    assert rows(old_ledger, "PRAGMA user_version") == [(LATEST,)]
    assert rows(old_ledger, "SELECT * FROM deliveries ORDER BY id") == deliveries
    assert rows(old_ledger, "SELECT email, reason, source, created_at FROM suppressions") == suppressions


def test_a_read_only_open_migrates_a_copy_in_memory_and_leaves_the_file(old_ledger):
    with SQLiteLedger(old_ledger, readonly=True) as ledger:
        assert {r.issue_id: (r.provider, r.provider_scope) for r in ledger.issues()} == EXPECTED
    assert rows(old_ledger, "PRAGMA user_version") == [(2,)]


def test_a_plan_nothing_left_is_not_bound_and_one_in_doubt_is_unknown(tmp_path):
    """Rows without a provider id: nothing ever left (not bound), or a run died mid-batch (unknown)."""
    path = tmp_path / "old.sqlite3"
    shutil.copy(FIXTURE, path)
    db = sqlite3.connect(path)
    db.executescript("""
        INSERT INTO issues VALUES ('quiet', 'h', 's', '', 2, '2026-12-01T00:00:00+00:00');
        INSERT INTO deliveries (issue_id, email, state, updated_at) VALUES
            ('quiet', 'a@example.com', 'pending', 'x'), ('quiet', 'b@example.com', 'failed', 'x');
        INSERT INTO issues VALUES ('died', 'h', 's', '', 2, '2026-12-01T00:00:00+00:00');
        INSERT INTO deliveries (issue_id, email, state, batch_id, provider_id, updated_at) VALUES
            ('died', 'a@example.com', 'sent', 'b1', 'a@example.com--b1.eml', 'x'),
            ('died', 'b@example.com', 'sending', 'b2', '', 'x');
        INSERT INTO issues VALUES ('empty', 'h', 's', '', 0, '2026-12-01T00:00:00+00:00');
    """)
    db.close()
    with SQLiteLedger(path) as ledger:
        found = {r.issue_id: r.provider for r in ledger.issues()}
    assert (found["quiet"], found["died"], found["empty"]) == ("", "unknown", "")


def test_drop_plan_keeps_a_real_plan_and_needs_the_lease(old_ledger):
    with SQLiteLedger(old_ledger) as ledger:
        ledger.acquire_lease("2026-12-14-mailgun", "me", stale_after=60)
        with pytest.raises(LedgerError, match="was sent through mailgun, not only outbox"):
            ledger.drop_plan("2026-12-14-mailgun", "me", only_provider="outbox")
        with pytest.raises(LedgerError, match="no longer holds"):
            ledger.drop_plan("2026-11-30-weekly", "me", only_provider="outbox")
        ledger.acquire_lease("2026-11-30-weekly", "me", stale_after=60)
        assert ledger.drop_plan("2026-11-30-weekly", "me", only_provider="outbox") == 4
        assert ledger.issue("2026-11-30-weekly") is None and ledger.counts("2026-11-30-weekly")["sent"] == 0
        assert ledger.issue("2026-12-14-mailgun") is not None
        assert [s.email for s in ledger.suppressions()] == ["linus@example.net"]


def test_bind_provider_binds_only_an_unbound_or_unknown_plan(old_ledger):
    with SQLiteLedger(old_ledger) as ledger:
        assert ledger.bind_provider("2026-12-14-mailgun", "postmark", "broadcast") is False
        assert ledger.bind_provider("2026-12-07-postmark", "postmark", "broadcast") is True
        assert (ledger.issue("2026-12-07-postmark").provider, ledger.issue("2026-12-14-mailgun").provider) == \
            ("postmark", "mailgun")


# -- the migrated ledger through the CLI ---------------------------------------------------------
SECRET = {"NEWSLETTER_SECRET": "fixture-secret"}


def add_issue(workspace: Path, issue_id: str) -> None:
    text = (workspace / "issues" / "2026-11-30-weekly.md").read_text()
    (workspace / "issues" / f"{issue_id}.md").write_text(text.replace("date: 2026-11-30", f"date: {issue_id[:10]}"))


def test_status_of_a_migrated_ledger_shows_each_provider(run, old_ledger):
    table = run("status").stdout.splitlines()
    assert [line.split()[0::8] for line in table] == [
        ["issue", "provider"], ["2026-11-30-weekly", "outbox"], ["2026-12-07-postmark", "unknown"],
        ["2026-12-14-mailgun", "mailgun:mg.example.com"], ["2026-12-21-mixed", "unknown"]]
    assert ("provider: unknown (recorded by an older newsletter; the next send asks which provider it was)"
            in run("status", "2026-12-07-postmark").stdout)


def test_an_unknown_plan_is_refused_without_a_terminal_and_sent_on_once_confirmed(run, workspace, old_ledger,
                                                                                monkeypatch):
    add_issue(workspace, "2026-12-07-postmark")
    before = rows(old_ledger, "SELECT * FROM deliveries ORDER BY id")
    refused = run("send", "2026-12-07-postmark", "--yes", env=SECRET)
    assert refused.exit_code == 1
    assert refused.stderr == (
        "Error: the ledger does not record which provider sent issue 2026-12-07-postmark (an older newsletter "
        "wrote it: 2 pending, 2 sent); nothing was sent or changed (run `newsletter send 2026-12-07-postmark` on "
        "a terminal and confirm that they went through outbox, or switch to the provider that sent them)\n")
    restart = run("send", "2026-12-07-postmark", "--restart", "--yes", env=SECRET)
    assert restart.exit_code == 1 and "a real provider may have sent them (2 pending, 2 sent)" in restart.stderr
    assert rows(old_ledger, "SELECT * FROM deliveries ORDER BY id") == before

    monkeypatch.setattr("newsletter.cli.send._interactive", lambda: True)
    declined = run("send", "2026-12-07-postmark", env=SECRET, input="n\n")
    assert declined.exit_code == 1
    assert "Did those go through outbox?" in declined.output
    assert "earlier copies did not go through outbox" in declined.stderr
    assert rows(old_ledger, "SELECT * FROM deliveries ORDER BY id") == before
    with SQLiteLedger(old_ledger, readonly=True) as ledger:  # refused before anything was written
        assert ledger.issue("2026-12-07-postmark").provider == "unknown"

    confirmed = run("send", "2026-12-07-postmark", env=SECRET, input="y\ny\ny\n")  # provider, content, send
    assert confirmed.exit_code == 0, confirmed.output + confirmed.stderr
    assert rows(old_ledger, "SELECT provider FROM issues WHERE issue_id = '2026-12-07-postmark'") == [("outbox",)]
    assert rows(old_ledger, "SELECT count(*) FROM deliveries WHERE issue_id = '2026-12-07-postmark' "
                            "AND state IN ('pending', 'sending')") == [(0,)]  # the rest went on once confirmed


def test_the_migrated_outbox_trial_refuses_postmark_and_restarts(run, workspace, old_ledger):
    """The outbox issue of the old ledger is the trial of the issue: Postmark is refused, --restart works."""
    env = {"NEWSLETTER_PROVIDER_NAME": "mailgun", "NEWSLETTER_PROVIDER_DOMAIN": "mg.example.com",
           "NEWSLETTER_API_KEY": "k", **SECRET}
    before = rows(old_ledger, "SELECT * FROM deliveries ORDER BY id")
    refused = run("send", "2026-11-30-weekly", "--yes", env=env)
    assert refused.exit_code == 1
    assert "was first sent through outbox; this run would send through mailgun (domain mg.example.com)" in \
        refused.stderr and "`newsletter send 2026-11-30-weekly --restart`" in refused.stderr
    assert rows(old_ledger, "SELECT * FROM deliveries ORDER BY id") == before
