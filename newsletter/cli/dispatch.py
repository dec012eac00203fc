"""``newsletter dispatch``: for cron, send every issue that is due and resume unfinished ones."""

from __future__ import annotations

from datetime import datetime, timezone

import click

from ..compile.issue import load_issue
from ..config import Settings
from ..errors import IssueError, NewsletterError
from ..ledger import open_ledger
from ..sending.plan import SendOptions
from ..sending.run import refuse_test_mode
from . import App, cli, pass_app
from .send import ignore_lint_option, send_one


@cli.command()
@click.option("--dry-run", is_flag=True, help="List what would be sent; write nothing anywhere.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per issue on stdout.")
@ignore_lint_option
@pass_app
def dispatch(app: App, dry_run: bool, as_json: bool, ignore_lint: tuple[str, ...]) -> None:
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
            codes.append(send_one(app, ref, SendOptions(ignore_lint=frozenset(ignore_lint)), dry_run=dry_run, yes=True, as_json=as_json))
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
