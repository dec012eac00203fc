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
3. **Retry what was certainly not accepted.** :class:`~newsletter.errors.NotAccepted`
   from the shared send path (a 429, 500 or 503 answer, any 5xx but the gateway
   ones, or a request that never left: connection refused, DNS failure, connect
   timeout) means the provider did not take the batch: its rows go back to ``pending`` and are
   claimed again (under a new batch id) after an exponential backoff with
   jitter, or the server's ``Retry-After``, which also pauses every worker (a
   wait longer than ``max_wait`` stops the run instead: exit 4, run again
   later). After ``max_attempts`` tries in one run a recipient is left
   ``pending`` and the run ends incomplete (exit 4).
4. **Never resend what may have been accepted.** :class:`~newsletter.errors.NoAnswer`
   (timeout, dropped connection), or a 502/504 from a gateway that gave up waiting while
   the provider behind it may have accepted, leaves the batch in doubt: a provider that honours
   idempotency keys gets the very same batch id again, but only while it still
   remembers the key (the batch's first claim is younger than the provider's
   ``idempotency_window``: Resend forgets keys after 24 hours); any other
   provider's rows, and older batches, become ``unknown`` and stay so until
   ``--resend-unknown`` or reconciliation.
5. **Stop at once** when the provider refuses the key (the batch goes back to
   ``pending``; no further batch is sent) or when the issue's lease is lost.
6. **One recipient's bad data is theirs alone.** A :class:`RecipientError`
   from the adapter (its request for the batch cannot be built for that
   recipient) records that recipient ``failed`` with the message; the others go
   back to ``pending`` and are sent at once in a new batch. Any other
   exception from an adapter is a bug: the batch becomes ``unknown`` (or goes
   back to ``pending`` when no HTTP request was made) and the run stops with
   one error.

What a failure means is decided by :func:`~newsletter.sending.outcomes.decide_failure`, a pure
function; every outcome is written by :meth:`Dispatcher.settle` (one transaction, then the totals
and the progress report). Nothing here knows a provider's wire format; adapters map their answers to
:class:`~newsletter.models.Outcome` and :class:`~newsletter.errors.ProviderError`.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import threading
import time
import uuid
from collections import Counter, deque
from typing import Callable, Mapping, Sequence

from ..compile.slots import SlotTemplate
from ..errors import LedgerError, NewsletterError, ProviderError, RecipientError
from ..ledger.base import Ledger, address_key
from ..models import Outcome
from ..providers.base import Batch, Provider, all_outcomes
from .outcomes import (
    BatchReport,
    CountingSession,
    RunTotals,
    Work,
    as_newsletter_error,
    complete_outcomes,
    decide_failure,
    in_batch_order,
    key_window,
)
from .ratelimit import MAX_WAIT, Backoff, TokenBucket, wait_words


CLAIM_TRIES = 5  # several workers: times rows passed over by a claim are asked for again
CLAIM_AGAIN_AFTER = 0.2  # seconds


def new_batch_id() -> str:
    return uuid.uuid4().hex[:16]


class Dispatcher:
    """A bounded pool of workers, each with its own ``requests.Session`` (keep-alive), sharing one rate limit."""

    def __init__(self, ledger: Ledger, provider: Provider, issue_id: str, holder: str, *,
                 concurrency: int = 4, max_attempts: int = 5, limiter: TokenBucket | None = None,
                 backoff: Backoff = Backoff(), on_batch: Callable[[BatchReport], None] = lambda report: None,
                 template: Mapping[str, SlotTemplate] | None = None,
                 clock: Callable[[], float] = time.time, max_wait: float = MAX_WAIT):
        self.ledger = ledger
        self.provider = provider
        self.issue_id = issue_id
        self.holder = holder
        self.concurrency = max(1, concurrency)
        self.max_attempts = max(1, max_attempts)
        self.limiter = limiter or TokenBucket(provider.rate_limit, burst=min(self.concurrency, provider.rate_limit))
        # The one retry policy, with this run's [provider] max_attempts and longest wait.
        self.retry = dataclasses.replace(backoff, tries=self.max_attempts, max_wait=max_wait)
        self.on_batch = on_batch
        self.template = template  # the compiled subject/html/text, for adapters that substitute server-side
        self.clock = clock  # epoch seconds: the age of a batch's idempotency key
        self.max_wait = max_wait  # the longest Retry-After this run waits for; longer stops it (exit 4)
        self.totals = RunTotals(max_attempts=self.max_attempts)
        # Back-pressure: a batch holds up to hundreds of personalised bodies, so keep few waiting.
        self._max_queued = max(1, self.concurrency // 2)
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

    def hold_lost(self) -> None:
        """Stop: another run took the issue's lease over, or another worker reaped this one's registration."""
        if self.ledger.many_workers:
            why, hint = ("another worker reaped this one (its heartbeat looked dead)",
                         "run this again to rejoin as a worker; `newsletter status` lists the live ones")
        else:
            why, hint = ("another run took over this issue's lease",
                         "check `newsletter status`; the other run continues the issue")
        self.abort(why, LedgerError(f"{why}; stopped sending", hint=hint))

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
    def in_flight(self) -> int:
        """Batches a worker has taken and not yet recorded (those a first Ctrl-C lets finish)."""
        with self._cond:
            return self._busy

    @property
    def aborted(self) -> bool:
        return bool(self.totals.aborted)

    def recipient_failed(self, err: RecipientError) -> None:
        """A recipient whose message cannot be built (before any batch): ``failed`` with the reason."""
        if self.ledger.fail(self.issue_id, [(err.email, err.render())]):
            self._count(failed=1)
            self.on_batch(BatchReport("", 1, {"failed": 1}, 1, 0.0, f"{err.email}: {err.message}"))

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
        session = CountingSession()
        try:
            while (work := self._next()) is not None:
                try:
                    self._send(work, session)
                except BaseException as err:  # a bug or a broken ledger: stop everything, keep what is recorded
                    self.abort(f"{type(err).__name__}: {err}", as_newsletter_error(err))
                finally:
                    with self._cond:
                        self._busy -= 1
                        self._cond.notify_all()
        finally:
            session.close()

    def _send(self, work: Work, session: CountingSession) -> None:
        self.limiter.acquire()
        if self.aborted:
            return
        in_doubt = work.batch_id is not None  # an earlier try of this very batch may have been accepted
        batch = self._claim(work)
        if batch is None:
            return
        started = time.monotonic()
        session.requests_made = 0
        try:
            outcomes = self.provider.send_batch(batch, session)
        except ProviderError as err:  # AuthError, NotAccepted and NoAnswer included
            self._batch_failed(work, batch, err, in_doubt, time.monotonic() - started)
            return
        except RecipientError as err:
            uncertain = (in_doubt and not work.cut_for_recipient) or session.requests_made > 0
            self._recipient_refused(work, batch, err, uncertain, time.monotonic() - started)
            return
        except Exception as err:  # a bug in an adapter: record what we can tell, then stop
            self._unexpected(work, batch, err, in_doubt or self._may_have_reached(session),
                             time.monotonic() - started)
            return
        outcomes = complete_outcomes(batch, outcomes, self.provider.name)
        states = self.settle(work, batch, outcomes, time.monotonic() - started)
        if states.get("retry"):
            again = {address_key(o.email) for o in outcomes if o.state == "retry"}
            self._retry(_keep(work, lambda key: key in again, None, work.attempt + 1), None)
        else:
            with self._cond:
                self._failing_in_a_row = 0

    def _may_have_reached(self, session: CountingSession) -> bool:
        """False only when the adapter provably sent nothing: its deliveries go through the session, which
        made no request."""
        return session.requests_made > 0 or not self.provider.delivers_through_session

    def _claim(self, work: Work) -> Batch | None:
        if work.batch_id:  # an in-doubt batch, already `sending`: same id, same idempotency key
            if not self.provider.honours_key(None if work.claimed_at is None else self.clock() - work.claimed_at):
                self._key_expired(work)
                return None
            self._find_rows(work)
            return self._batch(work.batch_id, work)
        self._find_rows(work)
        batch_id = new_batch_id()
        work.claimed_at = self.clock()
        claimed = self.ledger.claim_rows(self.issue_id, batch_id, work.rows, self.holder)
        self._claim_missed_again(work, claimed)
        if not claimed:
            if not self.ledger.heartbeat(self.issue_id, self.holder):
                self.hold_lost()
            return None
        if len(claimed) < len(work.rows):  # some rows were not pending, or named twice
            keep, seen = [], set()
            for n, row in enumerate(work.rows):  # only what we claimed, and each row once
                if row in claimed and row not in seen:
                    seen.add(row)
                    keep.append(n)
            _narrow(work, keep)
        return self._batch(batch_id, work)

    def _find_rows(self, work: Work) -> None:
        """Work that came without its ledger rows (an in-doubt batch, a test's): look them up once; a message
        whose address is not in the plan gets row -1, which matches none, so it is never claimed."""
        if len(work.rows) == len(work.messages):
            return
        found = self.ledger.lookup_rows(self.issue_id, [m.to for m in work.messages])
        work.rows = [found[key].id if (key := address_key(m.to)) in found else -1 for m in work.messages]

    def _claim_missed_again(self, work: Work, claimed: set[int]) -> None:
        """Several workers: ``SKIP LOCKED`` passes over a row another worker's statement holds for a moment
        (its reservation of the same chunk, re-checking the row), and this worker reserved it: ask again
        shortly, a few times. A row someone else claimed meanwhile is simply not claimed again."""
        if not self.ledger.many_workers or work.claim_tries >= CLAIM_TRIES:
            return
        missed = [n for n, row in enumerate(work.rows) if row not in claimed]
        if missed:
            self._later(Work([work.messages[n] for n in missed], [work.values[n] for n in missed] if work.values
                             else [], None, work.attempt, claim_tries=work.claim_tries + 1,
                             rows=[work.rows[n] for n in missed]), CLAIM_AGAIN_AFTER)

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
        """Apply :func:`decide_failure`: record, try again (after the real back-off, which the report says), or stop."""
        verdict = decide_failure(err, in_doubt=in_doubt, idempotent=self.provider.idempotent,
                                 attempt=work.attempt, policy=self.retry)
        size, note = len(batch.messages), err.message
        delay = self.retry.delay(work.attempt, err.retry_after) if verdict.again else 0.0
        if verdict.again == "new" and not self.retry.tries_left(work.attempt):
            note += f"; left pending after {self.max_attempts} tries"
        elif verdict.again:
            note += f"; retry{' under the same batch id' if verdict.again == 'same' else ''} in {wait_words(delay)}"
        elif verdict.stop in ("auth", "refused") and verdict.record == "retry":
            note += "; not tried again: back to pending, and the run stops"
        if verdict.record == "unknown":
            reason = f"no clear answer from {self.provider.name}; it may or may not have been sent ({err.message})"
            self.settle(work, batch, all_outcomes(batch, "unknown", reason=reason), seconds, note)
        elif verdict.record == "retry":
            self.settle(work, batch, all_outcomes(batch, "retry", reason=err.message), seconds, note)
        elif verdict.stop != "auth":  # left `sending` for the same key: this run or the next one tries it again
            self.ledger.mark_attempt(self.issue_id, batch.batch_id)
            self._report(batch, {"retry": size}, work.attempt, seconds, note)
        if verdict.stop == "auth":
            self.abort("the provider refused the API key", err)
        elif verdict.stop == "wait":
            self._stop_for_wait(err)
        elif verdict.stop == "refused":
            self.abort(f"{self.provider.name} refused the request", ProviderError(
                f"{err.message}; nothing in that batch was sent and the run stopped", status=err.status,
                hint=(f"{err.hint}; then " if err.hint else "fix the cause (sender, domain, stream or account), then ")
                + "run `newsletter send` again"))
        if not verdict.again:
            return
        if err.retry_after:  # the whole account waits, not only this batch
            self.limiter.pause(err.retry_after)
        if verdict.again == "same":
            self._later(Work(work.messages, work.values, batch.batch_id, work.attempt + 1, work.claimed_at,
                             rows=work.rows), delay)
        else:
            self._retry(Work(work.messages, work.values, None, work.attempt + 1, rows=work.rows), delay=delay)

    def _stop_for_wait(self, err: ProviderError) -> None:
        """A ``Retry-After`` longer than a run waits: stop (exit 4) rather than hold cron for hours."""
        self.abort(f"{self.provider.name} asked to wait {wait_words(err.retry_after or 0)} before the next "
                   f"request ({err.message}), longer than the {wait_words(self.max_wait)} a run waits; "
                   f"run again after that")

    def _recipient_refused(self, work: Work, batch: Batch, err: RecipientError, uncertain: bool,
                           seconds: float) -> None:
        """One recipient's data made the batch's request impossible: they fail, the others go again at once.

        ``uncertain``: an earlier try of this batch went unanswered, or this one made a request, so
        some of it may have been accepted. An idempotent provider gets the others under the same
        batch id (the outbox rewrites the files it wrote before the error, never a second copy);
        another provider sends them in a new batch, unless the batch is uncertain: then it is unknown.
        """
        key = address_key(err.email)
        if not any(address_key(m.to) == key for m in batch.messages):
            self._unexpected(work, batch, err, True, seconds)  # an adapter bug: the address is not in the batch
            return
        size, idempotent = len(batch.messages), self.provider.idempotent
        if uncertain and not idempotent:
            reason = f"{err.render()}; an earlier try of this batch may have been accepted, so it may or may not " \
                     f"have been sent"
            self.settle(work, batch, all_outcomes(batch, "unknown", reason=reason), seconds, err.message)
            return
        state = "unknown" if uncertain else "failed"
        why = err.render() + ("; an earlier try of this batch may have reached them: it may or may not have been "
                              "sent" if uncertain else "")
        again = f"not sent: {err.email}'s data stopped the batch; sent again in another batch"
        outcomes = [Outcome(m.to, state, reason=why) for m in batch.messages if address_key(m.to) == key]
        if not idempotent:  # the others were certainly not sent: back to pending, claimed again under a new id
            outcomes += [Outcome(m.to, "retry", reason=again) for m in batch.messages if address_key(m.to) != key]
        self.settle(work, batch, outcomes, seconds, err.message, pending=size - 1)
        others = _keep(work, lambda other: other != key, batch.batch_id if idempotent else None, work.attempt)
        if others.messages:  # not a transient failure of theirs: no backoff, no attempt counted
            others.claimed_at, others.cut_for_recipient = work.claimed_at, not uncertain
            self._later(others, 0.0)

    def _unexpected(self, work: Work, batch: Batch, err: Exception, may_have_reached: bool, seconds: float) -> None:
        """An adapter raised something it should not: record the batch safely and stop the run with one error."""
        size, name = len(batch.messages), type(err).__name__
        if may_have_reached:
            reason = (f"unexpected error from the {self.provider.name} adapter ({name}: {err}); it may or may not "
                      f"have been sent")
            self.settle(work, batch, all_outcomes(batch, "unknown", reason=reason), seconds, f"{name}: {err}")
            what = f"its {size} recipient(s) are marked unknown (they may or may not have been sent)"
        else:
            self.settle(work, batch, all_outcomes(batch, "retry", reason=f"{name}: {err}"), seconds, f"{name}: {err}")
            what = f"no request was made, so its {size} recipient(s) are back to pending"
        error = NewsletterError(f"unexpected {name} from the {self.provider.name} adapter while sending batch "
                                f"{batch.batch_id}: {err}; {what}, and the run stopped",
                                hint=f"run again with --debug for the traceback and report it; "
                                     f"`newsletter status {self.issue_id} --failed` lists who is in doubt")
        error.__cause__ = err
        self.abort(f"unexpected {name} from the {self.provider.name} adapter", error)

    def settle(self, work: Work, batch: Batch, outcomes: Sequence[Outcome], seconds: float, note: str = "", *,
               pending: int = 0) -> Counter:
        """The one way a batch's outcomes are written: one ledger transaction, then the run's totals and the
        progress report. ``pending``: recipients not in ``outcomes`` who go again (still ``sending``, same id).
        Returns the count of each outcome state."""
        self.ledger.record(self.issue_id, batch.batch_id, outcomes, source=self.provider.name,
                           rows=_rows_of(work, outcomes), holder=self.holder)
        states = Counter(outcome.state for outcome in outcomes)
        self._count(sent=states["sent"], failed=states["failed"], unknown=states["unknown"])
        report = dict(states)
        if pending:
            report["retry"] = report.get("retry", 0) + pending - states["retry"]
        self._report(batch, report, work.attempt, seconds, note)
        return states

    def _count(self, **counts: int) -> None:
        with self._cond:
            for name, value in counts.items():
                setattr(self.totals, name, getattr(self.totals, name) + value)

    def _retry(self, work: Work, retry_after: float | None = None, *, delay: float | None = None) -> None:
        """Claim ``work`` again under a new batch id after its back-off (``delay`` when already drawn),
        unless its tries are spent: then it stays pending for the next run."""
        self._count(retried=len(work.messages))
        if work.attempt > self.max_attempts:
            with self._cond:
                self.totals.exhausted.update(address_key(m.to) for m in work.messages)
                self._failing_in_a_row += 1
                give_up = self._failing_in_a_row >= 3
            if give_up:  # the provider keeps failing: stop, the next run resumes
                self.abort(f"{self.provider.name} kept failing; {len(self.totals.exhausted)} recipient(s) left pending")
            return
        self._later(work, self.retry.delay(work.attempt - 1, retry_after) if delay is None else delay)

    def _report(self, batch: Batch, states: dict[str, int], attempt: int, seconds: float, note: str = "") -> None:
        self._count(batches=1)
        self.on_batch(BatchReport(batch.batch_id, len(batch.messages), states, attempt, seconds, note))


def _keep(work: Work, wanted: Callable[[str], bool], batch_id: str | None, attempt: int) -> Work:
    """The part of ``work`` whose address keys are ``wanted``, with its merge values and rows, as new work."""
    keep = [n for n, m in enumerate(work.messages) if wanted(address_key(m.to))]
    part = Work(work.messages, work.values, batch_id, attempt, rows=work.rows)
    _narrow(part, keep)
    return part


def _narrow(work: Work, keep: list[int]) -> None:
    """Keep only the messages at ``keep``, with their values and rows."""
    work.messages = [work.messages[n] for n in keep]
    work.values = [work.values[n] for n in keep] if work.values else []
    work.rows = [work.rows[n] for n in keep] if work.rows else []


def _rows_of(work: Work, outcomes: Sequence[Outcome]) -> list[int]:
    """Each outcome's ledger row: ``work.rows`` as they are when the outcomes follow the batch's order
    (complete_outcomes' answer, the usual case), else found by address (-1: not in this batch)."""
    if in_batch_order(outcomes, work.messages):
        return work.rows
    row_of = {address_key(m.to): row for m, row in zip(work.messages, work.rows)}
    return [row_of.get(address_key(o.email), -1) for o in outcomes]
