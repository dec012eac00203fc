"""``newsletter cancel``: stop an issue's send for good (docs/sending.md, "Cancelling a send").

A user who finds a mistake after the first thousand copies, or who renamed an issue's file
halfway, needs a way to say "nobody more": otherwise every `dispatch` resumes the plan. Cancel
marks the issue cancelled in the ledger, its pending readers ``skipped`` and the batches a killed
run left in flight ``unknown``; `send` and `dispatch` then leave the issue alone. Who was sent
stays sent. It takes the issue's lease, as a send does, so it never races one.
"""

from __future__ import annotations

import sys

import click

from ..errors import NewsletterError
from . import App, cli, pass_app

CANCELLED = "cancelled (newsletter cancel)"  # the reason each row it closes is given


@cli.command()
@click.argument("issue")
@click.option("-y", "--yes", is_flag=True, help="Cancel without asking (scripts); required when not on a terminal.")
@pass_app
def cancel(app: App, issue: str, yes: bool) -> None:
    """Stop ISSUE's send for good: nobody who has not got it yet will.

    ISSUE is its path, file name or id; an id works when the file is gone. Its pending readers
    become skipped and batches a killed run left in flight become unknown (they may have gone
    out); `send` and `dispatch` then send nobody more of it. Exit 0 when cancelled, 1 on an
    error, 75 while a send of ISSUE is running.
    """
    from ..config import without_password
    from ..ledger import open_ledger
    from ..sending.lease import LEASE_STALE_AFTER, LeaseKeeper
    from .status import issue_id_of

    settings = app.settings()
    with open_ledger(settings) as ledger:
        issue_id, missing = issue_id_of(settings, issue)
        record = ledger.issue(issue_id)
        if record is None:
            if missing is not None:
                raise missing
            raise NewsletterError(f"issue {issue_id} has not been sent: there is no send to cancel "
                                  f"(nothing in {without_password(ledger.url)})",
                                  hint="to keep `dispatch` from sending it, remove `send_at` from its front matter")
        if record.cancelled_at:
            click.echo(f"{issue_id}: cancelled already, at {record.cancelled_at}; nothing to do.")
            return
        counts = ledger.counts(issue_id)
        left = counts["pending"] + counts["sending"]
        question = (f"Cancel {issue_id}: {left} reader(s) who have not got it never will ({counts['sent']} sent). "
                    f"This cannot be undone. Cancel it?")
        if not yes:
            if not (sys.stdin.isatty() and sys.stdout.isatty()):
                raise NewsletterError(f"not cancelling {issue_id} without confirmation, and there is no terminal to "
                                      "ask on", hint="pass --yes to cancel from scripts")
            if not click.confirm(question, default=False):
                click.echo("Not cancelled.")
                return
        with LeaseKeeper(ledger, issue_id) as keeper:
            ledger.reap_workers(issue_id, keeper.holder, stale_after=LEASE_STALE_AFTER)  # dead workers: none on SQLite
            skipped, in_doubt = ledger.cancel_plan(issue_id, keeper.holder, CANCELLED)
        counts = ledger.counts(issue_id)
    click.echo(f"{issue_id}: cancelled. Sent before: {counts['sent']}. Skipped now: {skipped} "
               f"(`newsletter status {issue_id} --skipped` lists them).")
    if in_doubt:
        click.echo(f"{in_doubt} reader(s) of batches a killed run left in flight are unknown now: they may have "
                   f"got it; `newsletter status {issue_id} --failed` lists them.")
