"""What an unsubscribe through the link does, and the confirmation mail of the token-less page
(docs/unsubscribe.md). The HTTP side is :mod:`newsletter.unsubscribe_app`.

An unsubscribe is recorded in two places, in this order, both durable before the reader is answered:

1. a ledger suppression (reason ``unsubscribed``, source ``link``, the issue from the token): the
   authority, since every later send and every resumed plan leaves suppressed addresses out;
2. the list's row marked ``unsubscribed`` with its timestamp, through the list's lock and an atomic
   rewrite. When the list is not on this machine (or lacks the address) the suppression is enough;
   ``newsletter subscribers apply-unsubscribes`` copies the suppressions into the list later.
"""

from __future__ import annotations

import uuid
from html import escape
from dataclasses import dataclass

import requests

from .config import Settings
from .errors import ConfigError, ProviderError, SubscriberError
from .ledger import open_ledger
from .models import Message
from .subscribers.edits import unsubscribe as unsubscribe_row
from .subscribers.reader import ListReader, address_key
from .unsubscribe import OLD_SECRET_SUFFIX, PROVIDER_MANAGED, TokenFacts, unsubscribe_url

REASON = "unsubscribed"
SOURCE = "link"
CONFIRMATIONS = "unsubscribe-confirmations"  # the "issue" of confirmation mails (the outbox's folder)


@dataclass(frozen=True)
class Recorded:
    suppressed: bool  # a new suppression (False: the address was suppressed already)
    list_note: str  # "unsubscribed", "unchanged", or why the list was not changed


def token_secrets(settings: Settings) -> list[bytes]:
    """The secrets a token may be opened with: the current one, then ``$<secret_env>_OLD`` (rotation)."""
    url = settings.unsubscribe.url
    if url == PROVIDER_MANAGED or "{token}" not in url:
        raise ConfigError(f"[unsubscribe] url = {url!r} has no {{token}}, so no link of ours leads to this page"
                          + (": the provider hosts it" if url == PROVIDER_MANAGED else ""),
                          path=settings.origins.get("unsubscribe.url"),
                          hint='set url = "https://example.com/unsubscribe?t={token}" to serve your own page')
    name = settings.unsubscribe.secret_env
    current = settings.env.get(name)
    if not current:
        raise ConfigError(f"${name} is not set, so no unsubscribe token can be checked",
                          hint=f"export {name} with the secret the links were sent with")
    old = settings.env.get(name + OLD_SECRET_SUFFIX)
    return [current.encode()] + ([old.encode()] if old else [])


def record_unsubscribe(settings: Settings, facts: TokenFacts) -> Recorded:
    """Suppress the token's reader in the ledger, then mark their row in the list (see the module doc)."""
    with open_ledger(settings) as ledger:
        added = ledger.add_suppression(facts.email, REASON, SOURCE, issue_id=facts.issue_id)
    list_path = settings.workspace_path(settings.subscribers.file)
    if not list_path.exists():
        return Recorded(added, "the list is not on this machine")
    try:
        change = unsubscribe_row(list_path, facts.email)
    except SubscriberError as err:  # not in the list, or a list we cannot rewrite: the suppression holds
        return Recorded(added, f"list not changed: {err.message}")
    return Recorded(added, change.outcome)


def is_subscribed(settings: Settings, email: str) -> bool:
    """Whether ``email`` has a subscribed row in the list (False when the list is not here)."""
    list_path = settings.workspace_path(settings.subscribers.file)
    if not list_path.exists():
        return False
    key = address_key(email.strip())
    with ListReader(list_path) as reader:
        return any(row.key == key and row.subscriber is not None and row.subscriber.status == "subscribed"
                   for row in reader.rows())


def send_confirmation(settings: Settings, email: str, secret: bytes) -> None:
    """Mail ``email`` its own unsubscribe link through the configured provider (the token-less page)."""
    from .providers import open_provider  # the provider's module only when a mail goes out
    from .providers.base import Batch

    link = unsubscribe_url(settings.unsubscribe.url, email, secret)
    name = settings.newsletter.name
    text = (f"Someone (hopefully you) asked to unsubscribe {email} from {name}.\n\n"
            f"To unsubscribe, open this link and press the button:\n{link}\n\n"
            "If it was not you, ignore this mail: nothing changes.\n")
    html = (f"<p>Someone (hopefully you) asked to unsubscribe {escape(email)} from {escape(name)}.</p>"
            f'<p>To unsubscribe, open <a href="{escape(link)}">this link</a> and press the button.</p>'
            "<p>If it was not you, ignore this mail: nothing changes.</p>")
    message = Message(issue_id=CONFIRMATIONS, to=email, subject=f"Unsubscribe from {name}", html=html, text=text,
                      sender=settings.newsletter.from_, reply_to=settings.newsletter.reply_to)
    provider = open_provider(settings)
    try:
        with requests.Session() as session:
            outcomes = provider.send_batch(Batch(CONFIRMATIONS, uuid.uuid4().hex[:12], (message,)), session)
    finally:
        provider.close()
    if [o.state for o in outcomes] != ["sent"]:
        raise ProviderError(f"{provider.name} did not accept the confirmation mail: "
                            f"{'; '.join(o.reason for o in outcomes) or 'no answer'}")
