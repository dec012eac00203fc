"""The send loop: claim a batch, call the provider, record every outcome. Repeat, in a few threads.

The protocol (the ledger's state machine is drawn in :mod:`newsletter.ledger.base`):

1. **Claim, then call.** A worker first takes a token from the rate limiter,
   then claims its batch's rows ``pending -> sending`` under a fresh batch id
   and COMMITs, and only then calls the API (the batch id is the idempotency
   key). Claiming as late as possible keeps the window in which a crash leaves
   rows in doubt as short as one API call.
2. **Record in one transaction.** Each recipient's outcome is written in one
   COMMIT: ``sent`` with the provider's id, ``failed`` with the reason,
   ``unknown`` when the provider could not say, or back to ``pending`` with
   attempts + 1 for transient trouble.
3. **Retry what was certainly not accepted.** A 429 or 5xx answer, or a
   connection that was never made, means the provider did not take the batch:
   its rows go back to ``pending`` and are claimed again (under a new batch id)
   after an exponential backoff with jitter, or the server's ``Retry-After``,
   which also pauses every worker. After ``max_attempts`` tries in one run a
   recipient is left ``pending`` and the run ends incomplete (exit 4).
4. **Never resend what may have been accepted.** No answer at all (timeout,
   dropped connection) leaves the batch in doubt: a provider that honours
   idempotency keys gets the very same batch id again, but only while it still
   remembers the key (the batch's first claim is younger than the provider's
   ``idempotency_window``: Resend forgets keys after 24 hours); any other
   provider's rows, and older batches, become ``unknown`` and stay so until
   ``--resend-unknown`` or reconciliation.
5. **Stop at once** when the provider refuses the key (the batch goes back to
   ``pending``; no further batch is sent) or when the issue's lease is lost.

Nothing here knows a provider's wire format; adapters map their answers to
:class:`~newsletter.models.Outcome` and :class:`~newsletter.errors.ProviderError`.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import requests

from .errors import AuthError, LedgerError, ProviderError
from .ledger import Ledger, address_key
from .models import Message, Outcome
from .providers.base import Batch, Provider
from .ratelimit import Backoff, TokenBucket
from .slots import SlotTemplate


def new_batch_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass
class Work:
    """Messages to send as one batch. ``batch_id`` is set when retrying an in-doubt batch under its old key."""

    messages: list[Message]
    values: list[Sequence[str]] = field(default_factory=list)  # slot values per message, when known
    batch_id: str | None = None
    attempt: int = 1
    claimed_at: float | None = None  # epoch seconds of the batch id's first claim (None: not known)


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


class Dispatcher:
    """A bounded pool of workers, each with its own ``requests.Session`` (keep-alive), sharing one rate limit."""

    def __init__(self, ledger: Ledger, provider: Provider, issue_id: str, holder: str, *,
                 concurrency: int = 4, max_attempts: int = 5, limiter: TokenBucket | None = None,
                 backoff: Backoff = Backoff(), on_batch: Callable[[BatchReport], None] = lambda report: None,
                 max_queued: int | None = None, template: Mapping[str, SlotTemplate] | None = None,
                 clock: Callable[[], float] = time.time):
        self.ledger = ledger
        self.provider = provider
        self.issue_id = issue_id
        self.holder = holder
        self.concurrency = max(1, concurrency)
        self.max_attempts = max(1, max_attempts)
        self.limiter = limiter or TokenBucket(provider.rate_limit, burst=min(self.concurrency, provider.rate_limit))
        self.backoff = backoff
        self.on_batch = on_batch
        self.template = template  # the compiled subject/html/text, for adapters that substitute server-side
        self.clock = clock  # epoch seconds: the age of a batch's idempotency key
        self.totals = RunTotals()
        # Back-pressure: a batch holds up to hundreds of personalised bodies, so keep few waiting.
        self._max_queued = max_queued or max(1, self.concurrency // 2)
        self._ready: deque[Work] = deque()
        self._delayed: list[tuple[float, int, Work]] = []  # (due, tiebreak, work) heap
        self._order = itertools.count()
        self._busy = 0
        self._closed = False  # no more work will be submitted
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._failing_in_a_row = 0

    # -- feeding the pool -----------------------------------------------------------
    def start(self) -> None:
        for n in range(self.concurrency):
            thread = threading.Thread(target=self._worker, name=f"send-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, work: Work) -> bool:
        """Queue a batch, waiting while the queue is full; False once the run has been aborted."""
        with self._cond:
            while len(self._ready) >= self._max_queued and not self.totals.aborted:
                self._cond.wait()
            if self.totals.aborted:
                return False
            self._ready.append(work)
            self._cond.notify_all()
            return True

    def finish(self) -> RunTotals:
        """No more work: wait until every batch (and every retry) is done."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            while thread.is_alive():
                thread.join(0.2)  # short joins keep Ctrl-C responsive
        return self.totals

    def abort(self, reason: str, error: BaseException | None = None) -> None:
        """Stop claiming: queued work stays ``pending`` in the ledger; batches in flight finish and are recorded."""
        with self._cond:
            if not self.totals.aborted:
                self.totals.aborted = reason
                self.totals.error = error
            self._ready.clear()
            self._delayed.clear()
            self._closed = True
            self._cond.notify_all()

    @property
    def aborted(self) -> bool:
        return bool(self.totals.aborted)

    # -- the workers ----------------------------------------------------------------
    def _next(self) -> Work | None:
        with self._cond:
            while True:
                if self._delayed and self._delayed[0][0] <= time.monotonic():
                    work = heapq.heappop(self._delayed)[2]
                elif self._ready:
                    work = self._ready.popleft()
                elif self._closed and not self._delayed and self._busy == 0:
                    self._cond.notify_all()
                    return None
                else:
                    timeout = self._delayed[0][0] - time.monotonic() if self._delayed else None
                    self._cond.wait(timeout)
                    continue
                self._busy += 1
                self._cond.notify_all()
                return work

    def _later(self, work: Work, delay: float) -> None:
        with self._cond:
            if not self.totals.aborted:
                heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._order), work))
                self._cond.notify_all()

    def _worker(self) -> None:
        session = requests.Session()
        try:
            while (work := self._next()) is not None:
                try:
                    self._send(work, session)
                except BaseException as err:  # a bug or a broken ledger: stop everything, keep what is recorded
                    self.abort(f"{type(err).__name__}: {err}", err)
                finally:
                    with self._cond:
                        self._busy -= 1
                        self._cond.notify_all()
        finally:
            session.close()

    def _send(self, work: Work, session: requests.Session) -> None:
        self.limiter.acquire()
        if self.aborted:
            return
        in_doubt = work.batch_id is not None  # an earlier try of this very batch may have been accepted
        batch = self._claim(work)
        if batch is None:
            return
        started = time.monotonic()
        try:
            outcomes = self.provider.send_batch(batch, session)
        except AuthError as err:
            if not in_doubt:  # refused before anything was accepted: back to pending
                self.ledger.record(self.issue_id, batch.batch_id, _all(batch, "retry", err.message),
                                   source=self.provider.name)
            self.abort("the provider refused the API key", err)
            return
        except ProviderError as err:
            self._batch_failed(work, batch, err, in_doubt, time.monotonic() - started)
            return
        self._record(work, batch, outcomes, time.monotonic() - started)

    def _claim(self, work: Work) -> Batch | None:
        if work.batch_id:  # an in-doubt batch, already `sending`: same id, same idempotency key
            if not self.provider.honours_key(None if work.claimed_at is None else self.clock() - work.claimed_at):
                self._key_expired(work)
                return None
            return self._batch(work.batch_id, work)
        batch_id = new_batch_id()
        work.claimed_at = self.clock()
        claimed = self.ledger.claim(self.issue_id, batch_id, [m.to for m in work.messages], self.holder)
        if not claimed:
            if not self.ledger.heartbeat(self.issue_id, self.holder):
                self.abort("another run took over this issue's lease",
                           LedgerError("another run took over this issue's lease; stopped sending",
                                       hint="check `newsletter status`; the other run continues the issue"))
            return None
        keep, seen = [], set()
        for n, message in enumerate(work.messages):  # only what we claimed, and each address once
            key = address_key(message.to)
            if key in claimed and key not in seen:
                seen.add(key)
                keep.append(n)
        work.messages = [work.messages[n] for n in keep]
        work.values = [work.values[n] for n in keep] if work.values else []
        return self._batch(batch_id, work)

    def _key_expired(self, work: Work) -> None:
        """An in-doubt batch older than the provider's memory of its key: a retry could send it twice."""
        reason = (f"no clear answer from {self.provider.name}, and the batch was first claimed more than "
                  f"{key_window(self.provider)} ago, past the time {self.provider.name} keeps its idempotency "
                  f"key: it may or may not have been sent")
        batch = self._batch(work.batch_id or "", work)
        self.ledger.mark_unknown(self.issue_id, [batch.batch_id], reason)
        self._count(unknown=len(batch.messages))
        self._report(batch, {"unknown": len(batch.messages)}, work.attempt, 0.0, "idempotency key expired")

    def _batch(self, batch_id: str, work: Work) -> Batch:
        return Batch(self.issue_id, batch_id, tuple(work.messages), slot_values=tuple(work.values),
                     template=self.template if work.values else None)

    def _batch_failed(self, work: Work, batch: Batch, err: ProviderError, in_doubt: bool, seconds: float) -> None:
        size = len(batch.messages)
        not_accepted = err.retryable and (err.status is not None or never_reached_provider(err))
        if not_accepted and not in_doubt:
            # The provider answered 429/5xx, or was never reached: certainly not accepted.
            self.ledger.record(self.issue_id, batch.batch_id, _all(batch, "retry", err.message),
                               source=self.provider.name)
            if err.retry_after:
                self.limiter.pause(err.retry_after)
            self._report(batch, {"retry": size}, work.attempt, seconds, err.message)
            self._retry(Work(work.messages, work.values, None, work.attempt + 1), err.retry_after)
        elif err.retryable and self.provider.idempotent and work.attempt < self.max_attempts:
            # It may have been accepted; the same idempotency key makes another try safe.
            self.ledger.mark_attempt(self.issue_id, batch.batch_id)
            if err.retry_after:
                self.limiter.pause(err.retry_after)
            self._report(batch, {"retry": size}, work.attempt, seconds, f"{err.message}; retrying the same batch id")
            self._later(Work(work.messages, work.values, batch.batch_id, work.attempt + 1, work.claimed_at),
                        self.backoff.delay(work.attempt, err.retry_after))
        elif err.retryable or in_doubt:
            reason = f"no clear answer from {self.provider.name}; it may or may not have been sent ({err.message})"
            self.ledger.record(self.issue_id, batch.batch_id, _all(batch, "unknown", reason), source=self.provider.name)
            self._count(unknown=size)
            self._report(batch, {"unknown": size}, work.attempt, seconds, err.message)
        else:
            # A definite refusal of the whole request (unverified sender, unknown domain or stream,
            # payload too large). Adapters report a refused *recipient* as an outcome, so this is
            # about our request or account: every later batch would be refused too, and marking
            # them `failed` would lose those readers for good. Nothing was accepted: back to
            # pending, stop the run, and say what the provider said.
            self.ledger.record(self.issue_id, batch.batch_id, _all(batch, "retry", err.message),
                               source=self.provider.name)
            self._report(batch, {"retry": size}, work.attempt, seconds, err.message)
            self.abort(f"{self.provider.name} refused the request", ProviderError(
                f"{err.message}; nothing in that batch was sent and the run stopped", status=err.status,
                hint="fix the cause (sender, domain, stream or account), then run `newsletter send` again"))

    def _record(self, work: Work, batch: Batch, outcomes: Sequence[Outcome], seconds: float) -> None:
        outcomes = _complete(batch, outcomes, self.provider.name)
        self.ledger.record(self.issue_id, batch.batch_id, outcomes, source=self.provider.name)
        states: dict[str, int] = {}
        for outcome in outcomes:
            states[outcome.state] = states.get(outcome.state, 0) + 1
        self._count(sent=states.get("sent", 0), failed=states.get("failed", 0), unknown=states.get("unknown", 0))
        self._report(batch, states, work.attempt, seconds)
        if states.get("retry"):
            again = {address_key(o.email) for o in outcomes if o.state == "retry"}
            keep = [n for n, m in enumerate(work.messages) if address_key(m.to) in again]
            retry = Work([work.messages[n] for n in keep], [work.values[n] for n in keep] if work.values else [],
                         None, work.attempt + 1)
            self._retry(retry, None)
        else:
            with self._cond:
                self._failing_in_a_row = 0

    def _count(self, **counts: int) -> None:
        with self._cond:
            for name, value in counts.items():
                setattr(self.totals, name, getattr(self.totals, name) + value)

    def _retry(self, work: Work, retry_after: float | None) -> None:
        self._count(retried=len(work.messages))
        if work.attempt > self.max_attempts:
            with self._cond:
                self.totals.exhausted.update(address_key(m.to) for m in work.messages)
                self._failing_in_a_row += 1
                give_up = self._failing_in_a_row >= 3
            if give_up:  # the provider keeps failing: stop, the next run resumes
                self.abort(f"{self.provider.name} kept failing; {len(self.totals.exhausted)} recipient(s) left pending")
            return
        self._later(work, self.backoff.delay(work.attempt - 1, retry_after))

    def _report(self, batch: Batch, states: dict[str, int], attempt: int, seconds: float, note: str = "") -> None:
        self._count(batches=1)
        self.on_batch(BatchReport(batch.batch_id, len(batch.messages), states, attempt, seconds, note))


def key_window(provider: Provider) -> str:
    """``provider.idempotency_window`` in words: "23 h"."""
    window = provider.idempotency_window
    return f"{window / 3600:g} h" if window >= 3600 else f"{window:g} s"


def _all(batch: Batch, state: str, reason: str) -> list[Outcome]:
    return [Outcome(m.to, state, reason=reason) for m in batch.messages]


def _complete(batch: Batch, outcomes: Sequence[Outcome], provider: str) -> list[Outcome]:
    """One outcome per recipient of the batch: anything the provider did not mention is ``unknown``."""
    by_key = {address_key(o.email): o for o in outcomes}
    complete = []
    for message in batch.messages:
        outcome = by_key.get(address_key(message.to))
        if outcome is None:
            outcome = Outcome(message.to, "unknown", reason=f"{provider} returned no outcome for this recipient")
        complete.append(outcome)
    return complete
