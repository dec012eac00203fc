"""Reconciliation: ask the provider what happened to the batches the ledger marks ``unknown``.

A batch becomes ``unknown`` when a run died (or the connection broke) after the
provider may have accepted it: sending again could give people two copies,
not sending could skip them. The provider's own records decide instead::

    unknown rows ──group by batch id──> Batch (same issue, same batch id)
        └── provider.reconcile(batch, age=...) ──> per recipient:
              sent     the provider holds it (with its message id)   -> ledger: sent
              retry    provably never accepted                       -> ledger: pending (next `send` sends it)
              failed   the provider refused it                        -> ledger: failed
              unknown  cannot tell (yet)                              -> stays unknown

Postmark is asked through its message search (tag = issue, metadata = batch),
Mailgun through its events API (accepted events tagged with the issue, filtered
by the batch's ``v:newsletter-batch`` variable), and
Resend by replaying the batch with its original idempotency key, which answers
with the original ids and sends nothing twice. SendGrid (without the paid
Email Activity API) and the outbox cannot answer; the report says so plainly.

Absence from a provider's logs proves "not accepted" only once the logs have
caught up and while they still hold the batch; each adapter knows its own
window and answers ``unknown`` outside it (Postmark 60 s to 6 days, Mailgun
30 minutes to 2 days, Resend's idempotency key under 23 hours). Each edge is
judged on its safe side:

* ``age`` counts from the ledger's ``claimed_at``, the first claim of the batch
  id, which comes before any send of it: never too young, so a key or a log
  is never taken to hold a batch it has already forgotten;
* ``since_last_try`` counts from the rows' ``updated_at`` (when they were
  marked unknown), which comes after the last send: never too old, so logs are
  never taken to have caught up with a send they may not show yet.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterable

import requests

from ..compile.personalize import Personalizer
from ..errors import ProviderError, ReconcileInterrupted, RecipientError
from ..ledger.base import DeliveryRow, Ledger, address_key, parse_time
from ..models import Subscriber
from ..providers.base import Batch, Provider


@dataclass
class Reconciliation:
    """What ``newsletter reconcile`` found for one issue."""

    issue_id: str
    provider: str
    in_doubt: int = 0
    batches: int = 0
    resolved: Counter = field(default_factory=Counter)  # outcome state -> recipients
    cannot_answer: str = ""  # why the provider cannot be asked ("" = it was asked)
    reasons: list[str] = field(default_factory=list)  # why some stay unknown, one line each (no repeats)
    come_back_at: datetime | None = None  # when the youngest batch in doubt can be judged (too recent now)
    too_recent: int = 0  # recipients still unknown because their batch is too recent to judge

    @property
    def still_unknown(self) -> int:
        return self.in_doubt - sum(self.resolved[s] for s in ("sent", "retry", "failed"))


def reconcile_issue(issue_id: str, subscribers: Iterable[Subscriber], provider: Provider, ledger: Ledger,
                    personalizer: Personalizer, *, session: requests.Session | None = None,
                    now: datetime | None = None) -> Reconciliation:
    """Ask ``provider`` about every ``unknown`` row of ``issue_id`` and record what it proves, batch by batch.

    ``subscribers`` is streamed (the list): only the readers in doubt are kept. A batch that cannot
    be rebuilt (a reader's data now stops it) stays unknown, with the reason; the others are asked.
    """
    rows = ledger.rows(issue_id, ("unknown",))
    report = Reconciliation(issue_id, provider.name, in_doubt=len(rows))
    batches = _by_batch(rows)
    report.batches = len(batches)
    if not rows:
        return report
    if not provider.can("reconcile"):
        report.cannot_answer = provider.reconcile_note
        return report
    wanted = {row.email for row in rows}
    by_key = {key: s for s in subscribers if (key := address_key(s.email)) in wanted}
    now = now or datetime.now(timezone.utc)
    own_session = session is None
    session = session or requests.Session()
    try:
        for batch_id, batch_rows in batches.items():
            try:
                batch = _rebuild(issue_id, batch_id, batch_rows, by_key, personalizer,
                                 bodies=provider.needs_bodies)
            except RecipientError as err:
                report.reasons.append(f"batch {batch_id} cannot be built again to ask about it ({err.render()}); "
                                      f"its {len(batch_rows)} recipient(s) stay unknown")
                continue
            age, since_last_try = _age(batch_rows, now), _since_last_try(batch_rows, now)
            outcomes = provider.reconcile(batch, session, age=age, since_last_try=since_last_try) or []
            decided = [o for o in outcomes if o.state in ("sent", "retry", "failed")]
            ledger.resolve(issue_id, decided)  # one transaction per batch: progress survives a later error
            report.resolved.update(o.state for o in decided)
            undecided = [o for o in outcomes if o.state == "unknown"]
            _note_too_recent(report, provider, len(undecided), age if since_last_try is None else since_last_try, now)
            report.reasons.extend(r for r in sorted({o.reason for o in undecided if o.reason}) if r not in report.reasons)
    except ProviderError as err:
        report.reasons.append(f"stopped: {err.message}")
        raise ReconcileInterrupted(report, err, sum(report.resolved.values())) from err
    finally:
        if own_session:
            session.close()
    return report


def _note_too_recent(report: Reconciliation, provider: Provider, undecided: int, settled: float | None,
                     now: datetime) -> None:
    """A batch whose last try is younger than the provider's logs need: note when it can be judged
    (the latest such time over the run, so one "come back after" covers every batch)."""
    if not undecided or settled is None or settled >= provider.reconcile_settles:
        return
    when = now + timedelta(seconds=provider.reconcile_settles - settled)
    report.too_recent += undecided
    report.come_back_at = max(report.come_back_at or when, when)


def _by_batch(rows: list[DeliveryRow]) -> dict[str, list[DeliveryRow]]:
    batches: dict[str, list[DeliveryRow]] = {}
    for row in rows:
        batches.setdefault(row.batch_id, []).append(row)
    return batches


def _rebuild(issue_id: str, batch_id: str, rows: list[DeliveryRow], by_key: dict[str, Subscriber],
             personalizer: Personalizer, *, bodies: bool) -> Batch:
    """The batch as it was sent (Resend replays it, so it must be the same payload); rows in address order."""
    messages, values = [], []
    for row in sorted(rows, key=lambda r: r.email):
        subscriber = by_key.get(row.email) or Subscriber(email=row.email)  # left the list: the address still counts
        message, slot_values = personalizer.message_with_values(subscriber, bodies=bodies)
        messages.append(message)
        values.append(slot_values)
    return Batch(issue_id, batch_id, tuple(messages), tuple(values), personalizer.compiled.send_template())


def _age(rows: list[DeliveryRow], now: datetime) -> float | None:
    """Seconds since the batch id was first claimed: an upper bound of the time since its first send."""
    claimed = [parse_time(r.claimed_at) for r in rows]
    if not claimed or None in claimed:
        return None
    return max(0.0, (now - min(claimed)).total_seconds())


def _since_last_try(rows: list[DeliveryRow], now: datetime) -> float | None:
    """Seconds since the most recent change of these rows: a lower bound of the time since its last send."""
    changed = [parse_time(r.updated_at) for r in rows]
    if not changed or None in changed:
        return None
    return max(0.0, (now - max(changed)).total_seconds())
