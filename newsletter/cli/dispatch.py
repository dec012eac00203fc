"""``newsletter dispatch``: for cron, send every issue that is due and resume unfinished ones.

What is due is decided in ``newsletter/sending/schedule.py``; this module parses, asks it and prints.
Quiet when idle: with nothing to do it prints nothing (cron mails any output). Every line goes to
stderr through :class:`EventLog` (timestamped without a terminal, JSON with ``--log-json``); stdout
carries only ``--json``'s list. See docs/sending.md, "Cron".
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import click

from ..errors import LeaseHeld, NewsletterError
from ..sending.plan import SendOptions, Summary
from ..sending.run import Conversation, exit_code, refuse_test_mode, send_issue
from ..sending.schedule import (DEFAULT_MAX_AGE, Action, Schedule, Verdict, first_notices, parse_duration,
                                read_schedule)
from . import App, cli, pass_app
from .eventlog import EventLog
from .indoubt import in_doubt_line, say_reconciliation
from .progress import Progress
from .send import dry_run_record, ignore_lint_option, result_lines, result_record, summary_notes

WORST_FIRST = (1, 4, 3, 75)  # the exit code of a dispatch is its worst issue's


@cli.command()
@click.option("--dry-run", is_flag=True, help="List what would be sent; write nothing anywhere.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list on stdout, one object per issue sent or resumed ([] when none).")
@click.option("--max-age", "max_age_text", default=DEFAULT_MAX_AGE, show_default=True, metavar="DURATION",
              help="Leave alone (and say so once) an issue whose send_at is older than this: 3d, 12h, 90m, 1w. "
                   "A plan already started is finished whatever its age.")
@click.option("--log-json", is_flag=True, help="Write events to stderr as one JSON object per line.")
@ignore_lint_option
@pass_app
def dispatch(app: App, dry_run: bool, as_json: bool, max_age_text: str, log_json: bool,
             ignore_lint: tuple[str, ...]) -> None:
    """For cron: send every issue whose send_at has passed, and resume unfinished ones.

    Never asks; an issue whose content changed since its first send is left alone
    (resume it by hand with `newsletter send ISSUE --allow-changed`); an issue file that
    cannot be read is reported and the others are still sent. Prints nothing when there is
    nothing to do (`newsletter -v dispatch` says why). Exit code: 1 if any issue failed or could not be read, else
    4, 3, 75 or 0 by the worst issue (docs/sending.md).
    """
    try:
        max_age = parse_duration(max_age_text)
    except NewsletterError as err:
        raise click.BadParameter(err.render(), param_hint="'--max-age'") from None
    log = EventLog.for_stderr(as_json=log_json, quiet=app.quiet, verbose=app.verbose)
    records: list[dict] = []
    try:
        code = _dispatch(app, log, records, SendOptions(ignore_lint=frozenset(ignore_lint), unattended=True), dry_run=dry_run,
                         max_age=max_age, max_age_text=max_age_text)
    except NewsletterError as err:  # the config, the ledger: one event like the rest, then its exit code
        log.error(err.render(), exit_code=err.exit_code)
        if as_json:  # still one list: what was done before it, then the error, of no one issue
            click.echo(json.dumps([*records, {"issue": None, "exit_code": err.exit_code, "error": err.render()}]))
        raise click.exceptions.Exit(err.exit_code) from None
    if as_json:
        click.echo(json.dumps(records))
    if code:
        raise click.exceptions.Exit(code)


def _dispatch(app: App, log: EventLog, records: list[dict], options: SendOptions, *, dry_run: bool,
              max_age: timedelta, max_age_text: str) -> int:
    settings = app.settings()
    if not dry_run:
        refuse_test_mode(settings, "dispatch")
    schedule = read_schedule(settings, datetime.now(timezone.utc), max_age)
    codes = []
    for problem in schedule.broken:  # cron mails stderr: every issue it cannot judge is named, the others still go
        log.error(problem.render(), event="unreadable", path=problem.path, line=problem.line)
        codes.append(1)
    too_old = schedule.having(Action.TOO_OLD)
    fresh = too_old if dry_run else first_notices(settings, too_old)
    for verdict in too_old:
        _say_too_old(log, verdict, max_age_text, first=verdict in fresh, dry_run=dry_run)
    for verdict in schedule.having(Action.BUSY):
        records.append({"issue": verdict.facts.issue_id, "exit_code": LeaseHeld.exit_code,
                        "error": _say_busy(log, verdict)})
        codes.append(LeaseHeld.exit_code)
    _say_why_not(log, schedule)
    for verdict in schedule.having(Action.SEND, Action.RESUME):
        if verdict.facts.file_gone:
            codes.append(_say_file_gone(log, verdict, records))
            continue
        codes.append(_send(app, log, verdict, records, options, dry_run=dry_run))
    return next((c for c in WORST_FIRST if c in codes), 0)


def _send(app: App, log: EventLog, verdict: Verdict, records: list[dict], options: SendOptions, *,
          dry_run: bool) -> int:
    """One issue through the same run as ``send --yes``; its events logged, its --json object kept."""
    issue_id = verdict.facts.issue_id
    talk = Conversation(
        info=lambda text: log.info(text, issue=issue_id), warn=lambda text: log.warn(text, issue=issue_id),
        summary=lambda s: _say_plan(log, s, dry_run=dry_run), ask=None,
        reconciled=lambda report: say_reconciliation(lambda text: log.info(text, issue=issue_id), report,
                                                     sending=True),
        progress=lambda total: Progress(total, quiet=app.quiet, tty=log.on_terminal,
                                        emit=lambda text, **fields: log.info(text, issue=issue_id, **fields)))
    try:
        result = send_issue(app.settings(), verdict.facts.ref, options, talk, dry_run=dry_run, yes=True)
    except LeaseHeld as err:  # another dispatch took it between the look and the send: it is in hand
        log.detail(err.render(), event="busy", issue=issue_id)
        records.append({"issue": issue_id, "exit_code": err.exit_code, "error": err.render()})
        return err.exit_code
    except NewsletterError as err:
        said = err.render()
        said = said if issue_id in said else f"{issue_id}: {said}"  # cron mails it: say which issue
        log.error(said, issue=issue_id, exit_code=err.exit_code)
        records.append({"issue": issue_id, "exit_code": err.exit_code, "error": said})
        return err.exit_code
    if dry_run:
        records.append(dry_run_record(result.summary))
        return 0
    record = result_record(result)
    records.append(record)
    first, *more = result_lines(result)
    log.info(first, event="done", final=True, **record)
    for line in more:
        log.info(line, issue=issue_id)
    if result.counts["unknown"]:
        log.warn(in_doubt_line(result.provider, issue_id, result.counts["unknown"]), event="in_doubt",
                 issue=issue_id)
    error = result.totals.error
    if error is not None:
        if not isinstance(error, NewsletterError):
            raise error
        record["error"] = error.render()  # --json: what stopped it, as for an issue that could not start
        log.error(error.render(), issue=issue_id, exit_code=1)
        return 1
    return exit_code(result.counts, result.others)


def _say_file_gone(log: EventLog, verdict: Verdict, records: list[dict]) -> int:
    """An unfinished plan that no issue file is any more: resuming it needs its text, which is gone or renamed."""
    issue_id = verdict.facts.issue_id
    said = (f"{issue_id}: its send is unfinished, but no file in issues/ is this issue any more (renamed or deleted); "
            f"nothing was sent. To finish it, put the file back, or add `id: {issue_id}` to the renamed file's front "
            f"matter; to stop it for good, run `newsletter cancel {issue_id}`")
    log.error(said, event="file_gone", issue=issue_id, exit_code=1)
    records.append({"issue": issue_id, "exit_code": 1, "error": said})
    return 1


def _say_plan(log: EventLog, s: Summary, *, dry_run: bool) -> None:
    """``send``'s summary in one line (and a line per note), for a log rather than a reader at a terminal."""
    plan = (f"first run, {s.planned} recipient(s) in the plan" if s.first_run else
            f"resuming a plan of {s.planned}: {s.counts['sent']} already sent, {s.counts['skipped']} skipped")
    verb = "would send" if dry_run else "sending"
    log.info(f'{s.issue_id}: "{s.subject}" through {s.provider} to {s.segment or "everyone subscribed"}; '
             f"{plan}; {verb} {s.sending_now} now", event="plan", issue=s.issue_id, subject=s.subject,
             provider=s.provider, segment=s.segment, first_run=s.first_run, planned=s.planned,
             send_now=s.sending_now, dry_run=dry_run)
    for note in summary_notes(s):
        log.info(f"{s.issue_id}: {' '.join(note.split())}", event="note", issue=s.issue_id)


def _say_too_old(log: EventLog, verdict: Verdict, max_age_text: str, *, first: bool, dry_run: bool) -> None:
    """The first time, a warning (cron mails it once); after that, only with -v. A dry run records nothing,
    so it warns every time."""
    facts = verdict.facts
    text = (f"{facts.issue_id}: send_at {facts.send_at.isoformat()} was {_age_words(verdict.age)} ago, more than "
            f"--max-age {max_age_text}: not sent")
    fields = dict(event="too_old", issue=facts.issue_id, send_at=facts.send_at.isoformat(), max_age=max_age_text)
    if first:
        once = "" if dry_run else ", and not mentioned again"
        log.warn(f"{text}{once}; to send it anyway: newsletter send {facts.issue_id}", **fields)
    else:
        log.detail(f"{text} (reported before); to send it anyway: newsletter send {facts.issue_id}", **fields)


def _say_busy(log: EventLog, verdict: Verdict) -> str:
    """Only with -v: the other run carries on, and the next dispatch picks up what it leaves. Returns the words."""
    lease = verdict.facts.held_by
    since = datetime.fromtimestamp(lease.acquired, timezone.utc).isoformat(timespec="seconds")
    text = (f"{verdict.facts.issue_id}: another run is sending it (pid {lease.pid} on {lease.host}, since "
            f"{since}); left to it")
    log.detail(text, event="busy", issue=verdict.facts.issue_id, pid=lease.pid, host=lease.host)
    return text


def _say_why_not(log: EventLog, schedule: Schedule) -> None:
    """With -v: each issue left alone and why; "Nothing to dispatch." when nothing is sent."""
    for verdict in schedule.having(Action.WAITING, Action.FINISHED, Action.UNSCHEDULED):
        issue_id = verdict.facts.issue_id
        why = {Action.WAITING: lambda: f"not due until {verdict.facts.send_at.isoformat()}",
               Action.FINISHED: lambda: _finished_words(verdict),
               Action.UNSCHEDULED: lambda: f"no send_at; sent by hand (newsletter send {issue_id})"}[verdict.action]()
        log.detail(f"{issue_id}: {why}", event=verdict.action.value, issue=issue_id)
    if not schedule.having(Action.SEND, Action.RESUME):
        log.detail("Nothing to dispatch.", event="idle")


def _finished_words(verdict: Verdict) -> str:
    """-v's word for a finished issue: what is still open about it, which dispatch itself never does."""
    facts = verdict.facts
    said = "cancelled" if facts.cancelled else "finished"
    if facts.in_doubt:
        said += (f"; {facts.in_doubt} recipient(s) in doubt: `newsletter reconcile {facts.issue_id}` asks the "
                 "provider")
    return said


def _age_words(age: timedelta) -> str:
    seconds = age.total_seconds()
    if seconds >= 2 * 86400:
        return f"{int(seconds // 86400)} days"
    if seconds >= 2 * 3600:
        return f"{int(seconds // 3600)} hours"
    return f"{int(seconds // 60)} minutes"
