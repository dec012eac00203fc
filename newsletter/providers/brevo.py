"""Brevo (ex-Sendinblue): ``POST /v3/smtp/email`` with ``messageVersions``, one version per reader.

Each version carries its reader (``to``), their own ``subject``, their
personalised ``htmlContent`` and ``textContent`` and their List-Unsubscribe
``headers``; the request carries the sender, the issue id in ``tags`` and the
batch id in the ``X-Newsletter-Batch`` header (``batchId`` is documented for
scheduled sends only). Bodies are personalised by us rather than left to
Brevo's template language (``{{ params.x }}``), whose escaping of values and
of literal braces in the issue is not documented. Brevo lets a version override
the subject and bodies only when the request has them too: the request's own
are neutral (the subject with its merge fields empty, a one-line body), so a
version Brevo did not apply could never show one reader another's text.

Limits: the OpenAPI file says at most 2,000 recipients a request and 99 a
version; Brevo's batch-sending guide says 1,000 versions a request. With one
reader a version the stricter is 1,000 a call, which we use.

Brevo is all-or-nothing: 201 ``{"messageIds": [...]}`` (one per version, in
order) or 400 ``{"code", "message"}`` for the whole request. Its refusal of an
address does not say whose ("email is not valid in to"): the readers whose
address no mail system would take fail, the others are sent again without them;
when none of them looks wrong, the run stops (with one reader in the batch, it
is theirs). ``not_enough_credits``, ``account_under_validation`` and the like
stop the run. 429s carry ``x-sib-ratelimit-reset`` (seconds), honoured.

Reconciliation asks the transactional events (``GET /v3/smtp/statistics/events``)
for the batch's own tag and the ``requests`` event (Brevo took the message): a
reader found there was sent. Brevo documents neither how soon an event shows
nor how long it is kept, so a reader not found stays ``unknown``: absence proves
nothing, and ``newsletter send --resend-unknown`` is the way on.
"""

from __future__ import annotations

import json
import math
import re
from typing import Iterator

import requests

from ..errors import ConfigError, ProviderError
from ..jsontext import json_array, json_with_bodies
from ..models import Message, Outcome
from .answers import PAGING_HINT, json_body, provider_message
from .base import Batch, Provider, ProviderSuppression, Request, all_outcomes, split_address

MAX_VERSIONS = 1000  # the guide's 1,000 versions, stricter than the spec's 2,000 recipients (one a version)
NAME_CHARS = 70  # "Maximum allowed characters are 70" for every name (sender, to, replyTo)
BLOCKED_PAGE = 100  # GET /smtp/blockedContacts: limit's maximum
EVENTS_PAGE = 2500  # GET /smtp/statistics/events: limit's default (its maximum is 5,000)
EVENTS_DAYS = 90  # the farthest back `days` is asked for
NEUTRAL_BODY = "<!-- each message version carries its own body -->"
# The account's problems (the errorModel's codes), and what to do about them.
HINTS = {
    "not_enough_credits": "the Brevo account has no email credits left: add credits or a plan",
    "account_under_validation": "Brevo is still validating the account: sending starts once it is activated",
    "permission_denied": "the key or the account may not send transactional email: check its permissions "
                         "and the authorised IPs in Brevo (Security > Authorised IPs)",
    "unauthorized": "check the key in the environment variable named by [provider] api_key_env",
}
# "email is not valid in to", "Invalid email address": Brevo's words when an address is refused.
_ABOUT_ADDRESS = re.compile(r"\bemail\b|address|\bto\b", re.I)
# "Sender is not valid, please check sender email or create a new sender": ours, whatever it says of emails.
_ABOUT_SENDER = re.compile(r"sender|\bfrom\b|reply", re.I)
# An address a mail system would take (what Brevo refuses, it refuses without saying whose).
_PLAUSIBLE = re.compile(r"^[^@\s<>\"(),;:]+@[^@\s<>\"(),;:]+\.[^@\s<>\"(),;:.]+$")
_KIND_BY_REASON = {"hardBounce": "bounced", "contactFlaggedAsSpam": "complained",
                   "unsubscribedViaEmail": "unsubscribed", "unsubscribedViaMA": "unsubscribed",
                   "unsubscribedViaApi": "unsubscribed", "adminBlocked": "blocked"}
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class BrevoProvider(Provider):
    name = "brevo"
    default_origin = "https://api.brevo.com/v3"  # the spec's server URL: [provider] api_base replaces all of it
    max_batch = MAX_VERSIONS
    fills_bodies = True
    envelope_bytes = 768  # to, subject keys, headers object per version
    default_rate = 10.0  # Brevo's transactional limits depend on the plan; it answers 429 beyond them
    reconcile_note = ("Brevo is asked through its transactional email events (the batch's tag, the `requests` "
                      "event); a reader not found there stays unknown")
    sync_key_hint = "sync reads the blocked contacts: the key must be allowed to read transactional email data"
    sender_hint = "add and verify the From address as a sender in Brevo (Senders, domains & dedicated IPs)"

    def __init__(self, settings, api_key=None):
        super().__init__(settings, api_key)
        for key in ("track_opens", "track_clicks"):
            if getattr(settings.provider, key):
                raise ConfigError(f"[provider] {key} = true is not supported by Brevo's API",
                                  path=settings.origins.get(f"provider.{key}"),
                                  hint="set it to false; Brevo tracks opens and clicks of transactional email "
                                       "itself, as its account settings say")

    def read_headers(self) -> dict[str, str]:
        return {"api-key": self.api_key or "", "Accept": "application/json"}

    # -- verbs -----------------------------------------------------------------------
    def build_request(self, batch: Batch) -> Request:
        first = batch.messages[0]
        name, address = split_address(first.sender)
        envelope: dict = {
            "sender": _person(name, address),
            "subject": _neutral_subject(batch),
            "htmlContent": NEUTRAL_BODY,
            "textContent": NEUTRAL_BODY,
            "tags": [batch.issue_id, _tag(batch.batch_id)],
            "headers": {"X-Newsletter-Issue": batch.issue_id, "X-Newsletter-Batch": batch.batch_id},
        }
        if self.settings.provider.test_mode:  # Brevo's sandbox: validated and answered, never delivered
            envelope["headers"]["X-Sib-Sandbox"] = "drop"
        if first.reply_to:
            envelope["replyTo"] = _person(*split_address(first.reply_to))
        versions = json_array(json_with_bodies(self._version(m), {"htmlContent": html, "textContent": text})
                              for m, (html, text) in zip(batch.messages, self.message_bodies(batch)))
        head = json.dumps(envelope)
        body = head[:-1].encode("ascii") + b', "messageVersions": ' + versions + b"}"
        return Request("POST", self.url("/smtp/email"), {**self.read_headers(),
                                                            "Content-Type": "application/json"}, data=body)

    def _version(self, message: Message) -> dict:
        return {
            "to": [_person(message.to_name, message.to)],
            "subject": message.subject,
            "htmlContent": "",  # the bodies are filled in already encoded (build_request)
            "textContent": "",
            "headers": dict(message.headers),
        }

    def parse_response(self, batch: Batch, response: requests.Response) -> list[Outcome]:
        status = response.status_code
        body = json_body(response)
        if status == 201:
            ids = body.get("messageIds") if isinstance(body, dict) else None
            if ids is None and isinstance(body, dict) and body.get("messageId") and len(batch.messages) == 1:
                ids = [body["messageId"]]
            if not isinstance(ids, list) or len(ids) != len(batch.messages) or not all(ids):
                return all_outcomes(batch, "unknown", reason="brevo answered 201 without one messageId per version")
            return [Outcome(m.to, "sent", provider_id=str(i)) for m, i in zip(batch.messages, ids)]
        if status == 400:
            return self._refused(batch, response, body)
        if 200 <= status < 300:
            return all_outcomes(batch, "unknown", reason=f"brevo answered HTTP {status}, not the documented 201")
        code = body.get("code") if isinstance(body, dict) else None
        raise ProviderError(f"brevo refused the batch (HTTP {status} {code or ''}): {provider_message(response)}",
                            status=status, body=self.scrub(response.text), retryable=False,
                            hint=HINTS.get(str(code), "fix what Brevo says") + "; nothing in this batch was sent")

    def _refused(self, batch: Batch, response: requests.Response, body) -> list[Outcome]:
        code = str(body.get("code", "")) if isinstance(body, dict) else ""
        said = self.scrub(provider_message(response))
        if _ABOUT_SENDER.search(said):
            hint = self.sender_hint
        elif code in ("invalid_parameter", "missing_parameter") and _ABOUT_ADDRESS.search(said) \
                and "messageversions" not in said.lower():
            theirs = {m.to for m in batch.messages if not _PLAUSIBLE.match(m.to)}
            if not theirs and len(batch.messages) == 1:
                theirs = {batch.messages[0].to}
            if theirs:
                return [Outcome(m.to, "failed", reason=f"brevo {code}: {said}") if m.to in theirs else
                        Outcome(m.to, "retry", reason="batch refused because of another recipient; sent again")
                        for m in batch.messages]
            hint = ("Brevo refused an address of this batch without saying whose: run again with [provider] "
                    "batch_size = 1 to find it")
        else:  # the request's or the account's
            hint = HINTS.get(code, "fix what Brevo says")
        raise ProviderError(f"brevo refused the batch (HTTP 400 {code}): {said}", status=400,
                            body=self.scrub(response.text), retryable=False,
                            hint=f"{hint}; nothing in this batch was sent")

    # -- reconciliation --------------------------------------------------------------
    def reconcile(self, batch: Batch, session: requests.Session, *, age: float | None,
                  since_last_try: float | None = None) -> list[Outcome] | None:
        accepted = self._requested(batch, session, age)
        return [Outcome(m.to, "sent", provider_id=accepted[m.to.lower()]) if m.to.lower() in accepted else
                Outcome(m.to, "unknown", reason="not found in brevo's events, which proves nothing: Brevo does not "
                                                "document how soon they show or how long they are kept")
                for m in batch.messages]

    def _requested(self, batch: Batch, session: requests.Session, age: float | None) -> dict[str, str]:
        """reader -> messageId of each ``requests`` event (Brevo took the message) with the batch's tag."""
        days = EVENTS_DAYS if age is None else max(1, min(EVENTS_DAYS, math.ceil(age / 86400) + 1))
        accepted: dict[str, str] = {}
        offset, previous = 0, None
        while True:
            params = {"tags": _tag(batch.batch_id), "event": "requests", "limit": EVENTS_PAGE, "offset": offset,
                      "days": days, "sort": "asc"}
            body = self.get_json(session, "/smtp/statistics/events", params, "events look-up", expect=dict)
            events = body.get("events", [])  # an empty report is answered as {}
            if not isinstance(events, list):
                raise ProviderError("brevo's events look-up answered something we cannot read", status=200,
                                    body=json.dumps(body)[:500], retryable=True)
            if events and events == previous:
                raise ProviderError("brevo's events look-up answered the same page again; cannot read it to the "
                                    "end", retryable=False, hint=PAGING_HINT)
            previous = events
            for event in events:
                if isinstance(event, dict) and event.get("event") == "requests" and event.get("email"):
                    accepted[str(event["email"]).lower()] = str(event.get("messageId", ""))
            if len(events) < EVENTS_PAGE:
                return accepted
            offset += len(events)

    # -- suppressions ---------------------------------------------------------------------
    def suppression_list(self, session: requests.Session) -> Iterator[ProviderSuppression]:
        """Blocked and unsubscribed transactional contacts, page by page (limit/offset, to ``count``)."""
        offset, previous = 0, None
        while True:
            body = self.get_json(session, "/smtp/blockedContacts", {"limit": BLOCKED_PAGE, "offset": offset},
                                 "blocked contacts list", expect=dict)
            contacts = body.get("contacts", [])  # none: answered as {} or {"count": 0}
            if not isinstance(contacts, list):
                raise ProviderError("brevo's blocked contacts list answered something we cannot read", status=200,
                                    body=json.dumps(body)[:500], retryable=True)
            if contacts and contacts == previous:
                raise ProviderError(f"brevo's blocked contacts list answered the same page for offset {offset}; "
                                    "cannot read it to the end", retryable=False, hint=PAGING_HINT)
            previous = contacts
            for item in contacts:
                item = item if isinstance(item, dict) else {}
                reason = item.get("reason") if isinstance(item.get("reason"), dict) else {}
                code = str(reason.get("code", ""))
                yield ProviderSuppression(str(item.get("email", "")), _KIND_BY_REASON.get(code, "blocked"),
                                          f"{code}: {reason.get('message', '')}".strip(": "))
            offset += len(contacts)
            count = body.get("count")
            if len(contacts) < BLOCKED_PAGE or (isinstance(count, int) and offset >= count):
                return


def _neutral_subject(batch: Batch) -> str:
    """The request's own subject, which every version overrides: the issue's, with its merge fields empty."""
    if batch.template is None:
        return batch.messages[0].subject
    subject = batch.template["subject"]
    return subject.fill([""] * (max(subject.slot_ids, default=-1) + 1), html=False) or "-"


def _person(name: str, address: str) -> dict[str, str]:
    return {"email": address, "name": name[:NAME_CHARS]} if name else {"email": address}


def _tag(value: str) -> str:
    return "batch-" + _TAG_UNSAFE.sub("_", value)
