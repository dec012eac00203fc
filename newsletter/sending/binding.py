"""Which provider an issue's plan belongs to, and what a run through another one does.

docs/sending.md ("Provider binding and --restart") tells it from the user's side. The plan
is bound, in the ledger, to the provider of its first send, plus Mailgun's domain or
Postmark's message stream (the provider's *scope*). A run through any other provider would
either count the outbox's trial copies as the real send (nobody gets the issue) or finish
a real send in the outbox (the rest get nothing): so ``send``, ``dispatch`` and
``reconcile`` refuse before anything is frozen or sent, and name both providers and the
way out: ``send ISSUE --restart`` (only for a plan that never left the outbox) or
switching back.

A plan an older version wrote is bound by what its rows prove (``ledger/migrations.py``
step 3): not bound yet when nothing ever left (the next run binds it), ``unknown`` when a
real provider may have sent it and the rows cannot tell which. An unknown plan is sent on
only after the user confirms, on a terminal, that it went through the configured provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import Settings
from ..errors import NewsletterError, RouteRefused
from ..ledger.base import UNKNOWN_PROVIDER, IssueRecord, Ledger

if TYPE_CHECKING:  # the adapters load requests: `newsletter status` names a route without them
    from ..providers.base import Provider

OUTBOX = "outbox"
UNBOUND = ""  # issues.provider of a plan an older version froze and that never sent anything

# What a run does with the issue's plan (see :func:`route_verdict`).
NEW = "new"  # no plan yet: the first run binds it to its provider
SAME = "same"  # bound to this provider: resume
BIND = "bind"  # not bound yet and nothing ever left: bind it to this provider and resume
ASK = "ask"  # unknown: resume only once the user confirms it went through this provider
RESTART = "restart"  # --restart of a plan that never left the outbox: drop it, freeze a new one


@dataclass(frozen=True)
class Route:
    """A provider and its scope (Mailgun's domain, Postmark's stream; "" for the others)."""

    provider: str
    scope: str = ""

    @classmethod
    def of(cls, provider: Provider) -> "Route":
        return cls(provider.name, provider.plan_scope(provider.settings))

    @classmethod
    def planned(cls, record: IssueRecord) -> "Route":
        return cls(record.provider, record.provider_scope)

    @property
    def scope_key(self) -> str:
        """The [provider] key that sets the scope ("" for a provider without one)."""
        from ..providers import ADAPTERS, provider_class

        return provider_class(self.provider).scope_key if self.provider in ADAPTERS else ""

    def label(self) -> str:
        """How messages and ``status`` name it: ``postmark (stream broadcast)``, ``outbox``."""
        if self.provider == UNBOUND:
            return "-"
        if not self.scope:
            return self.provider
        return f"{self.provider} ({self.scope_key.removeprefix('message_')} {self.scope})"

    def key(self) -> str:
        """``status --json``'s form: ``name`` or ``name:scope`` ("" when not bound)."""
        return f"{self.provider}:{self.scope}" if self.scope else self.provider


def route_verdict(record: IssueRecord | None, provider: Provider, ledger: Ledger, *, restart: bool = False) -> str:
    """What a run through ``provider`` does with the plan ``record`` (one of the verdicts above); raise
    :class:`RouteRefused` when it must not run, with both providers and the way out."""
    if record is None:
        return NEW
    planned, current = Route.planned(record), Route.of(provider)
    if restart:
        if planned.provider in (UNBOUND, OUTBOX) or never_tried(ledger, record.issue_id):
            return RESTART
        raise _restart_refused(record, planned, current, ledger)
    if planned.provider == UNBOUND:
        return BIND
    if planned.provider == UNKNOWN_PROVIDER:
        return ASK
    if planned == current:
        return SAME
    raise _mismatch(record.issue_id, planned, current, provider,
                    reached_nobody=planned.provider != OUTBOX and never_tried(ledger, record.issue_id))


def never_tried(ledger: Ledger, issue_id: str) -> bool:
    """Nobody of the plan was tried (a first run refused its key, or never reached the provider): forgetting
    it gives nobody a second copy, whatever provider it was bound to."""
    return not any(n for state, n in ledger.counts(issue_id).items() if state not in ("pending", "skipped"))


def unknown_question(record: IssueRecord, provider: Provider, ledger: Ledger) -> str:
    """The question that binds an ``unknown`` plan to ``provider`` (asked on a terminal only)."""
    return (f"Issue {record.issue_id} was sent by an older newsletter, which did not record the provider "
            f"({_counts(ledger, record.issue_id)}). Did those go through {Route.of(provider).label()}?")


def unknown_refused(record: IssueRecord, provider: Provider, ledger: Ledger, *, asked: bool) -> NewsletterError:
    """Why an ``unknown`` plan is not sent on: nobody could confirm its provider, or the user said no."""
    current = Route.of(provider).label()
    if asked:
        return RouteRefused(f"issue {record.issue_id}'s earlier copies did not go through {current}: not sending "
                            f"the rest through it; nothing was sent or changed",
                            hint="run it with the provider that sent them ([provider] name) and answer yes there; "
                                 "a real send cannot be restarted")
    return RouteRefused(f"the ledger does not record which provider sent issue {record.issue_id} (an older "
                        f"newsletter wrote it: {_counts(ledger, record.issue_id)}); nothing was sent or changed",
                        hint=f"run `newsletter send {record.issue_id}` on a terminal and confirm that they went "
                             f"through {current}, or switch to the provider that sent them")


def _counts(ledger: Ledger, issue_id: str) -> str:
    counts = ledger.counts(issue_id)
    shown = [f"{n} {state}" for state, n in counts.items() if n]
    return ", ".join(shown) or "no rows"


def _mismatch(issue_id: str, planned: Route, current: Route, provider: Provider, *,
              reached_nobody: bool = False) -> RouteRefused:
    switch = f"or switch back: {_switch_back(planned, current, provider)}"
    if planned.provider == OUTBOX or reached_nobody:
        what = "the outbox trial" if planned.provider == OUTBOX else "that plan (it reached nobody)"
        way_out = (f"to forget {what} and send the issue to everyone through {current.provider}: "
                   f"`newsletter send {issue_id} --restart`; {switch}")
    else:
        way_out = switch.removeprefix("or ")
    return RouteRefused(f"issue {issue_id} was first sent through {planned.label()}; this run would send through "
                        f"{current.label()}. Nothing was sent or changed", hint=way_out)


def _switch_back(planned: Route, current: Route, provider: Provider) -> str:
    """The settings that route this issue back to ``planned``, said the way they are set now."""
    from ..providers import provider_class

    settings = provider.settings
    origins = settings.origins
    wanted = [("name", planned.provider)] if planned.provider != current.provider else []
    if planned.scope and planned.scope != provider_class(planned.provider).plan_scope(settings):
        wanted.append((planned.scope_key, planned.scope))
    parts = []
    for key, value in wanted:
        env = f"NEWSLETTER_PROVIDER_{key.upper()}"
        if origins.get(f"provider.{key}", "").startswith("env "):
            parts.append(f'unset {env} (it says {_current_value(key, settings)}) with [provider] {key} = "{value}" '
                         f'in newsletter.toml, or set {env}={value}')
        else:
            parts.append(f'[provider] {key} = "{value}" in newsletter.toml (or export {env}={value})')
    return "; ".join(parts)


def _current_value(key: str, settings: Settings) -> str:
    return settings.values["provider"][key]


def _restart_refused(record: IssueRecord, planned: Route, current: Route, ledger: Ledger) -> RouteRefused:
    issue_id = record.issue_id
    counts = _counts(ledger, issue_id)
    if planned.provider == UNKNOWN_PROVIDER:
        what = (f"issue {issue_id} was sent by an older newsletter, which did not record the provider, and "
                f"its rows show a real provider may have sent them ({counts})")
    else:
        what = f"issue {issue_id} went through {planned.label()}, not the outbox ({counts})"
    resume = (f"resume it: `newsletter send {issue_id}`" if planned == current
              else f"resume it through {planned.label() if planned.provider != UNKNOWN_PROVIDER else 'that provider'}")
    return RouteRefused(f"{what}: --restart only forgets a trial sent through the outbox, or a plan nobody of "
                        f"which was tried, and would give the readers it reached a second copy. Nothing was changed",
                        hint=resume)
