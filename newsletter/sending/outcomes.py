"""The send loop's vocabulary: a batch of work, what one API call did, a run's totals, and what a
failed call means for the batch (:func:`decide_failure`, a pure function the pool applies).

A provider's answer to a batch is one of (docs/architecture.md, the send protocol):

- outcomes per recipient (data, recorded as they are);
- :class:`~newsletter.errors.NotAccepted`: certainly not accepted (the request never left, or
  429 / a 5xx of the provider's own); the shared send path in ``providers/base.py`` knows it;
- :class:`~newsletter.errors.NoAnswer`, or any other retryable ProviderError: the provider may
  have accepted the batch (in doubt);
- any other ProviderError: a refusal of the whole request (every batch would get it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import requests

from ..errors import AuthError, NewsletterError, NotAccepted, ProviderError
from ..ledger.base import address_key
from ..models import Message, Outcome
from ..providers.base import Batch, Provider
from .ratelimit import Backoff, wait_words

class CountingSession(requests.Session):
    """A worker's session that counts the requests it made: zero means an adapter failed before any call."""

    requests_made = 0

    def request(self, *args, **kwargs):
        self.requests_made += 1
        return super().request(*args, **kwargs)


@dataclass
class Work:
    """Messages to send as one batch. ``batch_id`` is set when retrying an in-doubt batch under its old key."""

    messages: list[Message]
    values: list[Sequence[str]] = field(default_factory=list)  # slot values per message, when known
    batch_id: str | None = None
    attempt: int = 1
    claimed_at: float | None = None  # epoch seconds of the batch id's first claim (None: not known)
    # The same batch id again only because a recipient's data stopped its last try: no try of it went
    # unanswered, so the rest of it is not in doubt (a further bad recipient fails, not unknown).
    cut_for_recipient: bool = False
    # Each message's ledger row id (PlanRow.id), which its claim and record go by; the dispatcher looks
    # them up when the work came without (in-doubt batches, tests).
    rows: list[int] = field(default_factory=list)
    # Several workers: how many times rows of this work were passed over by a claim (SKIP LOCKED) and asked for again.
    claim_tries: int = 0


@dataclass(frozen=True)
class BatchReport:
    """What one API call did, for progress output."""

    batch_id: str
    size: int
    states: dict[str, int]  # outcome state -> recipients
    attempt: int
    seconds: float
    note: str = ""


@dataclass
class RunTotals:
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    retried: int = 0
    batches: int = 0
    exhausted: set[str] = field(default_factory=set)  # left pending after max_attempts tries in this run
    aborted: str = ""  # why the run stopped early ("" = it did not)
    error: BaseException | None = None  # the error that stopped it, re-raised by the caller
    max_attempts: int = 0  # tries per recipient in this run

    def incomplete_reason(self) -> str:
        """Why recipients are left pending, in the final line's words ("" when nothing says so)."""
        if self.aborted:
            return self.aborted
        if self.exhausted:
            return (f"{len(self.exhausted)} recipient(s) still failing transiently after {self.max_attempts} "
                    f"tries")
        return ""


@dataclass(frozen=True)
class Verdict:
    """What becomes of a batch whose call raised a ProviderError.

    ``record``: "retry" (back to pending), "unknown", or "" (the rows stay ``sending`` for the same key).
    ``again``: "new" (claimed again under a new batch id), "same" (the same batch id), "" (not in this run).
    ``stop``: why the run stops ("" when it goes on): "auth", "refused" or "wait" (a Retry-After too long).
    """

    record: str
    again: str = ""
    stop: str = ""


def decide_failure(err: ProviderError, *, in_doubt: bool, idempotent: bool, attempt: int, policy: Backoff) -> Verdict:
    """The failure decision, without threads or a ledger.

    ``in_doubt``: an earlier try of this very batch went unanswered (it may have been accepted then,
    whatever this try says). ``idempotent``: the provider still remembers this batch's key.
    ``attempt``: this try's number; ``policy`` says how many tries and how long a wait.
    """
    wait = "wait" if policy.too_long(err.retry_after) else ""
    if isinstance(err, AuthError):  # refused before anything was accepted: back to pending, unless in doubt
        return Verdict("" if in_doubt else "retry", stop="auth")
    if isinstance(err, NotAccepted) and not in_doubt:
        if not err.retryable:  # a URL requests cannot use: never left, but trying again cannot help
            return Verdict("retry", stop="refused")
        return Verdict("retry", "" if wait else "new", wait)
    if err.retryable and idempotent and policy.tries_left(attempt):
        return Verdict("", "" if wait else "same", wait)  # the same key makes another try safe
    if err.retryable or in_doubt:
        return Verdict("unknown")
    # A definite refusal of the whole request (unverified sender, unknown domain or stream, payload
    # too large). Adapters report a refused *recipient* as an outcome, so this is about our request
    # or account: every later batch would be refused too, and marking them failed would lose those
    # readers for good. Nothing was accepted: back to pending, and the run stops.
    return Verdict("retry", stop="refused")


def key_window(provider: Provider) -> str:
    """``provider.idempotency_window`` in words: "23 h"."""
    return wait_words(provider.idempotency_window)


def as_newsletter_error(err: BaseException) -> BaseException:
    """A bug in the send loop stops the run with one ``Error:`` line; ``--debug`` shows the traceback."""
    if isinstance(err, (NewsletterError, KeyboardInterrupt, SystemExit)):
        return err
    error = NewsletterError(f"unexpected {type(err).__name__} in the send loop: {err}; the run stopped",
                            hint="run `newsletter send` again to resume; with --debug it shows the traceback to "
                                 "report")
    error.__cause__ = err
    return error


def in_batch_order(outcomes: Sequence[Outcome], messages: Sequence) -> bool:
    """One outcome per message, in the messages' order: the usual answer, which needs no look-up by address."""
    return len(outcomes) == len(messages) and all(o.email == m.to for o, m in zip(outcomes, messages))


def complete_outcomes(batch: Batch, outcomes: Sequence[Outcome], provider: str) -> list[Outcome]:
    """One outcome per recipient of the batch: anything the provider did not mention is ``unknown``."""
    if in_batch_order(outcomes, batch.messages):
        return list(outcomes)
    by_key = {address_key(o.email): o for o in outcomes}
    complete = []
    for message in batch.messages:
        outcome = by_key.get(address_key(message.to))
        if outcome is None:
            outcome = Outcome(message.to, "unknown", reason=f"{provider} returned no outcome for this recipient")
        complete.append(outcome)
    return complete
