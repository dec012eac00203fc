"""SendGrid v3: ``POST /v3/mail/send``, one template, one personalization per recipient.

The compiled issue goes once in ``content``; each recipient's merge values ride
in ``personalizations[].substitutions`` (keys like ``-zqh3-``), so a batch of
1000 costs one copy of the body plus a few hundred bytes a recipient. Values for
the HTML part are HTML-escaped exactly as :meth:`SlotTemplate.fill` does, the
text part gets them raw. Each personalization also carries the recipient's own
subject and List-Unsubscribe headers.

SendGrid is all-or-nothing: 202 + ``X-Message-Id`` means every recipient was
accepted; a 400 lists what it refused, each error with the ``field`` it is
about. An error on ``personalizations.N.to`` (the address) is recipient N's: it
fails and the others are sent again without it. An error on another field of a
personalization (subject, headers, substitutions) is recipient N's only when
other recipients of the batch did not get it; the same error for every one of
them, or any error outside the personalizations (``from``, ``content``), is
about the request: the run stops and nobody is failed. A recipient whose merge
values exceed the 10,000-byte substitutions cap cannot be sent this way at all:
a :class:`~newsletter.errors.RecipientError` before the call (the body is shared,
so they cannot be given a body of their own in this request). It has no
idempotency key, and only the paid Email Activity API could tell whether an
in-doubt batch went out.

With ``[unsubscribe] url = "provider"`` each request names the newsletter's unsubscribe
group (``asm.group_id``, ``[provider] asm_group_id``; the Mail Send spec: "An object allowing
you to specify how to handle unsubscribes") and the body carries SendGrid's substitution tag
``<%asm_group_unsubscribe_raw_url%>`` where the layout has the unsubscribe link, which SendGrid
replaces with the reader's link to leave that group. It adds the List-Unsubscribe headers
itself (its List-Unsubscribe guide and support article 20631133325467), so ours are left out.
Those who leave land in the group's suppressions, which ``newsletter suppressions sync`` reads
(``GET /v3/asm/groups/{group_id}/suppressions``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import date
from typing import Iterator, Mapping

import requests

from ..errors import ProviderError, RecipientError
from ..jsontext import json_size, json_strings, json_with_array, quoted
from ..models import Message, Outcome
from ..unsubscribe import PROVIDER_MANAGED
from .answers import PAGING_HINT, json_body
from .base import Batch, Provider, ProviderSuppression, Request, all_outcomes, split_address, template_once
from .managed import link_in_bodies
from .stats import IssueStats, count

# The suppression lists `newsletter suppressions sync` reads, and what each means. Blocks are left out:
# SendGrid keeps those for temporary refusals (a full mailbox, a reputation block), not for good.
SUPPRESSION_LISTS = (("bounces", "bounced"), ("invalid_emails", "bounced"), ("spam_reports", "complained"),
                     ("unsubscribes", "unsubscribed"))
SUPPRESSION_PAGE = 500  # the suppression endpoints' largest `limit`
SUBSTITUTIONS_LIMIT = 10_000  # bytes per personalization (SendGrid's documented cap)
# "field": "personalizations.3.to.0.email" -> the 4th recipient of the batch, and the part of it
_PERSONALIZATION_FIELD = re.compile(r"^personalizations\.(\d+)(?:\.([\w.]*))?$")
# SendGrid's substitution tag for the link that unsubscribes the reader from the request's group (asm.group_id).
GROUP_UNSUBSCRIBE_TAG = "<%asm_group_unsubscribe_raw_url%>"


def html_key(slot: int) -> str:
    return f"-zqh{slot}-"


def text_key(slot: int) -> str:
    return f"-zqt{slot}-"


class SendGridProvider(Provider):
    name = "sendgrid"
    default_origin = "https://api.sendgrid.com"
    sync_key_hint = "sync reads the suppression lists: the key needs Suppressions read access (a Mail Send-only key is refused)"
    max_batch = 1000
    substitutes = True  # the template once, per-recipient values: no per-reader bodies needed
    # 30 MB per request; the body is sent once per batch and a recipient weighs at most
    # SUBSTITUTIONS_LIMIT + its own fields, so leave room for one large body.
    max_payload_bytes = 30 * 1000 * 1000 - 2 * 1000 * 1000
    default_rate = 10.0
    reconcile_note = ("SendGrid cannot say whether an in-doubt batch was accepted without its paid "
                      "Email Activity API add-on; check the SendGrid dashboard, then use "
                      "`newsletter send --resend-unknown` if they never went out")
    stats_key_hint = ("report reads the category statistics: the key needs Stats read access (the stats.read and "
                      "categories.stats.read scopes; a Mail Send-only key is refused)")
    sender_hint = ("verify the From address as a Sender Identity in SendGrid (Settings > Sender "
                   "Authentication: a single sender or the whole domain)")
    unsubscribe_placeholder = GROUP_UNSUBSCRIBE_TAG  # filled per recipient for the request's unsubscribe group

    @classmethod
    def unsubscribe_refusal(cls, settings) -> str:
        if settings.provider.asm_group_id:
            return ""
        return ("SendGrid manages unsubscribes through an unsubscribe group, and [provider] asm_group_id is not set: "
                "add the line `asm_group_id = 12345` under [provider], with your group's id (SendGrid: "
                "Suppressions > Unsubscribe Groups)")

    @property
    def _managed(self) -> bool:
        return self.settings.unsubscribe.url == PROVIDER_MANAGED

    def read_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key or ''}", "Accept": "application/json"}

    def _headers(self) -> dict[str, str]:
        return {**self.read_headers(), "Content-Type": "application/json"}

    # -- verbs -----------------------------------------------------------------------
    def build_request(self, batch: Batch) -> Request:
        first = batch.messages[0]
        html, text, substitutions = self._content(batch)
        name, address = split_address(first.sender)
        # The shared part as a dict, each recipient's personalization as JSON text (json_strings): a batch
        # holds 1000 of them, and encoding them as dicts cost more than everything else a recipient needs.
        custom_args = json.dumps({"issue": batch.issue_id, "batch": batch.batch_id})
        body: dict = {
            "personalizations": [],
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
        if self._managed:  # the group's link replaces the tag; unsubscribing leaves that group only
            group = self.settings.provider.asm_group_id
            body["asm"] = {"group_id": group, "groups_to_display": [group]}
        if self.settings.provider.test_mode:
            body["mail_settings"] = {"sandbox_mode": {"enable": True}}
        people = [_personalization(m, subs, custom_args) for m, subs in zip(batch.messages, substitutions)]
        return Request("POST", self.url("/v3/mail/send"), self._headers(),
                       data=json_with_array(body, "personalizations", people))

    def _content(self, batch: Batch) -> tuple[str, str, list[dict[str, str]]]:
        """The shared html and text with placeholders, and each recipient's substitutions."""
        key = (lambda part, i: html_key(i) if part == "html" else text_key(i))
        html, text, substitutions = template_once(batch, key, lambda name: name)
        if self._managed:
            html, text, substitutions = link_in_bodies(batch, html, text, substitutions, GROUP_UNSUBSCRIBE_TAG,
                                                       key, key)
        if batch.template is not None:
            _check_substitution_sizes(batch, substitutions)
        return html, text, substitutions

    def payload_size(self, message: Message) -> int:
        # Per recipient: its own fields plus its merge values, when the send loop weighed them
        # (Message.body_bytes), else at most SUBSTITUTIONS_LIMIT of them (checked when built).
        own = json_size(message.to + message.to_name + message.subject) + 4  # weighed joined: two more quotes each
        merge = message.body_bytes if message.body_bytes >= 0 else SUBSTITUTIONS_LIMIT  # weighed by the send loop
        return own + sum(len(k) + len(v) for k, v in message.headers.items()) + merge + 256

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
        """400: recipients the errors attribute to fail, the others go back to pending; else the request is refused."""
        body = json_body(response)
        errors = body.get("errors") if isinstance(body, dict) else None
        personal: dict[int, list[tuple[str, str]]] = {}  # recipient index -> [(field within it, message)]
        general = []
        for error in errors if isinstance(errors, list) else []:
            error = error if isinstance(error, dict) else {}
            match = _PERSONALIZATION_FIELD.match(str(error.get("field") or ""))
            if match and int(match.group(1)) < len(batch.messages):
                personal.setdefault(int(match.group(1)), []).append((match.group(2) or "",
                                                                     str(error.get("message", ""))))
            else:
                general.append(str(error.get("message") or error))
        theirs, shared = _attribute(personal, len(batch.messages))
        general += shared
        if general or not theirs:
            text = "; ".join(dict.fromkeys(general)) or response.text[:200]
            raise ProviderError(f"sendgrid refused the batch (HTTP {response.status_code}): {text}",
                                status=response.status_code, body=response.text, retryable=False,
                                hint="fix the sender or settings it names; nothing in this batch was sent")
        return [Outcome(m.to, "failed", reason=f"sendgrid: {theirs[i]}") if i in theirs else
                Outcome(m.to, "retry", reason="batch refused because of another recipient; sent again")
                for i, m in enumerate(batch.messages)]

    # -- suppressions ---------------------------------------------------------------------
    def suppression_list(self, session: requests.Session) -> Iterator[ProviderSuppression]:
        """Bounces, invalid addresses, spam reports and global unsubscribes, page by page (limit/offset),
        then the unsubscribe group's suppressions (``[provider] asm_group_id``, when set)."""
        yield from self._account_suppressions(session)
        group = self.settings.provider.asm_group_id
        if group:
            yield from self._group_suppressions(session, group)

    def _group_suppressions(self, session: requests.Session, group: int) -> Iterator[ProviderSuppression]:
        """``GET /v3/asm/groups/{group_id}/suppressions``: every address of the group, as an array of strings
        (the endpoint documents no paging)."""
        what = f"unsubscribe group {group}"
        addresses = self.get_json(session, f"/v3/asm/groups/{group}/suppressions", None, what, expect=list)
        if not all(isinstance(address, str) for address in addresses):
            raise ProviderError(f"sendgrid's {what} answered something other than a list of addresses", status=200,
                                retryable=True)
        for address in addresses:
            yield ProviderSuppression(address, "unsubscribed", what)

    def _account_suppressions(self, session: requests.Session) -> Iterator[ProviderSuppression]:
        for name, kind in SUPPRESSION_LISTS:
            offset, previous = 0, None
            while True:
                page = self.get_json(session, f"/v3/suppression/{name}",
                                     {"limit": SUPPRESSION_PAGE, "offset": offset}, f"{name} list", expect=list)
                if page and page == previous:  # an offset the server ignores would loop for ever
                    raise ProviderError(f"sendgrid's {name} list answered the same page for offset {offset}; "
                                        "cannot read it to the end", retryable=False, hint=PAGING_HINT)
                previous = page
                for item in page:
                    item = item if isinstance(item, dict) else {}
                    yield ProviderSuppression(str(item.get("email", "")), kind,
                                              f"{name}: {item.get('reason') or item.get('status') or ''}".rstrip(": "))
                if len(page) < SUPPRESSION_PAGE:
                    break
                offset += len(page)


    # -- per-issue figures ---------------------------------------------------------------
    def issue_stats(self, session: requests.Session, issue_id: str, since: date, *,
                    detail: bool = True) -> IssueStats:
        """Category statistics (every message carries the issue id as its category), one row per day since
        ``since``, summed. SendGrid gives no per-link figures without its paid Email Activity API."""
        days = self.get_json(session, "/v3/categories/stats",
                             {"categories": _ascii(issue_id), "start_date": since.isoformat(), "aggregated_by": "day"},
                             "category stats", expect=list)
        totals: Counter = Counter()
        opens_by_day, clicks_by_day = [], []
        for day in days:
            metrics = _category_metrics(day)
            totals.update({name: value for name, value in metrics.items() if value is not None})
            opens_by_day.append((str(day.get("date", ""))[:10], metrics.get("unique_opens") or 0))
            clicks_by_day.append((str(day.get("date", ""))[:10], metrics.get("unique_clicks") or 0))
        given = (lambda name: totals[name] if days else None)
        return IssueStats(processed=given("processed"), delivered=given("delivered"), bounced=given("bounces"),
                          complained=given("spam_reports"), unsubscribed=given("unsubscribes"),
                          opens=given("opens"), unique_opens=given("unique_opens"), clicks=given("clicks"),
                          unique_clicks=given("unique_clicks"),
                          opens_by_day=tuple(opens_by_day) if detail else (),
                          clicks_by_day=tuple(clicks_by_day) if detail else (),
                          notes=("SendGrid's per-link clicks need its paid Email Activity API: not shown",))


def _category_metrics(day: object) -> dict[str, int | None]:
    """``{"date", "stats": [{"type": "category", "name", "metrics": {...}}]}`` -> the metrics of its one category."""
    stats = day.get("stats") if isinstance(day, dict) else None
    if not isinstance(stats, list) or len(stats) > 1 or (stats and not isinstance(stats[0], dict)):
        raise ProviderError("sendgrid's category stats answered a day we cannot read", status=200,
                            body=json.dumps(day)[:500], retryable=True)
    metrics = (stats[0].get("metrics") if stats else None) or {}
    return {name: count(value) for name, value in metrics.items()} if isinstance(metrics, dict) else {}


def _attribute(personal: dict[int, list[tuple[str, str]]], size: int) -> tuple[dict[int, str], list[str]]:
    """Split personalization errors into each recipient's own (index -> message) and the request's.

    The address (``to``) is always the recipient's. Another field is theirs only when some recipient of
    the batch did not get the same error: an error every personalization shares (a header name SendGrid
    reserves, a subject too long for everyone) comes from the issue or the settings, not from them.
    """
    counts: dict[tuple[str, str], int] = {}
    for entries in personal.values():
        for key in set((field.split(".")[0], message) for field, message in entries):
            counts[key] = counts.get(key, 0) + 1
    theirs: dict[int, str] = {}
    shared: list[str] = []
    for index, entries in sorted(personal.items()):
        for field, message in entries:
            part = field.split(".")[0]
            if part == "to" or counts[(part, message)] < size:
                theirs.setdefault(index, message)
            else:
                shared.append(f"{message} (personalizations.*.{field})" if field else message)
    return theirs, shared


def _check_substitution_sizes(batch: Batch, substitutions: list[dict[str, str]]) -> None:
    """SendGrid refuses a personalization with over 10,000 bytes of substitutions, and with it the batch.

    Over for a few recipients: their values are too long (:class:`RecipientError` for the first; the
    others are sent). Over for most of a batch, or for the merge-field keys alone: the issue has too many
    merge fields, and failing its readers one by one would fail the whole list.
    """
    over = [m.to for m, subs in zip(batch.messages, substitutions)
            if _json_bytes_at_most(m, subs) > SUBSTITUTIONS_LIMIT and _json_bytes(subs) > SUBSTITUTIONS_LIMIT]
    if not over:
        return
    keys_alone = _json_bytes({key: "" for key in substitutions[0]})
    if keys_alone > SUBSTITUTIONS_LIMIT or (len(batch.messages) > 1 and 2 * len(over) > len(batch.messages)):
        raise ProviderError(f"this issue's merge fields take more than SendGrid's {SUBSTITUTIONS_LIMIT}-byte "
                            f"substitution limit for {len(over)} of the {len(batch.messages)} recipients of a "
                            f"batch ({len(substitutions[0])} slots)",
                            hint="use fewer or shorter merge fields in the issue and its layout; nothing was sent")
    raise RecipientError(over[0], f"the merge values for {over[0]} exceed SendGrid's {SUBSTITUTIONS_LIMIT}-byte "
                         "substitution limit; not sent to this recipient",
                         hint="shorten that subscriber's fields in the list, then `newsletter send` again")


def _json_bytes(value) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode())


def _json_bytes_at_most(message: Message, substitutions: Mapping[str, str]) -> int:
    """An upper bound of ``_json_bytes(substitutions)`` at a fraction of its cost (it runs per recipient):
    the weight the send loop gave the recipient's merge values, when it did."""
    if message.body_bytes >= 0:
        return message.body_bytes
    return 2 + sum(json_size(k) + json_size(v) + 4 for k, v in substitutions.items())


def _personalization(message: Message, substitutions: Mapping[str, str], custom_args: str) -> str:
    """One recipient's personalization, as the JSON text ``json.dumps`` writes for ``{"to": [...], "subject":
    ..., "custom_args": ..., "headers": ..., "substitutions": ...}`` (the last two only when not empty)."""
    to = (f'{{"email": {quoted(message.to)}, "name": {quoted(message.to_name)}}}' if message.to_name
          else f'{{"email": {quoted(message.to)}}}')
    text = f'{{"to": [{to}], "subject": {quoted(message.subject)}, "custom_args": {custom_args}'
    if message.headers:
        text += f', "headers": {json_strings(message.headers)}'
    if substitutions:
        text += f', "substitutions": {json_strings(substitutions)}'
    return text + "}"


def _address(name: str, address: str) -> dict[str, str]:
    return {"email": address, "name": name} if name else {"email": address}


def _ascii(value: str) -> str:
    return value.encode("ascii", "replace").decode()[:255]
