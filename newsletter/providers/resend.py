"""Resend: ``POST /emails/batch``, up to 100 personalised emails, with an idempotency key.

Every call carries ``Idempotency-Key: <issue>/<batch>``: Resend keeps it 24 hours
and answers a replay of the same payload with the original ids instead of
sending again. That makes an in-doubt batch safe to retry, and it is how
``newsletter reconcile`` asks Resend what happened. We ask for
``x-batch-validation: permissive`` so one bad address does not sink the other 99:
the answer then lists ``errors: [{index, message}]`` beside ``data``. An error
about the email's `to` field ("Invalid `to` field. ...") is that recipient's and
fails them; any other (the `from`, the subject, the domain) would be the same
for every reader: with nothing accepted the run stops and nobody is failed, and
beside accepted emails the refused ones go back to pending (see :mod:`.base`).

Resend has no per-message tracking switch (open and click tracking are domain
settings) and no sandbox flag (test addresses at resend.dev instead), so those
settings are refused up front rather than silently ignored.

``[unsubscribe] url = "provider"`` is refused too: Resend's email API (``POST /emails`` and
``/emails/batch`` in its OpenAPI spec) documents no unsubscribe link of its own and no
List-Unsubscribe it would add; its ``topic_id`` only skips contacts who opted out of a topic.
Readers get the newsletter's own page and List-Unsubscribe headers instead.
"""

from __future__ import annotations

import email.utils
import json
import re
from typing import Iterator

import requests

from ..errors import ConfigError, ProviderError
from ..jsontext import json_array, json_with_bodies
from ..models import Message, Outcome
from .answers import PAGING_HINT, json_body, names_address, provider_message
from .base import Batch, Provider, ProviderSuppression, Request, all_outcomes

IDEMPOTENCY_WINDOW = 23 * 3600  # Resend keeps keys 24 h; replaying later would send again
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # tag names and values: ASCII letters, digits, _ and -
_KIND_BY_ORIGIN = {"bounce": "bounced", "complaint": "complained", "manual": "blocked"}  # of a suppression
SUPPRESSION_PAGE = 100  # the list endpoints' largest `limit`
# "Invalid `to` field. ...", "The `to` field must be a `string`.": the recipient's; `from`, `subject`... are ours.
_ABOUT_TO = re.compile(r"[`'\"]to[`'\"]", re.I)


class ResendProvider(Provider):
    name = "resend"
    default_origin = "https://api.resend.com"
    sync_key_hint = "sync reads the suppressions: it needs a Full access key (a Sending access key is refused)"
    max_batch = 100
    max_payload_bytes = 40 * 1000 * 1000  # Resend's 40 MB per email bounds a batch of text-only emails
    envelope_bytes = 768  # from, to, tags and reply_to per email
    fills_bodies = True
    default_rate = 2.0  # Resend's documented default: 2 requests per second
    idempotent = True
    idempotency_window = IDEMPOTENCY_WINDOW
    reconcile_note = "Resend is asked by replaying the batch with its original Idempotency-Key (within 24 hours)"
    stats_note = ("Resend gives no per-issue figures: its metrics API (in private beta) filters by email id, 100 "
                  "at a time, or by broadcast, never by tag; see the emails in Resend's dashboard")
    sender_hint = ("verify the From address's domain at resend.com/domains (until then Resend sends only to "
                   "your own address)")

    @classmethod
    def unsubscribe_refusal(cls, settings) -> str:
        return ("Resend's email API documents no unsubscribe link or List-Unsubscribe headers of its own (its "
                "topic_id only skips contacts who opted out of a topic)")

    def __init__(self, settings, api_key=None):
        super().__init__(settings, api_key)
        provider = settings.provider
        for key, hint in (("track_opens", "open and click tracking are set per domain in Resend's dashboard"),
                          ("track_clicks", "open and click tracking are set per domain in Resend's dashboard"),
                          ("test_mode", "Resend has no sandbox: send proofs with `newsletter test ISSUE "
                                        "--to delivered@resend.dev`")):
            if getattr(provider, key):
                raise ConfigError(f"[provider] {key} = true is not supported by Resend's API",
                                  path=settings.origins.get(f"provider.{key}"), hint=f"set it to false; {hint}")

    def read_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key or ''}"}

    def _headers(self, batch: Batch) -> dict[str, str]:
        return {**self.read_headers(), "Content-Type": "application/json",
                "Idempotency-Key": batch.idempotency_key[:256], "x-batch-validation": "permissive"}

    # -- verbs -----------------------------------------------------------------------
    def build_request(self, batch: Batch) -> Request:
        tags = [{"name": "issue", "value": _tag(batch.issue_id)}, {"name": "batch", "value": _tag(batch.batch_id)}]
        bodies = sorted(zip(batch.messages, self.message_bodies(batch)), key=lambda pair: _order(pair[0]))
        body = json_array(json_with_bodies(self._email(m, tags), {"html": html, "text": text})
                          for m, (html, text) in bodies)
        return Request("POST", self.url("/emails/batch"), self._headers(batch), data=body)

    def _email(self, message: Message, tags: list[dict]) -> dict:
        item = {
            "from": message.sender,
            "to": [email.utils.formataddr((message.to_name, message.to)) if message.to_name else message.to],
            "subject": message.subject,
            "html": "",  # the bodies are filled in already encoded (build_request)
            "text": "",
            "headers": dict(message.headers),
            "tags": tags,
        }
        if message.reply_to:
            item["reply_to"] = message.reply_to
        return item


    def parse_response(self, batch: Batch, response: requests.Response) -> list[Outcome]:
        body = json_body(response)
        status = response.status_code
        if status == 200:
            return self._accepted(batch, body)
        if 200 <= status < 300:  # not the documented 200: it may have been accepted, so it is not a refusal
            return all_outcomes(batch, "unknown", reason=f"resend answered HTTP {status}, not the documented 200")
        name = str(body.get("name", "")) if isinstance(body, dict) else ""
        text = provider_message(response)
        if status == 409 and name == "concurrent_idempotent_requests":
            # "Same idempotency key used while original request is still in progress.": the first
            # request may yet be accepted, so this is in doubt (no status), to be retried with the same key.
            raise ProviderError(f"resend: {text}", body=response.text, retryable=True, retry_after=1.0)
        if status == 409:
            # "Same idempotency key used with a different request payload.": whatever the first
            # request did is unknown to us, and sending this payload could duplicate it.
            return all_outcomes(batch, "unknown", reason=f"resend {name or 409}: {text}")
        if status == 422 and _ABOUT_TO.search(text):
            named = {m.to for m in batch.messages if names_address(text, m.to)}
            if not named and len(batch.messages) == 1:  # alone in its batch, the refused `to` is theirs
                named = {batch.messages[0].to}
            if named:
                return [Outcome(m.to, "failed", reason=f"resend: {text}") if m.to in named else
                        Outcome(m.to, "retry", reason="batch refused because of another recipient; sent again")
                        for m in batch.messages]
        raise ProviderError(f"resend refused the batch (HTTP {status} {name}): {text}", status=status,
                            body=response.text, hint="nothing in this batch was sent")

    def _accepted(self, batch: Batch, body) -> list[Outcome]:
        """``{"data": [{"id"}], "errors": [{"index", "message"}]}``: ids in order for the emails not in errors."""
        data = body.get("data") if isinstance(body, dict) else None
        errors = body.get("errors") or [] if isinstance(body, dict) else []
        if not isinstance(data, list) or not isinstance(errors, list):
            return all_outcomes(batch, "unknown", reason="resend answered 200 without the documented data array")
        refused = {e.get("index"): str(e.get("message", "")) for e in errors if isinstance(e, dict)}
        messages = _ordered(batch)
        accepted = [i for i in range(len(messages)) if i not in refused]
        ours = {i: text for i, text in refused.items() if not _ABOUT_TO.search(text)}
        if ours and not accepted:  # nothing was sent, and the reason is not the recipients': stop, fail nobody
            text = "; ".join(dict.fromkeys(ours.values()))
            raise ProviderError(f"resend refused the batch: {text}", status=200, retryable=False,
                                hint="fix what Resend says; nothing in this batch was sent")
        ids = [d.get("id") if isinstance(d, dict) else None for d in data]
        readable = len(ids) == len(accepted) and all(ids)
        outcomes = []
        for i, message in enumerate(messages):
            if i in ours:  # beside accepted emails: back to pending; alone again, it stops the run above
                outcomes.append(Outcome(message.to, "retry", reason=f"resend: {ours[i]}; tried again without "
                                                                     "the accepted emails"))
            elif i in refused:
                outcomes.append(Outcome(message.to, "failed", reason=f"resend: {refused[i]}"))
            elif readable:
                outcomes.append(Outcome(message.to, "sent", provider_id=str(ids[accepted.index(i)])))
            else:
                outcomes.append(Outcome(message.to, "unknown", reason="resend's ids do not match the batch"))
        return outcomes

    # -- reconciliation --------------------------------------------------------------
    def reconcile(self, batch: Batch, session: requests.Session, *, age: float | None,
                  since_last_try: float | None = None) -> list[Outcome] | None:
        if not self.honours_key(age):  # age: since the first claim, so never younger than the first send
            return all_outcomes(batch, "unknown", reason="the batch's idempotency key has expired (24 h): "
                                                         "replaying it would send again")
        return self.send_batch(batch, session)

    # -- suppressions ---------------------------------------------------------------------
    def suppression_list(self, session: requests.Session) -> Iterator[ProviderSuppression]:
        """The team's suppressions, page by page (cursor: the last id, while ``has_more``)."""
        params: dict = {"limit": SUPPRESSION_PAGE}
        while True:
            body = self.get_json(session, "/suppressions", params, "suppressions list", expect=dict)
            items = body.get("data")
            if not isinstance(items, list):
                raise ProviderError("resend's suppressions list answered something we cannot read", status=200,
                                    body=json.dumps(body)[:500], retryable=True)
            for item in items:
                origin = str(item.get("origin", ""))
                yield ProviderSuppression(str(item.get("email", "")), _KIND_BY_ORIGIN.get(origin, "blocked"), origin)
            if not body.get("has_more") or not items or not items[-1].get("id"):
                return
            if items[-1]["id"] == params.get("after"):  # a cursor that does not move would loop for ever
                raise ProviderError("resend's suppressions list did not move past its cursor; cannot read it "
                                    "to the end", retryable=False, hint=PAGING_HINT)
            params = {"limit": SUPPRESSION_PAGE, "after": items[-1]["id"]}


def _ordered(batch: Batch) -> list[Message]:
    """Emails in address order: a batch rebuilt later (resume, reconcile) must be the very same payload,
    or Resend answers 409 "Same idempotency key used with a different request payload"."""
    return sorted(batch.messages, key=_order)


def _order(message: Message) -> str:
    return message.to.strip().lower()


def _tag(value: str) -> str:
    return _TAG_UNSAFE.sub("_", value)[:256] or "_"
