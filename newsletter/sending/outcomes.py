"""The send loop's vocabulary: a batch of work, what one API call did, a run's totals, and what
a failed call means (accepted or certainly not), used by :mod:`newsletter.sending.pool`.

A provider's answer to a batch is one of:

- outcomes per recipient (data, recorded as they are);
- "certainly not accepted": 429, 500, 503 and any other 5xx of the provider's own,
  or a connection that was never made (:func:`not_accepted`);
- no answer: a read timeout, a dropped connection, or a 502/504 from a gateway that
  gave up while the provider behind it may have accepted the batch (in doubt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import requests

from ..errors import NewsletterError, ProviderError
from ..ledger.base import address_key
from ..models import Message, Outcome
from ..providers.base import Batch, Provider
from .ratelimit import wait_words

# A gateway in front of the provider gave up (502 Bad Gateway, 504 Gateway Timeout): the
# provider behind it may have accepted the batch, so the answer is no answer at all.
GATEWAY_STATUSES = (502, 504)


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


def not_accepted(err: ProviderError) -> bool:
    """True when the provider certainly did not take the batch: it answered 429 or a 5xx of its own
    (500, 503, ...), or the request never arrived. A gateway's 502/504 and a read timeout are no answer."""
    if not err.retryable or err.status in GATEWAY_STATUSES:
        return False
    return err.status is not None or never_reached_provider(err)


def never_reached_provider(err: ProviderError) -> bool:
    """True when the request certainly never arrived (connection refused, connect timeout)."""
    cause = err.__cause__
    if isinstance(cause, requests.ConnectTimeout):
        return True
    if isinstance(cause, requests.ConnectionError):
        from urllib3.exceptions import MaxRetryError, NewConnectionError
        return any(isinstance(arg, MaxRetryError) and isinstance(arg.reason, NewConnectionError)
                   for arg in cause.args)
    return False


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


def complete_outcomes(batch: Batch, outcomes: Sequence[Outcome], provider: str) -> list[Outcome]:
    """One outcome per recipient of the batch: anything the provider did not mention is ``unknown``."""
    by_key = {address_key(o.email): o for o in outcomes}
    complete = []
    for message in batch.messages:
        outcome = by_key.get(address_key(message.to))
        if outcome is None:
            outcome = Outcome(message.to, "unknown", reason=f"{provider} returned no outcome for this recipient")
        complete.append(outcome)
    return complete
