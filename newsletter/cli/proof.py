"""``newsletter test`` (proof copies) and ``newsletter reconcile`` (in-doubt recipients)."""

from __future__ import annotations

import dataclasses
import time
import uuid

import click
import requests
from email_validator import EmailNotValidError, validate_email

from ..compile.pipeline import build_issue, personalizer, sample_subscriber
from ..compile.slots import SlotTemplate
from ..errors import NewsletterError, ProviderError
from ..ledger import open_ledger
from ..models import Outcome
from ..providers import open_provider, provider_facts
from ..providers.base import Batch, Provider
from ..sending.outcomes import not_accepted
from ..ledger.base import Ledger
from ..sending.binding import ASK, route_verdict, unknown_refused
from ..sending.reconcile import ReconcileInterrupted, reconcile_issue
from ..sending.run import check_issue, preflight, signing_secret
from ..sending.lease import LeaseKeeper
from ..subscribers.reader import iter_valid_subscribers
from ..unsubscribe import PROVIDER_MANAGED
from . import App, cli, pass_app
from .indoubt import say_reconciliation
from .send import ignore_lint_option

MAX_PROOFS = 50
PROOF_ATTEMPTS = 3  # a proof is worth a short retry on 429/5xx, not a long wait


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
    settings = app.settings()
    built = build_issue(settings, issue)
    check_issue(settings, built, frozenset(ignore_lint), app.warn)  # a proof shows what the send would be
    subscriber = sample_subscriber(built, as_email)
    if as_email and not subscriber.line:  # not a row of the list: merge fields fall back to their defaults
        app.warn(f"{as_email} is not in {settings.subscribers.file}: the proof is personalised with the "
                 f"merge fields' fallbacks only")
    # Our own links are signed with the preview key: a proof's cannot unsubscribe anyone. A provider's own
    # link (url = "provider", or one Postmark adds) is live: the preflight and the warning below say so.
    personal = personalizer(settings, built.compiled, facts=provider_facts(settings))
    message, values = personal.message_with_values(subscriber)
    proofs = [dataclasses.replace(message, to=address, to_name="", subject=f"[TEST] {message.subject}")
              for address in recipients]
    compiled = built.compiled
    subject = compiled.subject
    template = {"subject": SlotTemplate(("[TEST] " + subject.parts[0],) + subject.parts[1:], subject.slot_ids),
                "html": compiled.html, "text": compiled.text}
    provider = open_provider(settings)
    test_mode = settings.provider.test_mode
    mode = " in test mode (accepted, not delivered)" if test_mode else ""
    app.info(f"Sending {len(proofs)} proof(s) of {built.issue.id} personalised for {subscriber.email} "
             f"through {provider.name}{mode}")
    outcomes: list[Outcome] = []
    try:
        if not test_mode:  # in test mode nothing is delivered (and Postmark's test token cannot look up streams)
            preflight(provider, app.warn)
            if settings.unsubscribe.url == PROVIDER_MANAGED:
                app.warn(f"the proofs carry {provider.name}'s own unsubscribe link, which works: using it (or the "
                         f"mail program's unsubscribe button) suppresses {', '.join(recipients)} at {provider.name}")
        with requests.Session() as session:
            for group in provider.cut_batches(proofs):
                batch = Batch(built.issue.id, _proof_batch_id(), tuple(group),
                              tuple([values] * len(group)), template)
                outcomes += _send_proof(app, provider, batch, session)
    finally:
        provider.close()
    for outcome in outcomes:
        detail = f" ({outcome.provider_id})" if outcome.provider_id else ""
        state = "accepted in test mode, not delivered" if test_mode and outcome.state == "sent" else outcome.state
        app.info(f"  {outcome.email}: {state}{detail}{': ' + outcome.reason if outcome.reason else ''}")
    bad = [o for o in outcomes if o.state != "sent"]
    if bad:
        raise NewsletterError(f"{len(bad)} of {len(outcomes)} proof(s) were not accepted: "
                              + "; ".join(f"{o.email} {o.state}" for o in bad),
                              hint="the lines above say why; nothing was recorded in the ledger")


def _send_proof(app: App, provider: Provider, batch: Batch, session: requests.Session) -> list[Outcome]:
    """Send one batch of proofs, with a short retry on 429/5xx and for addresses refused with another one."""
    done: list[Outcome] = []
    for attempt in range(1, PROOF_ATTEMPTS + 1):
        try:
            outcomes = provider.send_batch(batch, session)
        except ProviderError as err:  # AuthError included: never accepted-and-retryable, so raised here
            if not not_accepted(err) or attempt == PROOF_ATTEMPTS:
                raise  # no answer, or a gateway's 502/504: it may have arrived, and a proof is not worth a duplicate
            wait = min(err.retry_after if err.retry_after is not None else 2.0 ** attempt, 30.0)
            app.warn(f"{err.message}; trying again in {wait:.0f} s")
            time.sleep(wait)
            continue
        done += [o for o in outcomes if o.state != "retry"]
        again = {o.email for o in outcomes if o.state == "retry"}
        if not again or attempt == PROOF_ATTEMPTS:
            return done + [o for o in outcomes if o.state == "retry"]
        kept = [n for n, m in enumerate(batch.messages) if m.to in again]
        # a new batch id: another payload under the same idempotency key is refused (Resend's 409)
        batch = dataclasses.replace(batch, batch_id=_proof_batch_id(), messages=tuple(batch.messages[n] for n in kept),
                                    slot_values=tuple(batch.slot_values[n] for n in kept))
    raise AssertionError("unreachable: the last attempt returns or raises")


def _require_route(ledger: Ledger, issue_id: str, provider: Provider) -> None:
    """Another provider's logs would "prove" the plan's readers were never sent: refuse (docs/sending.md)."""
    record = ledger.issue(issue_id)
    if route_verdict(record, provider, ledger) == ASK:  # reconcile never asks: `send` on a terminal does
        raise unknown_refused(record, provider, ledger, asked=False)


def _proof_batch_id() -> str:
    return f"proof-{uuid.uuid4().hex[:12]}"


@cli.command()
@click.argument("issue")
@pass_app
def reconcile(app: App, issue: str) -> None:
    """Ask the provider what happened to ISSUE's recipients marked unknown.

    Recipients the provider holds become sent; those it provably never
    accepted go back to pending (the next `newsletter send` sends them);
    the rest stay unknown. Exit 0 when nothing is left in doubt, 3 otherwise, 75 when a send of
    ISSUE is running.
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
