"""Reading a provider's answer: its JSON body, its own words in an error, how long it asks us to wait.

Shared by every adapter and by the look-ups (:mod:`newsletter.sending.lookups`): the
documented shapes of each provider's error bodies are read in one place.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import re
import time
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # only named: the outbox's path (and `build`) load no HTTP library
    import requests


def json_body(response: requests.Response) -> Any:
    """The JSON answer, or None when the body is not JSON (the caller maps that to ``unknown``)."""
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        return None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date), Brevo's ``x-sib-ratelimit-reset``
    (seconds) or ``X-RateLimit-Reset`` (epoch);
    None when neither is there or readable (the caller's backoff decides then)."""
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (ValueError, TypeError):  # "soon", or a date that is no date
            when = None
        if when is not None:
            if when.tzinfo is None:  # "-0000": a time in UTC with no zone given
                when = when.replace(tzinfo=dt.timezone.utc)
            return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())
    brevo = headers.get("x-sib-ratelimit-reset")  # Brevo: seconds until its window resets
    if brevo:
        try:
            return max(0.0, float(brevo))
        except ValueError:
            pass
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            number = float(reset)
        except ValueError:
            return None
        return max(0.0, number - time.time()) if number > 1e9 else number
    return None


# Words of a 403 about who may send (not about the key): SendGrid's "The from address does not match a
# verified Sender Identity", Mailgun's "Domain sandbox... is not allowed to send" and "add the address to
# authorized recipients", Resend's "The example.com domain is not verified".
_ABOUT_SENDER = re.compile(r"sender|\bfrom\b|domain|sandbox|authori[sz]ed recipient|verif", re.I)
_ABOUT_KEY = re.compile(r"api[ _-]?key|\btoken\b|authori[sz]ation grant|credential", re.I)
MESSAGE_CHARS = 300  # of a provider's own error text in our messages
# For a list whose paging does not end as documented (the same page again, a cursor that does not move).
PAGING_HINT = "nothing was changed; the provider's paging did not end as documented: try again later, and report it"


def provider_message(response: requests.Response) -> str:
    """The provider's own error text from an answer, on one line and trimmed ("" when there is none).

    Reads the documented shapes: ``{"message"}`` (Mailgun, Resend), ``{"Message"}`` (Postmark),
    ``{"errors": [{"message"}]}`` (SendGrid), else a short plain-text body (not an HTML page).
    """
    body = json_body(response)
    parts: list[str] = []
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list):
            parts = [str(e.get("message")) for e in errors if isinstance(e, dict) and e.get("message")]
        for key in ("message", "Message", "error"):
            if not parts and isinstance(body.get(key), str) and body[key]:
                parts = [body[key]]
    elif body is None and not response.text.lstrip().startswith("<"):
        parts = [response.text]
    text = " ".join("; ".join(parts).split())
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 1] + "…"


def about_sender(said: str) -> bool:
    """True when a 403's text is about who may send (sender, domain, sandbox), not about the key."""
    return bool(_ABOUT_SENDER.search(said)) and not _ABOUT_KEY.search(said)


def names_address(text: str, address: str) -> bool:
    """True when ``text`` (a provider's error) names ``address`` as a whole address, not inside another."""
    return bool(address) and re.search(rf"(?<![\w.+-]){re.escape(address)}(?![\w-])", text, re.I) is not None
