"""Mailgun: ``POST /v3/{domain}/messages`` (multipart), batch sending with recipient variables.

Up to 1000 ``to`` fields share one template; ``recipient-variables`` (JSON keyed
by address) holds each recipient's merge values, referenced as
``%recipient.h3%`` (HTML-escaped) and ``%recipient.t3%`` (raw). Recipient
variables also make Mailgun send one message per ``to`` instead of one message
showing every address. Headers whose value differs per recipient
(List-Unsubscribe) go the same way: ``h:List-Unsubscribe: %recipient.hdr0%``.

There is no Mailgun OpenAPI file in ../shared/provider-specs; this follows
Mailgun's documentation (messages API, batch sending, events API; checked
2026-11): the ``o:``, ``h:`` and ``v:`` options are limited to 16 kB in total,
at most 3 ``o:tag`` values, and a 200 answer carries one id for the whole call.
Reconciliation asks the events API for ``accepted`` events with the batch's tag.
"""

from __future__ import annotations

import base64
import email.utils
import json
import time
from urllib.parse import quote

import requests
from email_validator import EmailNotValidError, validate_email
from markupsafe import escape

from ..errors import ConfigError, ProviderError
from ..models import Message, Outcome
from .base import Batch, Provider, Request, all_outcomes, json_body, outcomes_from_logs

OPTIONS_LIMIT = 16 * 1024  # bytes of o:, h: and v: fields per call
MERGE_ALLOWANCE = 2048  # bytes of merge values assumed per recipient when cutting batches (checked when built)
EVENTS_DELAY = 30 * 60  # Mailgun: events can take up to ~30 minutes to show up; absence before that proves nothing
EVENTS_RETENTION = 2 * 86400  # events are kept at least 2 days (free plans) to 30 days


class MailgunProvider(Provider):
    name = "mailgun"
    default_origin = "https://api.mailgun.net"
    max_batch = 1000
    max_payload_bytes = 25 * 1000 * 1000  # Mailgun's maximum message size
    default_rate = 10.0
    reconcile_note = "Mailgun is asked through its events API (accepted events tagged with the batch)"

    def __init__(self, settings, api_key=None):
        super().__init__(settings, api_key)
        self.domain = settings.provider.domain
        if not self.domain or "/" in self.domain or "%" in self.domain:
            # A '/' makes Mailgun answer a cryptic 200 "Mailgun Magnificent API" (anymail's finding).
            raise ConfigError(f"[provider] domain must be your Mailgun sending domain, not {self.domain!r}",
                              path=settings.origins.get("provider.domain"),
                              hint='set domain = "mg.example.com" in [provider]')

    def _headers(self) -> dict[str, str]:
        # HTTP Basic with user "api" and the key as password, built here so it stays out of reprs.
        token = base64.b64encode(f"api:{self.api_key or ''}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    # -- verbs -----------------------------------------------------------------------
    def build_request(self, batch: Batch) -> Request:
        first = batch.messages[0]
        variables = {m.to: {} for m in batch.messages}
        html, text = self._bodies(batch, variables)
        fields: list[tuple[str, str]] = [("from", first.sender)]
        fields += [("to", email.utils.formataddr((m.to_name, m.to)) if m.to_name else m.to) for m in batch.messages]
        subject_is_shared = all(m.subject == first.subject for m in batch.messages)
        if not subject_is_shared:
            for m in batch.messages:
                variables[m.to]["subject"] = m.subject
        fields += [("subject", first.subject if subject_is_shared else "%recipient.subject%"),
                   ("text", text), ("html", html)]
        options = self._options(batch, variables)
        size = sum(len(k) + len(v.encode()) for k, v in options)
        if size > OPTIONS_LIMIT:
            raise ProviderError(f"mailgun: the o:, h: and v: options take {size} bytes, over Mailgun's 16 kB limit",
                                hint="shorten the headers shared by every message")
        fields += options
        fields.append(("recipient-variables", json.dumps(variables, ensure_ascii=False)))
        files = [(k, (None, v)) for k, v in fields]  # (None, value): a plain form field, sent as multipart
        return Request("POST", self.url(f"/v3/{quote(self.domain)}/messages"), self._headers(), files=files)

    def _bodies(self, batch: Batch, variables: dict) -> tuple[str, str]:
        if batch.template is None:
            first = batch.messages[0]
            if any(m.html != first.html or m.text != first.text for m in batch.messages):
                raise ProviderError("mailgun batches need the compiled template and per-recipient values "
                                    "(Batch.template, Batch.slot_values)", hint="this is a bug in the send loop")
            return first.html, first.text
        html_t, text_t = batch.template["html"], batch.template["text"]
        html_slots, text_slots = sorted(set(html_t.slot_ids)), sorted(set(text_t.slot_ids))
        for message, values in zip(batch.messages, batch.slot_values):
            mine = variables[message.to]
            mine.update({f"h{i}": str(escape(values[i])) for i in html_slots})
            mine.update({f"t{i}": values[i] for i in text_slots})
        return (html_t.with_placeholders(lambda i: f"%recipient.h{i}%"),
                text_t.with_placeholders(lambda i: f"%recipient.t{i}%"))

    def _options(self, batch: Batch, variables: dict) -> list[tuple[str, str]]:
        first = batch.messages[0]
        provider = self.settings.provider
        options = [("o:tag", batch.issue_id[:128]), ("o:tag", batch.idempotency_key[:128]),
                   ("o:tracking-opens", "yes" if provider.track_opens else "no"),
                   ("o:tracking-clicks", "yes" if provider.track_clicks else "no"),
                   ("v:newsletter-issue", batch.issue_id), ("v:newsletter-batch", batch.batch_id)]
        if provider.test_mode:
            options.append(("o:testmode", "yes"))
        if first.reply_to:
            options.append(("h:Reply-To", first.reply_to))
        names = list(dict.fromkeys(name for m in batch.messages for name in m.headers))
        for n, name in enumerate(names):
            values = [m.headers.get(name, "") for m in batch.messages]
            if all(v == values[0] for v in values):
                options.append((f"h:{name}", values[0]))
                continue
            for m, value in zip(batch.messages, values):  # differs per recipient: a recipient variable
                variables[m.to][f"hdr{n}"] = value
            options.append((f"h:{name}", f"%recipient.hdr{n}%"))
        return options

    def payload_size(self, message: Message) -> int:
        own = 2 * len(message.to) + len(message.to_name) + len(json.dumps(message.subject))
        return own + sum(len(v) for v in message.headers.values()) + MERGE_ALLOWANCE

    def parse_response(self, batch: Batch, response: requests.Response) -> list[Outcome]:
        body = json_body(response)
        status = response.status_code
        if status == 200:
            # The only documented 200: {"id": "<20160306015544.116301.25145@example.org>", "message": "Queued. Thank you."}
            # A wrong endpoint answers 200 "Mailgun Magnificent API" (HTML): not a send.
            if isinstance(body, dict) and body.get("id") and str(body.get("message", "")).startswith("Queued"):
                return all_outcomes(batch, "sent", provider_id=str(body["id"]))
            return all_outcomes(batch, "unknown", reason="mailgun answered 200 without the documented "
                                                         "'Queued. Thank you.' and message id")
        text = str(body.get("message", "")) if isinstance(body, dict) else response.text[:200]
        if status == 404:
            raise ProviderError(f"mailgun: {text or 'not found'}", status=404, body=response.text,
                                hint=f"check [provider] domain ({self.domain}) and the region in api_base "
                                     "(EU domains: https://api.eu.mailgun.net)")
        if status == 400 and ("'to'" in text or "to parameter" in text or "recipient" in text.lower()):
            return self._rejected_recipients(batch, text)
        raise ProviderError(f"mailgun refused the batch (HTTP {status}): {text}", status=status,
                            body=response.text, hint="nothing in this batch was sent")

    def _rejected_recipients(self, batch: Batch, text: str) -> list[Outcome]:
        """'to' parameter is not a valid address: Mailgun does not say which one, so we find it ourselves."""
        named = {m.to for m in batch.messages if m.to.lower() in text.lower()}
        bad = named or {m.to for m in batch.messages if not _valid(m.to)}
        if not bad:  # cannot tell which: failing them all is safe, sending them again could loop forever
            return all_outcomes(batch, "failed", reason=f"mailgun: {text}")
        return [Outcome(m.to, "failed", reason=f"mailgun: {text}") if m.to in bad else
                Outcome(m.to, "retry", reason="batch refused because of another recipient; sent again")
                for m in batch.messages]

    # -- reconciliation --------------------------------------------------------------
    def reconcile(self, batch: Batch, session: requests.Session, *, age: float | None,
                  since_last_try: float | None = None) -> list[Outcome] | None:
        return outcomes_from_logs(
            batch, self._accepted_events(batch, session, age), age=age, since_last_try=since_last_try,
            delay=EVENTS_DELAY, retention=EVENTS_RETENTION,
            missing="mailgun has no 'accepted' event for this message",
            not_yet="no 'accepted' event yet; mailgun's events are conclusive from 30 minutes to 2 days "
                    "after a send; try again later")

    def _accepted_events(self, batch: Batch, session: requests.Session, age: float | None) -> dict[str, str]:
        begin = time.time() - (age or EVENTS_RETENTION) - 3600
        url = self.url(f"/v3/{quote(self.domain)}/events")
        params: dict | None = {"event": "accepted", "tags": batch.idempotency_key[:128], "limit": 300,
                               "ascending": "yes", "begin": f"{begin:.0f}"}
        accepted: dict[str, str] = {}
        for _ in range(1000):  # pages of 300: far more than one batch's 1000 recipients
            body = self._get(session, url, params)
            items = body.get("items") or []
            for item in items:
                message_id = ((item.get("message") or {}).get("headers") or {}).get("message-id", "")
                accepted[str(item.get("recipient", "")).lower()] = str(message_id)
            url, params = (body.get("paging") or {}).get("next", ""), None
            if not items or not url:
                break
            if not url.startswith(self.url("/")):  # never send the key to another host
                raise ProviderError("mailgun's events paging pointed to another host", retryable=False)
        return accepted

    def _get(self, session: requests.Session, url: str, params: dict | None) -> dict:
        try:
            response = session.get(url, params=params, headers=self._headers(), timeout=self.timeout)
        except requests.RequestException as err:
            raise ProviderError(f"mailgun: events look-up failed ({type(err).__name__})", retryable=True) from err
        self.raise_for_status(response)
        body = json_body(response)
        if response.status_code != 200 or not isinstance(body, dict):
            raise ProviderError(f"mailgun's events API answered HTTP {response.status_code}",
                                status=response.status_code, body=response.text)
        return body


def _valid(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False)
        return True
    except EmailNotValidError:
        return False
