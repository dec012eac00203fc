"""``newsletter suppressions sync``: the provider's bounces, complaints and unsubscribes, into the ledger.

The provider's whole list is read first, page by page, and only then are the
addresses the ledger does not suppress yet added, in one transaction: a read
that fails part-way (a 429 that will not clear, a dropped connection) changes
nothing, and running it again is always safe. Nothing is ever removed here:
an address the provider has since reactivated stays suppressed until
``newsletter suppressions remove``, because mailing someone who asked out is
worse than missing someone who came back.

A provider's suppressions already stop its own sends; in the ledger they also
leave those readers out of the next plan (no wasted call, no ``failed`` row)
and carry over when the newsletter moves to another provider.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import requests
from email_validator import EmailNotValidError

from ..errors import AuthError, ProviderError
from ..ledger.base import Ledger, address_key
from ..providers.base import Provider, ProviderSuppression
from ..subscribers.address import normalise_address
from .lookups import LOOKUP_RETRY, PacedSession
from .ratelimit import Backoff, wait_words


@dataclass
class SyncReport:
    provider: str
    supported: bool = True
    fetched: int = 0  # distinct valid addresses on the provider's list
    added: int = 0  # of those, new to the ledger (with --dry-run: that would be)
    kinds: Counter = field(default_factory=Counter)  # kind -> distinct addresses
    unreadable: list[str] = field(default_factory=list)  # entries no list could hold (not addresses)

    @property
    def already(self) -> int:
        return self.fetched - self.added

    def as_json(self, *, dry_run: bool) -> dict:
        return {"provider": self.provider, "supported": self.supported, "dry_run": dry_run,
                "fetched": self.fetched, "added": self.added, "already": self.already,
                "kinds": dict(sorted(self.kinds.items())), "unreadable": self.unreadable}


def sync_suppressions(provider: Provider, ledger: Ledger, *, dry_run: bool = False, backoff: Backoff = LOOKUP_RETRY,
                      sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> SyncReport:
    """Read the provider's suppression list and add what is new to the ledger (not with ``dry_run``)."""
    report = SyncReport(provider.name)
    with PacedSession(provider.read_rate, retry=backoff, sleep=sleep, clock=clock) as session:
        entries = _read_all(provider, session)
    if entries is None:
        report.supported = False
        return report
    found: dict[str, tuple[str, str, str]] = {}  # address key -> (address, reason, issue), the first listing wins
    for entry in entries:
        try:
            address = normalise_address(entry.email)
        except EmailNotValidError:
            report.unreadable.append(entry.email)
            continue
        key = address_key(address)
        if key not in found:
            found[key] = (address, f"{entry.kind} at {provider.name}" + (f" ({entry.detail})" if entry.detail else ""),
                          entry.issue_id)
            report.kinds[entry.kind] += 1
    report.fetched = len(found)
    if dry_run:
        report.added = len(found.keys() - ledger.suppressed_set())
    else:
        report.added = ledger.add_suppressions(list(found.values()), source=provider.name)
    return report


def _read_all(provider: Provider, session: requests.Session) -> list[ProviderSuppression] | None:
    """The whole list, or an error that says what to do (nothing is kept from a list read part-way)."""
    try:
        listing = provider.suppression_list(session)
        return None if listing is None else list(listing)
    except AuthError as err:  # a key that may send but not read the lists is refused here
        hint = f"{err.hint}; {provider.sync_key_hint}" if provider.sync_key_hint else err.hint
        raise AuthError(err.message, status=err.status, body=err.body, hint=hint) from err
    except ProviderError as err:
        if err.hint:
            raise
        if not err.retryable:
            again = f"fix what {provider.name} says (the [provider] settings), then run it again"
        elif err.retry_after:
            again = (f"{provider.name} asked to wait {wait_words(err.retry_after)}: run `newsletter suppressions "
                     "sync` again after that")
        else:
            again = "run `newsletter suppressions sync` again later"
        raise ProviderError(err.message, status=err.status, body=err.body, retryable=err.retryable,
                            retry_after=err.retry_after, hint=f"nothing was changed; {again}") from err
