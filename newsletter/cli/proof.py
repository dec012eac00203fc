"""``newsletter test`` (proof copies) and ``newsletter reconcile`` (in-doubt recipients)."""

from __future__ import annotations

import click
from email_validator import EmailNotValidError, validate_email

from ..compile.pipeline import build_issue, personalizer
from ..errors import NewsletterError, ReconcileInterrupted
from ..ledger import open_ledger
from ..ledger.base import Ledger
from ..providers import open_provider, provider_facts
from ..providers.base import Provider
from ..sending.binding import ASK, route_verdict, unknown_refused
from ..sending.lease import LeaseKeeper
from ..sending.proofs import send_proofs
from ..sending.reconcile import reconcile_issue
from ..sending.run import signing_secret
from ..subscribers.reader import iter_valid_subscribers
from . import App, cli, pass_app
from .indoubt import say_reconciliation
from .send import ignore_lint_option

MAX_PROOFS = 50


def _address(ctx, param, values: tuple[str, ...]) -> tuple[str, ...]:
    if len(values) > MAX_PROOFS:
        raise click.BadParameter(f"at most {MAX_PROOFS} proof addresses per run")
    for value in values:
        try:
            validate_email(value, check_deliverability=False)
        except EmailNotValidError as err:
            raise click.BadParameter(f"{value!r} is not an email address: {err}") from None
    return values


@cli.command("test")
@click.argument("issue")
@click.option("--to", "recipients", multiple=True, required=True, metavar="ADDR", callback=_address,
              help="Send a proof copy to ADDR (repeat for more addresses).")
@click.option("--as", "as_email", metavar="EMAIL",
              help="Personalise the proof for this subscriber [default: the first subscribed one].")
@ignore_lint_option
@pass_app
def test_command(app: App, issue: str, recipients: tuple[str, ...], as_email: str | None,
                 ignore_lint: tuple[str, ...]) -> None:
    """Send proof copies of ISSUE through the configured provider.

    The subject is prefixed with [TEST]; proofs are never recorded in the
    delivery ledger, so the real send still goes to everybody.
    """
    report = send_proofs(app.settings(), issue, recipients, as_email=as_email, ignore_lint=frozenset(ignore_lint),
                         info=app.info, warn=app.warn)
    for outcome in report.outcomes:
        detail = f" ({outcome.provider_id})" if outcome.provider_id else ""
        state = "accepted in test mode, not delivered" if report.test_mode and outcome.state == "sent" else outcome.state
        app.info(f"  {outcome.email}: {state}{detail}{': ' + outcome.reason if outcome.reason else ''}")
    if report.refused:
        raise NewsletterError(f"{len(report.refused)} of {len(report.outcomes)} proof(s) were not accepted: "
                              + "; ".join(f"{o.email} {o.state}" for o in report.refused),
                              hint="the lines above say why; nothing was recorded in the ledger")


@cli.command()
@click.argument("issue")
@pass_app
def reconcile(app: App, issue: str) -> None:
    """Ask the provider what happened to ISSUE's recipients marked unknown.

    Recipients the provider holds become sent; those it provably never
    accepted go back to pending (the next `newsletter send` sends them);
    the rest stay unknown. Exit 0 when nothing is left in doubt, 3 otherwise, 75 when a send of
    ISSUE is running (SQLite ledger; on PostgreSQL it runs beside the sends).
    """
    settings = app.settings()
    built = build_issue(settings, issue)
    provider = open_provider(settings)
    secret = signing_secret(settings, provider, app.warn)  # the very links of the original send (Resend replays it)
    personal = personalizer(settings, built.compiled, secret=secret, facts=provider_facts(settings))
    try:
        with open_ledger(settings) as ledger:
            _require_route(ledger, built.issue.id, provider)
            with LeaseKeeper(ledger, built.issue.id):
                _require_route(ledger, built.issue.id, provider)  # again under the lease: a send may have bound it
                try:
                    report = reconcile_issue(built.issue.id, iter_valid_subscribers(built.list_path), provider,
                                             ledger, personal)
                except ReconcileInterrupted as err:
                    say_reconciliation(app.info, err.report)
                    raise
    finally:
        provider.close()
    say_reconciliation(app.info, report)
    if report.still_unknown:
        raise click.exceptions.Exit(3)


def _require_route(ledger: Ledger, issue_id: str, provider: Provider) -> None:
    """Another provider's logs would "prove" the plan's readers were never sent: refuse (docs/sending.md)."""
    record = ledger.issue(issue_id)
    if route_verdict(record, provider, ledger) == ASK:  # reconcile never asks: `send` on a terminal does
        raise unknown_refused(record, provider, ledger, asked=False)
