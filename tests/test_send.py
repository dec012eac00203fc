"""`newsletter send`, `status` and `suppressions` through the CLI, in a copy of the example workspace."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest

from newsletter.errors import AuthError, NoAnswer, NotAccepted, RecipientError
from newsletter.ledger import postgres as ledger_postgres
from newsletter.ledger import sqlite as ledger_sqlite
from newsletter.models import Outcome
from newsletter.providers import ADAPTERS
from newsletter.providers.outbox import OutboxProvider
from newsletter.subscribers.reader import ListReader
from helpers import BOTH_LEDGERS, issue_status, ledger_tables, reserve_by_address, workspace_ledger

ISSUE = "2026-11-30-weekly"
SECRET = {"NEWSLETTER_SECRET": "test-secret"}
SUBSCRIBED = ["ada@example.com", "grace@example.org", "linus@example.net", "margaret@example.com"]


def delivered(workspace) -> list[str]:
    folder = workspace / "outbox" / ISSUE
    return sorted(p.name.rsplit("--", 1)[0] for p in folder.glob("*.eml")) if folder.exists() else []


def status(run) -> dict:
    return issue_status(run, ISSUE)


def edit_list(workspace, old: str, new: str) -> None:
    path = workspace / "subscribers" / "subscribers.csv"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def ledger(workspace):
    return workspace_ledger(workspace)


# -- the happy path and its exits ----------------------------------------------------------
@BOTH_LEDGERS
def test_send_delivers_to_every_subscribed_reader_and_status_reports_it(run, workspace):
    result = run("send", ISSUE, "--yes", env=SECRET)
    assert result.exit_code == 0, result.stderr
    assert "Recipients: 4 (first run: the plan is frozen when the send starts)" in result.stdout
    assert f"{ISSUE}: sent 4 now. Totals: 4 sent, 0 failed, 0 unknown, 0 skipped, 0 pending, of 4 planned." \
        in result.stdout
    assert re.search(r"batch [0-9a-f]{16}: 4 sent in [\d.]+ s \[4/4\]", result.stderr)
    assert delivered(workspace) == SUBSCRIBED  # alan unsubscribed
    assert status(run) == {"issue": ISSUE, "total": 4, "pending": 0, "sending": 0, "sent": 4, "failed": 0,
                           "unknown": 0, "skipped": 0, "provider": "outbox"}
    again = run("send", ISSUE, "--yes", env=SECRET)
    assert again.exit_code == 0 and "sent 0 now" in again.stdout
    assert delivered(workspace) == SUBSCRIBED  # nobody twice


@pytest.fixture
def list_passes(monkeypatch) -> list[str]:
    """The list files read to the end, one entry a pass (reading the header alone, or stopping early as
    any() does, is no pass)."""
    passes: list[str] = []
    records = ListReader.records

    def counted(self, **kwargs):
        yield from records(self, **kwargs)
        passes.append(self.path.name)

    monkeypatch.setattr(ListReader, "records", counted)
    return passes


def test_a_send_walks_the_list_once_for_each_thing_it_needs_from_it(run, workspace, list_passes):
    """A pass over a long list is seconds of CPU, and several workers starting at once share the cores
    (benchmarks/scale.py). A first send checks the list, counts its summary, plans and sends: four passes,
    not the six it took when the read-only look before the provider checked and counted it too (the
    look only makes sure a segment's plan is not of nobody, stopping at the first reader); a resume
    checks, counts and sends."""
    assert run("send", ISSUE, "--yes", "--segment", "weekly", env=SECRET).exit_code == 0
    assert list_passes == ["subscribers.csv"] * 4
    list_passes.clear()
    assert run("send", ISSUE, "--yes", env=SECRET).exit_code == 0
    assert list_passes == ["subscribers.csv"] * 3


def test_a_list_edited_after_the_first_look_is_checked_again(run, workspace, monkeypatch):
    """The look before the provider is asked checks the list, and the run keeps that check only while the
    file is unchanged: a repeat added meanwhile (which only the check finds) is refused, not sent from."""
    def repeat_a_row(*args):
        edit_list(workspace, "alan@example.com,", "grace@example.org,Grace again,subscribed,weekly,,\nalan@example.com,")
        return []

    monkeypatch.setattr(OutboxProvider, "preflight", repeat_a_row)
    result = run("send", ISSUE, "--yes", env=SECRET)
    assert result.exit_code == 1
    assert "subscribers.csv:6: duplicate of line 3 (grace@example.org)" in result.stderr
    assert delivered(workspace) == []


def test_a_worker_leaves_a_colleagues_reservation_to_them(run, workspace, pg_url, monkeypatch, list_passes):
    """With several workers, plan rows still pending after a worker's walk are looked for in the list
    again (are they gone from it?), but not those another registered worker reserved: theirs to send,
    even if this worker's copy of the list lacks them. Its walk's end reads no second pass for them."""
    monkeypatch.setenv("NEWSLETTER_LEDGER_URL", pg_url)
    assert run("send", ISSUE, "--yes", "--limit", "1", env=SECRET).exit_code == 4  # the plan; ada sent
    edit_list(workspace, '"margaret@example.com","Margaret Hamilton, MIT",subscribed,weekly;founders,2026-05-02,Boston\n',
              "")  # not in this worker's copy
    with ledger_postgres.PostgresLedger(pg_url) as colleague:  # a live worker elsewhere, its chunk reserved
        colleague.acquire_lease(ISSUE, "colleague", stale_after=60)
        assert reserve_by_address(colleague, ISSUE, "colleague", ["margaret@example.com", "linus@example.net"]) == {
            "margaret@example.com", "linus@example.net"}
        list_passes.clear()
        result = run("send", ISSUE, "--yes", env=SECRET)
        assert result.exit_code == 0, result.stderr  # their rows are the colleague's unfinished business
        assert list_passes == ["subscribers.csv"] * 3  # check, summary, send: no pass after the walk
        assert delivered(workspace) == ["ada@example.com", "grace@example.org"]
        counts = colleague.counts(ISSUE)
        assert (counts["pending"], counts["skipped"]) == (2, 0)


def test_send_json_summary(run, workspace):
    result = run("send", ISSUE, "--yes", "--json", env=SECRET)
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert summary["exit_code"] == 0 and summary["sent_now"] == 4 and summary["sent"] == 4
    assert "Subject:" in result.stderr  # the human summary moved out of the way


def test_dry_run_writes_nothing_anywhere(run, workspace):
    result = run("send", ISSUE, "--dry-run", env=SECRET)
    assert result.exit_code == 0
    assert "Send now:   4" in result.stdout and "Dry run: nothing was sent or written." in result.stdout
    assert not (workspace / ".newsletter").exists() and not (workspace / "outbox").exists()


def test_without_a_terminal_and_without_yes_it_refuses(run, workspace):
    result = run("send", ISSUE, env=SECRET)
    assert result.exit_code == 1
    assert "Error: not sending without confirmation, and there is no terminal to ask on (pass --yes" in result.stderr
    assert delivered(workspace) == []
    assert run("status", ISSUE).exit_code == 1  # no plan was frozen


def test_a_terminal_asks_and_no_means_nothing_is_sent(run, workspace, monkeypatch):
    monkeypatch.setattr("newsletter.cli.send._interactive", lambda: True)
    result = run("send", ISSUE, env=SECRET, input="n\n")
    # issue 10: "no" is an answer, not an error: exit 0, "Not sent.", no plan frozen
    assert "Send 4 email(s) now? [y/N]: n\nNot sent.\n" in result.stdout and result.exit_code == 0
    assert "Error" not in result.output
    assert delivered(workspace) == []
    assert run("status", ISSUE).exit_code == 1  # no plan was frozen
    result = run("send", ISSUE, env=SECRET, input="y\n")
    assert result.exit_code == 0 and delivered(workspace) == SUBSCRIBED


def test_limit_leaves_the_rest_pending_with_exit_4(run, workspace):
    result = run("send", ISSUE, "--yes", "--limit", "1", env=SECRET)
    assert result.exit_code == 4
    assert "Run `newsletter send 2026-11-30-weekly` again to resume." in result.stdout
    assert delivered(workspace) == ["ada@example.com"]
    assert status(run)["pending"] == 3


# -- between runs: the plan is frozen, the list moves -----------------------------------------
@BOTH_LEDGERS
def test_unsubscribed_suppressed_and_removed_readers_are_skipped_when_their_turn_comes(run, workspace):
    assert run("send", ISSUE, "--yes", "--limit", "1", env=SECRET).exit_code == 4
    edit_list(workspace, "grace@example.org,Grace Hopper,subscribed", "grace@example.org,Grace Hopper,unsubscribed")
    edit_list(workspace, "linus@example.net,,subscribed,weekly,2026-03-20,\n", "")
    assert run("suppressions", "add", "margaret@example.com", "--reason", "complaint").exit_code == 0
    result = run("send", ISSUE, "--yes", env=SECRET)
    assert result.exit_code == 0, result.stderr
    assert delivered(workspace) == ["ada@example.com"]
    with ledger(workspace) as db:
        reasons = {r.email: r.reason for r in db.rows(ISSUE, ("skipped",))}
    assert reasons == {"grace@example.org": "status is unsubscribed", "linus@example.net": "no longer in the subscriber list",
                       "margaret@example.com": "suppressed"}


def test_include_new_adds_readers_who_joined_since(run, workspace):
    assert run("send", ISSUE, "--yes", env=SECRET).exit_code == 0
    path = workspace / "subscribers" / "subscribers.csv"
    path.write_text(path.read_text() + "new@example.com,New Reader,subscribed,weekly,2026-11-29,Paris\n")
    assert "sent 0 now" in run("send", ISSUE, "--yes", env=SECRET).stdout  # the plan is frozen
    result = run("send", ISSUE, "--yes", "--include-new", env=SECRET)
    assert "New:        1 subscriber(s) joined since" in result.stdout
    assert result.exit_code == 0 and "new@example.com" in delivered(workspace)
    assert status(run)["total"] == 5


def test_changed_content_is_refused_under_yes_without_allow_changed(run, workspace):
    assert run("send", ISSUE, "--yes", "--limit", "1", env=SECRET).exit_code == 4
    issue = workspace / "issues" / f"{ISSUE}.md"
    issue.write_text(issue.read_text().replace("Welcome back", "Welcome again"))
    result = run("send", ISSUE, "--yes", env=SECRET)
    assert result.exit_code == 1
    assert "changed since its first send; refusing to resume it without asking (--yes, or cron's dispatch)" in result.stderr
    assert f"run `newsletter send {ISSUE} --yes --allow-changed`" in result.stderr  # also what dispatch needs
    assert delivered(workspace) == ["ada@example.com"]
    assert run("send", ISSUE, "--yes", "--allow-changed", env=SECRET).exit_code == 0
    assert run("send", ISSUE, "--yes", env=SECRET).exit_code == 0  # the new content is now the recorded one


def test_segment_sends_to_tagged_readers_and_is_part_of_the_plan(run, workspace):
    result = run("send", ISSUE, "--yes", "--segment", "founders", env=SECRET)
    assert result.exit_code == 0
    assert delivered(workspace) == ["ada@example.com", "margaret@example.com"]
    result = run("send", ISSUE, "--yes", "--segment", "weekly", env=SECRET)
    assert result.exit_code == 1 and "was planned for segment 'founders', not 'weekly'" in result.stderr


def test_invalid_rows_refuse_the_send_or_are_skipped_with_skip_invalid(run, workspace):
    path = workspace / "subscribers" / "subscribers.csv"
    path.write_text(path.read_text() + "not-an-address,Broken,subscribed,weekly,,\n")
    result = run("send", ISSUE, "--yes", env=SECRET)
    assert result.exit_code == 1
    assert "Error: subscribers/subscribers.csv: 1 problem(s) in the subscriber list\n" \
           "subscribers/subscribers.csv:7: invalid email" in result.stderr
    assert "or pass --skip-invalid to skip those rows" in result.stderr
    assert not (workspace / "outbox").exists()
    result = run("send", ISSUE, "--yes", "--skip-invalid", env=SECRET)
    assert result.exit_code == 0, result.stderr
    assert delivered(workspace) == SUBSCRIBED
    with ledger(workspace) as db:
        [row] = db.rows(ISSUE, ("skipped",))
    assert row.email == "not-an-address" and row.reason.startswith("subscribers/subscribers.csv:7: invalid email")
    assert status(run)["skipped"] == 1


def test_a_broken_quote_that_swallows_the_rows_after_it_refuses_even_with_skip_invalid(run, workspace):
    # Skipped as "one row", it took the three readers after it along, and nothing named them.
    path = workspace / "subscribers" / "subscribers.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace(",", ',"', 1)  # line 2 opens a quote its row never closes
    path.write_text("".join(lines))
    result = run("send", ISSUE, "--yes", "--skip-invalid", env=SECRET)
    assert result.exit_code == 1
    assert re.search(r"subscribers/subscribers\.csv:2: malformed CSV: .*; it runs to line \d+, so lines 3-\d+ are "
                     r"inside it", result.stderr)
    assert "--skip-invalid cannot skip a problem with the file itself" in result.stderr
    assert not (workspace / "outbox").exists()


# -- secrets ----------------------------------------------------------------------------------
def test_the_outbox_falls_back_to_the_preview_secret_with_a_warning(run, workspace):
    result = run("send", ISSUE, "--yes")
    assert result.exit_code == 0
    assert "Warning: $NEWSLETTER_SECRET is not set" in result.stderr


def test_a_real_provider_refuses_to_send_without_the_signing_secret(run, workspace, monkeypatch):
    monkeypatch.setitem(ADAPTERS, "postmark", "test_send:KeyedProvider")
    result = run("send", ISSUE, "--yes", env={"NEWSLETTER_PROVIDER_NAME": "postmark", "NEWSLETTER_API_KEY": "k"})
    assert result.exit_code == 1
    assert "Error: $NEWSLETTER_SECRET is not set, and unsubscribe links must be signed with a secret" in result.stderr
    assert not (workspace / ".newsletter").exists()


# -- a provider that misbehaves (our own test double; the real adapters have their own fakes) --------------
class KeyedProvider(OutboxProvider):
    name = "postmark"
    needs_api_key = True
    idempotent = False
    behaviour = "ok"
    calls = 0
    batch_ids: list = []

    # The shared send path (Provider.send_batch) with scripted transports: it raises what the HTTP path raises.
    def transmit(self, request, session=None):
        type(self).calls += 1
        if self.behaviour == "502":
            raise NoAnswer("postmark answered HTTP 502", status=502)
        if self.behaviour == "recipient" and any(name.startswith("grace") for name, _ in request.files):
            raise RecipientError("grace@example.org", "the To name of grace@example.org contains a line break")
        if self.behaviour == "bug":
            raise KeyError("MessageID")
        if self.behaviour == "429-for-2h":
            raise NotAccepted("postmark answered HTTP 429", status=429, retryable=True, retry_after=7200)
        if self.behaviour == "503":
            raise NotAccepted("postmark answered HTTP 503", status=503, retryable=True)
        if self.behaviour == "401":
            raise AuthError(f"{self.name} refused the API key (HTTP 401)", status=401,
                            body='{"ErrorCode": 10, "Message": "Bad or missing Server API token."}')
        if self.behaviour == "mixed" or (self.behaviour == "retry-first" and not self.batch_ids):
            return request  # answered per recipient below; nothing written
        return super().transmit(request, session)

    def parse_response(self, batch, response):
        if self.behaviour == "retry-first" and not self.batch_ids:
            self.batch_ids.append(batch.batch_id)
            return [Outcome(m.to, "retry" if n else "sent", provider_id="x") for n, m in enumerate(batch.messages)]
        if self.behaviour == "retry-first":
            self.batch_ids.append(batch.batch_id)
        if self.behaviour == "mixed":
            return [Outcome(m.to, "failed" if m.to.startswith("grace") else "unknown" if m.to.startswith("linus")
                            else "sent", reason="inactive recipient" if m.to.startswith("grace") else "no answer",
                            suppress=m.to.startswith("grace"))
                    for m in batch.messages]
        return super().parse_response(batch, response)


@pytest.fixture
def keyed(monkeypatch):
    monkeypatch.setitem(ADAPTERS, "postmark", "test_send:KeyedProvider")
    return {"NEWSLETTER_PROVIDER_NAME": "postmark", "NEWSLETTER_API_KEY": "pm-very-secret-key-123", **SECRET}


def test_a_refused_key_exits_1_marks_nothing_sent_and_never_prints_the_key(run, workspace, keyed, monkeypatch):
    monkeypatch.setattr(KeyedProvider, "behaviour", "401")
    result = run("-v", "send", ISSUE, "--yes", env=keyed)
    assert result.exit_code == 1
    assert "Error: postmark refused the API key (HTTP 401)" in result.stderr
    assert "pm-very-secret-key-123" not in result.stdout + result.stderr
    assert status(run)["pending"] == 4 and status(run)["sent"] == 0
    # Not "retry", as if it would be tried again: it stays pending and the run stops until the key is fixed.
    assert "; not tried again: back to pending, and the run stops" in result.stderr
    assert (f"Incomplete: the provider refused the API key. Fix what the error below says, then run `newsletter "
            f"send {ISSUE}` again to resume.") in result.stdout
    with ledger(workspace) as db:
        assert all("pm-very-secret" not in r.reason for r in db.rows(ISSUE, ("pending",)))


@BOTH_LEDGERS
def test_failed_and_unknown_exit_3_and_status_failed_lists_them(run, workspace, keyed, monkeypatch):
    monkeypatch.setattr(KeyedProvider, "behaviour", "mixed")
    result = run("send", ISSUE, "--yes", env=keyed)
    assert result.exit_code == 3
    assert f"See who and why: newsletter status {ISSUE} --failed" in result.stdout
    listing = run("status", ISSUE, "--failed")
    assert "failed   grace@example.org  inactive recipient" in listing.stdout
    assert "unknown  linus@example.net  no answer" in listing.stdout
    as_json = json.loads(run("status", ISSUE, "--json", "--failed").stdout)
    assert {f["email"] for f in as_json["failures"]} == {"grace@example.org", "linus@example.net"}
    assert "grace@example.org\tpostmark" in run("suppressions", "list").stdout  # the provider's suppression
    monkeypatch.setattr(KeyedProvider, "behaviour", "ok")
    assert run("send", ISSUE, "--yes", env=keyed).exit_code == 3  # unknown is never re-sent by itself
    again = run("send", ISSUE, "--yes", "--resend-unknown", env=keyed)
    assert again.exit_code == 3  # grace stays failed
    assert "In doubt:   1 unknown, sent again now (--resend-unknown)" in again.stdout
    assert status(run)["unknown"] == 0 and status(run)["sent"] == 3


@BOTH_LEDGERS
def test_rows_a_dead_run_left_sending_become_unknown_without_idempotency(run, workspace, keyed):
    assert run("send", ISSUE, "--yes", "--limit", "1", env=keyed).exit_code == 4
    with ledger(workspace) as db:  # a run that claimed a batch and died before recording it
        db.acquire_lease(ISSUE, "dead", stale_after=60)
        db.claim(ISSUE, "deadbatch", ["grace@example.org"], "dead")
        db.release_lease(ISSUE, "dead")
    result = run("send", ISSUE, "--yes", env=keyed)
    assert "Interrupted: 1 recipient(s) left mid-batch by a stopped run; marked unknown, not re-sent" in result.stdout
    assert result.exit_code == 3
    with ledger(workspace) as db:
        [row] = db.rows(ISSUE, ("unknown",))
    assert row.email == "grace@example.org" and "may or may not have been sent" in row.reason
    assert "grace@example.org" not in delivered(workspace)


@BOTH_LEDGERS
def test_rows_a_dead_run_left_sending_are_retried_under_the_same_batch_id_with_the_outbox(run, workspace):
    assert run("send", ISSUE, "--yes", "--limit", "1", env=SECRET).exit_code == 4
    with ledger(workspace) as db:
        db.acquire_lease(ISSUE, "dead", stale_after=60)
        db.claim(ISSUE, "deadbatch", ["grace@example.org", "linus@example.net"], "dead")
        db.release_lease(ISSUE, "dead")
    (workspace / "outbox" / ISSUE / "grace@example.org--deadbatch.eml").write_text("half of an earlier try")
    result = run("send", ISSUE, "--yes", env=SECRET)
    assert "retried with the same idempotency key" in result.stdout and result.exit_code == 0
    assert delivered(workspace) == SUBSCRIBED
    names = sorted(p.name for p in (workspace / "outbox" / ISSUE).glob("*--deadbatch.eml"))
    assert names == ["grace@example.org--deadbatch.eml", "linus@example.net--deadbatch.eml"]
    assert "From: Field Notes Weekly" in (workspace / "outbox" / ISSUE / names[0]).read_text()


@pytest.fixture
def ledger_clock(monkeypatch):
    """The ledger's time function, moved by hand: ``ledger_clock["now"] = "2026-...+00:00"``; None is real time."""
    clock = {"now": None}
    for module in (ledger_sqlite, ledger_postgres):  # the same seam in both ledgers
        monkeypatch.setattr(module, "_now", lambda real=module._now: clock["now"] or real())
    return clock


def hours_ago(hours: float) -> str:
    from datetime import datetime, timedelta, timezone
    return (datetime.now(timezone.utc) - timedelta(hours=hours)).isoformat(timespec="seconds")


@BOTH_LEDGERS
def test_a_dead_runs_batch_is_retried_under_its_key_only_while_the_provider_remembers_it(
        run, workspace, monkeypatch, ledger_clock):
    monkeypatch.setattr(OutboxProvider, "idempotency_window", 23 * 3600)  # as Resend: keys kept 23 h of 24
    assert run("send", ISSUE, "--yes", "--limit", "1", env=SECRET).exit_code == 4
    with ledger(workspace) as db:  # a run that claimed two batches and died before recording them
        db.acquire_lease(ISSUE, "dead", stale_after=60)
        ledger_clock["now"] = hours_ago(25)
        db.claim(ISSUE, "oldbatch", ["grace@example.org"], "dead")
        ledger_clock["now"] = hours_ago(22)
        db.claim(ISSUE, "youngbatch", ["linus@example.net"], "dead")
        ledger_clock["now"] = hours_ago(1)  # the old batch's rows changed lately: updated_at is no age
        db.mark_attempt(ISSUE, "oldbatch")
        ledger_clock["now"] = None
        db.release_lease(ISSUE, "dead")
    dry = run("send", ISSUE, "--dry-run", env=SECRET)
    assert ("Interrupted: 2 recipient(s) left mid-batch by a stopped run; 1 retried with the same idempotency key, "
            "1 marked unknown (first claimed more than 23 h ago, past the time outbox keeps its idempotency keys)"
            in dry.stdout)
    assert "Send now:   2" in dry.stdout  # margaret, and linus's young batch
    result = run("send", ISSUE, "--yes", env=SECRET)
    assert result.exit_code == 3, result.stderr
    assert delivered(workspace) == ["ada@example.com", "linus@example.net", "margaret@example.com"]
    assert (workspace / "outbox" / ISSUE / "linus@example.net--youngbatch.eml").exists()  # the same key
    with ledger(workspace) as db:
        [row] = db.rows(ISSUE, ("unknown",))
    assert row.email == "grace@example.org" and "past the time outbox keeps its idempotency key" in row.reason


# -- status and suppressions ---------------------------------------------------------------------
@BOTH_LEDGERS
def test_status_of_an_issue_never_sent_is_an_error(run, workspace):
    result = run("status", ISSUE)
    assert result.exit_code == 1 and f"issue {ISSUE} has not been sent yet" in result.stderr
    assert not (workspace / ".newsletter").exists()


@BOTH_LEDGERS
def test_status_table_of_all_issues(run, workspace):
    assert run("status").stdout == "No issue has been sent yet.\n"
    run("send", ISSUE, "--yes", env=SECRET)
    table = run("status").stdout.splitlines()
    assert table[0].split() == ["issue", "total", "pending", "sending", "sent", "failed", "unknown", "skipped",
                                "provider"]
    assert table[1].split() == [ISSUE, "4", "0", "0", "4", "0", "0", "0", "outbox"]
    assert json.loads(run("status", "--json").stdout)[0]["sent"] == 4
    assert "sent" in run("status", f"issues/{ISSUE}.md").stdout  # by path too


@BOTH_LEDGERS
def test_suppressions_add_list_remove(run, workspace):
    assert run("suppressions", "add", "Bounce@Example.com", "--reason", "hard bounce").exit_code == 0
    listed = json.loads(run("suppressions", "list", "--json").stdout)
    assert [(s["email"], s["reason"], s["source"]) for s in listed] == [("bounce@example.com", "hard bounce", "manual")]
    assert "already suppressed" in run("suppressions", "add", "bounce@example.com").stdout
    bad = run("suppressions", "add", "nope")
    assert bad.exit_code == 1 and "'nope' is not a valid address" in bad.stderr
    assert run("suppressions", "remove", "bounce@example.com").exit_code == 0
    missing = run("suppressions", "remove", "bounce@example.com")
    assert missing.exit_code == 1 and "is not suppressed" in missing.stderr


@BOTH_LEDGERS
def test_a_suppression_written_in_another_form_of_the_address_still_holds(run, workspace):
    """The list keeps addresses normalised (an IDNA domain in Unicode): so must the suppressions."""
    path = workspace / "subscribers" / "subscribers.csv"
    path.write_text(path.read_text() + "kim@bücher.example,Kim,subscribed,weekly,,\n")
    assert run("suppressions", "add", "kim@xn--bcher-kva.example").exit_code == 0
    result = run("send", ISSUE, "--yes", env=SECRET)
    assert result.exit_code == 0, result.stderr
    assert delivered(workspace) == SUBSCRIBED  # not kim
    assert run("suppressions", "remove", "kim@xn--bcher-kva.example").exit_code == 0
    assert json.loads(run("suppressions", "list", "--json").stdout) == []


def test_a_repeated_address_is_refused_and_with_skip_invalid_sent_once(run, workspace):
    path = workspace / "subscribers" / "subscribers.csv"
    path.write_text(path.read_text() + "ADA@example.com,Ada again,subscribed,weekly,,\n")
    assert run("send", ISSUE, "--yes", env=SECRET).exit_code == 1
    result = run("send", ISSUE, "--yes", "--skip-invalid", env=SECRET)
    assert result.exit_code == 0, result.stderr
    assert delivered(workspace) == SUBSCRIBED
    assert status(run)["skipped"] == 0  # the first row of that address was sent; the repeat is not a recipient


# -- dispatch (cron) ---------------------------------------------------------------------------
def an_hour_ago() -> str:
    """A send_at that has passed, well within dispatch's --max-age."""
    return (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat(timespec="seconds")


def set_send_at(workspace, when: str) -> None:
    issue = workspace / "issues" / f"{ISSUE}.md"
    text = re.sub(r"(?m)^send_at: .*\n", "", issue.read_text())
    issue.write_text(text.replace("date: 2026-11-30\n", f"date: 2026-11-30\nsend_at: {when}\n", 1))


def test_dispatch_sends_issues_whose_time_has_come_once(run, workspace):
    set_send_at(workspace, "2099-01-01T09:00:00+00:00")
    result = run("dispatch", env=SECRET)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")  # quiet when idle (was a line)
    set_send_at(workspace, an_hour_ago())
    result = run("dispatch", env=SECRET)
    assert result.exit_code == 0, result.stderr
    assert delivered(workspace) == SUBSCRIBED
    again = run("-v", "dispatch", env=SECRET)
    assert again.stderr.endswith(" Nothing to dispatch.\n")  # finished issues are left alone


def test_dispatch_resumes_unfinished_issues_and_reports_the_worst_exit(run, workspace):
    assert run("send", ISSUE, "--yes", "--limit", "1", env=SECRET).exit_code == 4
    issue = workspace / "issues" / f"{ISSUE}.md"
    issue.write_text(issue.read_text().replace("Welcome back", "Welcome again"))
    result = run("dispatch", env=SECRET)
    assert result.exit_code == 1 and "changed since its first send" in result.stderr  # never resumes new content
    issue.write_text(issue.read_text().replace("Welcome again", "Welcome back"))
    assert run("dispatch", env=SECRET).exit_code == 0
    assert delivered(workspace) == SUBSCRIBED


def test_dispatch_and_reconcile_exit_75_while_another_run_holds_the_issue(run, workspace):
    """Another live run (this very process, a fresh heartbeat) holds the lease: both leave the issue alone.
    SQLite only: on PostgreSQL they join as workers instead (tests/test_workers.py)."""
    set_send_at(workspace, "2020-01-01T09:00:00+00:00")  # long past --max-age: a started plan resumes anyway
    assert run("send", ISSUE, "--yes", "--limit", "1", env=SECRET).exit_code == 4
    with ledger(workspace) as db:
        db.acquire_lease(ISSUE, "the-other-run", stale_after=60)
    dispatched = run("dispatch", env=SECRET)
    assert (dispatched.exit_code, dispatched.stderr) == (75, "")  # cron would mail a line every 10 min (was one)
    dispatched = run("-v", "dispatch", env=SECRET)
    assert dispatched.exit_code == 75 and f"{ISSUE}: another run is sending it (pid " in dispatched.stderr
    reconciled = run("reconcile", ISSUE, env=SECRET)  # the plan's own provider: another one is refused first
    assert reconciled.exit_code == 75 and "another run is sending issue" in reconciled.stderr
    assert delivered(workspace) == ["ada@example.com"]


def test_a_finished_issue_needs_no_confirmation(run, workspace):
    """Re-running a completed send from a script without --yes is a no-op, not an error."""
    assert run("send", ISSUE, "--yes").exit_code == 0
    result = run("send", ISSUE)  # CliRunner: no terminal, no --yes
    assert result.exit_code == 0, result.output
    assert "Send now:   0" in result.output and "confirmation" not in result.output


# -- one recipient's bad data, and adapter bugs ---------------------------------------------------
def subject_with_city(workspace, margaret_city: str) -> None:
    issue = workspace / "issues" / f"{ISSUE}.md"
    issue.write_text(issue.read_text().replace('subject: "Field Notes #48:',
                                               'subject: "Field Notes for {{ subscriber.city | default(\'you\') }}:'))
    edit_list(workspace, "subscribed,weekly;founders,2026-05-02,Boston", f"subscribed,weekly;founders,2026-05-02,"
                                                                         f"{margaret_city}")


def test_any_line_separator_from_a_merge_value_in_the_subject_fails_that_reader_alone(run, workspace):
    """U+2028 breaks a header line as surely as CR/LF: caught when personalising, for every provider."""
    subject_with_city(workspace, "Boston\u2028MA")
    result = run("send", ISSUE, "--yes", env=SECRET)
    assert result.exit_code == 3, result.stderr
    assert delivered(workspace) == ["ada@example.com", "grace@example.org", "linus@example.net"]
    assert "the subject for margaret@example.com would contain a line break" in result.stderr


@BOTH_LEDGERS
def test_a_recipient_whose_message_cannot_be_built_fails_alone_and_retry_failed_recovers_them(run, workspace):
    subject_with_city(workspace, '"Boston\nMA"')
    result = run("send", ISSUE, "--yes", env=SECRET)
    assert result.exit_code == 3, result.stderr
    assert "Traceback" not in result.output
    assert delivered(workspace) == ["ada@example.com", "grace@example.org", "linus@example.net"]
    assert "not sent to margaret@example.com: the subject for margaret@example.com would contain a line break" \
        in result.stderr
    listing = run("status", ISSUE, "--failed").stdout
    assert ("failed   margaret@example.com  the subject for margaret@example.com would contain a line break "
            "(from a merge field) (remove line breaks from that subscriber's values)") in listing
    again = run("send", ISSUE, "--yes", env=SECRET)  # fixing nothing, asking nothing: failed stays failed
    assert again.exit_code == 3 and "Failed:     1 failed (not re-sent without --retry-failed)" in again.stdout
    edit_list(workspace, '"Boston\nMA"', "Boston")
    dry = run("send", ISSUE, "--retry-failed", "--dry-run", env=SECRET)
    assert "Failed:     1 failed recipient(s) back to pending (--retry-failed)" in dry.stdout
    assert "Send now:   1" in dry.stdout and status(run)["failed"] == 1  # a dry run moves nothing
    result = run("send", ISSUE, "--yes", "--retry-failed", "--json", env=SECRET)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["retried_failed"] == 1 and summary["sent_now"] == 1 and summary["failed"] == 0
    assert delivered(workspace) == SUBSCRIBED


def test_an_adapter_refusing_one_recipient_sends_the_others(run, workspace, keyed, monkeypatch):
    monkeypatch.setattr(KeyedProvider, "behaviour", "recipient")
    result = run("send", ISSUE, "--yes", env=keyed)
    assert result.exit_code == 3, result.stderr
    assert delivered(workspace) == ["ada@example.com", "linus@example.net", "margaret@example.com"]
    assert status(run) | {"issue": ISSUE} == {"issue": ISSUE, "total": 4, "pending": 0, "sending": 0, "sent": 3,
                                              "failed": 1, "unknown": 0, "skipped": 0,
                                              "provider": "postmark"}  # KeyedProvider: no stream
    assert "failed   grace@example.org  the To name of grace@example.org contains a line break" in \
        run("status", ISSUE, "--failed").stdout


def test_the_outbox_failing_mid_batch_never_writes_a_second_copy(run, workspace, monkeypatch):
    """Files written before the bad recipient are rewritten under the same batch id, not doubled."""
    from newsletter.providers import outbox

    real = outbox.to_mime

    def to_mime(message, **kw):
        if message.to.startswith("linus"):
            raise RecipientError(message.to, f"header To of the message to {message.to} contains a line break")
        return real(message, **kw)

    monkeypatch.setattr(outbox, "to_mime", to_mime)
    result = run("send", ISSUE, "--yes", env=SECRET)
    assert result.exit_code == 3, result.stderr
    assert delivered(workspace) == ["ada@example.com", "grace@example.org", "margaret@example.com"]  # once each
    assert status(run)["failed"] == 1 and status(run)["sending"] == 0


def test_an_adapter_bug_stops_with_one_error_line_and_no_row_left_sending(run, workspace, keyed, monkeypatch):
    monkeypatch.setattr(KeyedProvider, "behaviour", "bug")
    result = run("send", ISSUE, "--yes", env=keyed)  # the runner re-raises anything but a clean exit
    assert result.exit_code == 1
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert error.startswith("Error: unexpected KeyError from the postmark adapter while sending batch ")
    assert "its 4 recipient(s) are marked unknown" in error and "--debug" in error
    assert status(run)["sending"] == 0 and status(run)["unknown"] == 4


# -- test mode -----------------------------------------------------------------------------------
def test_send_and_dispatch_refuse_test_mode_and_point_at_proofs(run, workspace):
    env = {"NEWSLETTER_PROVIDER_TEST_MODE": "true", **SECRET}
    result = run("send", ISSUE, "--yes", env=env)
    assert result.exit_code == 1
    assert ("Error: env NEWSLETTER_PROVIDER_TEST_MODE: [provider] test_mode is on: outbox accepts messages in "
            "test mode without delivering them, and `send` would record every reader as sent (for proof copies "
            "use `newsletter test ISSUE --to ADDR`; set test_mode = false to send for real)") in result.stderr
    assert run("send", ISSUE, "--dry-run", env=env).exit_code == 0  # shows, writes nothing
    set_send_at(workspace, "2020-01-01T09:00:00+00:00")
    result = run("dispatch", env=env)
    assert result.exit_code == 1 and "`dispatch` would record every reader as sent" in result.stderr
    assert delivered(workspace) == [] and not (workspace / ".newsletter").exists()


def test_proofs_say_they_are_in_test_mode(run, workspace):
    result = run("test", ISSUE, "--to", "editor@example.com", env={"NEWSLETTER_PROVIDER_TEST_MODE": "true"})
    assert result.exit_code == 0, result.stderr
    assert "through outbox in test mode (accepted, not delivered)" in result.stdout
    assert "editor@example.com: accepted in test mode, not delivered" in result.stdout


def test_a_proof_as_someone_not_in_the_list_warns(run, workspace):
    result = run("test", ISSUE, "--to", "editor@example.com", "--as", "nobody@example.com")
    assert result.exit_code == 0
    assert ("Warning: nobody@example.com is not in subscribers/subscribers.csv: the proof is personalised with the "
            "merge fields' fallbacks only") in result.stderr
    assert "Warning: nobody" not in run("test", ISSUE, "--to", "e@example.com", "--as", "Ada@example.com").stderr


# -- waits and retries that run out ---------------------------------------------------------------
def test_a_retry_after_beyond_15_minutes_stops_the_run_as_incomplete(run, workspace, keyed, monkeypatch):
    from newsletter.sending.ratelimit import Backoff, TokenBucket

    monkeypatch.setattr(Backoff, "delay", lambda self, attempt, retry_after=None, **kw: 0.0)  # no 2 h wait
    monkeypatch.setattr(TokenBucket, "pause", lambda self, seconds: None)  # should this test ever fail
    monkeypatch.setattr(KeyedProvider, "behaviour", "429-for-2h")
    result = run("send", ISSUE, "--yes", env=keyed)
    assert result.exit_code == 4
    assert ("Incomplete: postmark asked to wait 2 h before the next request (postmark answered HTTP 429), longer "
            "than the 15 min a run waits; run again after that. Run `newsletter send 2026-11-30-weekly` again "
            "to resume.") in result.stdout
    assert status(run)["pending"] == 4


def test_retries_that_run_out_say_why_the_run_is_incomplete(run, workspace, keyed, monkeypatch):
    from newsletter.sending.ratelimit import Backoff

    monkeypatch.setattr(Backoff, "delay", lambda self, attempt, retry_after=None, **kw: 0.0)
    monkeypatch.setattr(KeyedProvider, "behaviour", "503")
    result = run("send", ISSUE, "--yes", env={"NEWSLETTER_PROVIDER_MAX_ATTEMPTS": "2", **keyed})
    assert result.exit_code == 4
    assert ("Incomplete: 4 recipient(s) still failing transiently after 2 tries. "
            "Run `newsletter send 2026-11-30-weekly` again to resume.") in result.stdout


# -- status ------------------------------------------------------------------------------------
@BOTH_LEDGERS
def test_status_json_of_an_issue_not_sent_yet_is_all_zero(run, workspace):
    assert status(run) == {"issue": ISSUE, "total": 0, "pending": 0, "sending": 0, "sent": 0,
                           "failed": 0, "unknown": 0, "skipped": 0, "provider": ""}
    missing = run("status", "no-such-issue", "--json")
    # issue 10: an id that is no issue at all is "no such issue", never "not sent yet"
    assert missing.exit_code == 1 and "Error: no such issue 'no-such-issue'" in missing.stderr and missing.stdout == ""


def test_status_does_not_call_a_killed_run_the_sender(run, workspace):
    import os
    import subprocess
    import sys

    assert run("send", ISSUE, "--yes", "--limit", "1", env=SECRET).exit_code == 4
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    with ledger(workspace) as db:
        db.acquire_lease(ISSUE, "killed", stale_after=60)
        db._db.execute("UPDATE leases SET pid = ?", (gone,))
    text = run("status", ISSUE).stdout
    assert f"the run by pid {gone} on " in text and "stopped without finishing (last heard from " in text
    assert f"`newsletter send {ISSUE}` resumes it" in text and "being sent now" not in text
    with ledger(workspace) as db:
        db._db.execute("UPDATE leases SET pid = ?", (os.getpid(),))
    assert f"being sent now by pid {os.getpid()} on " in run("status", ISSUE).stdout


# -- dispatch and issues it cannot read ----------------------------------------------------------
def test_dispatch_names_each_issue_it_cannot_read_and_still_sends_the_others(run, workspace):
    set_send_at(workspace, an_hour_ago())
    (workspace / "issues" / "2026-12-07-nozone.md").write_text(
        "---\nsubject: Next week\ndate: 2026-12-07\nsend_at: 2026-12-07T08:00:00\n---\nHello\n")
    (workspace / "issues" / "2026-12-14-broken.md").write_text("---\nsubject: [unclosed\n---\nHello\n")
    result = run("dispatch", env=SECRET)
    assert result.exit_code == 1
    assert delivered(workspace) == SUBSCRIBED
    errors = [line.split(" ", 1)[1] for line in result.stderr.splitlines() if " Error: " in line]  # after the time
    assert len(errors) == 2
    assert re.match(r"Error: \S*issues/2026-12-07-nozone\.md:4: send_at 2026-12-07 08:00:00 has no time zone", errors[0])
    assert re.match(r"Error: \S*issues/2026-12-14-broken\.md:\d+: front matter is not valid YAML", errors[1])


@BOTH_LEDGERS
def test_a_dead_runs_batch_that_can_no_longer_be_built_becomes_unknown(run, workspace):
    """The same idempotency key needs the very same batch; with one message impossible now, nobody in it is
    re-sent blindly."""
    assert run("send", ISSUE, "--yes", "--limit", "1", env=SECRET).exit_code == 4
    with ledger(workspace) as db:
        db.acquire_lease(ISSUE, "dead", stale_after=60)
        db.claim(ISSUE, "deadbatch", ["grace@example.org", "linus@example.net"], "dead")
        db.release_lease(ISSUE, "dead")
    subject_with_city(workspace, "Boston")
    edit_list(workspace, "2026-02-11,Arlington", '2026-02-11,"Arlington\nVA"')
    result = run("send", ISSUE, "--yes", "--allow-changed", env=SECRET)
    assert result.exit_code == 3, result.stderr
    assert delivered(workspace) == ["ada@example.com", "margaret@example.com"]
    with ledger(workspace) as db:
        reasons = {r.email: r.reason for r in db.rows(ISSUE, ("unknown",))}
    assert set(reasons) == {"grace@example.org", "linus@example.net"}
    assert reasons["linus@example.net"].startswith("a run stopped after claiming this batch, and it cannot be built "
                                                   "again (the subject for grace@example.org would contain a line break")


def test_proofs_refused_beside_accepted_ones_go_again_under_a_new_batch_id(run, workspace, keyed, monkeypatch):
    """Resend refuses another payload under the same idempotency key (409): the retry needs its own id."""
    monkeypatch.setattr(KeyedProvider, "behaviour", "retry-first")
    monkeypatch.setattr(KeyedProvider, "batch_ids", [])
    result = run("test", ISSUE, "--to", "one@example.com", "--to", "two@example.com", env=keyed)
    assert result.exit_code == 0, result.stderr
    first, second = KeyedProvider.batch_ids
    assert first != second and second.startswith("proof-")


def test_a_proof_is_not_retried_after_a_gateway_error(run, workspace, keyed, monkeypatch):
    monkeypatch.setattr(KeyedProvider, "behaviour", "502")
    monkeypatch.setattr(KeyedProvider, "calls", 0)
    result = run("test", ISSUE, "--to", "editor@example.com", env=keyed)
    assert result.exit_code == 1 and "postmark answered HTTP 502" in result.stderr
    assert KeyedProvider.calls == 1  # it may have been accepted: a proof is not worth a duplicate


def test_a_recipient_in_doubt_whose_batch_cannot_be_rebuilt_does_not_stop_the_send(run, workspace, keyed,
                                                                                     monkeypatch):
    monkeypatch.setattr(KeyedProvider, "behaviour", "mixed")  # linus ends unknown
    assert run("send", ISSUE, "--yes", "--limit", "3", env=keyed).exit_code == 4
    asked = []
    monkeypatch.setattr(KeyedProvider, "reconcile", lambda self, batch, session, **kw: asked.append(batch) or [])
    monkeypatch.setattr("newsletter.cli.send._interactive", lambda: True)
    monkeypatch.setattr(KeyedProvider, "behaviour", "ok")
    subject_with_city(workspace, "Boston")
    edit_list(workspace, "linus@example.net,,subscribed,weekly,2026-03-20,", 'linus@example.net,,subscribed,weekly,'
                                                                            '2026-03-20,"Oslo\nNorway"')
    result = run("send", ISSUE, "--allow-changed", env=keyed, input="y\ny\ny\n")
    assert re.search(r"batch \w+ cannot be built again to ask about it \(the subject for linus@example.net would "
                     r"contain a line break.*; its 1 recipient\(s\) stay unknown", result.output)
    assert result.exit_code == 3, result.output
    assert "margaret@example.com" in delivered(workspace) and asked == []
    assert status(run)["unknown"] == 1 and status(run)["pending"] == 0


def test_a_run_that_waited_while_another_froze_and_sent_the_plan_resumes_it(run, workspace, monkeypatch):
    """cron and a person start together: the first froze the plan (and finished) while the second was
    still checking the list. The second, once it holds the lease, resumes that plan: nobody twice."""
    from newsletter.sending import lease

    original = lease.LeaseKeeper.__enter__

    def another_run_finished_first(keeper):
        other = keeper.ledger
        other.acquire_lease(ISSUE, "the-other-run", stale_after=60)
        other.create_plan(ISSUE, content_hash="other", subject="S", segment="", emails=SUBSCRIBED)
        other.claim(ISSUE, "otherbatch", SUBSCRIBED, "the-other-run")
        other.record(ISSUE, "otherbatch", [Outcome(e, "sent", provider_id="x") for e in SUBSCRIBED], source="outbox")
        other.release_lease(ISSUE, "the-other-run")
        monkeypatch.setattr(lease.LeaseKeeper, "__enter__", original)
        return original(keeper)

    monkeypatch.setattr(lease.LeaseKeeper, "__enter__", another_run_finished_first)
    result = run("send", ISSUE, "--yes", "--allow-changed", env=SECRET)
    assert result.exit_code == 0, result.stderr
    assert "sent 0 now" in result.stdout and "Totals: 4 sent" in result.stdout
    assert delivered(workspace) == []  # the other run's deliveries are not repeated


def test_a_line_separator_in_from_stops_the_outbox_run_with_nobody_failed(run, workspace):
    """Issue 17: the outbox had its own send_batch, skipped the shared header check, wrote every reader
    through to_mime and marked each `failed` for good (exit 3). Config now refuses such a From at load
    (issue 10), and the outbox takes the shared send path, whose own refusal the contract suite checks for
    every adapter (test_provider_contract.py): the run stops with one error, nobody is failed or written."""
    toml = workspace / "newsletter.toml"
    toml.write_text(toml.read_text().replace('from = "Field Notes Weekly <notes@example.com>"',
                                             'from = "Field Notes Weekly\u2028Bcc: eve@example.net <notes@example.com>"'))
    result = run("send", ISSUE, "--yes", env=SECRET)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: newsletter.toml:") and "[newsletter] from" in result.stderr
    assert "line break (U+2028)" in result.stderr
    assert delivered(workspace) == [] and not (workspace / ".newsletter").exists()  # nothing planned or failed


def test_read_only_commands_leave_an_empty_postgres_database_empty(run, workspace, pg_url, monkeypatch):
    """status, send --dry-run, report, reconcile's look and suppressions list create no table (docs/team.md)."""
    monkeypatch.setenv("NEWSLETTER_LEDGER_URL", pg_url)
    for args in (("status",), ("status", ISSUE), ("send", ISSUE, "--dry-run"), ("suppressions", "list"),
                 ("report",)):
        result = run(*args, env=SECRET)
        assert result.exit_code in (0, 1), (args, result.output)  # 1: "not sent yet"
        assert "ledger failed" not in result.output, (args, result.output)
    assert ledger_tables(workspace) == {}


def test_status_and_report_of_an_unsent_issue_never_show_the_ledgers_password(run, pg_url):
    """A password in NEWSLETTER_LEDGER_URL is the user's business (config refuses one only in the file); the
    "not sent yet" errors name the ledger without it."""
    url = re.sub(r"^postgresql://([^@/]*)@", r"postgresql://\1:S3cret-pw@", pg_url)
    assert "S3cret-pw" in url
    for command in (("status", ISSUE), ("report", ISSUE)):
        result = run(*command, env={"NEWSLETTER_LEDGER_URL": url})
        assert result.exit_code == 1 and "has not been sent yet" in result.stderr, result.output
        assert "S3cret-pw" not in result.output and "****" in result.stderr
