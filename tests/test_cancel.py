"""`newsletter cancel`: a send stopped for good. Nobody who has not got the issue gets it afterwards, from
`send`, `dispatch` or a killed run's batch; who got it stays sent; a renamed issue file says how to go on."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

from newsletter.ledger.sqlite import SQLiteLedger
from sendkill import outbox_deliveries

ISSUE = "2026-11-30-weekly"
SECRET = {"NEWSLETTER_SECRET": "test-secret"}


def due_now(workspace) -> None:
    path = workspace / "issues" / f"{ISSUE}.md"
    when = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat(timespec="seconds")
    path.write_text(path.read_text().replace("date: 2026-11-30\n", f"date: 2026-11-30\nsend_at: {when}\n", 1))


def ledger_at(workspace) -> SQLiteLedger:
    return SQLiteLedger(workspace / ".newsletter" / "ledger.sqlite3")


def test_a_cancelled_send_sends_nobody_more_from_send_or_dispatch(run, workspace):
    due_now(workspace)
    assert run("send", ISSUE, "--yes", "--limit", "1", env=SECRET).exit_code == 4
    first = sorted(outbox_deliveries(workspace, ISSUE))
    result = run("cancel", ISSUE, "--yes", env=SECRET)
    assert result.exit_code == 0, result.output
    assert f"{ISSUE}: cancelled. Sent before: 1. Skipped now: 3" in result.output

    result = run("send", ISSUE, "--yes", "--include-new", env=SECRET)
    assert result.exit_code == 1 and f"issue {ISSUE} was cancelled at " in result.output
    result = run("dispatch", env=SECRET)
    assert result.exit_code == 0 and result.output == ""  # finished, so quiet
    assert sorted(outbox_deliveries(workspace, ISSUE)) == first  # nobody more

    status = run("status", ISSUE, "--skipped")
    assert re.search(r"cancelled at \S+ \(`newsletter cancel`\): nobody more is sent it", status.output)
    assert status.output.count("cancelled (newsletter cancel)") == 3
    assert json.loads(run("status", ISSUE, "--json").output)["cancelled_at"]
    again = run("cancel", ISSUE, "--yes")
    assert again.exit_code == 0 and "cancelled already" in again.output


def test_a_killed_runs_batch_in_flight_becomes_unknown_not_sent_again(run, workspace):
    assert run("send", ISSUE, "--yes", "--limit", "1", env=SECRET).exit_code == 4
    with ledger_at(workspace) as ledger:  # a run killed after its claim: its batch is in doubt
        ledger.acquire_lease(ISSUE, "dead-run", stale_after=60)
        pending = [r.email for r in ledger.rows(ISSUE, ("pending",))]
        ledger.claim(ISSUE, "b-dead", pending[:1], "dead-run")
        ledger.release_lease(ISSUE, "dead-run")
    result = run("cancel", ISSUE, "--yes")
    assert result.exit_code == 0 and "Skipped now: 2" in result.output
    assert "1 reader(s) of batches a killed run left in flight are unknown now" in result.output
    with ledger_at(workspace) as ledger:
        assert ledger.counts(ISSUE) == {"pending": 0, "sending": 0, "sent": 1, "failed": 0, "unknown": 1,
                                        "skipped": 2}
    assert run("send", ISSUE, "--yes", "--resend-unknown", env=SECRET).exit_code == 1
    assert len(outbox_deliveries(workspace, ISSUE)) == 1
    verbose = run("-v", "dispatch", env=SECRET)
    assert verbose.exit_code == 0 and re.search(
        rf"{ISSUE}: cancelled; 1 recipient\(s\) in doubt: `newsletter reconcile {ISSUE}` asks the provider",
        verbose.stderr)


def test_cancel_without_a_terminal_needs_yes_and_changes_nothing(run, workspace):
    assert run("send", ISSUE, "--yes", "--limit", "1", env=SECRET).exit_code == 4
    result = run("cancel", ISSUE)
    assert result.exit_code == 1 and "pass --yes" in result.output
    with ledger_at(workspace) as ledger:
        assert ledger.counts(ISSUE)["pending"] == 3 and ledger.issue(ISSUE).cancelled_at == ""


def test_cancel_of_an_issue_never_sent_says_there_is_nothing_to_cancel(run, workspace):
    result = run("cancel", ISSUE, "--yes")
    assert result.exit_code == 1 and "has not been sent: there is no send to cancel" in result.output
    assert "remove `send_at`" in result.output
    result = run("cancel", "no-such-issue", "--yes")
    assert result.exit_code == 1 and "no such issue 'no-such-issue'" in result.output


def test_cancel_while_a_send_runs_exits_75_and_changes_nothing(run, workspace):
    assert run("send", ISSUE, "--yes", "--limit", "1", env=SECRET).exit_code == 4
    with ledger_at(workspace) as ledger:
        ledger.acquire_lease(ISSUE, "a-live-run", stale_after=60)  # this very process: alive
        result = run("cancel", ISSUE, "--yes")
        assert result.exit_code == 75 and "another run is sending issue" in result.output
        assert ledger.counts(ISSUE)["pending"] == 3 and ledger.issue(ISSUE).cancelled_at == ""


def test_dispatch_says_how_to_go_on_when_an_unfinished_issues_file_is_renamed(run, workspace):
    assert run("send", ISSUE, "--yes", "--limit", "1", env=SECRET).exit_code == 4
    (workspace / "issues" / f"{ISSUE}.md").rename(workspace / "issues" / "renamed.md")
    result = run("dispatch", env=SECRET)
    assert result.exit_code == 1
    assert f"{ISSUE}: its send is unfinished, but no file in issues/ is this issue any more" in result.output
    assert f"add `id: {ISSUE}` to the renamed file's front matter" in result.output
    assert f"run `newsletter cancel {ISSUE}`" in result.output
    [record] = json.loads(run("dispatch", "--json", env=SECRET).stdout)
    assert (record["issue"], record["exit_code"]) == (ISSUE, 1) and "newsletter cancel" in record["error"]
    assert len(outbox_deliveries(workspace, ISSUE)) == 1

    assert run("cancel", ISSUE, "--yes").exit_code == 0  # by its id: the file is gone
    result = run("dispatch", env=SECRET)
    assert result.exit_code == 0 and result.output == ""
    assert len(outbox_deliveries(workspace, ISSUE)) == 1
