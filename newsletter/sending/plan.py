"""One run of ``newsletter send``: check, summarise, freeze or resume the plan, feed the send loop.

The order matters and is the same every time::

    compile once -> validate the list -> take the issue's lease (or exit 75)
    -> summary + confirmation -> freeze the plan (first run) or resume it
    -> resolve rows a dead run left `sending` -> stream the list through the
    send loop -> skip plan rows that left the list -> release the lease

With several workers on a PostgreSQL ledger (docs/team.md) each run registers instead of taking
the lease, reaps dead workers when it starts and when it finishes its walk, resolves only the rows
it adopts from them, and reserves each chunk's pending rows before personalising them.

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

from ..compile.issue import files_with_id
from ..compile.personalize import Personalizer
from ..compile.pipeline import Build, personalizer
from ..config import Settings
from ..errors import LedgerError, NewsletterError, PlanExists, RecipientError, StoppedNow, SubscriberError
from ..files import file_stamp
from ..ledger.base import Ledger, address_key, chunked
from ..models import Subscriber
from ..providers import provider_facts
from ..providers.base import Provider
from ..subscribers.reader import Problem, check_list, eligible, iter_eligible_keys, iter_subscribers
from .binding import ASK, BIND, OUTBOX, RESTART, SAME, Route, route_verdict, unknown_refused
from .feedprocess import FeedProcess
from .lease import LEASE_STALE_AFTER, LeaseKeeper
from .outcomes import BatchReport, RunTotals, Work, key_window
from .pool import Dispatcher
from .ratelimit import Backoff, wait_words

_CHUNK = 1000  # subscribers per ledger look-up


@dataclass(frozen=True)
class SendOptions:
    segment: str | None = None
    limit: int | None = None
    resend_unknown: bool = False
    retry_failed: bool = False
    include_new: bool = False
    skip_invalid: bool = False
    ignore_lint: frozenset[str] = frozenset()  # lint checks whose errors do not stop this send (--ignore-lint)
    restart: bool = False  # drop a plan that never left the outbox and freeze a new one (docs/sending.md)
    provider_confirmed: bool = False  # the user confirmed an `unknown` plan went through this provider
    unattended: bool = False  # cron's dispatch: its errors advise the send by hand it cannot do itself


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
    new_subscribers: int = 0  # eligible but not in the plan (added with --include-new), counted every run
    include_new: bool = False  # --include-new: they are added now
    replanned_from: str | None = None  # a plan nobody was tried from, planned again for another segment
    in_doubt: int = 0  # rows a dead run left `sending`
    in_doubt_action: str = ""  # what this run does with them
    retry_failed: int = 0  # failed rows moved back to pending by --retry-failed (suppressed ones stay failed)
    resend_unknown: bool = False  # --resend-unknown: the unknown rows are sent again
    content_changed: bool = False
    invalid: list[str] = field(default_factory=list)  # "file:line: problem" (skipped with --skip-invalid)
    limit: int | None = None
    restarting: dict[str, int] | None = None  # --restart: the outbox trial's rows per state, dropped before sending
    restarting_from: str = ""  # the provider that plan was bound to: outbox, or one that was never reached
    early: str = ""  # a first run before the front matter's send_at: "send_at ... is 48 h away"
    suppressed_out: int = 0  # a new plan: eligible readers left out because they are suppressed
    renamed_from: str = ""  # a new plan whose subject a sent plan of a vanished issue file had: that file renamed?
    renamed_sent: int = 0

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


@dataclass(frozen=True)
class CheckedList:
    """The list's problems (see check_list) and the file's identity when it was checked."""

    stamp: tuple[int, int, int] | None
    problems: list[Problem]


class SendRun:
    def __init__(self, settings: Settings, build: Build, provider: Provider, ledger: Ledger,
                 options: SendOptions, *, secret: bytes, checked: CheckedList | None = None):
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
        self._issue_segment_at = f"{build.issue.path}:{build.issue.front_matter_lines.get('segment', 1)}"
        self.route = Route.of(provider)
        self._load_plan()
        self.checked = self._check_list(checked)
        self.problems: list[Problem] = self.checked.problems

    def _check_list(self, earlier: CheckedList | None) -> CheckedList:
        """The whole list is checked before anything is sent; with --skip-invalid the bad rows are left out.
        A check earlier in the same run (``earlier``) is kept while the file is unchanged: a pass over a
        long list is seconds, and several workers starting at once share the cores (benchmarks/scale.py)."""
        stamp = file_stamp(self.list_path)  # taken before reading: an edit during the check changes it
        if earlier is not None and stamp is not None and earlier.stamp == stamp:
            return earlier
        if not self.options.unattended:
            return CheckedList(stamp, check_list(self.list_path, skip_invalid=self.options.skip_invalid))
        try:  # cron's dispatch: which issue it stopped, and the send by hand that skips the rows
            return CheckedList(stamp, check_list(self.list_path, skip_invalid=self.options.skip_invalid,
                                                 skip_advice=f"or send it by hand without those rows: `newsletter "
                                                             f"send {self.issue_id} --skip-invalid`."))
        except SubscriberError as err:
            raise SubscriberError(f"{self.issue_id}: {err.message}", path=err.path, line=err.line,
                                  hint=err.hint) from None

    def _load_plan(self) -> None:
        """The issue's plan as the ledger has it now (None before the first run) and the segment it fixes.

        Read again by :meth:`summary`, under the lease: a run that started before another one
        froze the plan (and maybe finished) must resume that plan, not freeze a second one.
        """
        self.record = self.ledger.issue(self.issue_id)
        if self.record is not None and self.record.cancelled_at:
            raise NewsletterError(f"issue {self.issue_id} was cancelled at {self.record.cancelled_at} (`newsletter "
                                  f"cancel`): nobody more is sent it", hint=f"`newsletter status {self.issue_id}` "
                                  "says who got it; to send this text again, make it a new issue with a new file "
                                  "name or `id:` (everyone gets that one, including those sent this one)")
        options = self.options
        # Before anything else: a plan bound to another provider is refused (docs/sending.md).
        self.verdict = route_verdict(self.record, self.provider, self.ledger, restart=options.restart)
        if self.verdict == ASK and not options.provider_confirmed:
            raise unknown_refused(self.record, self.provider, self.ledger, asked=False)
        self.restarting = self.ledger.counts(self.issue_id) if self.verdict == RESTART else None
        self._restarting_from = self.record.provider if self.restarting is not None and self.record else ""
        if self.restarting is not None:
            self.record = None  # the plan is dropped before sending: this run plans afresh
        planned_segment = self.record.segment if self.record else None
        self.segment = options.segment or planned_segment or self._issue_segment or ""
        self.replan_from: str | None = None
        if self.record and options.segment is not None and options.segment != self.record.segment:
            counts = self.ledger.counts(self.issue_id)
            tried = sum(n for state, n in counts.items() if state not in ("pending", "skipped"))
            if tried:
                raise LedgerError(
                    f"issue {self.issue_id} was planned for segment {self.record.segment or '(everyone)'!r}, not "
                    f"{options.segment!r}, and {tried} recipient(s) were already tried: its segment cannot change now",
                    hint=f"resume it without --segment (`newsletter send {self.issue_id}`), or send "
                         f"{options.segment!r} a copy of the issue under another id")
            self.replan_from = self.record.segment  # nobody was tried yet: plan again, under the lease

    def subscribers(self) -> Iterator[Subscriber]:
        """The valid rows of the list, streamed."""
        return iter_subscribers(self.list_path, skip=self.problems)

    # -- before sending (read-only) ---------------------------------------------------
    def _eligible(self) -> Iterator[str]:
        """The address keys of the readers this run's plan is for, in list order."""
        return iter_eligible_keys(self.list_path, self.segment, skip=self.problems)

    def summary(self) -> Summary:
        self._load_plan()
        record = self.record
        counts = self.ledger.counts(self.issue_id) if self.restarting is None else dict.fromkeys(self.restarting, 0)
        summary = Summary(self.issue_id, self.compiled.issue.subject, self.route.label(), self.segment,
                          first_run=record is None, planned=0, to_send=0, counts=counts,
                          invalid=[str(p) for p in self.problems], limit=self.options.limit,
                          include_new=self.options.include_new, replanned_from=self.replan_from,
                          restarting=self.restarting, restarting_from=self._restarting_from, early=self._early())
        if self._plans_afresh:
            # Counted, not collected: the checked list holds each address once (a repeat is a problem,
            # refused or skipped), and a set of every address would grow with the list.
            suppressed = self.ledger.suppressed_set()
            for key in self._eligible():
                if key in suppressed:
                    summary.suppressed_out += 1
                else:
                    summary.planned += 1
            summary.to_send = summary.planned
            if self.record is None:
                summary.renamed_from, summary.renamed_sent = self._vanished_twin()
            if not summary.planned:
                raise self._nobody(suppressed)
            return summary
        summary.planned = record.planned
        summary.content_changed = record.content_hash != self.compiled.content_hash
        # Several workers: other live workers' batches in flight are theirs, not in doubt.
        retry, expired = self.in_doubt_batches(
            doubt=self.ledger.dead_in_doubt(self.issue_id, stale_after=LEASE_STALE_AFTER))
        retried, unknown = sum(len(keys) for keys in retry.values()), sum(len(keys) for keys in expired.values())
        summary.in_doubt = retried + unknown
        summary.in_doubt_action = self._in_doubt_action(retried, unknown)
        # Counted on every run, so nobody who joined since is left out unnoticed (--include-new adds them).
        suppressed = self.ledger.suppressed_set()
        for keys in chunked(self._eligible(), _CHUNK):  # a look-up per chunk: memory stays flat
            known = self.ledger.lookup(self.issue_id, keys)
            summary.new_subscribers += sum(1 for key in keys if key not in known and key not in suppressed)
        summary.to_send = summary.counts["pending"] + (summary.new_subscribers if self.options.include_new else 0)
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

    def _vanished_twin(self) -> tuple[str, int]:
        """(id, sent) of a plan under another id with this issue's subject that was sent to some and whose issue
        file is gone: most likely this very file, renamed without an ``id:`` line, so a new id and a new plan
        that would send everyone a second copy. ("", 0) when there is none."""
        subject = self.compiled.issue.subject
        issues_dir = self.settings.workspace_path("issues")
        for other in self.ledger.issues():
            if other.issue_id == self.issue_id or other.subject != subject:
                continue
            sent = self.ledger.counts(other.issue_id).get("sent", 0)
            if sent and not files_with_id(other.issue_id, issues_dir, besides=self.compiled.issue.path):
                return other.issue_id, sent
        return "", 0

    def _early(self) -> str:
        """A first run before the issue's send_at, in words ("" otherwise): `send` sends now whatever send_at
        says, and only `dispatch` waits for it."""
        send_at = self.compiled.issue.send_at
        ahead = (send_at - datetime.now(timezone.utc)).total_seconds() if send_at and self._plans_afresh else 0
        return f"send_at {send_at.isoformat()} is {wait_words(ahead)} away" if ahead > 0 else ""

    @property
    def _plans_afresh(self) -> bool:
        """This run freezes a new plan: the first, a --restart's, or a new segment's."""
        return self.record is None or self.replan_from is not None

    def refuse_nobody(self) -> None:
        """The summary's one refusal, without its counts: a first plan (or a new segment's) of nobody. A
        real run asks this read-only before the provider is asked anything; the summary it shows is
        counted later, under the lease."""
        if self._plans_afresh:
            suppressed = self.ledger.suppressed_set()
            if not any(key not in suppressed for key in self._eligible()):
                raise self._nobody(suppressed)

    def _nobody(self, suppressed: set[str]) -> SubscriberError:
        """A plan of nobody is refused before it is frozen: a later run would find it finished, and send the
        readers added since only with --include-new. Say why nobody is there."""
        if self.segment:
            return self._nobody_in_segment(suppressed)
        rows = left = 0
        for subscriber in self.subscribers():
            rows += 1
            left += subscriber.status != "subscribed"
        why = (f"of its {rows} reader(s), {left} have a status other than subscribed and {rows - left} are "
               f"suppressed in the ledger" if rows else "it has no reader")
        return SubscriberError(f"nobody to send to in {self.list_name}: {why}; nothing was frozen",
                               hint=f"add readers (`newsletter subscribers add EMAIL`, or `newsletter subscribers "
                                    f"import FILE`), then run `newsletter send {self.issue_id}` again")

    def _nobody_in_segment(self, suppressed: set[str]) -> SubscriberError:
        """Which tags the list has, and how many carry each."""
        tags: dict[str, int] = {}
        for subscriber in self.subscribers():
            if subscriber.status == "subscribed" and address_key(subscriber.email) not in suppressed:
                for tag in subscriber.tags:
                    tags[tag] = tags.get(tag, 0) + 1
        listed = ", ".join(f"{tag} ({n})" for tag, n in sorted(tags.items(), key=lambda t: (-t[1], t[0])))
        if self.options.segment is not None:
            fix = f"pass --segment with one of those tags, e.g. `newsletter send {self.issue_id} --segment TAG`"
        else:
            fix = f"fix 'segment:' at {self._issue_segment_at}, or pass --segment TAG to send to another one"
        return SubscriberError(f"segment {self.segment!r} matches nobody to send to in {self.list_name}: no subscribed, "
                               f"unsuppressed reader has that tag; nothing was frozen. Tags in the list: "
                               f"{listed or '(none)'}", hint=fix)

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
    def freeze_plan(self, holder: str = "") -> None:
        """First run: freeze the plan, bound to this provider; later runs: bind a plan not bound yet (or
        confirmed), add new subscribers if asked, accept new content. ``--restart`` first drops the outbox
        trial's plan, fenced by the lease ``holder``."""
        if self.restarting is not None:
            # A killed worker's registration would refuse the drop forever: reap the dead first.
            self.ledger.reap_workers(self.issue_id, holder, stale_after=LEASE_STALE_AFTER)
            self.ledger.drop_plan(self.issue_id, holder, only_provider=OUTBOX)
        if self.record is None:
            try:
                self.ledger.create_plan(self.issue_id, content_hash=self.compiled.content_hash,
                                        subject=self.compiled.issue.subject, segment=self.segment,
                                        emails=self._eligible(), provider=self.route.provider,
                                        provider_scope=self.route.scope)
            except PlanExists:  # several workers: another one froze it while we counted; we join its plan
                self._load_plan()  # as it is, unless it is bound to another provider (refused there)
        elif self.replan_from is not None:
            if self.verdict in (BIND, ASK):  # nobody was tried yet: the plan may still be unbound
                self.ledger.bind_provider(self.issue_id, self.route.provider, self.route.scope)
            self.ledger.replan(self.issue_id, segment=self.segment, emails=self._eligible())
            if self.record.content_hash != self.compiled.content_hash:
                self.ledger.set_content_hash(self.issue_id, self.compiled.content_hash)
        else:
            if self.verdict in (BIND, ASK):  # ASK got here only confirmed (see _load_plan)
                self.ledger.bind_provider(self.issue_id, self.route.provider, self.route.scope)
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
        self.verdict, self.restarting = SAME, None

    def in_doubt_batches(self, doubt: dict[str, list[str]], now: datetime | None = None
                         ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """Rows a dead run left ``sending`` (``doubt``: batch id -> addresses), as (batches to retry under
        their key, batches to mark unknown).

        A batch is retried only while the provider still remembers its idempotency key, judged
        from its first claim, which is never later than its first send.
        """
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

    def recover_in_doubt(self, holder: str, now: datetime | None = None) -> list[Work]:
        """Rows a dead run left ``sending`` (those ``holder`` adopts, with several workers): the same batches
        again while their key holds, else ``unknown``."""
        retry, expired = self.in_doubt_batches(self.ledger.adopt_in_doubt(self.issue_id, holder), now)
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
             keeper: LeaseKeeper | None = None, on_interrupt: Callable[[int], None] = lambda in_flight: None
             ) -> RunTotals:
        """Send everything pending (up to ``--limit``); returns what happened.

        A first Ctrl-C (or SIGTERM) stops claiming, calls ``on_interrupt`` with the number of batches
        in flight and lets them finish and be recorded; a second one raises :class:`StoppedNow` at
        once, leaving those batches ``sending`` for the next run to resolve.
        """
        provider = self.settings.provider
        dispatcher = Dispatcher(self.ledger, self.provider, self.issue_id, holder,
                                concurrency=provider.concurrency, max_attempts=provider.max_attempts,
                                backoff=backoff, on_batch=on_batch,
                                template=self.compiled.send_template())
        stale_after = keeper.stale_after if keeper else LEASE_STALE_AFTER
        if keeper:
            keeper.on_lost = dispatcher.hold_lost
            keeper.sent = lambda: dispatcher.totals.sent
            # Many workers: each takes its share of the provider's rate, re-read at every heartbeat.
            keeper.on_share = lambda live: dispatcher.limiter.set_rate(self.provider.rate_limit / live)
            keeper.on_share(keeper.live_workers())
        self.ledger.reap_workers(self.issue_id, holder, stale_after=stale_after)
        in_doubt = self.recover_in_doubt(holder)
        # A large template-once send walks the list in a process of its own (sending/feedprocess.py), forked
        # before this run starts its worker threads.
        feed = FeedProcess.start(self, holder)
        dispatcher.start()
        try:
            for work in in_doubt:
                dispatcher.submit(work)
            complete = feed.hand_over(dispatcher) if feed else self._feed(dispatcher, holder)
            # Many workers: whoever finishes its walk reaps the workers that died meanwhile, resolves their
            # batches in doubt and walks again for the rows they had reserved (docs/team.md).
            while complete and self.ledger.reap_workers(self.issue_id, holder, stale_after=stale_after):
                for work in self.recover_in_doubt(holder):
                    dispatcher.submit(work)
                complete = self._feed(dispatcher, holder)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: let batches in flight finish and be recorded
            return self._stop_gently(dispatcher, on_interrupt)
        except BaseException as err:
            dispatcher.abort(str(err))
            dispatcher.finish()
            raise
        finally:
            if feed:
                feed.stop()
        try:
            totals = dispatcher.finish()
        except KeyboardInterrupt:
            return self._stop_gently(dispatcher, on_interrupt)
        if complete and not totals.aborted:
            self._skip_gone(holder, totals.exhausted)
        return totals

    def _skip_gone(self, holder: str, exhausted: set[str]) -> None:
        """After a whole walk: plan rows still ``pending`` whose reader left the list are ``skipped``. A row
        still in the list is left alone: this run gave up on it (``exhausted``), or another worker is
        about to send it (its reservation: ``pending_keys`` leaves those out)."""
        left = set(self.ledger.pending_keys(self.issue_id, holder)) - exhausted
        # One run alone (SQLite) submitted every pending reader its walk met: what is left has left the list.
        # With several workers a row nobody holds now may have been freed after this walk passed it (another
        # worker's --limit, Ctrl-C or rows it gave up on; one a third worker reaped): look in the list again.
        # Seldom: the other workers' reservations are theirs, and not in ``left``.
        if left and self.ledger.many_workers:
            for subscriber in self.subscribers():
                left.discard(address_key(subscriber.email))
        self.ledger.skip(self.issue_id, [(key, "no longer in the subscriber list") for key in sorted(left)])

    def _stop_gently(self, dispatcher: Dispatcher, on_interrupt: Callable[[int], None]) -> RunTotals:
        dispatcher.abort("interrupted")
        in_flight = dispatcher.in_flight
        try:
            on_interrupt(in_flight)
            return dispatcher.finish()
        except KeyboardInterrupt:  # the second one: stop now; the rows in flight stay `sending`
            raise self._stopped_now(dispatcher.in_flight or in_flight) from None

    def _stopped_now(self, in_flight: int) -> StoppedNow:
        provider = self.provider
        if provider.idempotent:
            fate = (f"the next run sends them again under the same idempotency key while {provider.name} "
                    f"remembers it, else marks them unknown")
        else:
            fate = "the next run marks them unknown (they may or may not have been sent)"
        return StoppedNow(f"stopped at once: {in_flight} batch(es) were in flight and stay in doubt; {fate}",
                          hint=f"run `newsletter send {self.issue_id}` to resume; `newsletter status "
                               f"{self.issue_id} --failed` lists who is in doubt afterwards")

    def _feed(self, dispatcher: Dispatcher, holder: str) -> bool:
        """Stream the list into the send loop; True when every subscriber was looked at.

        With several workers each walks the whole list, and reserves a chunk's pending rows before
        personalising them: rows another live worker reserved are its to build and send."""
        limit, queued = self.options.limit, 0
        for chunk in chunked(self.subscribers(), max(_CHUNK, self.provider.batch_size)):
            if dispatcher.aborted:
                return False
            found = self.ledger.lookup_rows(self.issue_id, [s.email for s in chunk])
            ready, skips = [], []
            for subscriber in chunk:
                row = found.get(address_key(subscriber.email))
                if row is None or row.state != "pending":
                    continue
                reason = ineligible_reason(subscriber, self.segment) or ("suppressed" if row.suppressed else "")
                if reason:
                    skips.append((subscriber.email, reason))
                else:
                    ready.append((subscriber, row.id))
            self.ledger.skip(self.issue_id, skips)
            if limit is not None:  # cut before reserving: a row reserved and never sent is lost to the others
                ready = ready[:max(0, limit - queued)]
            mine = self.ledger.reserve(self.issue_id, holder, [row for _, row in ready]) if ready else None
            if mine is not None:
                ready = [(s, row) for s, row in ready if row in mine]
            if limit is not None:
                queued += len(ready)
            if not self._submit(dispatcher, ready):
                return False
            if limit is not None and queued >= limit:
                return False
        return True

    def _submit(self, dispatcher: Dispatcher, ready: list[tuple[Subscriber, int]]) -> bool:
        """Personalise lazily, one batch at a time: a personalised body is tens of KB, a list is long.
        ``ready``: each subscriber with their ledger row id."""
        values: deque = deque()
        rows: deque = deque()
        weigh = "bodies" if self.provider.fills_bodies else "values" if self.provider.substitutes else ""
        bodies = self.provider.needs_bodies
        personalise = self.personalizer.message_with_values

        def messages():
            for subscriber, row in ready:
                try:
                    message, slot_values = personalise(subscriber, bodies=bodies, weigh=weigh)
                except RecipientError as err:  # their data alone: they fail, the others are sent
                    dispatcher.recipient_failed(err)
                    continue
                values.append(slot_values)
                rows.append(row)
                yield message

        for group in self.provider.cut_batches(messages()):
            # cut_batches may have personalised one message past this group; its values stay queued.
            work = Work(group, [values.popleft() for _ in group], rows=[rows.popleft() for _ in group])
            if not dispatcher.submit(work):
                return False
        return True

