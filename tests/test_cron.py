"""`newsletter dispatch` under cron: the due rule with a fake clock, --max-age said once, quiet when idle,
timestamped and JSON event lines, `--json` always a list, and two dispatch processes at once."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from newsletter.cli.eventlog import JSON, PLAIN, STAMPED, EventLog
from newsletter.config import load
from newsletter.errors import ConfigError
from newsletter.ledger.base import Lease
from newsletter.ledger.sqlite import SQLiteLedger
from newsletter.sending.schedule import Action, IssueFacts, decide, parse_duration, read_schedule
from sendkill import outbox_deliveries, send_env, write_list

ISSUE = "2026-11-30-weekly"
SECRET = {"NEWSLETTER_SECRET": "test-secret"}
NOW = datetime(2026, 12, 3, 8, 0, tzinfo=timezone.utc)  # the fake clock
THREE_DAYS = timedelta(days=3)
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d ")  # ISO 8601, local time with its offset
SUBSCRIBED = ["ada@example.com", "grace@example.org", "linus@example.net", "margaret@example.com"]


def ago(**delta) -> str:
    return (datetime.now(timezone.utc) - timedelta(**delta)).isoformat(timespec="seconds")


def set_send_at(workspace, when: str, issue: str = ISSUE) -> None:
    path = workspace / "issues" / f"{issue}.md"
    text = re.sub(r"(?m)^send_at: .*\n", "", path.read_text())
    path.write_text(text.replace("date: 2026-11-30\n", f"date: 2026-11-30\nsend_at: {when}\n", 1))


def copy_issue(workspace, new_id: str, send_at: str) -> None:
    text = (workspace / "issues" / f"{ISSUE}.md").read_text()
    (workspace / "issues" / f"{new_id}.md").write_text(text)
    set_send_at(workspace, send_at, new_id)


def delivered(workspace, issue: str = ISSUE) -> list[str]:
    return sorted(outbox_deliveries(workspace, issue))


# -- the rule, with a fake clock ------------------------------------------------------------------
def facts(send_at: datetime | None, **kw) -> IssueFacts:
    return IssueFacts("x", "issues/x.md", send_at, **kw)


@pytest.mark.parametrize("send_at, kw, action", [
    (NOW - timedelta(minutes=1), {}, Action.SEND),
    (NOW, {}, Action.SEND),
    (NOW - THREE_DAYS, {}, Action.SEND),  # exactly max-age old: still sent
    (NOW + timedelta(minutes=1), {}, Action.WAITING),
    (NOW - THREE_DAYS - timedelta(seconds=1), {}, Action.TOO_OLD),
    (NOW - timedelta(days=300), {"started": True, "unfinished": True}, Action.RESUME),  # a started plan finishes
    (None, {"started": True, "unfinished": True}, Action.RESUME),  # its file gone, or no send_at
    (NOW - timedelta(hours=1), {"started": True}, Action.FINISHED),
    (None, {}, Action.UNSCHEDULED),
    # A plan finished only through the outbox, the provider since switched: nobody got it, so it is judged
    # as never started (and its send refused with the way out, below).
    (NOW - timedelta(hours=1), {"started": True, "trial_only": True}, Action.SEND),
    (NOW - THREE_DAYS - timedelta(seconds=1), {"started": True, "trial_only": True}, Action.TOO_OLD),
    (None, {"started": True, "trial_only": True}, Action.UNSCHEDULED),
    # Cancelled (`newsletter cancel`): finished, even with rows pending again (reconcile may put some back).
    (NOW - timedelta(hours=1), {"started": True, "unfinished": True, "cancelled": True}, Action.FINISHED),
])
def test_the_due_rule(send_at, kw, action):
    assert decide(facts(send_at, **kw), NOW, THREE_DAYS).action is action


def test_an_issue_another_live_run_holds_is_busy_only_if_it_would_be_sent():
    lease = Lease("x", "other", 1, "host", 0.0, 0.0)
    assert decide(facts(NOW - timedelta(hours=1), held_by=lease), NOW, THREE_DAYS).action is Action.BUSY
    assert decide(facts(NOW + timedelta(hours=1), held_by=lease), NOW, THREE_DAYS).action is Action.WAITING


@pytest.mark.parametrize("text, seconds", [("3d", 259200), ("12h", 43200), ("90m", 5400), ("1w", 604800),
                                           ("1d12h", 129600), ("45s", 45), (" 2D ", 172800)])
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "3", "d", "3x", "3 d", "-1d", "1.5d", "3days"])
def test_a_duration_that_is_not_one_is_refused(text):
    with pytest.raises(ConfigError, match="is not a duration"):
        parse_duration(text)


def test_the_schedule_reads_the_issue_files_and_the_ledger_at_the_time_given(workspace):
    set_send_at(workspace, "2026-12-03T07:00:00+00:00")
    copy_issue(workspace, "2026-12-10-later", "2026-12-10T08:00:00+01:00")
    copy_issue(workspace, "2026-11-20-old", "2026-11-20T08:00:00+01:00")
    (workspace / "issues" / "2026-12-07-nozone.md").write_text(
        "---\nsubject: Next week\ndate: 2026-12-07\nsend_at: 2026-12-07T08:00:00\n---\nHello\n")
    settings = load(workspace / "newsletter.toml", {})
    schedule = read_schedule(settings, NOW, THREE_DAYS)
    assert {v.facts.issue_id: v.action for v in schedule.verdicts} == {
        ISSUE: Action.SEND, "2026-12-10-later": Action.WAITING, "2026-11-20-old": Action.TOO_OLD}
    [naive] = schedule.broken  # a naive send_at is refused, with its file and line
    assert re.fullmatch(r"\S*issues/2026-12-07-nozone\.md:4: send_at 2026-12-07 08:00:00 has no time zone "
                        r"\(add the offset, .*\)", naive.render())
    later = read_schedule(settings, NOW + timedelta(days=8), THREE_DAYS)
    assert {v.facts.issue_id: v.action for v in later.verdicts}["2026-12-10-later"] is Action.SEND
    assert {v.facts.issue_id: v.action for v in later.verdicts}[ISSUE] is Action.TOO_OLD


# -- quiet when idle --------------------------------------------------------------------------------
def test_with_nothing_due_dispatch_prints_nothing_at_all(run, workspace):
    set_send_at(workspace, "2099-01-01T09:00:00+00:00")
    result = run("dispatch", env=SECRET)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    assert not (workspace / ".newsletter").exists()  # and writes nothing


def test_with_nothing_due_verbose_says_why(run, workspace):
    set_send_at(workspace, "2099-01-01T09:00:00+00:00")
    copy_issue(workspace, "2026-12-10-unscheduled", "")
    result = run("-v", "dispatch", env=SECRET)
    assert result.exit_code == 0 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert all(STAMP.match(line) for line in lines)
    assert [STAMP.sub("", line) for line in lines] == [
        f"{ISSUE}: not due until 2099-01-01T09:00:00+00:00",
        "2026-12-10-unscheduled: no send_at; sent by hand (newsletter send 2026-12-10-unscheduled)",
        "Nothing to dispatch.",
    ]


def test_json_with_nothing_due_is_an_empty_list_and_nothing_else(run, workspace):
    set_send_at(workspace, "2099-01-01T09:00:00+00:00")
    result = run("dispatch", "--json", env=SECRET)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "[]\n", "")


def test_a_finished_issue_leaves_dispatch_quiet(run, workspace):
    set_send_at(workspace, ago(hours=1))
    assert run("dispatch", env=SECRET).exit_code == 0
    again = run("dispatch", "--json", env=SECRET)
    assert (again.exit_code, again.stdout, again.stderr) == (0, "[]\n", "")
    assert delivered(workspace) == SUBSCRIBED


def test_an_issue_only_tried_through_the_outbox_is_refused_when_due_not_called_finished(run, workspace):
    """The trial went through the outbox, then [provider] name became a real provider: dispatch must not
    stay silent (nobody got the issue), and must not send it either without `send --restart`."""
    set_send_at(workspace, ago(hours=1))
    assert run("dispatch", env=SECRET).exit_code == 0 and delivered(workspace) == SUBSCRIBED  # the outbox trial
    env = {**SECRET, "NEWSLETTER_PROVIDER_NAME": "postmark", "NEWSLETTER_API_KEY": "k",
           "NEWSLETTER_PROVIDER_API_BASE": "http://127.0.0.1:9"}  # nothing may be asked of it
    result = run("dispatch", env=env)
    assert result.exit_code == 1
    assert (f"Error: issue {ISSUE} was first sent through outbox; this run would send through postmark (stream "
            f"broadcast). Nothing was sent or changed (to forget the outbox trial and send the issue to everyone "
            f"through postmark: `newsletter send {ISSUE} --restart`") in result.stderr
    assert run("-v", "dispatch", env=SECRET).stderr.count("finished") == 1  # through the outbox it is finished


# -- --max-age ----------------------------------------------------------------------------------------
def test_an_issue_older_than_max_age_is_left_alone_and_reported_once(run, workspace):
    set_send_at(workspace, ago(days=7))
    first = run("dispatch", env=SECRET)
    assert first.exit_code == 0 and first.stdout == "" and delivered(workspace) == []
    [line] = first.stderr.splitlines()
    assert STAMP.match(line)
    assert re.search(rf"Warning: {ISSUE}: send_at \S+ was 7 days ago, more than --max-age 3d: not sent, and not "
                     rf"mentioned again; to send it anyway: newsletter send {ISSUE}$", line)
    again = run("dispatch", env=SECRET)
    assert (again.exit_code, again.stdout, again.stderr) == (0, "", "")  # not every 10 minutes forever
    verbose = run("-v", "dispatch", env=SECRET)
    assert f"{ISSUE}: send_at" in verbose.stderr and "(reported before)" in verbose.stderr
    assert delivered(workspace) == []


def test_a_new_send_at_is_judged_again(run, workspace):
    set_send_at(workspace, ago(days=7))
    assert "Warning:" in run("dispatch", env=SECRET).stderr
    set_send_at(workspace, ago(days=6))  # moved, still too old: said again, once
    assert "was 6 days ago" in run("dispatch", env=SECRET).stderr
    assert run("dispatch", env=SECRET).stderr == ""
    set_send_at(workspace, ago(hours=1))  # moved into the window: sent
    assert run("dispatch", env=SECRET).exit_code == 0 and delivered(workspace) == SUBSCRIBED


def test_max_age_is_the_users_to_choose(run, workspace):
    set_send_at(workspace, ago(hours=13))
    result = run("dispatch", "--max-age", "12h", env=SECRET)
    assert "more than --max-age 12h: not sent" in result.stderr and delivered(workspace) == []
    assert run("dispatch", "--max-age", "1d", env=SECRET).exit_code == 0
    assert delivered(workspace) == SUBSCRIBED


def test_a_bad_max_age_is_a_usage_error(run, workspace):
    result = run("dispatch", "--max-age", "3 days", env=SECRET)
    assert result.exit_code == 2 and "Invalid value for '--max-age': '3 days' is not a duration" in result.stderr


def test_a_dry_run_reports_a_too_old_issue_every_time_and_writes_nothing(run, workspace):
    set_send_at(workspace, ago(days=7))
    for _ in range(2):
        result = run("dispatch", "--dry-run", env=SECRET)
        assert result.exit_code == 0 and "more than --max-age 3d: not sent; to send it anyway" in result.stderr
    assert not (workspace / ".newsletter").exists()


def test_a_started_plan_is_resumed_whatever_its_age(run, workspace):
    set_send_at(workspace, ago(days=30))
    assert run("send", ISSUE, "--yes", "--limit", "1", env=SECRET).exit_code == 4
    result = run("dispatch", env=SECRET)
    assert result.exit_code == 0, result.stderr
    assert "max-age" not in result.stderr and delivered(workspace) == SUBSCRIBED


# -- the lines under cron ----------------------------------------------------------------------------
def test_without_a_terminal_every_line_is_timestamped_and_stdout_stays_empty(run, workspace):
    set_send_at(workspace, ago(hours=1))
    (workspace / "issues" / "2026-12-14-broken.md").write_text("---\nsubject: [unclosed\n---\nHello\n")
    result = run("dispatch", env=SECRET)
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) >= 4 and all(STAMP.match(line) for line in lines), result.stderr
    text = [STAMP.sub("", line) for line in lines]
    assert re.match(r"Error: \S*2026-12-14-broken\.md:\d+: front matter is not valid YAML", text[0])
    assert text[1].startswith(f'{ISSUE}: "Field Notes #48') and "sending 4 now" in text[1]
    assert re.fullmatch(r"batch [0-9a-f]{16}: 4 sent in [\d.]+ s \[4/4\]", text[2])
    assert text[3] == f"{ISSUE}: sent 4 now. Totals: 4 sent, 0 failed, 0 unknown, 0 skipped, 0 pending, of 4 planned."


def test_log_json_gives_one_json_object_per_line(run, workspace):
    set_send_at(workspace, ago(hours=1))
    copy_issue(workspace, "2026-11-20-old", ago(days=7))
    result = run("dispatch", "--log-json", env=SECRET)
    assert result.exit_code == 0 and result.stdout == ""
    events = [json.loads(line) for line in result.stderr.splitlines()]
    for event in events:
        assert {"time", "level", "event", "message"} <= set(event)
        assert datetime.fromisoformat(event["time"]).tzinfo is not None
    assert [(e["level"], e["event"]) for e in events] == [("warning", "too_old"), ("info", "plan"),
                                                          ("info", "batch"), ("info", "done")]
    too_old, plan, batch, done = events
    assert too_old["issue"] == "2026-11-20-old" and "newsletter send 2026-11-20-old" in too_old["message"]
    assert plan["issue"] == ISSUE and plan["send_now"] == 4 and plan["provider"] == "outbox"
    assert batch["states"] == {"sent": 4} and batch["done"] == 4
    assert done["sent_now"] == 4 and done["exit_code"] == 0 and done["issue"] == ISSUE


def test_json_is_one_list_on_stdout_with_an_object_per_issue(run, workspace):
    set_send_at(workspace, ago(hours=1))
    copy_issue(workspace, "2026-12-01-second", ago(hours=2))
    result = run("dispatch", "--json", env=SECRET)
    assert result.exit_code == 0
    records = json.loads(result.stdout)
    assert [(r["issue"], r["sent_now"], r["exit_code"]) for r in records] == [(ISSUE, 4, 0),
                                                                              ("2026-12-01-second", 4, 0)]
    assert all(STAMP.match(line) for line in result.stderr.splitlines())


def test_json_names_an_issue_that_could_not_be_sent(run, workspace):
    set_send_at(workspace, ago(hours=1))
    assert run("send", ISSUE, "--yes", "--limit", "1", env=SECRET).exit_code == 4
    issue = workspace / "issues" / f"{ISSUE}.md"
    issue.write_text(issue.read_text().replace("Welcome back", "Welcome again"))
    result = run("dispatch", "--json", env=SECRET)
    assert result.exit_code == 1
    [record] = json.loads(result.stdout)
    assert record["issue"] == ISSUE and record["exit_code"] == 1 and "changed since its first send" in record["error"]


def test_a_config_error_is_one_timestamped_line(run, workspace):
    result = run("dispatch", env={**SECRET, "NEWSLETTER_PROVIDER_TEST_MODE": "true"})
    assert result.exit_code == 1 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert STAMP.match(line) and "Error: env NEWSLETTER_PROVIDER_TEST_MODE: [provider] test_mode is on" in line


def test_json_is_still_one_list_when_the_config_is_wrong(run, workspace):
    (workspace / "newsletter.toml").write_text((workspace / "newsletter.toml").read_text() + "\n[provider]\n")
    result = run("dispatch", "--json", env=SECRET)
    assert result.exit_code == 1
    [record] = json.loads(result.stdout)
    assert record["issue"] is None and record["exit_code"] == 1 and "newsletter.toml" in record["error"]


# -- two dispatch processes at once ---------------------------------------------------------------------
def start_dispatch(workspace, env, *args, json_out=False):
    command = [sys.executable, "-c", "from newsletter.cli import main; main()", *args, "dispatch"]
    return subprocess.Popen(command + (["--json"] if json_out else []),
                            cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def slow_list(workspace):
    """300 readers, sent 10 a batch at 5 batches a second: a dispatch holds the issue for about 6 s."""
    eligible = write_list(workspace / "subscribers" / "subscribers.csv", 300)
    set_send_at(workspace, ago(hours=1))
    env = send_env(NEWSLETTER_SECRET="test-secret", NEWSLETTER_PROVIDER_BATCH_SIZE="10",
                   NEWSLETTER_PROVIDER_RATE_LIMIT="5", NEWSLETTER_PROVIDER_CONCURRENCY="1")
    return eligible, env


def test_a_second_dispatch_leaves_a_held_issue_alone_quietly_with_exit_75(workspace, slow_list):
    eligible, env = slow_list
    first = start_dispatch(workspace, env)
    ledger_path = workspace / ".newsletter" / "ledger.sqlite3"
    deadline = time.monotonic() + 30
    while True:  # wait until the first run holds the issue and is sending
        assert time.monotonic() < deadline and first.poll() is None, "the first dispatch never took the issue"
        if ledger_path.exists():
            with SQLiteLedger(ledger_path, readonly=True) as db:
                if db.lease(ISSUE) is not None and db.counts(ISSUE)["sent"]:
                    break
        time.sleep(0.05)
    second = start_dispatch(workspace, env)
    out, err = second.communicate(timeout=60)
    assert (second.returncode, out, err) == (75, "", "")
    as_json = start_dispatch(workspace, env, json_out=True)
    out, err = as_json.communicate(timeout=60)
    if first.poll() is None:  # still sending: --json names the issue left alone
        [record] = json.loads(out)
        assert as_json.returncode == 75 and record["issue"] == ISSUE and record["exit_code"] == 75
    verbose = start_dispatch(workspace, env, "-v")
    out, err = verbose.communicate(timeout=60)
    if first.poll() is None:  # still sending: -v says who holds it
        assert verbose.returncode == 75 and f"{ISSUE}: another run is sending it (pid {first.pid} on " in err
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert outbox_deliveries(workspace) == {email: 1 for email in eligible}


def test_two_dispatches_started_together_send_each_reader_once(workspace, slow_list):
    eligible, env = slow_list
    runs = [start_dispatch(workspace, env) for _ in range(2)]
    results = [(p.returncode, out, err) for p in runs for out, err in [p.communicate(timeout=120)]]
    codes = sorted(code for code, _, _ in results)
    assert codes in ([0, 0], [0, 75]), results  # 0 twice: the second came after the first had finished
    assert all(out == "" for _, out, _ in results)
    loser = [err for code, _, err in results if code == 75]
    assert loser in ([], [""])  # the one left out says nothing: cron mails nothing for it
    assert outbox_deliveries(workspace) == {email: 1 for email in eligible}


# -- the pieces ---------------------------------------------------------------------------------------
def test_a_notice_is_recorded_once_across_connections(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    with SQLiteLedger(path) as one, SQLiteLedger(path) as other:
        assert one.mark_noticed("x", "too-old:2026-11-20T08:00:00+01:00") is True
        assert other.mark_noticed("x", "too-old:2026-11-20T08:00:00+01:00") is False
        assert other.mark_noticed("x", "too-old:2026-11-21T08:00:00+01:00") is True  # a new send_at
        assert one.mark_noticed("y", "too-old:2026-11-20T08:00:00+01:00") is True


@pytest.mark.parametrize("style, expected", [
    (PLAIN, "Warning: late\n"),
    (STAMPED, "2026-12-03T09:00:00+01:00 Warning: late\n"),
    (JSON, '{"time": "2026-12-03T09:00:00.000+01:00", "level": "warning", "event": "too_old", "message": "late", '
           '"issue": "x"}\n'),
])
def test_event_log_styles(capsys, style, expected):
    clock = lambda: datetime(2026, 12, 3, 9, 0, tzinfo=timezone(timedelta(hours=1)))  # noqa: E731
    log = EventLog(style, quiet=True, clock=clock)
    log.info("dropped under -q")
    log.detail("dropped without -v")
    log.warn("late", event="too_old", issue="x")
    assert capsys.readouterr() == ("", expected)


def test_an_invalid_row_names_the_issue_and_the_send_by_hand_dispatch_cannot_do(run, workspace):
    """`dispatch` has no --skip-invalid: its error says which issue, and the command that skips the rows."""
    set_send_at(workspace, ago(hours=1))
    with (workspace / "subscribers" / "subscribers.csv").open("a", encoding="utf-8") as f:
        f.write("not-an-email,Bad,subscribed,weekly,2026-01-04,X\n")
    result = run("dispatch", env=SECRET)
    assert result.exit_code == 1 and delivered(workspace) == []
    assert f"Error: {ISSUE}: subscribers/subscribers.csv: 1 problem(s) in the subscriber list" in result.stderr
    assert (f"or send it by hand without those rows: `newsletter send {ISSUE} --skip-invalid`."
            in result.stderr)
    assert "pass --skip-invalid" not in result.stderr
    records = json.loads(run("dispatch", "--json", env=SECRET).stdout)
    assert records[0]["issue"] == ISSUE and "--skip-invalid`" in records[0]["error"]
