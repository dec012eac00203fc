"""``newsletter send`` and ``newsletter status``: the delivery ledger from the command line.

Exit codes of ``send`` (DESIGN.md §3): 0 done, 1 error, 2 usage, 3 done with
failures or recipients in doubt, 4 incomplete (run again to resume), 75 another
run holds the issue.

Recipients in doubt (``unknown``): on a terminal without ``--yes``, ``send``
offers to ask the provider about them before sending (``newsletter reconcile``'s
code); the last line of every run says how many remain in doubt and the exact
command to run.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
import signal
import sys
from contextlib import contextmanager
from typing import Iterator

import click

from ..config import Settings
from ..dispatch import RunTotals
from ..errors import ConfigError, IssueError, NewsletterError, ProviderError
from ..issue import load_issue
from ..ledger import DOUBT_STATES, STATES, Lease, Ledger, open_ledger
from ..lookups import PacedSession
from ..pipeline import build_issue, issue_path
from ..providers import open_provider
from ..providers.base import Provider
from ..sendrun import LEASE_STALE_AFTER, LeaseKeeper, SendOptions, SendRun, Summary
from ..suppression_sync import sync_suppressions
from ..unsubscribe import PREVIEW_SECRET, PROVIDER_MANAGED
from . import App, cli, pass_app
from .indoubt import in_doubt_line, offer_reconcile
from .progress import Progress


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
@click.option("--allow-changed", is_flag=True, help="With --yes: resume even though the issue changed since the first run.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@pass_app
def send(app: App, issue: str, dry_run: bool, yes: bool, segment: str | None, limit: int | None,
         resend_unknown: bool, retry_failed: bool, include_new: bool, skip_invalid: bool, allow_changed: bool,
         as_json: bool) -> None:
    """Send ISSUE (path or id) to every eligible subscriber, or resume an earlier run.

    The first run freezes the list of recipients in the ledger; later runs resume it
    and never send anybody a second copy.
    """
    options = SendOptions(segment=segment, limit=limit, resend_unknown=resend_unknown, retry_failed=retry_failed,
                          include_new=include_new, skip_invalid=skip_invalid)
    code = send_one(app, issue, options, dry_run=dry_run, yes=yes, allow_changed=allow_changed, as_json=as_json)
    if code:
        raise click.exceptions.Exit(code)


def send_one(app: App, issue: str, options: SendOptions, *, dry_run: bool = False, yes: bool = False,
             allow_changed: bool = False, as_json: bool = False) -> int:
    """One issue, start to finish; returns the exit code of DESIGN.md §3 (errors are raised)."""
    settings = app.settings()
    if not dry_run:
        refuse_test_mode(settings, "send")
    built = build_issue(settings, issue)
    provider = open_provider(settings)
    secret = _signing_secret(app, settings, provider)
    say = _Say(app, as_json)
    try:
        if dry_run:
            with open_ledger(settings, readonly=True) as ledger:
                summary = SendRun(settings, built, provider, ledger, options, secret=secret).summary()
            say.summary(summary, dry_run=True)
            if as_json:
                click.echo(json.dumps({"issue": summary.issue_id, "dry_run": True, "to_send": summary.sending_now,
                                       "planned": summary.planned, **summary.counts}))
            return 0
        preflight(app, provider)
        with open_ledger(settings) as ledger:
            if settings.unsubscribe.url == PROVIDER_MANAGED:
                _sync_unsubscribes(app, provider, ledger, as_json)
            run = SendRun(settings, built, provider, ledger, options, secret=secret)  # validates the list
            with LeaseKeeper(ledger, built.issue.id) as keeper, _sigterm_as_interrupt():
                summary = run.summary()
                say.summary(summary, dry_run=False)
                unknown = summary.counts["unknown"]
                if unknown and not yes and not options.resend_unknown and _interactive():
                    if offer_reconcile(say, provider, ledger, built, run.personalizer, unknown):
                        summary = run.summary()  # some may be sent, or back to pending, now
                _confirm(summary, yes=yes, allow_changed=allow_changed)
                run.freeze_plan()
                with Progress(summary.sending_now, quiet=app.quiet) as progress:
                    totals = run.send(keeper.holder, on_batch=progress.batch, keeper=keeper)
            return _finish(app, ledger, provider, summary, totals, as_json)
    finally:
        provider.close()


def refuse_test_mode(settings: Settings, command: str) -> None:
    """A provider in test mode accepts and delivers nothing: a real send would record everyone as sent."""
    if settings.provider.test_mode:
        raise ConfigError(f"[provider] test_mode is on: {settings.provider.name} accepts messages in test mode "
                          f"without delivering them, and `{command}` would record every reader as sent",
                          path=settings.origins.get("provider.test_mode"),
                          hint="for proof copies use `newsletter test ISSUE --to ADDR`; set test_mode = false "
                               "to send for real")


def preflight(app: App, provider: Provider) -> None:
    """Ask the provider about its settings before anything is sent: a wrong key or a stream that cannot
    carry this newsletter stops here, and what it warns about is said (see Provider.preflight). The
    question is paced and asked again after a 429, 5xx or dropped connection."""
    with PacedSession(provider.rate_limit) as session:
        for warning in provider.preflight(session):
            app.warn(warning)


def _sync_unsubscribes(app: App, provider: Provider, ledger: Ledger, as_json: bool) -> None:
    """With the provider's own unsubscribe links, those who used them are on its list, not in ours: bring
    them in before planning, so they are left out rather than refused (and failed) one by one."""
    try:
        report = sync_suppressions(provider, ledger)
    except ProviderError as err:  # the provider refuses them anyway: a nuisance, not a danger
        app.warn(f"could not read {provider.name}'s suppressions before sending ({err.message}); those who "
                 f"unsubscribed through {provider.name} since the last sync will be refused by it and marked failed")
        return
    if report.added and not app.quiet:
        click.echo(f"Suppressed: {report.added} new from {provider.name} (unsubscribes, bounces, complaints)",
                   err=as_json)


def _signing_secret(app: App, settings: Settings, provider: Provider) -> bytes:
    """The unsubscribe signing secret from the environment; the outbox may fall back to the preview key."""
    if "{token}" not in settings.unsubscribe.url:
        return PREVIEW_SECRET  # no signed links in this newsletter
    secret = settings.secret("unsubscribe", "secret_env")
    if secret:
        return secret.encode()
    name = settings.unsubscribe.secret_env
    if provider.name == "outbox":
        app.warn(f"${name} is not set: the outbox's unsubscribe links are signed with the preview-only key "
                 f"(set it before sending through a real provider)")
        return PREVIEW_SECRET
    raise ConfigError(f"${name} is not set, and unsubscribe links must be signed with a secret",
                      hint=f"export {name}=<a long random string>, e.g. from "
                           f"`python -c 'import secrets; print(secrets.token_urlsafe(32))'`; keep it the same "
                           f"for every send so old links keep working")


def _confirm(summary: Summary, *, yes: bool, allow_changed: bool) -> None:
    if summary.sending_now == 0 and not summary.in_doubt:
        return  # nothing will be sent: no question to ask (cron and scripts need no --yes for that)
    if summary.content_changed:
        if yes and not allow_changed:
            raise NewsletterError(f"issue {summary.issue_id} changed since its first send; refusing to resume "
                                  f"under --yes", hint=f"check the change, then run `newsletter send "
                                                       f"{summary.issue_id} --yes --allow-changed` to send the new "
                                                       f"content to the remaining recipients")
        if not yes:
            _ask("The issue changed since its first send. Send the NEW content to the remaining recipients?")
    if not yes:
        _ask(f"Send {summary.sending_now} email(s) now?")


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _ask(question: str) -> None:
    if not _interactive():
        raise NewsletterError("not sending without confirmation, and there is no terminal to ask on",
                              hint="pass --yes to send from scripts and cron; --dry-run shows what would be sent")
    if not click.confirm(question, default=False):
        raise NewsletterError("not confirmed; nothing was sent")


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """``kill`` (cron timeouts, systemd stop) stops like Ctrl-C: batches in flight are recorded first."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _finish(app: App, ledger: Ledger, provider: Provider, summary: Summary, totals: RunTotals, as_json: bool) -> int:
    counts = ledger.counts(summary.issue_id)
    code = send_exit_code(counts)
    if as_json:
        click.echo(json.dumps({"issue": summary.issue_id, "exit_code": 1 if totals.error else code,
                               "sent_now": totals.sent, "failed_now": totals.failed, "unknown_now": totals.unknown,
                               "retried_failed": summary.retry_failed, "batches": totals.batches,
                               "stopped": totals.aborted or None, "total": sum(counts.values()), **counts}))
    else:
        click.echo(f"{summary.issue_id}: sent {totals.sent} now. Totals: {counts['sent']} sent, "
                   f"{counts['failed']} failed, {counts['unknown']} unknown, {counts['skipped']} skipped, "
                   f"{counts['pending'] + counts['sending']} pending, of {sum(counts.values())} planned.")
        if counts["failed"] or counts["unknown"]:
            click.echo(f"See who and why: newsletter status {summary.issue_id} --failed")
        if code == 4:
            why = totals.incomplete_reason()
            click.echo(f"Incomplete{': ' + why if why else ''}. "
                       f"Run `newsletter send {summary.issue_id}` again to resume.")
    if counts["unknown"]:
        click.echo(in_doubt_line(provider, summary.issue_id, counts["unknown"]), err=as_json)
    if totals.error is not None:
        raise totals.error
    return code


def send_exit_code(counts: dict[str, int]) -> int:
    if counts["pending"] or counts["sending"]:
        return 4
    if counts["failed"] or counts["unknown"]:
        return 3
    return 0


class _Say:
    """The pre-send summary: stdout normally, stderr when stdout carries JSON."""

    def __init__(self, app: App, as_json: bool):
        self.app = app
        self.err = as_json

    def __call__(self, text: str) -> None:
        if not self.app.quiet:
            click.echo(text, err=self.err)

    def summary(self, s: Summary, *, dry_run: bool) -> None:
        self(f"Issue:      {s.issue_id}")
        self(f"Subject:    {s.subject}")
        self(f"Provider:   {s.provider}")
        self(f"Segment:    {s.segment or '(everyone subscribed)'}")
        if s.first_run:
            self(f"Recipients: {s.planned} (first run: the plan is frozen now)")
        else:
            self(f"Plan:       {s.planned} recipients, {s.counts['sent']} already sent, {s.counts['skipped']} skipped")
            if s.new_subscribers:
                self(f"New:        {s.new_subscribers} subscriber(s) joined since; added with --include-new")
            if s.counts["unknown"] and s.resend_unknown:
                self(f"In doubt:   {s.counts['unknown']} unknown, sent again now (--resend-unknown)")
            elif s.counts["unknown"]:
                self(f"In doubt:   {s.counts['unknown']} unknown (not re-sent without --resend-unknown)")
            if s.retry_failed:
                self(f"Failed:     {s.retry_failed} failed recipient(s) back to pending (--retry-failed)")
            elif s.counts["failed"]:
                self(f"Failed:     {s.counts['failed']} failed (not re-sent without --retry-failed)")
            if s.in_doubt:
                self(f"Interrupted: {s.in_doubt} recipient(s) left mid-batch by a stopped run; {s.in_doubt_action}")
            if s.content_changed:
                self("Changed:    the issue's content differs from the first run's")
        for problem in s.invalid[:10]:
            self(f"Skipping invalid row: {problem}")
        self(f"Send now:   {s.sending_now}{f' (--limit {s.limit})' if s.limit is not None else ''}")
        if dry_run:
            self("Dry run: nothing was sent or written.")


# -- status -------------------------------------------------------------------------
@cli.command()
@click.argument("issue", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: one object for ISSUE, a list without.")
@click.option("--failed", is_flag=True, help="List failed and unknown recipients with the reason.")
@pass_app
def status(app: App, issue: str | None, as_json: bool, failed: bool) -> None:
    """Delivery counts per state for ISSUE (path or id), or a table of every issue."""
    settings = app.settings()
    with open_ledger(settings, readonly=True) as ledger:
        if issue is None:
            _status_table(ledger, as_json, failed)
            return
        issue_id, has_file = _issue_id(settings, issue)
        if ledger.issue(issue_id) is None and not (as_json and has_file):
            raise NewsletterError(f"issue {issue_id} has not been sent yet (nothing in {ledger.url})",
                                  hint=f"run `newsletter send {issue}`")
        counts = ledger.counts(issue_id)  # all zero for an issue not sent yet
        rows = ledger.rows(issue_id, DOUBT_STATES) if failed else []
        if as_json:
            obj = {"issue": issue_id, "total": sum(counts.values()), **{s: counts[s] for s in STATES}}
            if failed:
                obj["failures"] = [{"email": r.email, "state": r.state, "reason": r.reason, "attempts": r.attempts,
                                    "updated_at": r.updated_at} for r in rows]
            click.echo(json.dumps(obj))
            return
        click.echo(f"{issue_id}: " + ", ".join(f"{counts[s]} {s}" for s in STATES) + f" (of {sum(counts.values())})")
        lease = ledger.lease(issue_id)
        if lease:
            click.echo(_lease_line(lease, issue_id))
        for row in rows:
            click.echo(f"{row.state:8} {row.email}  {row.reason}")


def _status_table(ledger: Ledger, as_json: bool, failed: bool) -> None:
    records = ledger.issues()
    table = [{"issue": r.issue_id, "total": r.planned, **ledger.counts(r.issue_id)} for r in records]
    if as_json:
        click.echo(json.dumps(table))
        return
    if not table:
        click.echo("No issue has been sent yet.")
        return
    columns = ("issue", "total", *STATES)
    widths = {c: max(len(c), *(len(str(row[c])) for row in table)) for c in columns}
    click.echo("  ".join(c.ljust(widths[c]) for c in columns))
    for row in table:
        click.echo("  ".join(str(row[c]).ljust(widths[c]) for c in columns))
    if failed:
        for r in records:
            for row in ledger.rows(r.issue_id, DOUBT_STATES):
                click.echo(f"{r.issue_id}  {row.state:8} {row.email}  {row.reason}")


def _lease_line(lease: Lease, issue_id: str) -> str:
    """Who holds the issue, unless that run is gone (killed, or silent on another host)."""
    if lease.holder_alive(stale_after=LEASE_STALE_AFTER):
        return f"being sent now by pid {lease.pid} on {lease.host}"
    since = datetime.fromtimestamp(lease.heartbeat, timezone.utc).isoformat(timespec="seconds")
    return (f"the run by pid {lease.pid} on {lease.host} stopped without finishing (last heard from {since}); "
            f"`newsletter send {issue_id}` resumes it")


def _issue_id(settings: Settings, ref: str) -> tuple[str, bool]:
    """An issue's id from its path or id, and whether its file exists; an id the ledger knows works
    even when the file is gone."""
    try:
        return load_issue(issue_path(settings, ref)).id, True
    except IssueError:
        if "/" in ref or ref.endswith(".md"):
            raise
        return ref, False


# -- dispatch (cron) ------------------------------------------------------------------------
@cli.command()
@click.option("--dry-run", is_flag=True, help="List what would be sent; write nothing anywhere.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per issue on stdout.")
@pass_app
def dispatch(app: App, dry_run: bool, as_json: bool) -> None:
    """For cron: send every issue whose send_at has passed, and resume unfinished ones.

    Never asks; an issue whose content changed since its first send is left alone
    (resume it by hand with `newsletter send ISSUE --allow-changed`); an issue file that
    cannot be read is reported and the others are still sent. Exit code: 1 if any issue
    failed or could not be read, else 4, 3, 75 or 0 by the worst issue (see the README's exit codes).
    """
    settings = app.settings()
    if not dry_run:
        refuse_test_mode(settings, "dispatch")
    due, broken = due_issues(settings)
    codes = []
    for problem in broken:  # cron mails stderr: every issue it cannot judge is named, the others still go
        click.echo(f"Error: {problem.render()}", err=True)
        codes.append(1)
    if not due:
        app.info("Nothing to dispatch.")
    for ref in due:
        app.info(f"== {ref}")
        try:
            codes.append(send_one(app, ref, SendOptions(), dry_run=dry_run, yes=True, as_json=as_json))
        except NewsletterError as err:
            click.echo(f"Error: {err.render()}", err=True)
            codes.append(err.exit_code)
    code = next((c for c in (1, 4, 3, 75) if c in codes), 0)
    if code:
        raise click.exceptions.Exit(code)


def due_issues(settings: Settings, now: datetime | None = None) -> tuple[list[str], list[IssueError]]:
    """Issue files whose ``send_at`` has passed and that are not finished, plus unfinished issues in the
    ledger; and the issue files that cannot be loaded (so whether they are due is unknown)."""
    now = now or datetime.now(timezone.utc)
    due: dict[str, str] = {}
    broken: list[IssueError] = []
    with open_ledger(settings, readonly=True) as ledger:
        def unfinished(issue_id: str) -> bool:
            counts = ledger.counts(issue_id)
            return bool(counts["pending"] or counts["sending"])

        for path in sorted(settings.workspace_path("issues").glob("*.md")):
            try:
                issue = load_issue(path)
            except IssueError as err:
                broken.append(err)  # cron must not stop at one, nor skip it in silence
                continue
            if issue.send_at and issue.send_at <= now and (ledger.issue(issue.id) is None or unfinished(issue.id)):
                due[issue.id] = str(path)
        for record in ledger.issues():
            if unfinished(record.issue_id):
                due.setdefault(record.issue_id, record.issue_id)
    return list(due.values()), broken
