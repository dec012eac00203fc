"""One run of ``newsletter send``: check, summarise, freeze or resume the plan, feed the send loop.

The order matters and is the same every time::

    compile once -> validate the list -> take the issue's lease (or exit 75)
    -> summary + confirmation -> freeze the plan (first run) or resume it
    -> resolve rows a dead run left `sending` -> stream the list through the
    send loop -> skip plan rows that left the list -> release the lease

Rows a dead run left ``sending`` are retried under their batch id (the same
idempotency key) only while the provider still remembers that key: the batch's
first claim (the ledger's ``claimed_at``) is younger than the provider's
``idempotency_window`` (Resend: 23 h of its 24; the outbox: forever). Older
batches, and every batch of a provider without keys, become ``unknown``.

The list is streamed in chunks: each chunk costs one ledger look-up, its
eligible pending subscribers are personalised and cut into batches, and the
batches wait in a short queue for the workers, so memory stays flat however
long the list. A subscriber who unsubscribed, lost the segment's tag or got
suppressed since the plan was frozen is ``skipped`` when their turn comes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterator

from ..compile.personalize import Personalizer
from ..compile.pipeline import Build, personalizer
from ..config import Settings
from ..errors import LedgerError, RecipientError
from ..ledger.base import Ledger, address_key, chunked
from ..models import Subscriber
from ..providers import provider_facts
from ..providers.base import Provider
from ..subscribers.reader import Problem, check_list, eligible, iter_subscribers
from .lease import LeaseKeeper
from .outcomes import BatchReport, RunTotals, Work, key_window
from .pool import Dispatcher
from .ratelimit import Backoff

_CHUNK = 1000  # subscribers per ledger look-up


@dataclass(frozen=True)
class SendOptions:
    segment: str | None = None
    limit: int | None = None
    resend_unknown: bool = False
    retry_failed: bool = False
    include_new: bool = False
    skip_invalid: bool = False


@dataclass
class Summary:
    """What a run is about to do (shown before confirmation, and all a dry run does)."""

    issue_id: str
    subject: str
    provider: str
    segment: str
    first_run: bool
    planned: int  # recipients in the plan (or that the first run would plan)
    to_send: int  # recipients this run will try (before --limit)
    counts: dict[str, int]
    new_subscribers: int = 0  # eligible but not in the plan (added with --include-new)
    in_doubt: int = 0  # rows a dead run left `sending`
    in_doubt_action: str = ""  # what this run does with them
    retry_failed: int = 0  # failed rows moved back to pending by --retry-failed (suppressed ones stay failed)
    resend_unknown: bool = False  # --resend-unknown: the unknown rows are sent again
    content_changed: bool = False
    invalid: list[str] = field(default_factory=list)  # "file:line: problem" (skipped with --skip-invalid)
    limit: int | None = None

    @property
    def sending_now(self) -> int:
        return min(self.to_send, self.limit) if self.limit is not None else self.to_send


# -- the list ------------------------------------------------------------------------------------
def ineligible_reason(subscriber: Subscriber, segment: str) -> str:
    """Why a subscriber must not get this issue ("" when they should), in the words of `status --failed`."""
    if eligible(subscriber, segment):
        return ""
    if subscriber.status != "subscribed":
        return f"status is {subscriber.status}"
    return f"not tagged {segment!r}"


class SendRun:
    def __init__(self, settings: Settings, build: Build, provider: Provider, ledger: Ledger,
                 options: SendOptions, *, secret: bytes):
        self.settings = settings
        self.compiled = build.compiled
        self.issue_id = build.issue.id
        self.provider = provider
        self.ledger = ledger
        self.options = options
        self.list_path = settings.workspace_path(settings.subscribers.file)
        self.list_name = settings.subscribers.file
        self.personalizer: Personalizer = personalizer(settings, build.compiled, secret=secret,
                                                                facts=provider_facts(settings))
        self._issue_segment = build.issue.segment
        self._load_plan()
        # The whole list is checked before anything is sent; with --skip-invalid the bad rows are left out.
        self.problems: list[Problem] = check_list(self.list_path, skip_invalid=options.skip_invalid)

    def _load_plan(self) -> None:
        """The issue's plan as the ledger has it now (None before the first run) and the segment it fixes.

        Read again by :meth:`summary`, under the lease: a run that started before another one
        froze the plan (and maybe finished) must resume that plan, not freeze a second one.
        """
        self.record = self.ledger.issue(self.issue_id)
        options = self.options
        planned_segment = self.record.segment if self.record else None
        self.segment = options.segment or planned_segment or self._issue_segment or ""
        if self.record and options.segment is not None and options.segment != self.record.segment:
            raise LedgerError(f"issue {self.issue_id} was planned for segment {self.record.segment or '(everyone)'!r}, "
                              f"not {options.segment!r}", hint="resume it without --segment, or send a new issue")

    def subscribers(self) -> Iterator[Subscriber]:
        """The valid rows of the list, streamed."""
        return iter_subscribers(self.list_path, skip=self.problems)

    # -- before sending (read-only) ---------------------------------------------------
    def _eligible(self) -> Iterator[str]:
        for subscriber in self.subscribers():
            if eligible(subscriber, self.segment):
                yield address_key(subscriber.email)

    def summary(self) -> Summary:
        self._load_plan()
        record = self.record
        summary = Summary(self.issue_id, self.compiled.issue.subject, self.provider.name, self.segment,
                          first_run=record is None, planned=0, to_send=0, counts=self.ledger.counts(self.issue_id),
                          invalid=[str(p) for p in self.problems], limit=self.options.limit)
        if record is None:
            # Counted, not collected: the checked list holds each address once (a repeat is a problem,
            # refused or skipped), and a set of every address would grow with the list.
            suppressed = self.ledger.suppressed_set()
            summary.planned = summary.to_send = sum(1 for key in self._eligible() if key not in suppressed)
            return summary
        summary.planned = record.planned
        summary.content_changed = record.content_hash != self.compiled.content_hash
        summary.in_doubt = summary.counts["sending"]
        retry, expired = self.in_doubt_batches()
        retried = sum(len(keys) for keys in retry.values())
        summary.in_doubt_action = self._in_doubt_action(retried, sum(len(keys) for keys in expired.values()))
        if self.options.include_new:
            for keys in chunked(self._eligible(), _CHUNK):  # a look-up per chunk: memory stays flat
                known = self.ledger.lookup(self.issue_id, keys)
                summary.new_subscribers += sum(1 for key in keys if key not in known)
        summary.to_send = summary.counts["pending"] + summary.new_subscribers
        if self.options.resend_unknown:
            summary.resend_unknown = True
            summary.to_send += summary.counts["unknown"]
        if self.options.retry_failed and summary.counts["failed"]:
            suppressed = self.ledger.suppressed_set()
            summary.retry_failed = sum(1 for row in self.ledger.rows(self.issue_id, ("failed",))
                                       if row.email not in suppressed)
            summary.to_send += summary.retry_failed
        summary.to_send += retried
        return summary

    def _in_doubt_action(self, retried: int, expired: int) -> str:
        """What happens to rows a dead run left `sending`, in the summary's words."""
        if not self.provider.idempotent:
            return "marked unknown, not re-sent"
        if not expired:
            return "retried with the same idempotency key"
        why = (f"first claimed more than {key_window(self.provider)} ago, past the time {self.provider.name} "
               f"keeps its idempotency keys")
        if not retried:
            return f"marked unknown, not re-sent ({why})"
        return f"{retried} retried with the same idempotency key, {expired} marked unknown ({why})"

    # -- sending (holding the lease) --------------------------------------------------
    def freeze_plan(self) -> None:
        """First run: freeze the plan; later runs: add new subscribers if asked, accept new content."""
        if self.record is None:
            self.ledger.create_plan(self.issue_id, content_hash=self.compiled.content_hash,
                                    subject=self.compiled.issue.subject, segment=self.segment, emails=self._eligible())
        else:
            if self.options.include_new:
                self.ledger.extend_plan(self.issue_id, self._eligible())
            if self.record.content_hash != self.compiled.content_hash:
                self.ledger.set_content_hash(self.issue_id, self.compiled.content_hash)
            if self.options.resend_unknown:
                self.ledger.resend_unknown(self.issue_id)
            if self.options.retry_failed:
                self.ledger.retry_failed(self.issue_id)
        # Invalid rows skipped under --skip-invalid are on the record, with the reason.
        self.ledger.add_skipped(self.issue_id, [(p.email, str(p)) for p in self.problems if p.email])
        self.record = self.ledger.issue(self.issue_id)

    def in_doubt_batches(self, now: datetime | None = None) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """Rows a dead run left ``sending``, as (batches to retry under their key, batches to mark unknown).

        A batch is retried only while the provider still remembers its idempotency key, judged
        from its first claim, which is never later than its first send.
        """
        doubt = self.ledger.in_doubt(self.issue_id)
        if not doubt or not self.provider.idempotent:
            return {}, doubt
        now = now or datetime.now(timezone.utc)
        claimed = self.ledger.claim_times(self.issue_id)
        retry: dict[str, list[str]] = {}
        expired: dict[str, list[str]] = {}
        for batch_id, keys in doubt.items():
            when = claimed.get(batch_id)
            age = (now - when).total_seconds() if when else None
            (retry if self.provider.honours_key(age) else expired)[batch_id] = keys
        return retry, expired

    def recover_in_doubt(self, now: datetime | None = None) -> list[Work]:
        """Rows a dead run left ``sending``: the same batches again while their key holds, else ``unknown``."""
        retry, expired = self.in_doubt_batches(now)
        if expired and not self.provider.idempotent:
            self.ledger.mark_unknown(self.issue_id, list(expired), "a run stopped after claiming this batch; "
                                     "it may or may not have been sent")
        elif expired:
            self.ledger.mark_unknown(self.issue_id, list(expired), (
                f"a run stopped after claiming this batch more than {key_window(self.provider)} ago, past the time "
                f"{self.provider.name} keeps its idempotency key; it may or may not have been sent"))
        if not retry:
            return []
        wanted = {key for keys in retry.values() for key in keys}
        found: dict[str, tuple] = {}
        broken: dict[str, str] = {}  # key -> why that recipient's message cannot be built any more
        for subscriber in self.subscribers():
            key = address_key(subscriber.email)
            if key in wanted and key not in found and key not in broken:
                try:
                    found[key] = self.personalizer.message_with_values(subscriber)
                except RecipientError as err:
                    broken[key] = err.render()
        claimed = self.ledger.claim_times(self.issue_id)
        work, lost, unbuildable = [], [], {}
        for batch_id, keys in retry.items():
            if all(key in found for key in keys):
                when = claimed.get(batch_id)
                work.append(Work([found[k][0] for k in keys], [found[k][1] for k in keys], batch_id,
                                 claimed_at=when.timestamp() if when else None))
            elif any(key in broken for key in keys):  # the same key needs the same batch, and it cannot be built
                unbuildable[batch_id] = next(broken[key] for key in keys if key in broken)
            else:  # the same idempotency key needs the same batch, and someone left the list
                lost.append(batch_id)
        self.ledger.mark_unknown(self.issue_id, lost, "a run stopped after claiming this batch, and a recipient "
                                 "has since left the list; it may or may not have been sent")
        for batch_id, why in unbuildable.items():
            self.ledger.mark_unknown(self.issue_id, [batch_id], f"a run stopped after claiming this batch, and it "
                                     f"cannot be built again ({why}); it may or may not have been sent")
        return work

    def send(self, holder: str, *, on_batch: Callable[[BatchReport], None], backoff: Backoff = Backoff(),
             keeper: LeaseKeeper | None = None) -> RunTotals:
        """Send everything pending (up to ``--limit``); returns what happened."""
        provider = self.settings.provider
        dispatcher = Dispatcher(self.ledger, self.provider, self.issue_id, holder,
                                concurrency=provider.concurrency, max_attempts=provider.max_attempts,
                                backoff=backoff, on_batch=on_batch,
                                template=self.compiled.send_template())
        if keeper:
            keeper.on_lost = lambda: dispatcher.abort(
                "another run took over this issue's lease",
                LedgerError("another run took over this issue's lease; stopped sending"))
        in_doubt = self.recover_in_doubt()
        dispatcher.start()
        try:
            for work in in_doubt:
                dispatcher.submit(work)
            complete = self._feed(dispatcher)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: let batches in flight finish and be recorded
            dispatcher.abort("interrupted")
            return dispatcher.finish()
        except BaseException as err:
            dispatcher.abort(str(err))
            dispatcher.finish()
            raise
        try:
            totals = dispatcher.finish()
        except KeyboardInterrupt:
            dispatcher.abort("interrupted")
            return dispatcher.finish()
        if complete and not totals.aborted:
            gone = [(key, "no longer in the subscriber list") for key in self.ledger.pending_keys(self.issue_id)
                    if key not in totals.exhausted]
            self.ledger.skip(self.issue_id, gone)
        return totals

    def _feed(self, dispatcher: Dispatcher) -> bool:
        """Stream the list into the send loop; True when every subscriber was looked at."""
        limit, queued = self.options.limit, 0
        for chunk in chunked(self.subscribers(), max(_CHUNK, self.provider.batch_size)):
            if dispatcher.aborted:
                return False
            found = self.ledger.lookup(self.issue_id, [s.email for s in chunk])
            ready, skips = [], []
            for subscriber in chunk:
                key = address_key(subscriber.email)
                state = found.get(key)
                if state is None or state[0] != "pending":
                    continue
                reason = ineligible_reason(subscriber, self.segment) or ("suppressed" if state[1] else "")
                if reason:
                    skips.append((subscriber.email, reason))
                elif limit is None or queued < limit:
                    ready.append(subscriber)
                    queued += 1
            self.ledger.skip(self.issue_id, skips)
            if not self._submit(dispatcher, ready):
                return False
            if limit is not None and queued >= limit:
                return False
        return True

    def _submit(self, dispatcher: Dispatcher, subscribers: list[Subscriber]) -> bool:
        """Personalise lazily, one batch at a time: a personalised body is tens of KB, a list is long."""
        values: deque = deque()
        weigh = "bodies" if self.provider.fills_bodies else "values" if self.provider.substitutes else ""

        def messages():
            for subscriber in subscribers:
                try:
                    message, slot_values = self.personalizer.message_with_values(
                        subscriber, bodies=self.provider.needs_bodies, weigh=weigh)
                except RecipientError as err:  # their data alone: they fail, the others are sent
                    dispatcher.recipient_failed(err)
                    continue
                values.append(slot_values)
                yield message

        for group in self.provider.cut_batches(messages()):
            # cut_batches may have personalised one message past this group; its values stay queued.
            if not dispatcher.submit(Work(group, [values.popleft() for _ in group])):
                return False
        return True

