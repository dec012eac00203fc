"""Mailgun: ``POST /v3/{domain}/messages`` (multipart), batch sending with recipient variables.

Up to 1000 ``to`` fields share one template; ``recipient-variables`` (JSON keyed
by address) holds each recipient's merge values, referenced as
``%recipient.h3%`` (HTML-escaped) and ``%recipient.t3%`` (raw). Recipient
variables also make Mailgun send one message per ``to`` instead of one message
showing every address. Headers whose value differs per recipient
(List-Unsubscribe) go the same way: ``h:List-Unsubscribe: %recipient.hdr0%``.

There is no Mailgun OpenAPI file among the specs in tests/fixtures/specs; this follows
Mailgun's documentation (messages API, batch sending, events API; checked
2026-11): the ``o:``, ``h:`` and ``v:`` options are limited to 16 kB in total,
at most 3 ``o:tag`` values, and a 200 answer carries one id for the whole call.

Mailgun is all-or-nothing and its 400 says only what, never which recipient. Of
its documented texts one is about a recipient: "'to' parameter is not a valid
address. please check documentation"; we find the culprit ourselves (named in
the text, or invalid to our validator; alone in its batch, it is that one), the
others are sent again. Every other 400 ("'recipient-variables' parameter is
not a valid JSON", "'from' parameter is not a valid address", "Need at least
one of 'text' or 'html' parameters specified", ...) is about the request: the
run stops and nobody is failed.

Tags: a domain may hold 20,000 distinct tags (Mailgun's default), so each call
carries one stable tag, the issue id, never one per batch; the batch id rides in
the user variable ``v:newsletter-batch``. The events API cannot filter on user
variables (its documented filters: event, list, attachment, from, message-id,
subject, to, size, recipient, recipients, tags, severity), so reconciliation
asks for the issue's ``accepted`` events inside the batch's time window and
keeps those whose ``user-variables`` name the batch.

With ``[unsubscribe] url = "provider"`` the body carries Mailgun's ``%unsubscribe_url%`` where the
layout has the unsubscribe link ("Link to unsubscribe recipient from all messages sent by given
domain", Tracking Unsubscribes). Its documented way, which we follow: "Enable the Unsubscription
feature for your domain. Remove text in the HTML and text footer so they won't be appended
automatically. Insert a variable in the HTML and text bodies of your email"; with the feature on,
Mailgun adds the List-Unsubscribe and List-Unsubscribe-Post headers itself (help article 203306610:
"Mailgun's automatic addition of the necessary List-Unsubscribe and List-Unsubscribe-Post headers"),
so we add none (a second List-Unsubscribe of ours would compete with it). ``preflight`` asks the
domain's tracking settings (``GET /v3/domains/{name}/tracking``) and refuses to send when the
feature is off: nobody's link would work.
"""

from __future__ import annotations

import base64
import email.utils
import json
import re
import time
from collections import Counter
from datetime import date, datetime, timezone
from datetime import time as dt_time
from typing import Iterator
from urllib.parse import quote

import requests
from email_validator import EmailNotValidError, validate_email

from ..errors import AuthError, ConfigError, ProviderError
from ..jsontext import json_size
from ..models import Message, Outcome
from ..unsubscribe import PROVIDER_MANAGED
from .answers import PAGING_HINT, json_body, names_address, provider_message
from .multipart import multipart_form
from .base import Batch, Provider, ProviderSuppression, Request, all_outcomes, outcomes_from_logs, template_once
from .managed import link_in_bodies
from .stats import TOP_LINKS, IssueStats, count

OPTIONS_LIMIT = 16 * 1024  # bytes of o:, h: and v: fields per call
MERGE_ALLOWANCE = 2048  # bytes of merge values assumed per recipient when cutting batches (checked when built)
EVENTS_DELAY = 30 * 60  # Mailgun: events can take up to ~30 minutes to show up; absence before that proves nothing
EVENTS_RETENTION = 2 * 86400  # events are kept at least 2 days (free plans) to 30 days
EVENTS_MARGIN = 3600  # seconds either side of the batch's tries when asking for its events (clock skew, queueing)
EVENTS_PAGES = 1000  # pages of 300 events: an issue of 300,000 readers; beyond that we cannot tell
CLICK_PAGES = 1000  # pages of 300 clicked events (300,000 clicks) read for an issue's most clicked links
# The suppression lists `newsletter suppressions sync` reads, and what each means. An unsubscribe may be for
# one tag only; it is taken for the whole list all the same: the reader asked to hear less from us.
SUPPRESSION_LISTS = (("bounces", "bounced"), ("complaints", "complained"), ("unsubscribes", "unsubscribed"))
SUPPRESSION_PAGE = 1000  # the suppression endpoints' largest `limit`
SUPPRESSION_PAGES = 10_000  # 10 million addresses a list: past that, paging that never ends
METRICS_PATH = "/v1/analytics/metrics"
METRICS_LIMIT = 1500  # rows in one answer: days since the issue was planned
# Our figure -> Mailgun's metric (docs: user-manual/reporting/metric-definitions).
METRICS = {"processed": "processed_count", "delivered": "delivered_count", "bounced": "permanent_failed_count",
           "complained": "complained_count", "unsubscribed": "unsubscribed_count", "opens": "opened_count",
           "unique_opens": "unique_opened_count", "clicks": "clicked_count", "unique_clicks": "unique_clicked_count"}
# The one documented 400 about a recipient (not "'from' parameter ...", not "'h:Reply-To' ...").
_TO_NOT_VALID = re.compile(r"(?:^|[\s\"])'?to'? parameter is not a valid address", re.I)
# Mailgun's variable for the link that unsubscribes the recipient from all mail of the sending domain.
UNSUBSCRIBE_VARIABLE = "%unsubscribe_url%"
_TRACKING_HINT = ("turn on unsubscribe tracking for the domain in Mailgun (Sending > Domain settings > Tracking) "
                  "and empty its HTML and text footers")


class MailgunProvider(Provider):
    name = "mailgun"
    default_origin = "https://api.mailgun.net"
    sync_key_hint = "sync reads the domain's suppressions: it needs the account's private API key (a domain sending key can only send)"
    max_batch = 1000
    substitutes = True  # the template once, per-recipient values: no per-reader bodies needed
    max_payload_bytes = 25 * 1000 * 1000  # Mailgun's maximum message size
    default_rate = 10.0
    reconcile_settles = float(EVENTS_DELAY)
    reconcile_note = ("Mailgun is asked through its events API (the issue's accepted events, "
                      "with the batch id in their user variables)")
    scope_key = "domain"
    stats_key_hint = ("report reads Mailgun's metrics: it needs the account's private API key (a domain sending "
                      "key can only send)")
    stats_queries = (METRICS_PATH,)
    sender_hint = ("a sandbox domain sends only to its authorized recipients: add them in Mailgun, or set "
                   "[provider] domain to your own verified sending domain")
    unsubscribe_placeholder = UNSUBSCRIBE_VARIABLE  # filled per recipient when the domain tracks unsubscribes

    def __init__(self, settings, api_key=None):
        super().__init__(settings, api_key)
        self.domain = settings.provider.domain
        if not self.domain or "/" in self.domain or "%" in self.domain:
            # A '/' makes Mailgun answer a cryptic 200 "Mailgun Magnificent API" (anymail's finding).
            raise ConfigError(f"[provider] domain must be your Mailgun sending domain, not {self.domain!r}",
                              path=settings.origins.get("provider.domain"),
                              hint='set domain = "mg.example.com" in [provider]')

    @classmethod
    def plan_scope(cls, settings) -> str:
        return settings.provider.domain.lower()  # DNS names compare without case

    def read_headers(self) -> dict[str, str]:
        # HTTP Basic with user "api" and the key as password, built here so it stays out of reprs.
        return {"Authorization": f"Basic {self._basic_token()}"}

    def _basic_token(self) -> str:
        return base64.b64encode(f"api:{self.api_key or ''}".encode()).decode()

    def secrets(self) -> list[str]:
        return super().secrets() + ([self._basic_token()] if self.api_key else [])

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
        body, content_type = multipart_form(fields)
        return Request("POST", self.url(f"/v3/{quote(self.domain)}/messages"),
                       {**self.read_headers(), "Content-Type": content_type}, data=body)

    def _bodies(self, batch: Batch, variables: dict) -> tuple[str, str]:
        key = (lambda part, i: f"{part[0]}{i}")
        html, text, merge = template_once(batch, key, lambda name: f"%recipient.{name}%")
        if self.settings.unsubscribe.url == PROVIDER_MANAGED:
            html, text, merge = link_in_bodies(batch, html, text, merge, UNSUBSCRIBE_VARIABLE,
                                               lambda part, i: f"%recipient.{key(part, i)}%", key)
        for message, mine in zip(batch.messages, merge):
            variables[message.to].update(mine)
        return html, text

    def _options(self, batch: Batch, variables: dict) -> list[tuple[str, str]]:
        first = batch.messages[0]
        provider = self.settings.provider
        options = [("o:tag", batch.issue_id[:128]),  # one stable tag per issue: a domain's tags are limited
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
        # its `to` field (an RFC 2047 name at most doubles), its key in recipient-variables, the multipart
        # part's own headers, and (when they differ) its subject
        own = 2 * json_size(message.to) + 2 * json_size(message.to_name) + json_size(message.subject) + 160
        merge = message.body_bytes if message.body_bytes >= 0 else MERGE_ALLOWANCE  # weighed by the send loop
        return own + sum(len(v) for v in message.headers.values()) + merge

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
        if 200 <= status < 300:  # not the documented 200: it may have been queued, so it is not a refusal
            return all_outcomes(batch, "unknown", reason=f"mailgun answered HTTP {status}, not the documented 200")
        text = provider_message(response)
        if status == 404:
            raise ProviderError(f"mailgun: {text or 'not found'}", status=404, body=response.text,
                                hint=f"check [provider] domain ({self.domain}) and the region in api_base "
                                     "(EU domains: https://api.eu.mailgun.net)")
        if status == 400 and _TO_NOT_VALID.search(text):
            return self._rejected_recipients(batch, text)
        raise ProviderError(f"mailgun refused the batch (HTTP {status}): {text}", status=status,
                            body=response.text, hint="fix what Mailgun says; nothing in this batch was sent")

    def _rejected_recipients(self, batch: Batch, text: str) -> list[Outcome]:
        """'to' parameter is not a valid address: Mailgun does not say which one, so we find it ourselves."""
        named = {m.to for m in batch.messages if names_address(text, m.to)}
        bad = named or {m.to for m in batch.messages if not _valid(m.to)}
        if not bad and len(batch.messages) == 1:
            bad = {batch.messages[0].to}
        if not bad:  # cannot tell which: failing them all would fail good readers for good
            raise ProviderError(f"mailgun refused an address of this batch but not which one ({text}), and "
                                f"all {len(batch.messages)} look valid to us", status=400, retryable=False,
                                hint="send again with NEWSLETTER_PROVIDER_BATCH_SIZE=1 to find it: alone in its "
                                     "batch, the address Mailgun refuses fails and the others are sent")
        return [Outcome(m.to, "failed", reason=f"mailgun: {text}") if m.to in bad else
                Outcome(m.to, "retry", reason="batch refused because of another recipient; sent again")
                for m in batch.messages]

    # -- before a send ---------------------------------------------------------------
    def preflight(self, session: requests.Session) -> list[str]:
        """With ``[unsubscribe] url = "provider"``: the domain must track unsubscribes, else Mailgun leaves
        ``%unsubscribe_url%`` unfilled and adds no List-Unsubscribe. Not knowing stops the send too."""
        if self.settings.unsubscribe.url != PROVIDER_MANAGED:
            return []
        where = self.settings.origins.get("unsubscribe.url")
        try:
            body = self.get_json(session, f"/v3/domains/{quote(self.domain)}/tracking", None,
                                 "domain tracking settings", expect=dict)
        except AuthError as err:
            raise AuthError(f"{err.message}; [unsubscribe] url = \"provider\" needs to read whether domain "
                            f"{self.domain} tracks unsubscribes", status=err.status, body=err.body,
                            hint="use the account's private API key (a domain sending key can only send)") from err
        except ProviderError as err:
            raise ProviderError(f"could not ask Mailgun whether domain {self.domain} tracks unsubscribes "
                                f"({err.message}), and with [unsubscribe] url = \"provider\" nothing is sent "
                                "without knowing", status=err.status, body=err.body, retryable=err.retryable,
                                hint="try again in a while; nothing was sent") from err
        unsubscribe = (body.get("tracking") or {}).get("unsubscribe")
        if not isinstance(unsubscribe, dict) or "active" not in unsubscribe:
            raise ProviderError(f"mailgun's tracking settings of domain {self.domain} do not say whether it tracks "
                                "unsubscribes; nothing was sent", status=200, retryable=True)
        if unsubscribe["active"] not in (True, "true", "yes"):
            raise ConfigError(f'[unsubscribe] url = "provider", but Mailgun\'s domain {self.domain} does not track '
                              "unsubscribes: nobody would get a working unsubscribe link", path=where,
                              hint=_TRACKING_HINT + '; or give your own page: url = '
                                   '"https://example.com/unsubscribe?t={token}"')
        if str(unsubscribe.get("html_footer") or "").strip() or str(unsubscribe.get("text_footer") or "").strip():
            return [f"Mailgun appends domain {self.domain}'s unsubscribe footer to every message, so readers see "
                    "two unsubscribe links; empty the footers (Sending > Domain settings > Tracking) for one"]
        return []

    # -- reconciliation --------------------------------------------------------------
    def reconcile(self, batch: Batch, session: requests.Session, *, age: float | None,
                  since_last_try: float | None = None) -> list[Outcome] | None:
        return outcomes_from_logs(
            batch, self._accepted_events(batch, session, age, since_last_try), age=age,
            since_last_try=since_last_try, delay=EVENTS_DELAY, retention=EVENTS_RETENTION,
            missing="mailgun has no 'accepted' event for this message",
            not_yet="no 'accepted' event yet; mailgun's events are conclusive from 30 minutes to 2 days "
                    "after a send; try again later")

    def _accepted_events(self, batch: Batch, session: requests.Session, age: float | None,
                         since_last_try: float | None = None) -> dict[str, str]:
        """recipient -> message id of the issue's accepted events whose user variables name this batch.

        The window runs from the batch's first claim to its last try (each with a margin): its events
        are in it, and the issue's other batches mostly are not.
        """
        now = time.time()
        params: dict | None = {"event": "accepted", "tags": batch.issue_id[:128], "limit": 300,
                               "ascending": "yes", "begin": f"{now - (age or EVENTS_RETENTION) - EVENTS_MARGIN:.0f}"}
        if since_last_try is not None:
            params["end"] = f"{now - since_last_try + EVENTS_MARGIN:.0f}"
        too_many = ProviderError(f"mailgun: more than {EVENTS_PAGES * 300} accepted events for issue "
                                 f"{batch.issue_id} in this batch's window; cannot tell what this batch did",
                                 retryable=False, hint="check the batch in Mailgun's logs, then `newsletter send "
                                                       "--resend-unknown` if it never went out")
        accepted: dict[str, str] = {}
        # Not read to the end (too_many): absence would prove nothing, and concluding from it could send twice.
        for item in self._events(session, params, EVENTS_PAGES, too_many):
            if str((item.get("user-variables") or {}).get("newsletter-batch", "")) != batch.batch_id:
                continue  # another batch of the issue
            message_id = ((item.get("message") or {}).get("headers") or {}).get("message-id", "")
            accepted[str(item.get("recipient", "")).lower()] = str(message_id)
        return accepted

    def _events(self, session: requests.Session, params: dict, pages: int, too_many: ProviderError) -> Iterator[dict]:
        """Each event the Events API lists for ``params``, following ``paging.next`` until a page comes back
        empty; ``too_many`` past ``pages`` pages or at a next link that does not move on (pages that never end)."""
        url, query, seen = self.url(f"/v3/{quote(self.domain)}/events"), params, set()
        for _ in range(pages):
            seen.add(url)
            body = self.get_json(session, url, query, "events look-up", expect=dict)
            items = body.get("items") or []
            yield from (item for item in items if isinstance(item, dict))
            url, query = (body.get("paging") or {}).get("next", ""), None
            if not items or not url:
                return
            if url in seen:
                break
        raise too_many

    # -- suppressions ---------------------------------------------------------------------
    def suppression_list(self, session: requests.Session) -> Iterator[ProviderSuppression]:
        """The domain's bounces, complaints and unsubscribes, following each list's ``paging.next``."""
        for name, kind in SUPPRESSION_LISTS:
            url: str = f"/v3/{quote(self.domain)}/{name}"
            params: dict | None = {"limit": SUPPRESSION_PAGE}
            seen: set[str] = set()
            while url:  # until a page comes back empty
                if url in seen or len(seen) == SUPPRESSION_PAGES:  # a next link that does not move on
                    raise ProviderError(f"mailgun's {name} list did not come to an end after {len(seen)} pages; "
                                        "cannot read it to the end", retryable=False, hint=PAGING_HINT)
                seen.add(url)
                body = self.get_json(session, url, params, f"{name} list", expect=dict)
                items = body.get("items") or []
                for item in items:
                    detail = " ".join(str(item.get(k) or "") for k in ("code", "error")).strip()
                    yield ProviderSuppression(str(item.get("address", "")), kind, f"{name}: {detail}".rstrip(": "),
                                              _unsubscribed_tag(item))
                url, params = ((body.get("paging") or {}).get("next") or "") if items else "", None

    # -- per-issue figures ---------------------------------------------------------------
    # Mailgun's Metrics API (POST /v1/analytics/metrics, filtered by tag and domain), not the older
    # GET /v3/{domain}/tags/{tag}/stats: Mailgun's API reference (checked 2026-12) lists the Metrics API
    # as its analytics interface and moved tags to /v1/analytics/tags ("Tags New"), leaving the v3 tag
    # and stats endpoints in its legacy sections; the metrics also give unique opens and clicks, which
    # the v3 tag stats do not. It is a read-only query sent as a POST (``stats_queries``).
    def issue_stats(self, session: requests.Session, issue_id: str, since: date, *,
                    detail: bool = True) -> IssueStats:
        query = {"start": email.utils.format_datetime(datetime.combine(since, dt_time(), timezone.utc)),
                 "end": email.utils.format_datetime(datetime.now(timezone.utc)), "resolution": "day",
                 "dimensions": ["time"] if detail else [], "metrics": list(METRICS.values()),
                 "filter": {"AND": [_equals("domain", self.domain), _equals("tag", issue_id[:128])]},
                 "include_aggregates": True, "limit": METRICS_LIMIT}
        body = self._query(session, METRICS_PATH, query, "metrics query")
        totals = (body.get("aggregates") or {}).get("metrics")
        items = body.get("items") if detail else []
        if not isinstance(totals, dict) or not isinstance(items, list):
            raise ProviderError("mailgun's metrics query answered something we cannot read", status=200,
                                body=json.dumps(body)[:500], retryable=True)
        if detail and (count((body.get("pagination") or {}).get("total")) or 0) > len(items):
            raise ProviderError(f"mailgun's metrics query has more than {METRICS_LIMIT} days for issue {issue_id}; "
                                "cannot read them in one answer", retryable=False, hint=PAGING_HINT)
        days = [(_day(item), item.get("metrics") or {}) for item in items if isinstance(item, dict)]
        return IssueStats(**{ours: count(totals.get(theirs)) for ours, theirs in METRICS.items()},
                          opens_by_day=tuple(sorted((d, count(m.get("unique_opened_count")) or 0) for d, m in days)),
                          clicks_by_day=tuple(sorted((d, count(m.get("unique_clicked_count")) or 0) for d, m in days)),
                          top_links=self._top_links(session, issue_id, since) if detail else (),
                          notes=("bounced is Mailgun's permanent failures",))

    def _top_links(self, session: requests.Session, issue_id: str, since: date) -> tuple[tuple[str, int], ...]:
        """The most clicked links: the issue's ``clicked`` events by URL (the metrics have no per-link figures),
        one call per 300 clicks. A list that does not end is an error, not a short count."""
        begin = datetime.combine(since, dt_time(), timezone.utc).timestamp()
        params = {"event": "clicked", "tags": issue_id[:128], "limit": 300, "ascending": "yes", "begin": f"{begin:.0f}"}
        too_many = ProviderError(f"mailgun's clicked events for issue {issue_id} did not come to an end after "
                                 f"{CLICK_PAGES} pages; cannot count its links", retryable=False, hint=PAGING_HINT)
        clicked = Counter(str(item.get("url", "")) for item in self._events(session, params, CLICK_PAGES, too_many))
        return tuple(clicked.most_common(TOP_LINKS))

    def _query(self, session: requests.Session, path: str, query: dict, what: str) -> dict:
        """POST a read-only JSON query and return its JSON object (errors as :meth:`Provider.get_json`)."""
        try:
            response = session.post(self.url(path), json=query, headers=self.read_headers(), timeout=self.timeout,
                                    allow_redirects=False)
        except requests.RequestException as err:
            raise ProviderError(f"{self.name}: {what} failed ({type(err).__name__})", retryable=True) from err
        self.raise_for_status(response)
        body = json_body(response)
        if response.status_code != 200:
            said = self.scrub(provider_message(response))
            raise ProviderError(f"{self.name}'s {what} answered HTTP {response.status_code}"
                                + (f": {said}" if said else ""), status=response.status_code,
                                body=self.scrub(response.text))
        if not isinstance(body, dict):
            raise ProviderError(f"{self.name}'s {what} answered something we cannot read", status=200,
                                body=self.scrub(response.text), retryable=True)
        return body


def _equals(attribute: str, value: str) -> dict:
    return {"attribute": attribute, "comparator": "=", "values": [{"label": value, "value": value}]}


def _day(item: dict) -> str:
    """The day of a metrics row: its ``time`` dimension, an RFC 2822 date, as YYYY-MM-DD."""
    for dimension in item.get("dimensions") or []:
        if isinstance(dimension, dict) and dimension.get("dimension") == "time":
            try:
                return email.utils.parsedate_to_datetime(str(dimension.get("value"))).date().isoformat()
            except (TypeError, ValueError):
                break
    raise ProviderError("mailgun's metrics query answered a row without a readable time", status=200,
                        body=json.dumps(item)[:500], retryable=True)


def _valid(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False)
        return True
    except EmailNotValidError:
        return False


def _unsubscribed_tag(item: dict) -> str:
    """The issue an unsubscribe entry names: Mailgun lists the tags a reader left ("*" = every mail of the
    domain); one tag that is not "*" is the issue whose tag-unsubscribe link was used."""
    tags = item.get("tags")
    if isinstance(tags, list) and len(tags) == 1 and isinstance(tags[0], str) and tags[0] not in ("", "*"):
        return tags[0]
    return ""
