"""``newsletter report``: how an issue did, from the ledger and from the provider (docs/sending.md,
"How an issue did: newsletter report").

The ledger part (planned, sent, failed by reason, unknown, skipped, the send's timeline and the
suppressions attributed to the issue) needs no network and always prints. The provider part is
read through the paced, retried look-up session, as ``suppressions sync`` reads; a provider
that gives no per-issue figures says why, and a key that cannot read them is named with what
it needs, without taking the ledger part down. What the provider said is kept in the ledger
with its fetch time (``provider_figures``): reused while younger than :data:`CACHE_MAX_AGE_S`,
read again after that or when asked (``--refresh``), so the table of the latest issues asks
only for the issues whose figures are old. Errors are never kept.

Rates are over *delivered* messages, never over sent ones, and opens are inflated by Apple
Mail Privacy Protection (which fetches every image of every message): both are said wherever
the figures are shown.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Callable

from .config import Settings, without_password
from .errors import AuthError, NewsletterError, ProviderError
from .ledger import open_ledger
from .ledger.base import STATES, UNKNOWN_PROVIDER, CachedFigures, IssueRecord, Ledger, parse_time
from .providers import open_provider
from .providers.base import Provider
from .providers.stats import IssueStats
from .sending.lookups import LOOKUP_RETRY, PacedSession
from .sending.ratelimit import Backoff

# How each attribution of a suppression is shown (docs/sending.md, "How an issue did").
ATTRIBUTED = {"issue": "recorded with this issue", "time": "estimated: suppressed after this issue, before the next"}
RATES_NOTE = "rates are over delivered messages, not over sent ones"
OPENS_NOTE = ("opens are inflated by Apple Mail Privacy Protection, which opens every message it downloads: "
              "read them as an upper bound")
DEFAULT_LAST = 10  # issues in the table without ISSUE
CACHE_MAX_AGE_S = 3600  # kept figures younger than this are reused, older ones read again


@dataclass(frozen=True)
class LedgerFigures:
    issue_id: str
    subject: str
    planned_at: str
    counts: dict[str, int]  # state -> rows, every state present
    failed_reasons: dict[str, int]
    timeline: list[tuple[str, int]]  # (UTC minute, recipients accepted), every minute from the first to the last
    # (source, kind, attributed) -> addresses suppressed because of this issue; attributed is "issue" (the
    # suppression records it) or "time" (an estimate: sent this issue, suppressed before the next was planned)
    suppressions: dict[tuple[str, str, str], int]

    @property
    def planned(self) -> int:
        return sum(self.counts.values())


@dataclass
class ProviderFigures:
    provider: str
    stats: IssueStats | None = None
    note: str = ""  # why there are no figures: unsupported, or the error and what to do
    fetched_at: float | None = None  # when the provider gave these figures (epoch seconds)
    cached: bool = False  # read from the ledger's copy, not asked this run

    def rates(self) -> dict[str, float | None]:
        """Delivered over processed; opens, clicks, bounces, complaints and unsubscribes over delivered."""
        s = self.stats
        if s is None:
            return {}
        return {"delivered": _ratio(s.delivered, s.processed), "open": _ratio(s.unique_opens, s.delivered),
                "click": _ratio(s.unique_clicks, s.delivered), "bounce": _ratio(s.bounced, s.delivered),
                "complaint": _ratio(s.complained, s.delivered), "unsubscribe": _ratio(s.unsubscribed, s.delivered)}


@dataclass
class IssueReport:
    ledger: LedgerFigures
    provider: ProviderFigures | None = None
    notes: list[str] = field(default_factory=lambda: [RATES_NOTE, OPENS_NOTE])

    def as_json(self) -> dict:
        """The documented schema (docs/sending.md)."""
        figures = self.ledger
        obj = {"issue": figures.issue_id, "subject": figures.subject, "planned_at": figures.planned_at,
               "planned": figures.planned, **{state: figures.counts[state] for state in STATES},
               "failed_reasons": figures.failed_reasons,
               "timeline": [{"minute": minute, "accepted": n} for minute, n in figures.timeline],
               "suppressions": [{"source": source, "kind": kind, "attributed": attributed, "count": n}
                                for (source, kind, attributed), n in figures.suppressions.items()]}
        if self.provider is not None:
            stats = self.provider.stats
            fetched = self.provider.fetched_at
            obj["provider"] = {"name": self.provider.provider, "note": self.provider.note,
                               "fetched_at": None if fetched is None else utc_text(fetched),
                               "cached": self.provider.cached,
                               "figures": None if stats is None else _stats_json(stats),
                               "rates": self.provider.rates()}
        obj["notes"] = self.notes
        return obj


@dataclass
class Reports:
    """What ``newsletter report`` shows: one issue (``shown``: one report) or the latest (newest first), and for
    one issue's page the trend: the latest issues up to it, oldest first (its own report among them)."""

    shown: list[IssueReport]
    trend: list[IssueReport] = field(default_factory=list)


def read_reports(settings: Settings, issue_id: str | None, *, last: int = DEFAULT_LAST, ask_provider: bool = True,
                 refresh: bool = False, trend: bool = False, no_such_issue: Exception | None = None) -> Reports:
    """The reports of ``issue_id`` (with ``trend``, also of the ``last`` latest issues planned up to it), or
    of the ``last`` latest issues; the provider's figures kept in the ledger or asked (:func:`provider_figures`).
    :class:`NewsletterError` for an issue the ledger does not know (``no_such_issue`` when there is no such
    issue file either)."""
    with open_ledger(settings, readonly=True) as ledger:
        if issue_id is None:
            records = [s.issue for s in ledger.summaries(last)]
        else:
            record = ledger.issue(issue_id)
            if record is None and no_such_issue is not None:
                raise no_such_issue
            if record is None:
                raise NewsletterError(f"issue {issue_id} has not been sent yet "
                                      f"(nothing in {without_password(ledger.url)})",
                                      hint=f"run `newsletter send {issue_id}`")
            records = [record]
            if trend:  # the latest issues up to this one, oldest first
                records += [s.issue for s in reversed(ledger.summaries(last)) if s.issue.issue_id != issue_id
                            and (s.issue.created_at, s.issue.issue_id) < (record.created_at, issue_id)]
        reports = {r.issue_id: IssueReport(ledger_figures(ledger, r)) for r in records}
    # Only a plan sent through the configured provider is asked about: another one (the outbox, a provider
    # since switched) would answer zeros, kept for an hour as if they were the issue's figures.
    records = [r for r in records if r.provider in ("", UNKNOWN_PROVIDER, settings.provider.name)]
    if ask_provider and records and issue_id in (None, records[0].issue_id):
        provider = open_provider(settings)
        try:  # the ledger, writable now, keeps what the provider says (an hour; ``refresh`` asks again)
            with open_ledger(settings) as cache:
                found = provider_figures(provider, records[:1] if issue_id else records, detail=issue_id is not None,
                                         cache=cache, refresh=refresh)
                if len(records) > 1 and issue_id and found[issue_id].stats is not None:
                    found.update(provider_figures(provider, records[1:], detail=False, cache=cache, refresh=refresh))
        finally:
            provider.close()
        for one in reports.values():
            one.provider = found.get(one.ledger.issue_id)
    if issue_id is None:
        return Reports(list(reports.values()))
    ordered = list(reports.values())
    return Reports([ordered[0]], ordered[1:] + [ordered[0]] if trend else [])


def trend_points(reports: list[IssueReport]) -> list[tuple[str, int, float | None, float | None]]:
    """``(issue id, sent, open rate, click rate)`` of each report, in order; a rate is None without figures."""
    points = []
    for one in reports:
        rates = one.provider.rates() if one.provider else {}
        points.append((one.ledger.issue_id, one.ledger.counts["sent"], rates.get("open"), rates.get("click")))
    return points


def ledger_figures(ledger: Ledger, record: IssueRecord) -> LedgerFigures:
    issue_id = record.issue_id
    return LedgerFigures(issue_id, record.subject, record.created_at, ledger.counts(issue_id),
                         ledger.reason_counts(issue_id, "failed"), every_minute(ledger.sent_per_minute(issue_id)),
                         ledger.issue_suppressions(issue_id))


def every_minute(per_minute: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The ledger's minutes with sends, and a zero for each minute between them (a pause shows as a gap)."""
    if not per_minute:
        return []
    counts = dict(per_minute)
    first, last = (datetime.fromisoformat(per_minute[0][0]), datetime.fromisoformat(per_minute[-1][0]))
    minutes = []
    while first <= last:
        key = first.strftime("%Y-%m-%dT%H:%M")
        minutes.append((key, counts.get(key, 0)))
        first += timedelta(minutes=1)
    return minutes


def can_report(provider: Provider) -> bool:
    return provider.can("issue_stats")


def provider_figures(provider: Provider, records: list[IssueRecord], *, detail: bool, cache: Ledger | None = None,
                     refresh: bool = False, now: Callable[[], float] = time.time, retry: Backoff = LOOKUP_RETRY,
                     sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic) -> dict[str, ProviderFigures]:
    """issue id -> what the provider says of it: kept figures younger than an hour from ``cache`` (unless
    ``refresh``), the others asked and kept there. A refused key or a failing API stops the reading and is
    noted on every issue not read yet; it never raises, so the ledger part always prints."""
    found = {r.issue_id: ProviderFigures(provider.name) for r in records}
    if not can_report(provider):
        for figures in found.values():
            figures.note = f"{provider.name}: {provider.stats_note}"
        return found
    key = cache_key(provider)
    kept = {} if cache is None or refresh else cache.cached_figures(key, [r.issue_id for r in records])
    asked = [r for r in records if not _reuse(kept.get(r.issue_id), found[r.issue_id], detail, now())]
    if not asked:
        return found
    fresh: list[CachedFigures] = []
    with PacedSession(provider.read_rate, retry=retry, sleep=sleep, clock=clock,
                      queries=provider.stats_queries) as session:
        for n, record in enumerate(asked):
            figures = found[record.issue_id]
            try:
                figures.stats = provider.issue_stats(session, record.issue_id, _day(record), detail=detail)
            except ProviderError as err:
                note = _error_note(provider, err)
                for later in asked[n:]:
                    found[later.issue_id].note = note
                break
            if figures.stats is None:  # no per-issue figures after all: nothing to keep
                continue
            figures.fetched_at = now()
            fresh.append(CachedFigures(record.issue_id, detail, figures.stats.to_cache(), figures.fetched_at))
    if cache is not None and fresh:
        cache.store_figures(key, fresh)
    return found


def cache_key(provider: Provider) -> str:
    """Whose figures these are: the provider and its scope (Mailgun's domain, Postmark's stream)."""
    return f"{provider.name}:{provider.plan_scope(provider.settings)}"


def _reuse(kept: CachedFigures | None, figures: ProviderFigures, detail: bool, now: float) -> bool:
    """Fill ``figures`` from ``kept`` when those are young enough and as detailed as asked."""
    if kept is None or not 0 <= now - kept.fetched_at < CACHE_MAX_AGE_S or (detail and not kept.detail):
        return False
    try:
        stats = IssueStats.from_cache(kept.figures)
    except (ValueError, TypeError):  # kept by a version that wrote them otherwise: ask again
        return False
    figures.stats, figures.fetched_at, figures.cached = stats, kept.fetched_at, True
    return True


def _error_note(provider: Provider, err: ProviderError) -> str:
    if isinstance(err, AuthError):
        need = provider.stats_key_hint or err.hint or ""
        return f"{err.message}" + (f" ({need})" if need else "")
    again = "run `newsletter report` again later" if err.retryable else (err.hint or "check the [provider] settings")
    return f"{err.message} ({again})"


def _day(record: IssueRecord) -> date:
    """The first day the provider may hold figures of: the day the plan was frozen (UTC)."""
    planned = parse_time(record.created_at)
    return planned.date() if planned else date.today()


def _ratio(part: int | None, whole: int | None) -> float | None:
    if part is None or not whole:
        return None
    return part / whole


def _stats_json(stats: IssueStats) -> dict:
    obj = asdict(stats)
    obj["opens_by_day"] = [{"day": d, "unique_opens": n} for d, n in stats.opens_by_day]
    obj["clicks_by_day"] = [{"day": d, "unique_clicks": n} for d, n in stats.clicks_by_day]
    obj["top_links"] = [{"url": url, "clicks": n} for url, n in stats.top_links]
    obj["click_platforms"] = [{"platform": name, "clicks": n} for name, n in stats.click_platforms]
    obj["notes"] = list(stats.notes)
    return obj


def utc_text(epoch: float) -> str:
    """Epoch seconds as the ledger writes times: UTC, ISO 8601, to the second."""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"
