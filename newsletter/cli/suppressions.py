"""``newsletter suppressions list/add/remove/sync``: addresses never to send to, kept in the ledger.

Suppressions win over the subscriber list: a suppressed subscriber is left
out of new plans and skipped when their turn comes in a running one. The
providers add them too: through send outcomes (Postmark's inactive
recipients), and through ``sync``, which reads the provider's own list.
"""

from __future__ import annotations

import json

import click
from email_validator import EmailNotValidError

from ..errors import NewsletterError
from ..ledger import open_ledger
from ..providers import open_provider
from ..sending.suppression_sync import SyncReport, sync_suppressions
from ..subscribers.address import normalise_address
from . import App, cli, pass_app


@cli.group()
def suppressions() -> None:
    """Addresses that never get an issue (bounces, complaints, manual blocks)."""


@suppressions.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@pass_app
def list_suppressions(app: App, as_json: bool) -> None:
    """Show every suppressed address with its reason and source."""
    with open_ledger(app.settings(), readonly=True) as ledger:
        rows = ledger.suppressions()
    if as_json:
        click.echo(json.dumps([{"email": r.email, "reason": r.reason, "source": r.source, "created_at": r.created_at}
                               for r in rows]))
        return
    for r in rows:
        click.echo(f"{r.email}\t{r.source}\t{r.created_at}\t{r.reason}")
    app.info(f"{len(rows)} suppressed address(es)")


@suppressions.command("add")
@click.argument("emails", nargs=-1, required=True, metavar="EMAIL...")
@click.option("--reason", default="added by hand", show_default=True, help="Why (shown by `list`).")
@pass_app
def add_suppression(app: App, emails: tuple[str, ...], reason: str) -> None:
    """Never send to EMAIL again (until removed)."""
    addresses = []
    for email in emails:
        try:  # as the list keeps it (e.g. an IDNA domain in Unicode), so the send loop matches it
            addresses.append(normalise_address(email))
        except EmailNotValidError as err:
            raise NewsletterError(f"{email!r} is not a valid address: {err}; nothing was added",
                                  hint="check the address for typos") from None
    with open_ledger(app.settings()) as ledger:
        for email in addresses:
            added = ledger.add_suppression(email, reason, source="manual")
            app.info(f"suppressed {email}" if added else f"{email} was already suppressed")


@suppressions.command("remove")
@click.argument("email")
@pass_app
def remove_suppression(app: App, email: str) -> None:
    """Allow sending to EMAIL again."""
    try:
        email = normalise_address(email)
    except EmailNotValidError:
        pass  # not an address the list could hold: remove it as written (an old, odd entry)
    with open_ledger(app.settings()) as ledger:
        if not ledger.remove_suppression(email):
            raise NewsletterError(f"{email} is not suppressed", hint="`newsletter suppressions list` shows who is")
    app.info(f"removed {email} from the suppressions")


@suppressions.command("sync")
@click.option("--dry-run", is_flag=True, help="Read the provider's list and say what would be added; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@pass_app
def sync(app: App, dry_run: bool, as_json: bool) -> None:
    """Add the provider's bounces, complaints and unsubscribes to the suppressions.

    Reads the configured provider's whole suppression list, then adds the addresses
    not suppressed yet in one go (a failed read changes nothing). Never removes any:
    use `newsletter suppressions remove` for an address the provider reactivated.
    Run it before a send, or from cron.
    """
    settings = app.settings()
    provider = open_provider(settings)
    try:
        if not provider.can("suppression_list"):
            report = SyncReport(provider.name, supported=False)
        else:
            with open_ledger(settings, readonly=dry_run) as ledger:
                report = sync_suppressions(provider, ledger, dry_run=dry_run)
    finally:
        provider.close()
    if report.unreadable:
        count = len(report.unreadable)
        shown = ", ".join(repr(a) for a in report.unreadable[:3]) + (" ..." if count > 3 else "")
        app.warn(f"{provider.name} lists {count} entr{'y' if count == 1 else 'ies'} that "
                 f"{'is' if count == 1 else 'are'} not a valid address, left out: {shown}")
    if as_json:
        click.echo(json.dumps(report.as_json(dry_run=dry_run)))
    elif not report.supported:
        app.info(f"{provider.name}: {provider.sync_note}")
    else:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(report.kinds.items()))
        app.info(f"{provider.name}: {report.fetched} suppressed address(es)" + (f" ({kinds})" if kinds else ""))
        verb = "would be added" if dry_run else "added"
        app.info(f"{report.added} {verb} to the ledger's suppressions, {report.already} already there")
