"""SendGrid v3: ``POST /v3/mail/send``, one template, one personalization per recipient.

The compiled issue goes once in ``content``; each recipient's merge values ride
in ``personalizations[].substitutions`` (keys like ``-zqh3-``), so a batch of
1000 costs one copy of the body plus a few hundred bytes a recipient. Values for
the HTML part are HTML-escaped exactly as :meth:`SlotTemplate.fill` does, the
text part gets them raw. Each personalization also carries the recipient's own
subject and List-Unsubscribe headers.

SendGrid is all-or-nothing: 202 + ``X-Message-Id`` means every recipient was
accepted; a 400 lists what it refused. It has no idempotency key, and only the
paid Email Activity API could tell whether an in-doubt batch went out.
"""

from __future__ import annotations

import json
import re
from typing import Mapping

import requests
from markupsafe import escape

from ..errors import ProviderError
from ..models import Message, Outcome
from ..slots import SlotTemplate
from .base import Batch, Provider, Request, all_outcomes, json_body, split_address

SUBSTITUTIONS_LIMIT = 10_000  # bytes per personalization (SendGrid's documented cap)
# "field": "personalizations.3.to.0.email" -> the 4th recipient of the batch
_PERSONALIZATION_FIELD = re.compile(r"^personalizations\.(\d+)\b")


def html_key(slot: int) -> str:
    return f"-zqh{slot}-"


def text_key(slot: int) -> str:
    return f"-zqt{slot}-"


class SendGridProvider(Provider):
    name = "sendgrid"
    default_origin = "https://api.sendgrid.com"
    max_batch = 1000
    # 30 MB per request; the body is sent once per batch and a recipient weighs at most
    # SUBSTITUTIONS_LIMIT + its own fields, so leave room for one large body.
    max_payload_bytes = 30 * 1000 * 1000 - 2 * 1000 * 1000
    default_rate = 10.0
    reconcile_note = ("SendGrid cannot say whether an in-doubt batch was accepted without its paid "
                      "Email Activity API add-on; check the SendGrid dashboard, then use "
                      "`newsletter send --resend-unknown` if they never went out")

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key or ''}", "Content-Type": "application/json"}

    # -- verbs -----------------------------------------------------------------------
    def build_request(self, batch: Batch) -> Request:
        first = batch.messages[0]
        html, text, substitutions = self._content(batch)
        name, address = split_address(first.sender)
        body: dict = {
            "personalizations": [self._personalization(batch, m, subs)
                                 for m, subs in zip(batch.messages, substitutions)],
            "from": _address(name, address),
            "subject": first.subject,  # each personalization overrides it with the recipient's own
            "content": [{"type": "text/plain", "value": text}, {"type": "text/html", "value": html}],
            "categories": [_ascii(batch.issue_id)],
            "tracking_settings": {
                "click_tracking": {"enable": bool(self.settings.provider.track_clicks),
                                   "enable_text": bool(self.settings.provider.track_clicks)},
                "open_tracking": {"enable": bool(self.settings.provider.track_opens)},
            },
        }
        if first.reply_to:
            body["reply_to"] = _address(*split_address(first.reply_to))
        if self.settings.provider.test_mode:
            body["mail_settings"] = {"sandbox_mode": {"enable": True}}
        return Request("POST", self.url("/v3/mail/send"), self._headers(), json=body)

    def _content(self, batch: Batch) -> tuple[str, str, list[dict[str, str]]]:
        """The shared html and text with placeholders, and each recipient's substitutions."""
        if batch.template is None:
            return _identical_content(batch)
        html_t: SlotTemplate = batch.template["html"]
        text_t: SlotTemplate = batch.template["text"]
        html_slots, text_slots = sorted(set(html_t.slot_ids)), sorted(set(text_t.slot_ids))
        substitutions = []
        for message, values in zip(batch.messages, batch.slot_values):
            subs = {html_key(i): str(escape(values[i])) for i in html_slots}
            subs.update({text_key(i): values[i] for i in text_slots})
            if len(json.dumps(subs)) > SUBSTITUTIONS_LIMIT:
                raise ProviderError(f"the merge values for {message.to} exceed SendGrid's "
                                    f"{SUBSTITUTIONS_LIMIT}-byte substitution limit",
                                    hint="shorten that subscriber's fields in the list")
            substitutions.append(subs)
        return html_t.with_placeholders(html_key), text_t.with_placeholders(text_key), substitutions

    def _personalization(self, batch: Batch, message: Message, substitutions: Mapping[str, str]) -> dict:
        item: dict = {"to": [_address(message.to_name, message.to)], "subject": message.subject,
                      "custom_args": {"issue": batch.issue_id, "batch": batch.batch_id}}
        if message.headers:
            item["headers"] = dict(message.headers)
        if substitutions:
            item["substitutions"] = dict(substitutions)
        return item

    def payload_size(self, message: Message) -> int:
        # Per recipient: its own fields plus at most SUBSTITUTIONS_LIMIT of merge values (checked when built).
        own = len(message.to) + len(message.to_name) + len(json.dumps(message.subject))
        return own + sum(len(k) + len(v) for k, v in message.headers.items()) + SUBSTITUTIONS_LIMIT + 256

    def parse_response(self, batch: Batch, response: requests.Response) -> list[Outcome]:
        status = response.status_code
        if status == 202:  # "202 Accepted": every personalization is queued
            return all_outcomes(batch, "sent", provider_id=response.headers.get("X-Message-Id", ""))
        if status == 200 and self.settings.provider.test_mode and not response.content.strip():
            # sandbox_mode answers "200 OK" with an empty body: validated, not delivered
            return all_outcomes(batch, "sent", provider_id="sandbox")
        if status in (400, 413):
            return self._rejected(batch, response)
        if 200 <= status < 300:
            return all_outcomes(batch, "unknown", reason=f"sendgrid answered HTTP {status}, not the documented 202")
        raise ProviderError(f"sendgrid answered HTTP {status}", status=status, body=response.text,
                            retryable=False, hint="nothing in this batch was sent")

    def _rejected(self, batch: Batch, response: requests.Response) -> list[Outcome]:
        """400: refused recipients fail; if every error names a recipient, the others go back to pending."""
        body = json_body(response)
        errors = body.get("errors") if isinstance(body, dict) else None
        by_index: dict[int, str] = {}
        general = []
        for error in errors if isinstance(errors, list) else []:
            error = error if isinstance(error, dict) else {}
            match = _PERSONALIZATION_FIELD.match(str(error.get("field") or ""))
            if match and int(match.group(1)) < len(batch.messages):
                by_index.setdefault(int(match.group(1)), str(error.get("message", "")))
            else:
                general.append(str(error.get("message") or error))
        if general or not by_index:
            text = "; ".join(general) or response.text[:200]
            raise ProviderError(f"sendgrid refused the batch (HTTP {response.status_code}): {text}",
                                status=response.status_code, body=response.text, retryable=False,
                                hint="fix the sender or settings it names; nothing in this batch was sent")
        return [Outcome(m.to, "failed", reason=f"sendgrid: {by_index[i]}") if i in by_index else
                Outcome(m.to, "retry", reason="batch refused because of another recipient; sent again")
                for i, m in enumerate(batch.messages)]


def _address(name: str, address: str) -> dict[str, str]:
    return {"email": address, "name": name} if name else {"email": address}


def _ascii(value: str) -> str:
    return value.encode("ascii", "replace").decode()[:255]


def _identical_content(batch: Batch) -> tuple[str, str, list[dict[str, str]]]:
    """Without a template every recipient must get the same body (proof copies), else we cannot batch."""
    first = batch.messages[0]
    if any(m.html != first.html or m.text != first.text for m in batch.messages):
        raise ProviderError("sendgrid batches need the compiled template and per-recipient values "
                            "(Batch.template, Batch.slot_values)", hint="this is a bug in the send loop")
    return first.html, first.text, [{} for _ in batch.messages]
