"""The delivery ledger: who has been sent which issue, as a state machine.

Rows are keyed by (issue id, address) and move only along these edges::

    (plan) ──> pending ──claim──> sending ──record──> sent | failed | unknown
                 │  ^                │
                 │  └──── retry ─────┘   transient failure: attempts + 1
                 │  ^                     (also: a dead run's batch with a definite "not accepted")
                 │  └─ resend_unknown ── unknown ──resolve──> sent | pending | failed
                 │  ^
                 │  └─ retry_failed ──── failed     ``send --retry-failed``: the user fixed the cause
                 ├──fail──> failed       the recipient's message cannot be built from their data
                 └──skip──> skipped      unsubscribed, suppressed, invalid or gone when its turn came

``sending`` means "claimed by a batch and committed BEFORE the API call"; the
claim records ``claimed_at``, the time that batch id was first claimed. A run
that dies leaves such rows behind; the next run, holding the issue's lease,
either retries the very same batch (same batch id, so the same idempotency
key) when the provider honours one and still remembers the key (the batch is
younger than the provider's ``idempotency_window``), or marks them ``unknown``.
``unknown`` rows are never sent again unless the user asks
(``--resend-unknown``) or a provider look-up proves they were not accepted
(:meth:`Ledger.resolve`). That is the whole exactly-once argument: a row is
sent at most once per claim, a claim is durable before the call, and nothing
in doubt is claimed twice silently.

Only the holder of the issue's lease may claim rows: :meth:`Ledger.claim`
checks the lease in the same statement (a fencing token), so a run whose lease
was taken over cannot send another batch.

A ledger whose :attr:`Ledger.many_workers` is True (PostgreSQL) has no single
holder: each run registers itself as one of the issue's workers instead
(:meth:`Ledger.acquire_lease` registers, :meth:`Ledger.heartbeat` beats,
:meth:`Ledger.release_lease` leaves), and its claim is fenced by its own
registration. A worker silent for the stale time is reaped by another one
(:meth:`Ledger.reap_workers`), and only then are the rows it left ``sending``
in doubt: :meth:`Ledger.adopt_in_doubt` hands them to one live worker, which
resolves them by the dead-run rule above. A live worker's batches in flight
are never touched. docs/team.md tells the whole story.

This module is the interface; :mod:`newsletter.ledger.sqlite` implements it in
a file, :mod:`newsletter.ledger.postgres` in a database a team shares (docs/team.md;
its ``claim`` is ``SELECT ... FOR UPDATE SKIP LOCKED``). Addresses are stored lower-cased:
the list compares them case-insensitively, and the ledger keeps no other
personal data than the address, the outcome, the provider id and timestamps.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice
from typing import Iterable, Iterator, NamedTuple, Sequence

from ..errors import LedgerError
from ..models import Outcome

STATES = ("pending", "sending", "sent", "failed", "unknown", "skipped")
DOUBT_STATES = ("failed", "unknown")  # `status --failed` lists these
UNKNOWN_PROVIDER = "unknown"  # issues.provider of an older plan that went through a provider nobody can name now


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """``items`` in lists of ``size`` (the last one shorter): one SQL statement or ledger look-up per list."""
    items = iter(items)
    while chunk := list(islice(items, size)):
        yield chunk


def address_key(email: str) -> str:
    """How the ledger stores an address: trimmed and lower-cased."""
    return email.strip().lower()


def erased_key(email: str) -> str:
    """What an erased address becomes: a hash that still tells us "already sent" if it comes back."""
    return "sha256:" + hashlib.sha256(address_key(email).encode()).hexdigest()


def suppression_rows(entries: Iterable[tuple[str, ...]], issue_id: str) -> list[tuple[str, str, str]]:
    """``(address key, reason, issue)`` of each ``(email, reason[, issue])``: an entry's own issue, else ``issue_id``."""
    return [(address_key(entry[0]), entry[1], entry[2] if len(entry) > 2 and entry[2] else issue_id)
            for entry in entries]


def parse_time(text: str) -> datetime | None:
    """A ledger timestamp (ISO 8601, UTC) as an aware datetime; None when empty or unreadable."""
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


# What `ledger copy` moves, in this order (issues before the rows that reference them): table -> (columns,
# key). Leases are not copied: they belong to runs of the ledger they were taken in.
COPIED_TABLES: dict[str, tuple[str, str]] = {
    "issues": ("issue_id, content_hash, subject, segment, planned, created_at, provider, provider_scope, "
               "cancelled_at", "issue_id"),
    "deliveries": ("issue_id, email, state, attempts, batch_id, provider_id, reason, updated_at, claimed_at",
                   "issue_id, email"),
    "suppressions": ("email, reason, source, created_at, issue_id", "email"),
    "notices": ("issue_id, notice, created_at", "issue_id, notice"),
}


def _rank(state: str) -> str:
    return f"CASE {state} WHEN 'pending' THEN 0 WHEN 'sending' THEN 1 WHEN 'sent' THEN 3 ELSE 2 END"


# `ledger copy --merge` of one delivery row, in the named-parameter style of both drivers once ":name" is
# rewritten (SQLite takes it as is). A row the target lacks is added, unless the target holds that address
# erased (its hash: an erasure is never undone by a copy). A row the target has is replaced only by one
# further along (pending < sending < failed, skipped, unknown < sent): a reader sent through the other
# ledger must not stay pending here, where the next run would send them a second copy.
MERGE_DELIVERY_SQL = (
    "INSERT INTO deliveries (issue_id, email, state, attempts, batch_id, provider_id, reason, updated_at, claimed_at) "
    "SELECT :issue_id, :email, :state, :attempts, :batch_id, :provider_id, :reason, :updated_at, :claimed_at "
    "WHERE NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.issue_id = :issue_id AND e.email = :erased) "
    "ON CONFLICT (issue_id, email) DO UPDATE SET state = excluded.state, attempts = excluded.attempts, "
    "batch_id = excluded.batch_id, provider_id = excluded.provider_id, reason = excluded.reason, "
    "updated_at = excluded.updated_at, claimed_at = excluded.claimed_at "
    f"WHERE {_rank('excluded.state')} > {_rank('deliveries.state')}")


def merge_delivery_params(rows: Iterable[tuple]) -> Iterator[dict]:
    """:data:`MERGE_DELIVERY_SQL`'s parameters of each delivery row (in COPIED_TABLES' column order)."""
    names = [c.strip() for c in COPIED_TABLES["deliveries"][0].split(",")]
    for row in rows:
        params = dict(zip(names, row))
        params["erased"] = erased_key(params["email"])
        yield params


# What a suppression is, from its reason: `suppressions sync` writes "<kind> at <provider> (...)", a link
# unsubscribe "unsubscribed"; an address a send refused (Postmark's inactive recipient) or one added by
# hand says no kind: "other". (A space is appended so that a bare kind matches "<kind> %".)
_SUPPRESSION_KIND = ("CASE WHEN s.reason || ' ' LIKE 'unsubscribed %' THEN 'unsubscribed' "
                     "WHEN s.reason || ' ' LIKE 'complained %' THEN 'complained' WHEN s.reason || ' ' LIKE "
                     "'bounced %' THEN 'bounced' WHEN s.reason || ' ' LIKE 'blocked %' THEN 'blocked' ELSE 'other' END")

# Ledger.issue_suppressions in SQLite's text (PostgreSQL's doubles each "%"): {issue} is the issue id's
# placeholder, {order} the collation that orders text byte-wise.
ISSUE_SUPPRESSIONS_SQL = (
    "WITH this AS (SELECT created_at, (SELECT min(claimed_at) FROM deliveries WHERE issue_id = {issue} "
    "AND claimed_at != '') AS first_claim FROM issues WHERE issue_id = {issue}), "
    "next AS (SELECT min(i.created_at) AS planned FROM issues i, this WHERE i.created_at > this.created_at) "
    "SELECT * FROM ("
    # Recorded with the issue: a link unsubscribe, or a synced entry whose provider named the tag.
    "SELECT s.source, " + _SUPPRESSION_KIND + " AS kind, 'issue' AS attributed, count(*) AS n FROM suppressions s "
    "WHERE s.issue_id = {issue} GROUP BY s.source, kind "
    "UNION ALL "
    # Recorded without one: the issue's sent recipients suppressed between its first claim and the next plan.
    "SELECT s.source, " + _SUPPRESSION_KIND + " AS kind, 'time' AS attributed, count(*) AS n FROM suppressions s "
    "JOIN deliveries d ON d.email = s.email AND d.issue_id = {issue} AND d.state = 'sent' CROSS JOIN this "
    "CROSS JOIN next WHERE s.issue_id = '' AND s.created_at >= coalesce(this.first_claim, this.created_at) "
    "AND (next.planned IS NULL OR s.created_at < next.planned) GROUP BY s.source, kind"
    ") found ORDER BY source {order}, kind {order}, attributed {order}")


# Ledger.store_figures in PostgreSQL's text (SQLite's writes "?" for each "%s").
STORE_FIGURES_SQL = ("INSERT INTO provider_figures (issue_id, provider, detail, figures, fetched_at) "
                     "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (issue_id, provider) DO UPDATE SET "
                     "detail = excluded.detail, figures = excluded.figures, fetched_at = excluded.fetched_at")


@dataclass(frozen=True)
class IssueRecord:
    """The frozen plan of one issue."""

    issue_id: str
    content_hash: str
    subject: str
    segment: str
    planned: int
    created_at: str
    # The provider the plan is sent through (docs/sending.md, provider binding): its name, and
    # Mailgun's domain or Postmark's message stream. "" = not bound yet; UNKNOWN_PROVIDER = the plan
    # of an older version whose rows cannot tell which provider sent them.
    provider: str = ""
    provider_scope: str = ""
    cancelled_at: str = ""  # when `newsletter cancel` stopped its send for good; "" = not cancelled


class PlanRow(NamedTuple):
    """A recipient's row as the send loop looks it up: its state, whether the address is suppressed, and
    its id (the plan's order), which the claim and the record of its batch go by."""

    state: str
    suppressed: bool
    id: int


# What each outcome state of a batch leaves its row in.
RECORD_STATE = {"sent": "sent", "failed": "failed", "retry": "pending", "unknown": "unknown"}


def check_outcomes(outcomes: Sequence[Outcome]) -> None:
    """:class:`LedgerError` for an outcome state a record cannot write (an adapter's bug), before anything is."""
    for outcome in outcomes:
        if outcome.state not in RECORD_STATE:
            raise LedgerError(f"unknown outcome state {outcome.state!r} for {outcome.email}")


def all_sent_alike(outcomes: Sequence[Outcome]) -> bool:
    """Every outcome ``sent`` under one provider id, with nothing to suppress: one plain UPDATE records them
    (twice as fast as one that reads a state, id and reason per row)."""
    first = outcomes[0].provider_id
    return all(o.state == "sent" and o.provider_id == first and not o.suppress and not o.reason for o in outcomes)


def reported_suppressions(outcomes: Sequence[Outcome]) -> list[tuple[str, str]]:
    """``(address key, reason)`` of each outcome the provider says to suppress (a hard bounce, a complaint)."""
    return [(address_key(o.email), o.reason[:500] or "reported by the provider") for o in outcomes if o.suppress]


@dataclass(frozen=True)
class DeliveryRow:
    """One recipient of one issue (``rows()`` and ``status --failed``)."""

    issue_id: str
    email: str
    state: str
    attempts: int
    batch_id: str
    provider_id: str
    reason: str
    updated_at: str  # the row's last change
    claimed_at: str = ""  # when its batch id was first claimed ("" if never claimed)


@dataclass(frozen=True)
class Suppression:
    email: str
    reason: str
    source: str
    created_at: str
    issue_id: str = ""  # the issue whose unsubscribe link was used (source "link"), else ""


@dataclass(frozen=True)
class CachedFigures:
    """What a provider said of one issue, as ``newsletter report`` keeps it (table ``provider_figures``)."""

    issue_id: str
    detail: bool  # read in detail (per day, links), or totals only
    figures: str  # JSON (newsletter/providers/stats.py)
    fetched_at: float  # epoch seconds


@dataclass(frozen=True)
class IssueSummary:
    """One issue's plan and its rows per state (``newsletter report`` without ISSUE)."""

    issue: IssueRecord
    counts: dict[str, int]  # state -> rows, every state present


@dataclass(frozen=True)
class Lease:
    """Who holds an issue: a random holder id, plus pid and host so a dead holder can be recognised."""

    issue_id: str
    holder: str
    pid: int
    host: str
    heartbeat: float  # epoch seconds of the last sign of life
    acquired: float

    def holder_alive(self, *, stale_after: float, now: float | None = None) -> bool:
        """Whether the holder may still be sending, by the rule :meth:`Ledger.acquire_lease` takes over
        by: its heartbeat is younger than ``stale_after`` seconds and, on this host, its pid is alive."""
        if self.host == socket.gethostname() and not pid_alive(self.pid):
            return False
        return (time.time() if now is None else now) - self.heartbeat < stale_after


@dataclass(frozen=True)
class Worker(Lease):
    """One run registered on an issue of a many-worker ledger (``acquired`` is when it started)."""

    rate: float = 0.0  # recipients per second, as of its last heartbeat


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except (OverflowError, ValueError):
        return False
    return True


class Ledger(ABC):
    """What the send loop needs from a ledger. Every method is one transaction."""

    url: str
    # False: one run per issue holds its lease, a second one exits 75 (SQLite). True: every run
    # registers as one of the issue's workers and they share the plan (PostgreSQL; docs/team.md).
    many_workers: bool = False

    # -- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def close(self) -> None: ...

    # -- the whole ledger (newsletter ledger info / copy; docs/team.md) -------------------
    backend: str  # "sqlite" | "postgresql"
    migrated_from: int  # the schema version found on opening (LATEST when nothing was to do)

    @abstractmethod
    def schema_version(self) -> int: ...

    @abstractmethod
    def row_counts(self) -> dict[str, int]:
        """table -> rows, for each of :data:`COPIED_TABLES`."""

    @abstractmethod
    def dump_rows(self, table: str) -> Iterator[tuple]:
        """Every row of ``table`` (one of :data:`COPIED_TABLES`) with its columns in that order, streamed."""

    @abstractmethod
    def load_rows(self, tables: dict[str, Iterable[tuple]], *, merge: bool) -> dict[str, int]:
        """Insert each table's rows (in :data:`COPIED_TABLES` order), one transaction for all, leaving any row
        whose key is there already; refuse (LedgerError) a ledger that is not empty unless ``merge``.
        Returns table -> rows added."""

    # -- the lease (one run per issue) or the workers (many_workers) -------------------
    @abstractmethod
    def acquire_lease(self, issue_id: str, holder: str, *, stale_after: float) -> Lease:
        """Take the issue, or take over a dead/stale holder's lease; raise LeaseHeld otherwise.
        With ``many_workers``: register ``holder`` as one more worker of the issue (never LeaseHeld)."""

    @abstractmethod
    def heartbeat(self, issue_id: str, holder: str, rate: float | None = None) -> bool:
        """Refresh our lease (or registration, with our ``rate`` in recipients/s when given); False when it
        is no longer ours (taken over, or reaped: stop sending)."""

    @abstractmethod
    def release_lease(self, issue_id: str, holder: str) -> None: ...

    @abstractmethod
    def lease(self, issue_id: str) -> Lease | None:
        """Who holds the issue now, if anyone (``status`` says so); always None with ``many_workers``
        (see :meth:`workers`)."""

    def clock(self) -> float:
        """Now, in epoch seconds, by the clock heartbeats are written and judged by: this machine's for a
        file only it uses; the database server's for a shared ledger, so a host whose clock runs late
        is not taken for dead (nor a dead one for alive)."""
        return time.time()

    def workers(self, issue_id: str) -> list[Worker]:
        """The runs registered on the issue, oldest first, dead ones included until reaped (many_workers)."""
        return []

    def live_workers(self, issue_id: str, *, stale_after: float) -> list[Worker]:
        """The registered workers alive now by the reaping rule (:meth:`Lease.holder_alive`, on :meth:`clock`)."""
        now = self.clock()
        return [w for w in self.workers(issue_id) if w.holder_alive(stale_after=stale_after, now=now)]

    def reap_workers(self, issue_id: str, holder: str, *, stale_after: float) -> list[str]:
        """Remove the registrations of the issue's dead workers (by :meth:`Lease.holder_alive`), but never
        ``holder``'s: they claim nothing more, their reserved rows are free, their ``sending`` rows are in
        doubt. Returns the holders reaped. One run per issue: nothing to reap (the lease's takeover)."""
        return []

    def adopt_in_doubt(self, issue_id: str, holder: str) -> dict[str, list[str]]:
        """Rows a dead run left ``sending`` that ``holder`` now answers for: batch id -> address keys. One
        run per issue: every ``sending`` row (the caller holds the lease, nothing else is in flight).
        Many workers: the ``sending`` rows of no registered worker, handed to ``holder`` in one
        transaction (so one worker resolves each batch); a live worker's rows are never among them."""
        return self.in_doubt(issue_id)

    def others_unfinished(self, issue_id: str, holder: str, *, stale_after: float) -> int:
        """Rows still ``pending`` or ``sending`` that a live worker other than ``holder`` reserved or claimed
        (alive by the reaping rule, :meth:`Lease.holder_alive`); 0 with one run per issue."""
        return 0

    def reserve(self, issue_id: str, holder: str, rows: Sequence[int]) -> set[int] | None:
        """Mark the ``pending`` ones of the plan's ``rows`` (their ids, as :meth:`lookup_rows` gives them)
        that no live worker reserved as ``holder``'s; the ids now reserved for it (a hint: the others do
        not personalise them). None: one run per issue, every pending row is the caller's."""
        return None

    # -- the plan --------------------------------------------------------------------
    @abstractmethod
    def issue(self, issue_id: str) -> IssueRecord | None: ...

    @abstractmethod
    def issues(self) -> list[IssueRecord]: ...

    @abstractmethod
    def create_plan(self, issue_id: str, *, content_hash: str, subject: str, segment: str,
                    emails: Iterable[str], provider: str = "", provider_scope: str = "") -> int:
        """Freeze the plan, bound to ``provider`` (and its scope): one ``pending`` row per address
        (suppressed ones left out); returns its size."""

    @abstractmethod
    def bind_provider(self, issue_id: str, provider: str, provider_scope: str) -> bool:
        """Bind a plan that is not bound yet (``""``) or bound to :data:`UNKNOWN_PROVIDER`; False (and
        nothing changed) when it is bound to a provider already."""

    @abstractmethod
    def drop_plan(self, issue_id: str, holder: str, *, only_provider: str) -> int:
        """``send --restart``: delete the plan and all its rows, in one transaction, only while ``holder``
        holds the issue's lease and the plan is bound to ``only_provider``, not bound at all, or has no row
        that was tried (every one ``pending`` or ``skipped``); raise LedgerError otherwise. Suppressions
        stay. Returns the rows dropped."""

    @abstractmethod
    def cancel_plan(self, issue_id: str, holder: str, reason: str) -> tuple[int, int]:
        """``newsletter cancel``: in one transaction, only while ``holder`` holds the issue's lease (alone,
        on a many-worker ledger; else LedgerError), its ``pending`` rows become ``skipped`` and the
        ``sending`` rows a dead run left become ``unknown`` (they may have gone out), both with
        ``reason``. Sent, failed and unknown rows stay. Returns (skipped, made unknown)."""

    @abstractmethod
    def extend_plan(self, issue_id: str, emails: Iterable[str]) -> int:
        """``--include-new``: add ``pending`` rows for addresses not yet in the plan; returns how many."""

    @abstractmethod
    def replan(self, issue_id: str, *, segment: str, emails: Iterable[str]) -> int:
        """Plan again for another ``segment``, in one transaction, a plan nobody has been tried from yet
        (every row ``pending`` or ``skipped``; else :class:`LedgerError`); returns its new size."""

    @abstractmethod
    def set_content_hash(self, issue_id: str, content_hash: str) -> None: ...

    # -- the send loop ---------------------------------------------------------------
    # The send loop finds its rows once, when it looks a chunk of the list up (:meth:`lookup_rows`), and
    # then claims and records them by their integer id (the plan's order): one statement per batch, each
    # row touched once through the primary key. The address forms below are the same statements, for
    # callers that hold only addresses.
    @abstractmethod
    def lookup_rows(self, issue_id: str, emails: Sequence[str]) -> dict[str, PlanRow]:
        """address key -> its row (state, suppressed, id) for those of ``emails`` that are in the plan."""

    @abstractmethod
    def claim_rows(self, issue_id: str, batch_id: str, rows: Sequence[int], holder: str) -> set[int]:
        """``pending -> sending`` under ``batch_id`` for the rows of these ids, only while ``holder`` holds the
        lease, committed before it returns; which of these ids are now under ``batch_id`` (those it already
        held included: a batch resumed under its own id)."""

    @abstractmethod
    def record_rows(self, issue_id: str, batch_id: str, rows: Sequence[int], outcomes: Sequence[Outcome], *,
                    source: str, holder: str = "") -> None:
        """``sending -> sent | failed | pending (attempts+1) | unknown`` for one batch, ``outcomes[n]`` being row
        ``rows[n]``'s (only rows still ``sending`` under ``batch_id`` change); ``suppress`` adds suppressions.
        With ``many_workers`` and a ``holder``: only "sent" lands whoever records it (a fact); any other
        outcome changes only rows still claimed by ``holder``, so a worker reaped while its call was out
        cannot undo the batch's adopter (who resends it under the same id) by putting rows back."""

    def lookup(self, issue_id: str, emails: Sequence[str]) -> dict[str, tuple[str, bool]]:
        """address key -> (state, suppressed) for those of ``emails`` that are in the plan."""
        return {key: (row.state, row.suppressed) for key, row in self.lookup_rows(issue_id, emails).items()}

    def claim(self, issue_id: str, batch_id: str, emails: Sequence[str], holder: str) -> set[str]:
        """``pending -> sending`` under ``batch_id``, only while ``holder`` holds the lease; the keys claimed."""
        key_of = {row.id: key for key, row in self.lookup_rows(issue_id, emails).items()}
        return {key_of[row] for row in self.claim_rows(issue_id, batch_id, list(key_of), holder)}

    def record(self, issue_id: str, batch_id: str, outcomes: Sequence[Outcome], *, source: str,
               rows: Sequence[int] | None = None, holder: str = "") -> None:
        """``sending -> sent | failed | pending (attempts+1) | unknown`` for one batch; ``suppress`` adds suppressions.
        ``rows``: each outcome's row id, when the caller knows them (the send loop); else found by address."""
        if rows is not None:
            self.record_rows(issue_id, batch_id, rows, outcomes, source=source, holder=holder)
            return
        check_outcomes(outcomes)
        found = self.lookup_rows(issue_id, [o.email for o in outcomes])
        planned = [(found[key].id, o) for o in outcomes if (key := address_key(o.email)) in found]
        self.record_rows(issue_id, batch_id, [row for row, _ in planned], [o for _, o in planned], source=source,
                         holder=holder)

    @abstractmethod
    def mark_attempt(self, issue_id: str, batch_id: str) -> None:
        """attempts+1 for a batch kept ``sending`` to be retried with the same idempotency key."""

    @abstractmethod
    def skip(self, issue_id: str, reasons: Sequence[tuple[str, str]]) -> int:
        """``pending -> skipped`` with a reason per address."""

    @abstractmethod
    def add_skipped(self, issue_id: str, reasons: Sequence[tuple[str, str]]) -> int:
        """Record addresses that were never eligible (invalid rows under ``--skip-invalid``) as ``skipped``;
        an address already in the plan is left alone."""

    @abstractmethod
    def fail(self, issue_id: str, reasons: Sequence[tuple[str, str]]) -> int:
        """``pending -> failed`` with a reason per address: a recipient whose message cannot be built."""

    @abstractmethod
    def retry_failed(self, issue_id: str) -> int:
        """``failed -> pending`` for every unsuppressed failed row (``send --retry-failed``), one transaction."""

    @abstractmethod
    def in_doubt(self, issue_id: str) -> dict[str, list[str]]:
        """Rows left ``sending``: batch id -> address keys (a dead run's, under the lease; with many workers
        live ones' batches in flight too: :meth:`adopt_in_doubt` tells them apart)."""

    def dead_in_doubt(self, issue_id: str, *, stale_after: float) -> dict[str, list[str]]:
        """:meth:`in_doubt` less the batches live workers have in flight (what a run's summary counts as
        left by a dead run); all of it with one run per issue, which reads it under the lease."""
        return self.in_doubt(issue_id)

    @abstractmethod
    def claim_times(self, issue_id: str, state: str = "sending") -> dict[str, datetime | None]:
        """batch id -> when it was first claimed (None if not known), for the batches with rows in ``state``.

        The first claim comes before any send of that batch, so the age it gives is never too
        young: the safe side for "is the idempotency key still honoured" and for "do the
        provider's logs still hold it".
        """

    @abstractmethod
    def mark_unknown(self, issue_id: str, batch_ids: Sequence[str], reason: str) -> int:
        """``sending -> unknown`` for whole batches."""

    @abstractmethod
    def resend_unknown(self, issue_id: str) -> int:
        """``unknown -> pending`` (the user accepted the risk of a second copy)."""

    @abstractmethod
    def pending_keys(self, issue_id: str, holder: str) -> Iterable[str]:
        """Addresses still ``pending`` (streamed). With ``many_workers``, rows reserved by a registered worker
        other than ``holder`` are left out: theirs to send."""

    @abstractmethod
    def counts(self, issue_id: str) -> dict[str, int]:
        """state -> rows, every state present (0 when none)."""

    # -- reconciliation (newsletter reconcile) ---------------------------------------
    @abstractmethod
    def rows(self, issue_id: str, states: Sequence[str] = ("unknown",)) -> list[DeliveryRow]: ...

    @abstractmethod
    def resolve(self, issue_id: str, outcomes: Sequence[Outcome]) -> int:
        """``unknown -> sent | pending | failed`` from a provider look-up, one transaction."""

    # -- notices (dispatch says some things once) ----------------------------------
    @abstractmethod
    def mark_noticed(self, issue_id: str, notice: str) -> bool:
        """Record that ``notice`` was given about the issue; True only the first time (across processes)."""

    # -- suppressions and erasure ----------------------------------------------------
    def add_suppression(self, email: str, reason: str, source: str = "manual", *, issue_id: str = "") -> bool:
        return self.add_suppressions([(email, reason)], source, issue_id=issue_id) == 1

    @abstractmethod
    def add_suppressions(self, entries: Sequence[tuple[str, ...]], source: str, *, issue_id: str = "") -> int:
        """Suppress each ``(email, reason)`` or ``(email, reason, issue)`` not suppressed yet (an existing
        entry keeps its reason, source and issue), in one transaction; returns how many were added. An entry
        without its own issue records ``issue_id``."""

    @abstractmethod
    def remove_suppression(self, email: str) -> bool: ...

    @abstractmethod
    def suppressions(self) -> list[Suppression]: ...

    @abstractmethod
    def suppressed_set(self) -> set[str]: ...

    def is_suppressed(self, email: str) -> bool:
        return address_key(email) in self.suppressed_set()

    @abstractmethod
    def erase_address(self, email: str) -> int:
        """GDPR erasure: the address becomes a hash in every delivery row; rows changed."""

    # -- reports (newsletter report): read-only, one query each -------------------------
    @abstractmethod
    def reason_counts(self, issue_id: str, state: str = "failed") -> dict[str, int]:
        """reason -> rows of ``issue_id`` in ``state``, most frequent first."""

    @abstractmethod
    def sent_per_minute(self, issue_id: str) -> list[tuple[str, int]]:
        """``(minute, rows)`` of the rows recorded ``sent``, by the UTC minute (``YYYY-MM-DDTHH:MM``) of their
        last change (the record of the provider's acceptance), in time order; minutes without any are absent."""

    @abstractmethod
    def summaries(self, limit: int) -> list[IssueSummary]:
        """The ``limit`` most recently planned issues, newest first, each with its rows per state."""

    # -- the provider's figures, cached (newsletter report) ------------------------------------
    @abstractmethod
    def cached_figures(self, provider: str, issue_ids: Sequence[str]) -> dict[str, CachedFigures]:
        """issue id -> the figures ``provider`` (name:scope) last gave of it, of those kept; one query."""

    @abstractmethod
    def store_figures(self, provider: str, entries: Sequence[CachedFigures]) -> None:
        """Keep ``entries`` as what ``provider`` says now, replacing what was kept of those issues."""

    @abstractmethod
    def issue_suppressions(self, issue_id: str) -> dict[tuple[str, str, str], int]:
        """(source, kind, attributed) -> suppressions attributed to ``issue_id``. ``kind`` is read from the
        reason ``suppressions sync`` writes (unsubscribed, complained, bounced, blocked), else "other".

        ``attributed`` says how: "issue" for a suppression that records the issue (``suppressions.issue_id``:
        a link unsubscribe, or a synced entry whose provider named the message's tag); "time" for one that
        records none (a provider's complaint or bounce list, an address added by hand), counted only when
        the issue was sent to that address and it was suppressed after the issue's first claim and before
        the next issue was planned: an estimate, and labelled as one wherever it is shown.
        """
