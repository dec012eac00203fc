"""``newsletter send``: the CLI side of :func:`newsletter.sending.run.send_issue`.

It parses, asks and prints; the run itself is in ``newsletter/sending/run.py``. Exit codes
(docs/sending.md): 0 done, 1 error, 2 usage, 3 done with failures or recipients in doubt,
4 incomplete (run again to resume), 75 another run holds the issue.

Recipients in doubt (``unknown``): on a terminal without ``--yes``, ``send`` offers to ask
the provider about them before sending (``newsletter reconcile``'s code); the last line of
every run says how many remain in doubt and the exact command to run.
"""

from __future__ import annotations

import json
import sys

import click

from ..compile.lint import CHECKS
from ..errors import NewsletterError
from ..sending.plan import SendOptions, Summary
from ..sending.run import Conversation, SendResult, exit_code, send_issue
from . import App, cli, pass_app
from .indoubt import in_doubt_line, say_reconciliation
from .progress import Progress


ignore_lint_option = click.option(
    "--ignore-lint", multiple=True, metavar="CHECK", type=click.Choice(CHECKS),
    help="Send even though lint's CHECK (named in brackets in its errors) finds an error; repeat for more "
         "checks. 'from' cannot be ignored.")


@cli.command()
@click.argument("issue")
@click.option("--dry-run", is_flag=True, help="Print what would be sent; write nothing anywhere.")
@click.option("-y", "--yes", is_flag=True, help="Send without asking for confirmation (cron, scripts).")
@click.option("--segment", metavar="TAG", help="Send only to subscribers tagged TAG [default: front matter segment].")
@click.option("--limit", type=click.IntRange(min=1), metavar="N",
              help="Send to at most N recipients in this run; the rest stay pending for the next run.")
@click.option("--resend-unknown", is_flag=True,
              help="Send again to recipients whose earlier delivery is in doubt (they may get two copies).")
@click.option("--retry-failed", is_flag=True,
              help="Move recipients who failed (e.g. a bad merge value, since fixed) back to pending and send "
                   "them; suppressed addresses stay failed.")
@click.option("--include-new", is_flag=True, help="Add subscribers who joined since the first run to the plan.")
@click.option("--skip-invalid", is_flag=True, help="Skip invalid rows of the list (recorded as skipped) instead of refusing.")
@click.option("--restart", is_flag=True,
              help="Forget a plan that was only ever sent through the outbox (a trial) and send the issue afresh "
                   "through the configured provider; refused once any reader went through a real provider.")
@click.option("--allow-changed", is_flag=True, help="With --yes: resume even though the issue changed since the first run.")
@ignore_lint_option
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@pass_app
def send(app: App, issue: str, dry_run: bool, yes: bool, segment: str | None, limit: int | None,
         resend_unknown: bool, retry_failed: bool, include_new: bool, skip_invalid: bool, restart: bool,
         allow_changed: bool, ignore_lint: tuple[str, ...], as_json: bool) -> None:
    """Send ISSUE (path or id) to every eligible subscriber, or resume an earlier run.

    The first run freezes the list of recipients in the ledger; later runs resume it
    and never send anybody a second copy.
    """
    options = SendOptions(segment=segment, limit=limit, resend_unknown=resend_unknown, retry_failed=retry_failed,
                          include_new=include_new, skip_invalid=skip_invalid, restart=restart,
                          ignore_lint=frozenset(ignore_lint))
    code = send_one(app, issue, options, dry_run=dry_run, yes=yes, allow_changed=allow_changed, as_json=as_json)
    if code:
        raise click.exceptions.Exit(code)


def send_one(app: App, issue: str, options: SendOptions, *, dry_run: bool = False, yes: bool = False,
             allow_changed: bool = False, as_json: bool = False) -> int:
    """One issue, start to finish; returns the exit code of docs/sending.md (errors are raised)."""
    say = _Say(app, as_json, dry_run=dry_run)
    def ask(question: str, default: bool) -> bool:  # on stderr when stdout carries JSON
        return click.confirm(question, default=default, err=as_json)

    talk = Conversation(info=say, warn=app.warn, summary=say.summary, ask=ask if _interactive() else None,
                        reconciled=lambda report: say_reconciliation(say, report, sending=True),
                        progress=lambda total: Progress(total, quiet=app.quiet))
    try:
        result = send_issue(app.settings(), issue, options, talk, dry_run=dry_run, yes=yes,
                            allow_changed=allow_changed)
    except NewsletterError as err:  # refused before sending: --json still gets its one object on stdout
        if as_json:
            click.echo(json.dumps({"issue": issue, "exit_code": err.exit_code, "error": err.render()}))
        raise
    summary = result.summary
    if dry_run:
        if as_json:
            click.echo(json.dumps(dry_run_record(summary)))
        return 0
    if result.declined:
        click.echo("Not sent.", err=as_json)
        if as_json:
            click.echo(json.dumps({"issue": summary.issue_id, "declined": True, "exit_code": 0, "sent_now": 0,
                                   **summary.counts}))
        return 0
    return _finish(result, as_json)


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _finish(result: SendResult, as_json: bool) -> int:
    if as_json:
        record = result_record(result)
        if isinstance(result.totals.error, NewsletterError):  # what stopped it, as dispatch --json says it
            record["error"] = result.totals.error.render()
        click.echo(json.dumps(record))
    else:
        for line in result_lines(result):
            click.echo(line)
    if result.counts["unknown"]:
        click.echo(in_doubt_line(result.provider, result.summary.issue_id, result.counts["unknown"]), err=as_json)
    if result.totals.error is not None:
        raise result.totals.error
    return exit_code(result.counts, result.others)


def dry_run_record(summary: Summary) -> dict:
    """``send --dry-run --json``'s object (docs/sending.md)."""
    return {"issue": summary.issue_id, "dry_run": True, "to_send": summary.sending_now,
            "planned": summary.planned, "new_subscribers": summary.new_subscribers, **summary.counts}


def result_record(result: SendResult) -> dict:
    """``send --json``'s object (docs/sending.md)."""
    summary, totals, counts = result.summary, result.totals, result.counts
    return {"issue": summary.issue_id, "exit_code": 1 if totals.error else exit_code(counts, result.others),
            "sent_now": totals.sent, "failed_now": totals.failed, "unknown_now": totals.unknown,
            "retried_failed": summary.retry_failed, "batches": totals.batches,
            "stopped": totals.aborted or None, "new_subscribers": summary.new_subscribers,
            "total": sum(counts.values()), **counts}


def result_lines(result: SendResult) -> list[str]:
    """The final summary in words: totals, where to look at failures, how to resume."""
    summary, totals, counts = result.summary, result.totals, result.counts
    lines = [f"{summary.issue_id}: sent {totals.sent} now. Totals: {counts['sent']} sent, "
             f"{counts['failed']} failed, {counts['unknown']} unknown, {counts['skipped']} skipped, "
             f"{counts['pending'] + counts['sending']} pending, of {sum(counts.values())} planned."]
    if counts["failed"] or counts["unknown"]:
        lines.append(f"See who and why: newsletter status {summary.issue_id} --failed")
    if result.others:
        lines.append(f"{result.others} of the pending are being sent by other workers now "
                     f"(`newsletter status {summary.issue_id}` lists them).")
    if exit_code(counts, result.others) == 4:
        why = totals.incomplete_reason()
        again = ("Fix what the error below says, then run" if totals.error is not None else "Run")
        lines.append(f"Incomplete{': ' + why if why else ''}. "
                     f"{again} `newsletter send {summary.issue_id}` again to resume.")
    return lines


def summary_notes(s: Summary) -> list[str]:
    """What a resumed plan holds besides the plain counts, and the invalid rows skipped."""
    notes = []
    if s.early:  # `send` sends now whatever send_at says; only `dispatch` waits for it
        notes.append(f"Scheduled:  {s.early}; this sends now (`newsletter dispatch` from cron would send it then)")
    if s.renamed_from:  # said before the question: a second copy to everyone is what this tool exists to prevent
        notes.append(f"Renamed?:   issue {s.renamed_from} was sent to {s.renamed_sent} reader(s) with this subject, "
                     f"and no file in issues/ is {s.renamed_from} any more: if this file is it, renamed, stop and "
                     f"add 'id: {s.renamed_from}' to its front matter, or everyone gets it twice")
    if s.suppressed_out:
        notes.append(f"Left out:   {s.suppressed_out} suppressed reader(s) of the list (`newsletter suppressions "
                     f"list` names them)")
    if not s.first_run:
        if s.new_subscribers and s.include_new:
            notes.append(f"New:        {s.new_subscribers} subscriber(s) joined since the first run; added now "
                         f"(--include-new)")
        elif s.new_subscribers:
            notes.append(f"New:        {s.new_subscribers} subscriber(s) joined since the first run and are not in "
                         f"the plan; add them with `newsletter send {s.issue_id} --include-new`")
        if s.counts["unknown"] and s.resend_unknown:
            notes.append(f"In doubt:   {s.counts['unknown']} unknown, sent again now (--resend-unknown)")
        elif s.counts["unknown"]:
            notes.append(f"In doubt:   {s.counts['unknown']} unknown (not re-sent without --resend-unknown)")
        if s.retry_failed:
            notes.append(f"Failed:     {s.retry_failed} failed recipient(s) back to pending (--retry-failed)")
        elif s.counts["failed"]:
            notes.append(f"Failed:     {s.counts['failed']} failed (not re-sent without --retry-failed)")
        if s.in_doubt:
            notes.append(f"Interrupted: {s.in_doubt} recipient(s) left mid-batch by a stopped run; {s.in_doubt_action}")
        if s.content_changed:
            notes.append("Changed:    the issue's content differs from the first run's")
    notes.extend(f"Skipping invalid row: {problem}" for problem in s.invalid[:10])
    return notes


class _Say:
    """The pre-send summary: stdout normally, stderr when stdout carries JSON."""

    def __init__(self, app: App, as_json: bool, *, dry_run: bool):
        self.app = app
        self.err = as_json
        self.dry_run = dry_run

    def __call__(self, text: str) -> None:
        if not self.app.quiet:
            click.echo(text, err=self.err)

    def summary(self, s: Summary) -> None:
        self(f"Issue:      {s.issue_id}")
        self(f"Subject:    {s.subject}")
        self(f"Provider:   {s.provider}")
        self(f"Segment:    {s.segment or '(everyone subscribed)'}")
        if s.restarting is not None:
            trial = ", ".join(f"{n} {state}" for state, n in s.restarting.items() if n) or "no rows"
            forgotten = "would be forgotten" if self.dry_run else "is forgotten when the send starts"
            if s.restarting_from in ("", "outbox"):
                self(f"Restart:    the outbox trial's plan ({trial}) {forgotten}; its .eml files stay in outbox/")
            else:
                self(f"Restart:    the plan bound to {s.restarting_from}, which reached nobody ({trial}), {forgotten}")
        if s.replanned_from is not None:
            frozen = "would be planned again with these" if self.dry_run else "is planned again when the send starts"
            self(f"Recipients: {s.planned} (nobody was sent this issue yet, so the plan for segment "
                 f"{s.replanned_from or '(everyone)'!r} {frozen})")
        elif s.first_run:
            frozen = (f"a send would freeze these {s.planned} as the plan" if self.dry_run else
                      "the plan is frozen when the send starts")
            self(f"Recipients: {s.planned} (first run: {frozen})")
        else:
            self(f"Plan:       {s.planned} recipients, {s.counts['sent']} already sent, {s.counts['skipped']} skipped")
        for note in summary_notes(s):
            self(note)
        self(f"Send now:   {s.sending_now}{f' (--limit {s.limit})' if s.limit is not None else ''}")
        if self.dry_run:
            self("Dry run: nothing was sent or written.")


