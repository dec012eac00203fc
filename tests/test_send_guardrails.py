"""Issue 10: a slip of the user's never sends the wrong thing, or sends to nobody.

Through the CLI in a copy of the example workspace: lint's errors refuse `send`, `dispatch` and
`test` (and `--ignore-lint CHECK` lets one check through), a segment of nobody refuses, ISSUE
resolution, the prompt's "no", `--dry-run`'s words, `--json` alone on stdout, `reconcile`'s "come
back after", and Ctrl-C twice against a real process and the slow fake provider.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import write_readers
from fakeproviders import FakeProviders

from newsletter.ledger.sqlite import SQLiteLedger

ISSUE = "2026-11-30-weekly"
SECRET = {"NEWSLETTER_SECRET": "test-secret"}
SUBSCRIBED = ["ada@example.com", "grace@example.org", "linus@example.net", "margaret@example.com"]
KEY = "guardrails-key-7Qx"


def delivered(workspace: Path) -> list[str]:
    folder = workspace / "outbox" / ISSUE
    return sorted(p.name.rsplit("--", 1)[0] for p in folder.glob("*.eml")) if folder.exists() else []


def ledger_file(workspace: Path) -> Path:
    return workspace / ".newsletter" / "ledger.sqlite3"


def ledger_snapshot(workspace: Path) -> bytes | None:
    """The ledger's bytes (None when there is none): a refusal must leave it as it was."""
    path = ledger_file(workspace)
    return path.read_bytes() if path.exists() else None


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def issue_file(workspace: Path) -> Path:
    return workspace / "issues" / f"{ISSUE}.md"


def body_line(workspace: Path, text: str) -> int:
    """Append ``text`` as the issue's last paragraph; returns its line number."""
    path = issue_file(workspace)
    lines = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    path.write_text("\n".join(lines + ["", text]) + "\n", encoding="utf-8")
    return len(lines) + 2


def refused(result, workspace: Path, before: bytes | None) -> None:
    """Exit 1, nothing sent, the ledger as it was."""
    assert result.exit_code == 1, result.output
    assert delivered(workspace) == []
    assert ledger_snapshot(workspace) == before


# -- nothing goes out that lint calls an error ------------------------------------------------------
def test_an_empty_from_refuses_the_send_and_is_never_made_up(run, workspace):
    edit(workspace / "newsletter.toml", 'from = "Field Notes Weekly <notes@example.com>"', 'from = ""')
    result = run("send", ISSUE, "--yes", env=SECRET)
    refused(result, workspace, None)
    assert ("Error: 1 lint error(s), nothing was frozen or sent:\n  newsletter.toml:8: error: no From address: "
            "set [newsletter] from") in result.stderr
    assert "[from]" in result.stderr and "--ignore-lint" not in result.stderr  # no way round it is offered
    ignored = run("send", ISSUE, "--yes", "--ignore-lint", "from", env=SECRET)
    refused(ignored, workspace, None)
    assert "Error: --ignore-lint from: this check cannot be ignored" in ignored.stderr
    build = run("build", ISSUE)  # a build shows a placeholder that says what is missing, no made-up address
    assert build.exit_code == 0
    eml = (workspace / "out" / f"{ISSUE}.eml").read_text()
    assert [line for line in eml.splitlines() if line.startswith("From:")] == [
        "From: Field Notes Weekly <from-is-not-set@invalid>"]


def test_a_relative_image_refuses_until_its_check_is_ignored(run, workspace):
    # raw HTML: a Markdown image's relative path is a file to publish (tests/test_images.py)
    line = body_line(workspace, '<img src="images/harbour.png" alt="The harbour at dawn">')
    result = run("send", ISSUE, "--yes", env=SECRET)
    refused(result, workspace, None)
    assert (f"  issues/{ISSUE}.md:{line}: error: image 'images/harbour.png' is not an absolute https:// URL; "
            f"it will be broken in every inbox [image]") in result.stderr
    assert "if you know better, --ignore-lint image lets it through" in result.stderr
    sent = run("send", ISSUE, "--yes", "--ignore-lint", "image", env=SECRET)
    assert sent.exit_code == 0, sent.stderr
    assert (f"Warning: issues/{ISSUE}.md:{line}: image 'images/harbour.png' is not an absolute https:// URL; it "
            f"will be broken in every inbox (an error, let through by --ignore-lint image)") in sent.stderr
    assert delivered(workspace) == SUBSCRIBED


def test_no_unsubscribe_link_refuses(run, workspace):
    env = {**SECRET, "NEWSLETTER_UNSUBSCRIBE_URL": "", "NEWSLETTER_UNSUBSCRIBE_MAILTO": ""}
    result = run("send", ISSUE, "--yes", env=env)
    refused(result, workspace, None)
    assert "env NEWSLETTER_UNSUBSCRIBE_URL: error: no unsubscribe link" in result.stderr
    assert "--ignore-lint unsubscribe" in result.stderr


def test_an_unresolved_merge_field_refuses_with_its_line(run, workspace):
    line = body_line(workspace, "See you in {{ subscriber.town }}!")
    result = run("send", ISSUE, "--yes", env=SECRET)
    refused(result, workspace, None)
    assert f"Error: issues/{ISSUE}.md:{line}: merge field subscriber.town: no column 'town'" in result.stderr


def test_mailchimp_tags_are_a_lint_error_naming_the_field_to_write(run, workspace):
    line = body_line(workspace, "Thanks for reading, *|FNAME|*! Reply to *|EMAIL|* any time.")
    lint = run("lint", ISSUE)
    assert lint.exit_code == 1
    assert (f"issues/{ISSUE}.md:{line}: error: Mailchimp merge tag '*|FNAME|*' would be sent as it is; write "
            f"{{{{ subscriber.name }}}} instead [mailchimp-tag]") in lint.output
    assert "Mailchimp merge tag '*|EMAIL|*' would be sent as it is; write {{ subscriber.email }}" in lint.output
    result = run("send", ISSUE, "--yes", env=SECRET)
    refused(result, workspace, None)
    assert "Error: 2 lint error(s), nothing was frozen or sent:" in result.stderr
    assert "--ignore-lint mailchimp-tag lets it through" in result.stderr


def test_an_unknown_front_matter_key_warns_in_lint_and_refuses_a_send(run, workspace):
    edit(issue_file(workspace), "cta:\n", "call_to_action:\n")
    lint = run("lint", ISSUE)
    assert lint.exit_code == 0  # lint keeps it a warning
    assert (f"issues/{ISSUE}.md:5: warning: unknown front matter key 'call_to_action' (did you mean 'cta'?) "
            f"[front-matter]") in lint.output
    result = run("send", ISSUE, "--yes", env=SECRET)
    refused(result, workspace, None)
    assert (f"  issues/{ISSUE}.md:5: error: unknown front matter key 'call_to_action' (did you mean 'cta'?) "
            f"[front-matter]") in result.stderr


def test_warnings_are_printed_and_do_not_stop_the_send(run, workspace):
    edit(issue_file(workspace), 'preheader: "Four stories from the working waterfront, and why one river got its '
                                'salmon back."\n', "")
    result = run("send", ISSUE, "--yes", env=SECRET)
    assert result.exit_code == 0, result.stderr
    assert f"Warning: issues/{ISSUE}.md:1: no preheader: inboxes will show the first words" in result.stderr
    assert delivered(workspace) == SUBSCRIBED


def test_dispatch_and_test_refuse_on_lint_errors_too(run, workspace):
    edit(issue_file(workspace), "date: 2026-11-30\n", "date: 2026-11-30\nsend_at: 2026-01-01T08:00:00Z\n")
    body_line(workspace, "Hello *|FNAME|*")
    result = run("dispatch", "--max-age", "1000d", env=SECRET)  # send_at is long past
    assert result.exit_code == 1 and "Error: 1 lint error(s), nothing was frozen or sent:" in result.stderr
    assert delivered(workspace) == [] and ledger_snapshot(workspace) is None
    proof = run("test", ISSUE, "--to", "me@example.com", env=SECRET)
    assert proof.exit_code == 1 and "Error: 1 lint error(s), nothing was sent:" in proof.stderr
    assert not (workspace / "outbox").exists()
    through = run("dispatch", "--max-age", "1000d", "--ignore-lint", "mailchimp-tag", env=SECRET)
    assert through.exit_code == 0, through.stderr
    assert delivered(workspace) == SUBSCRIBED


def test_a_resume_of_content_already_sent_is_not_stopped_by_lint(run, workspace):
    body_line(workspace, "Hello *|FNAME|*")
    assert run("send", ISSUE, "--yes", "--limit", "1", "--ignore-lint", "mailchimp-tag", env=SECRET).exit_code == 4
    resume = run("send", ISSUE, "--yes", env=SECRET)  # the first run let it through; half a send helps nobody
    assert resume.exit_code == 0, resume.stderr
    assert "Warning: issues/2026-11-30-weekly.md:" in resume.stderr and "[mailchimp-tag]" in resume.stderr
    assert delivered(workspace) == SUBSCRIBED


# -- a plan of nobody is refused --------------------------------------------------------------------
def test_a_segment_option_that_matches_nobody_refuses_and_lists_the_tags(run, workspace):
    result = run("send", ISSUE, "--yes", "--segment", "weeky", env=SECRET)
    refused(result, workspace, None)
    assert ("Error: segment 'weeky' matches nobody to send to in subscribers/subscribers.csv: no subscribed, "
            "unsuppressed reader has that tag; nothing was frozen. Tags in the list: weekly (4), founders (2) "
            f"(pass --segment with one of those tags, e.g. `newsletter send {ISSUE} --segment TAG`)") in result.stderr
    dry = run("send", ISSUE, "--dry-run", "--segment", "weeky", env=SECRET)
    assert dry.exit_code == 1 and "matches nobody" in dry.stderr


def test_a_front_matter_segment_that_matches_nobody_names_its_line(run, workspace):
    edit(issue_file(workspace), "date: 2026-11-30\n", "date: 2026-11-30\nsegment: founder\n")
    result = run("send", ISSUE, "--yes", env=SECRET)
    refused(result, workspace, None)
    assert "segment 'founder' matches nobody" in result.stderr
    assert f"fix 'segment:' at issues/{ISSUE}.md:5, or pass --segment TAG" in result.stderr


@pytest.mark.parametrize("rows, why", [
    ("email,name\n", "it has no reader"),
    ("email,name,status\nada@example.com,Ada,unsubscribed\ngrace@example.org,Grace,bounced\n",
     "of its 2 reader(s), 2 have a status other than subscribed and 0 are suppressed in the ledger"),
])
def test_a_list_with_nobody_to_send_to_freezes_nothing(run, workspace, rows, why):
    """A plan of nobody would read as finished on every later run: the readers added since would get the
    issue only with --include-new."""
    path = workspace / "subscribers" / "subscribers.csv"
    path.write_text(rows, encoding="utf-8")
    result = run("send", ISSUE, "--yes", env=SECRET)
    refused(result, workspace, None)
    assert (f"Error: nobody to send to in subscribers/subscribers.csv: {why}; nothing was frozen (add readers "
            f"(`newsletter subscribers add EMAIL`, or `newsletter subscribers import FILE`), then run "
            f"`newsletter send {ISSUE}` again)") in result.stderr
    assert run("send", ISSUE, "--dry-run", env=SECRET).exit_code == 1
    path.write_text(rows + "linus@example.net,Linus" + (",subscribed" if "status" in rows else "") + "\n",
                    encoding="utf-8")
    again = run("send", ISSUE, "--yes", env=SECRET)  # once there is someone, no --include-new is needed
    assert again.exit_code == 0, again.output
    assert delivered(workspace) == ["linus@example.net"]


@pytest.mark.parametrize("rows, problem", [
    ("", "the file is empty: the first row must be a header with an email column"),
    ("mail,name\nada@example.com,Ada\n", "no email column in the header row (columns: mail, name)"),
])
def test_a_list_without_a_usable_header_is_refused_with_its_line_not_a_traceback(run, workspace, rows, problem):
    (workspace / "subscribers" / "subscribers.csv").write_text(rows, encoding="utf-8")
    build = run("build", ISSUE)  # a build needs no list: it is rendered for a sample reader
    assert build.exit_code == 0, build.output
    assert "rendered for reader@example.com" in build.output
    result = run("send", ISSUE, "--yes", env=SECRET)
    refused(result, workspace, None)
    assert f"subscribers/subscribers.csv:1: {problem}" in result.stderr
    assert run("lint", ISSUE).exit_code == 0  # lint judges the issue; the list's own problems are `check`'s
    assert run("subscribers", "check").exit_code == 1


def test_a_second_file_with_the_same_issue_id_refuses_both_until_one_is_renamed(run, workspace):
    """A copy of last week's file that kept its `id:` line: a send of it would resume last week's plan."""
    copy = workspace / "issues" / "copy.md"
    text = issue_file(workspace).read_text(encoding="utf-8")
    copy.write_text(text.replace("---\n", f"---\nid: {ISSUE}\n", 1), encoding="utf-8")
    lint = run("lint", "copy")
    assert lint.exit_code == 1
    assert (f"issues/copy.md:2: error: issue id '{ISSUE}' is also the id of issues/{ISSUE}.md: the ledger knows an "
            f"issue by its id, so a send of either file would resume the other's plan; give each issue an id of its "
            f"own (front matter 'id:', else the file name) [issue-id]") in lint.output
    refused(run("send", "copy", "--yes", env=SECRET), workspace, None)
    original = run("send", ISSUE, "--yes", env=SECRET)
    refused(original, workspace, None)
    assert "is also the id of issues/copy.md" in original.stderr
    copy.write_text(text.replace("---\n", "---\nid: 2026-12-07-weekly\n", 1), encoding="utf-8")
    assert run("send", ISSUE, "--yes", env=SECRET).exit_code == 0
    assert delivered(workspace) == SUBSCRIBED


def test_a_frozen_segment_changes_while_nobody_was_tried_and_not_after(run, workspace):
    with SQLiteLedger(ledger_file(workspace)) as ledger:  # a plan frozen by a run that sent nothing
        ledger.create_plan(ISSUE, content_hash="h", subject="s", segment="weekly", emails=SUBSCRIBED)
    result = run("send", ISSUE, "--yes", "--segment", "founders", env=SECRET)
    assert result.exit_code == 0, result.stderr
    assert ("Recipients: 2 (nobody was sent this issue yet, so the plan for segment 'weekly' is planned again when "
            "the send starts)") in result.stdout
    assert delivered(workspace) == ["ada@example.com", "margaret@example.com"]
    before = ledger_snapshot(workspace)
    again = run("send", ISSUE, "--yes", "--segment", "weekly", env=SECRET)
    assert again.exit_code == 1 and ledger_snapshot(workspace) == before
    assert ("Error: issue 2026-11-30-weekly was planned for segment 'founders', not 'weekly', and 2 recipient(s) "
            "were already tried: its segment cannot change now") in again.stderr
    assert f"resume it without --segment (`newsletter send {ISSUE}`)" in again.stderr


def test_subscribers_who_joined_since_are_reported_without_being_asked(run, workspace):
    assert run("send", ISSUE, "--yes", env=SECRET).exit_code == 0
    path = workspace / "subscribers" / "subscribers.csv"
    path.write_text(path.read_text() + "new@example.com,New Reader,subscribed,weekly,2026-11-29,Paris\n")
    result = run("send", ISSUE, "--yes", "--json", env=SECRET)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["new_subscribers"] == 1
    assert ("New:        1 subscriber(s) joined since the first run and are not in the plan; add them with "
            f"`newsletter send {ISSUE} --include-new`") in result.stderr
    added = run("send", ISSUE, "--yes", "--include-new", env=SECRET)
    assert "New:        1 subscriber(s) joined since the first run; added now (--include-new)" in added.stdout
    assert "new@example.com" in delivered(workspace)


# -- messages and machine output ------------------------------------------------------------------
def test_issue_is_a_path_a_bare_file_name_or_an_id(run, workspace):
    for ref in (f"issues/{ISSUE}.md", f"{ISSUE}.md", ISSUE):
        result = run("send", ref, "--dry-run", env=SECRET)
        assert result.exit_code == 0 and "Send now:   4" in result.stdout, (ref, result.stderr)


def test_an_unknown_issue_is_no_such_issue_with_a_guess_never_not_sent_yet(run, workspace):
    for command in (("send", "2026-11-03-weekly", "--yes"), ("status", "2026-11-03-weekly"),
                    ("status", "2026-11-03-weekly", "--json"), ("lint", "2026-11-03-weekly.md")):
        result = run(*command, env=SECRET)
        assert result.exit_code == 1 and result.stdout == "", command
        assert "Error: no such issue '2026-11-03-weekly" in result.stderr, command
        assert "did you mean '2026-11-30-weekly'?" in result.stderr and "not been sent" not in result.stderr
    assert ledger_snapshot(workspace) is None


def test_a_dry_run_says_what_would_be_frozen(run, workspace):
    result = run("send", ISSUE, "--dry-run", env=SECRET)
    assert result.exit_code == 0
    assert "Recipients: 4 (first run: a send would freeze these 4 as the plan)" in result.stdout
    assert "frozen now" not in result.output
    assert ledger_snapshot(workspace) is None


def test_no_at_the_prompt_is_not_sent_and_exit_0(run, workspace, monkeypatch):
    monkeypatch.setattr("newsletter.cli.send._interactive", lambda: True)
    result = run("send", ISSUE, env=SECRET, input="n\n")
    assert result.exit_code == 0 and result.stdout.endswith("Send 4 email(s) now? [y/N]: n\nNot sent.\n")
    assert "Error" not in result.output and delivered(workspace) == []
    assert not ledger_file(workspace).exists() or run("status", ISSUE).exit_code == 1
    as_json = run("send", ISSUE, "--json", env=SECRET, input="n\n")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["declined"] is True


def test_every_json_output_of_send_is_json_alone_on_stdout(run, workspace):
    body_line(workspace, "![](https://example.com/a.png)")  # a lint warning, printed on every run
    dry = run("send", ISSUE, "--dry-run", "--json", env=SECRET)
    assert json.loads(dry.stdout)["to_send"] == 4 and "[image]" in dry.stderr
    sent = run("send", ISSUE, "--yes", "--json", "--limit", "1", env=SECRET)
    assert sent.exit_code == 4 and json.loads(sent.stdout)["sent_now"] == 1
    assert "Warning:" in sent.stderr and "Incomplete" not in sent.stdout
    done = run("send", ISSUE, "--yes", "--json", env=SECRET)
    assert json.loads(done.stdout)["sent"] == 4
    refused = run("send", "2026-11-30-weekyl", "--yes", "--json", env=SECRET)  # refused before sending
    assert refused.exit_code == 1 and "Error: no such issue" in refused.stderr
    obj = json.loads(refused.stdout)
    assert obj["issue"] == "2026-11-30-weekyl" and obj["exit_code"] == 1 and obj["error"].startswith("no such issue")


# -- reconcile: too young to judge ------------------------------------------------------------------
def provider_env(fake: FakeProviders, **extra: str) -> dict[str, str]:
    return {"NEWSLETTER_PROVIDER_NAME": "postmark", "NEWSLETTER_PROVIDER_API_BASE": fake.url,
            "NEWSLETTER_API_KEY": KEY, "NEWSLETTER_SECRET": "s3cret", "NEWSLETTER_PROVIDER_RATE_LIMIT": "1000",
            **extra}


@pytest.fixture
def fake():
    with FakeProviders(api_key=KEY) as server:
        yield server


def test_reconcile_of_batches_too_recent_says_once_when_to_come_back(run, workspace, fake):
    addresses = write_readers(workspace, 6)
    with SQLiteLedger(ledger_file(workspace)) as ledger:
        ledger.create_plan(ISSUE, content_hash="h", subject="s", segment="", emails=addresses)
        ledger.acquire_lease(ISSUE, "me", stale_after=60)
        for n, batch in enumerate(("batch-a", "batch-b", "batch-c")):
            assert ledger.claim(ISSUE, batch, addresses[2 * n:2 * n + 2], "me")
            ledger.mark_unknown(ISSUE, [batch], "test: the answer never came")
        ledger.release_lease(ISSUE, "me")
    start = datetime.now(timezone.utc)
    result = run("reconcile", ISSUE, env=provider_env(fake))
    assert result.exit_code == 3, result.output
    lines = [line for line in result.stdout.splitlines() if "run `newsletter reconcile" in line]
    assert len(lines) == 1 and len(re.findall("not conclusive for a batch this recent", result.stdout)) == 1
    found = re.fullmatch(r"6 recipient\(s\) were tried too recently for postmark to tell; run `newsletter reconcile "
                         rf"{ISSUE}` again after (\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d) \S+\.", lines[0])
    assert found, lines[0]
    when = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S").astimezone()
    assert 50 <= (when - start).total_seconds() <= 62  # Postmark's search shows a message within 60 s


# -- Ctrl-C, twice, against a real process ----------------------------------------------------------
def lines_of(stream) -> queue.Queue:
    """Read a pipe line by line in a thread, so a test can wait for one line with a timeout."""
    found: queue.Queue = queue.Queue()

    def pump():
        for line in stream:
            found.put(line)
        found.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return found


def wait_for(lines: queue.Queue, pattern: str, seen: list[str], timeout: float = 30) -> str:
    while True:
        line = lines.get(timeout=timeout)
        assert line is not None, "".join(seen)
        seen.append(line)
        if re.search(pattern, line):
            return line


def test_ctrl_c_finishes_batches_in_flight_and_twice_stops_now_with_exit_130(workspace, fake):
    addresses = write_readers(workspace, 10)
    env = provider_env(fake, NEWSLETTER_PROVIDER_BATCH_SIZE="2", NEWSLETTER_PROVIDER_CONCURRENCY="2")
    held = [fake.inject("hold"), fake.inject("hold")]  # the slow provider: two batches accepted, answers held
    full = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")} | env
    process = subprocess.Popen([sys.executable, "-c", "from newsletter.cli import main; main()", "send", ISSUE,
                                "--yes"], cwd=workspace, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        for fault in held:
            assert fault.reached.wait(30), "the fake never saw two batches"
        stderr = lines_of(process.stderr)
        seen: list[str] = []
        process.send_signal(signal.SIGINT)
        line = wait_for(stderr, "in flight", seen)
        assert line == ("Warning: finishing 2 batches in flight; Ctrl-C (or kill) again to stop now (they become unknown)\n")
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 130
        rest = "".join(seen) + "".join(iter(lambda: stderr.get(timeout=10) or "", ""))
        assert ("Error: stopped at once: 2 batch(es) were in flight and stay in doubt; the next run marks them "
                "unknown (they may or may not have been sent)") in rest
        assert "Aborted!" not in rest and "Traceback" not in rest
    finally:
        for fault in held:
            fault.release.set()
        if process.poll() is None:
            process.kill()
        process.wait()
    resume = subprocess.run([sys.executable, "-c", "from newsletter.cli import main; main()", "send", ISSUE,
                             "--yes", "--json"], cwd=workspace, env=full, capture_output=True, text=True, timeout=60)
    assert resume.returncode == 3, resume.stderr  # the 4 in doubt are unknown; everyone else is sent
    summary = json.loads(resume.stdout)
    assert summary["unknown"] == 4 and summary["sent"] == 6 and summary["pending"] == 0
    assert fake.duplicates() == {} and sorted(a.to for a in fake.delivered("postmark")) == addresses


def test_one_ctrl_c_records_the_batches_in_flight_and_leaves_the_rest_pending(workspace, fake):
    write_readers(workspace, 10)
    env = provider_env(fake, NEWSLETTER_PROVIDER_BATCH_SIZE="2", NEWSLETTER_PROVIDER_CONCURRENCY="2")
    held = [fake.inject("hold"), fake.inject("hold")]
    full = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")} | env
    process = subprocess.Popen([sys.executable, "-c", "from newsletter.cli import main; main()", "send", ISSUE,
                                "--yes", "--json"], cwd=workspace, env=full, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        for fault in held:
            assert fault.reached.wait(30), "the fake never saw two batches"
        stderr = lines_of(process.stderr)
        process.send_signal(signal.SIGINT)
        assert "finishing 2 batches in flight" in wait_for(stderr, "in flight", [])
        for fault in held:  # the held answers come (as dropped connections): the batches are recorded
            fault.release.set()
        out = process.stdout.read()
        assert process.wait(30) == 4
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    summary = json.loads(out)
    assert summary["stopped"] == "interrupted" and summary["unknown"] == 4 and summary["pending"] == 6
    assert summary["sending"] == 0  # nothing left for the next run to guess about


def test_a_send_by_hand_before_send_at_says_so_and_still_sends(run, workspace):
    """`send` is the command that sends now; only `dispatch` waits for send_at. A user who thought `send`
    schedules the issue is told, in the summary they confirm."""
    later = (datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=2)).isoformat()
    edit(issue_file(workspace), "date: 2026-11-30\n", f"date: 2026-11-30\nsend_at: {later}\n")
    result = run("send", ISSUE, "--yes", env=SECRET)
    assert result.exit_code == 0, result.output
    assert re.search(rf"Scheduled:  send_at {re.escape(later)} is 4[78](\.\d)? h away; this sends now "
                     r"\(`newsletter dispatch` from cron would send it then\)", result.stdout)
    assert delivered(workspace) == SUBSCRIBED
    resumed = run("send", ISSUE, "--yes", env=SECRET)
    assert "Scheduled:" not in resumed.stdout  # a plan already started: nothing to warn about


def test_no_scheduled_note_once_send_at_has_passed(run, workspace):
    edit(issue_file(workspace), "date: 2026-11-30\n", "date: 2026-11-30\nsend_at: 2026-11-30T07:00:00Z\n")
    result = run("send", ISSUE, "--yes", env=SECRET)
    assert result.exit_code == 0 and "Scheduled:" not in result.stdout


def test_who_is_left_out_and_why_is_said_before_and_listed_after(run, workspace):
    """A suppressed reader is left out of a new plan: the summary says how many; `status --skipped` lists
    the skipped rows with their reason (here a reader who unsubscribed after the plan was frozen)."""
    assert run("suppressions", "add", "grace@example.org", "--reason", "bounced").exit_code == 0
    first = run("send", ISSUE, "--yes", "--limit", "1", env=SECRET)
    assert "Left out:   1 suppressed reader(s) of the list (`newsletter suppressions list` names them)" in first.stdout
    assert run("subscribers", "unsubscribe", "margaret@example.com").exit_code == 0
    assert run("send", ISSUE, "--yes", env=SECRET).exit_code == 0
    listed = run("status", ISSUE, "--skipped")
    assert "skipped  margaret@example.com  status is unsubscribed" in listed.stdout
    as_json = json.loads(run("status", ISSUE, "--skipped", "--json").stdout)
    assert [(r["email"], r["reason"]) for r in as_json["skipped_rows"]] == [
        ("margaret@example.com", "status is unsubscribed")]
    assert "grace@example.org" not in delivered(workspace) and "margaret@example.com" not in delivered(workspace)


def test_a_renamed_issue_file_is_pointed_out_before_it_sends_everyone_a_second_copy(run, workspace):
    """Renamed without an `id:` line, a file is a new id, so a new plan. The summary names the plan its subject
    belongs to, whose file is gone, and the line that resumes it instead."""
    assert run("send", ISSUE, "--yes", "--limit", "2", env=SECRET).exit_code == 4
    issue_file(workspace).rename(workspace / "issues" / "2026-11-30-field-notes.md")
    dry = run("send", "2026-11-30-field-notes", "--dry-run", env=SECRET)
    assert dry.exit_code == 0
    assert (f"Renamed?:   issue {ISSUE} was sent to 2 reader(s) with this subject, and no file in issues/ is {ISSUE} any "
            f"more: if this file is it, renamed, stop and add 'id: {ISSUE}' to its front matter, or everyone gets it "
            f"twice") in dry.stdout
    renamed = workspace / "issues" / "2026-11-30-field-notes.md"
    renamed.write_text(renamed.read_text(encoding="utf-8").replace("---\n", f"---\nid: {ISSUE}\n", 1),
                       encoding="utf-8")
    resumed = run("send", "2026-11-30-field-notes", "--yes", env=SECRET)  # the same plan: the other two only
    assert resumed.exit_code == 0 and "Renamed?" not in resumed.stdout
    assert delivered(workspace) == SUBSCRIBED


def test_a_new_issue_with_the_subject_of_one_whose_file_is_still_there_says_nothing(run, workspace):
    assert run("send", ISSUE, "--yes", env=SECRET).exit_code == 0
    copy = workspace / "issues" / "2026-12-07-weekly.md"
    copy.write_text(issue_file(workspace).read_text(encoding="utf-8"), encoding="utf-8")
    assert "Renamed?" not in run("send", "2026-12-07-weekly", "--dry-run", env=SECRET).stdout
