"""``newsletter test``: proof copies of an issue through the configured provider (docs/sending.md).

A proof is personalised for one subscriber (or the merge fields' fallbacks), its subject is prefixed
with ``[TEST]``, and it is never recorded in the delivery ledger, so the real send still goes to
everybody. It goes through the same send path as a real batch; a 429 or a 5xx of the provider's own
(certainly not accepted) is tried again under the one retry policy (``ratelimit.Backoff``), briefly:
a proof is not worth a long wait, and one that may have arrived is not worth a duplicate.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Collection, Sequence

import requests

from ..compile.pipeline import build_issue, personalizer, sample_subscriber
from ..config import Settings
from ..errors import NotAccepted
from ..models import Outcome
from ..providers import open_provider, provider_facts
from ..providers.base import Batch, Provider
from ..unsubscribe import PROVIDER_MANAGED
from .ratelimit import Backoff, wait_words
from .run import check_issue, preflight

PROOF_RETRY = Backoff(base=2.0, cap=30.0, max_wait=30.0, tries=3)


@dataclass
class ProofReport:
    """What ``newsletter test`` did: one outcome per proof address."""

    issue_id: str
    provider: str
    personalised_for: str
    test_mode: bool
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def refused(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.state != "sent"]


def send_proofs(settings: Settings, issue: str, recipients: Sequence[str], *, as_email: str | None,
                info: Callable[[str], None], warn: Callable[[str], None], ignore_lint: Collection[str] = (),
                retry: Backoff = PROOF_RETRY, sleep: Callable[[float], None] = time.sleep) -> ProofReport:
    """Send a proof of ``issue`` to each of ``recipients``; what it says goes to ``info`` and ``warn``.
    Lint's errors refuse, as for a send (a proof shows what the send would be), unless in ``ignore_lint``."""
    built = build_issue(settings, issue)
    check_issue(settings, built, ignore_lint, warn)
    subscriber = sample_subscriber(built, as_email)
    if as_email and not subscriber.line:  # not a row of the list: merge fields fall back to their defaults
        warn(f"{as_email} is not in {settings.subscribers.file}: the proof is personalised with the "
             f"merge fields' fallbacks only")
    # Our own links are signed with the preview key: a proof's cannot unsubscribe anyone. A provider's own
    # link (url = "provider", or one Postmark adds) is live: the preflight and the warning below say so.
    personal = personalizer(settings, built.compiled, facts=provider_facts(settings))
    message, values = personal.message_with_values(subscriber)
    proofs = [dataclasses.replace(message, to=address, to_name="", subject=f"[TEST] {message.subject}")
              for address in recipients]
    template = built.compiled.send_template(subject_prefix="[TEST] ")
    provider = open_provider(settings)
    report = ProofReport(built.issue.id, provider.name, subscriber.email, settings.provider.test_mode)
    mode = " in test mode (accepted, not delivered)" if report.test_mode else ""
    info(f"Sending {len(proofs)} proof(s) of {built.issue.id} personalised for {subscriber.email} "
         f"through {provider.name}{mode}")
    try:
        if not report.test_mode:  # nothing is delivered (and Postmark's test token cannot look up streams)
            preflight(provider, warn)
            if settings.unsubscribe.url == PROVIDER_MANAGED:
                warn(f"the proofs carry {provider.name}'s own unsubscribe link, which works: using it (or the "
                     f"mail program's unsubscribe button) suppresses {', '.join(recipients)} at {provider.name}")
        with requests.Session() as session:
            for group in provider.cut_batches(proofs):
                batch = Batch(built.issue.id, _proof_batch_id(), tuple(group), tuple([values] * len(group)), template)
                report.outcomes += _send_proof(provider, batch, session, retry, warn, sleep)
    finally:
        provider.close()
    return report


def _send_proof(provider: Provider, batch: Batch, session: requests.Session, retry: Backoff,
                warn: Callable[[str], None], sleep: Callable[[float], None]) -> list[Outcome]:
    """One batch of proofs, tried again as ``retry`` says after a 429/5xx and for addresses refused with another."""
    done: list[Outcome] = []
    attempt = 1
    while True:
        try:
            outcomes = provider.send_batch(batch, session)
        except NotAccepted as err:  # anything else may have arrived (or is for good): raised as it is
            if not err.retryable or not retry.tries_left(attempt) or retry.too_long(err.retry_after):
                raise
            wait = retry.delay(attempt, err.retry_after)
            warn(f"{err.message}; trying again in {wait_words(wait)}")
            sleep(wait)
            attempt += 1
            continue
        done += [o for o in outcomes if o.state != "retry"]
        again = {o.email for o in outcomes if o.state == "retry"}
        if not again or not retry.tries_left(attempt):
            return done + [o for o in outcomes if o.state == "retry"]
        kept = [n for n, m in enumerate(batch.messages) if m.to in again]
        # a new batch id: another payload under the same idempotency key is refused (Resend's 409)
        batch = dataclasses.replace(batch, batch_id=_proof_batch_id(), messages=tuple(batch.messages[n] for n in kept),
                                    slot_values=tuple(batch.slot_values[n] for n in kept))
        attempt += 1


def _proof_batch_id() -> str:
    return f"proof-{uuid.uuid4().hex[:12]}"
