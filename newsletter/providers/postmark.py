"""Postmark: ``POST /email/batch``, a JSON array of up to 500 fully personalised messages.

Postmark answers 200 with one result per message, in input order, and a
per-message ``ErrorCode``: a partial rejection hides inside a success, so the
status code alone says nothing about a recipient. Worse, problems with the
request or the account come the same way, one per message: an unknown message
stream (1235), a sender signature not found or not confirmed (400, 401), no
credits (405), an account pending approval (412) or not allowed to send (413).
Of Postmark's codes (postmarkapp.com/developer/api/overview#error-codes) only
two are about the recipient: 406 "Inactive recipient" (failed, and suppressed)
and 300 "Invalid email request" when its text is about the 'To' address (300
is also the answer for a bad From or an empty body, which are ours). Any other
code stops the run with Postmark's message and marks nobody failed (see
:mod:`.base`). Newsletters must go through a
*broadcast* message stream; Postmark's default broadcast stream (id
``broadcast``) adds List-Unsubscribe itself and hosts the unsubscribe page, so
we do not add a second one there. With ``[unsubscribe] url = "provider"`` the
body's unsubscribe link is Postmark's ``{{{ pm:unsubscribe }}}`` placeholder
(postmarkapp.com/support/article/1208), which it fills per recipient; those who
use it land in the stream's suppressions (``newsletter suppressions sync``).

Reconciliation asks the Messages API (outbound search) for the batch's tag
(the issue id) and metadata (the batch id). Postmark keeps messages 45 days by
default, but its Retention Add-on lets an account choose anything from 7 to 365
days (account-wide, postmarkapp.com/support/article/1289), and nothing in the
API says which: a message missing from the search proves "never accepted" only
within 6 days of the batch's first claim, a day inside the shortest retention.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date
from typing import Iterator

import requests

from ..errors import AuthError, ConfigError, ProviderError
from ..jsontext import json_array, json_with_bodies
from ..models import Message, Outcome
from ..unsubscribe import PROVIDER_MANAGED
from .answers import json_body, provider_message
from .base import Batch, Provider, ProviderSuppression, Request, all_outcomes, outcomes_from_logs
from .stats import TOP_LINKS, IssueStats, count

# Postmark's documented test token: the API validates and answers like a real send, delivers nothing.
TEST_TOKEN = "POSTMARK_API_TEST"
_BROADCAST = 'set [provider] message_stream = "broadcast" (every Postmark server has that Broadcasts stream)'
# Headers a stream with Postmark-managed unsubscribe handling adds itself.
MANAGED_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})
# "You tried to send to recipient(s) that have been marked as inactive. Found inactive addresses:
#  a@example.com. Inactive recipients are ones that have generated a hard bounce, a spam complaint,
#  or a manual suppression."
_INACTIVE = re.compile(r"inactive addresses:\s*(.*?)\.\s*Inactive recipients", re.I | re.S)
# ErrorCode 300 about the recipient: "Invalid 'To' address: 'x'.", "Error parsing 'To': Illegal email
# address 'x'. It must contain the '@' symbol.", "Zero recipients specified". Other 300s (a bad 'From',
# "Provide either email TextBody or HtmlBody or both") are about the request.
_ABOUT_TO = re.compile(r"'to'|zero recipients", re.I)
INACTIVE_RECIPIENT = 406
STREAM_NOT_FOUND = 1226  # the Message Streams API's "The message stream for the provided 'ID' was not found."
INVALID_REQUEST = 300
# What to do about the request- and account-level codes (the overview's error-code table).
HINTS = {
    400: "add and confirm the From address (or its domain) as a Sender Signature in Postmark",
    401: "confirm the From address's Sender Signature (Postmark emailed a link) or verify its domain",
    405: "the account has no credits left: add credits or a plan in Postmark",
    412: "the account is pending approval: until Postmark approves it, it only sends to its own domains",
    413: "the account may not send: contact Postmark support",
    1235: "check [provider] message_stream: it must be a broadcast stream of this Postmark server",
}
SEARCH_DELAY = 60  # seconds before a message can be relied on to show in search
# Absence from the search proves "never accepted" only while Postmark still holds the message: 45 days by
# default, but as short as 7 with the Retention Add-on, and the API does not say which. 6 days stays a day clear.
RETENTION = 6 * 86400
SEARCH_PAGE = 500  # the Messages API's maximum count; count + offset may not exceed 10,000
CLICK_SEARCH_LIMIT = 10_000  # count + offset of a Messages API search


class PostmarkProvider(Provider):
    name = "postmark"
    unsubscribe_placeholder = "{{{ pm:unsubscribe }}}"  # filled by streams whose unsubscribes Postmark handles
    default_origin = "https://api.postmarkapp.com"
    max_batch = 500
    max_payload_bytes = 50 * 1000 * 1000
    envelope_bytes = 1024  # From, To, MessageStream/tags, tracking switches per message
    fills_bodies = True
    default_rate = 10.0  # Postmark documents no request rate; it throttles with 429
    reconcile_settles = float(SEARCH_DELAY)
    reconcile_note = "Postmark is asked through its Messages API (outbound search by tag and batch metadata)"
    scope_key = "message_stream"

    def __init__(self, settings, api_key=None):
        super().__init__(settings, api_key)
        self.stream = settings.provider.message_stream or "broadcast"
        if not re.fullmatch(r"[a-z0-9-]+", self.stream):
            raise ConfigError(f"[provider] message_stream {self.stream!r} is not a Postmark stream id",
                              path=settings.origins.get("provider.message_stream"),
                              hint="stream ids are lower-case letters, digits and dashes, e.g. broadcast")
        # Whether Postmark handles this stream's unsubscribes (its UnsubscribeHandlingType), once
        # `preflight` has asked; until then the default broadcast stream is taken to (its default).
        self.manages_unsubscribes: bool | None = None

    @classmethod
    def plan_scope(cls, settings) -> str:
        return settings.provider.message_stream or "broadcast"

    def _token(self) -> str:
        return TEST_TOKEN if self.settings.provider.test_mode else (self.api_key or "")

    def read_headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "X-Postmark-Server-Token": self._token()}

    def _headers(self) -> dict[str, str]:
        return {**self.read_headers(), "Content-Type": "application/json"}

    # -- verbs -----------------------------------------------------------------------
    def build_request(self, batch: Batch) -> Request:
        body = json_array(json_with_bodies(self._message(batch, m), {"HtmlBody": html, "TextBody": text})
                          for m, (html, text) in zip(batch.messages, self.message_bodies(batch)))
        return Request("POST", self.url("/email/batch"), self._headers(), data=body)

    def _message(self, batch: Batch, message: Message) -> dict:
        headers = message.headers
        managed = self.stream == "broadcast" if self.manages_unsubscribes is None else self.manages_unsubscribes
        if managed:  # Postmark adds its own on a stream whose unsubscribes it handles
            headers = {k: v for k, v in headers.items() if k.lower() not in MANAGED_HEADERS}
        item = {
            "From": message.sender,
            "To": message.to,
            "Subject": message.subject,
            "HtmlBody": "",  # the bodies are filled in already encoded (build_request)
            "TextBody": "",
            "MessageStream": self.stream,
            "Tag": batch.issue_id,
            "Metadata": {"issue": batch.issue_id, "batch": batch.batch_id},
            "Headers": [{"Name": k, "Value": v} for k, v in headers.items()],
            "TrackOpens": bool(self.settings.provider.track_opens),
            "TrackLinks": "HtmlAndText" if self.settings.provider.track_clicks else "None",
        }
        if message.reply_to:
            item["ReplyTo"] = message.reply_to
        return item


    def parse_response(self, batch: Batch, response: requests.Response) -> list[Outcome]:
        body = json_body(response)
        if response.status_code == 422:
            raise self._refused(body, response)
        if 400 <= response.status_code < 500:  # 400, 404, 413...: refused, nothing accepted (401, 403, 429: base.py)
            said = body.get("Message") if isinstance(body, dict) else None
            raise ProviderError(f"postmark refused the batch (HTTP {response.status_code})" + (f": {said}" if said else ""),
                                status=response.status_code, body=response.text, retryable=False,
                                hint="nothing in this batch was sent; check [provider] api_base and the batch size, "
                                     "then run `newsletter send` again")
        if response.status_code != 200 or not isinstance(body, list) or len(body) != len(batch.messages):
            reason = f"postmark answered HTTP {response.status_code} with a body that is not the documented array"
            return all_outcomes(batch, "unknown", reason=reason)
        results = [self._outcome(m, item) for m, item in zip(batch.messages, body)]
        refusals = [r for r in results if isinstance(r, _Refusal)]
        if not refusals:
            return results
        if all(isinstance(r, _Refusal) or r.state == "failed" for r in results):
            raise self._refused_in_200(refusals, response)
        # Some messages were accepted: raising would send them again. The refused go back to pending and,
        # sent again without the accepted ones, get the refusal above that stops the run.
        again = "tried again without the accepted messages"
        return [Outcome(r.to, "retry", reason=f"postmark {r.code}: {r.text}; {again}") if isinstance(r, _Refusal)
                else r for r in results]

    def _outcome(self, message: Message, item) -> Outcome | _Refusal:
        if not isinstance(item, dict) or ("ErrorCode" not in item and "MessageID" not in item):
            return Outcome(message.to, "unknown", reason="postmark answered an entry we cannot read")
        code = item.get("ErrorCode", 0)  # "ErrorCode may be missing for Postmark service delays" (anymail)
        text = str(item.get("Message", ""))
        if code == 0:
            # "Message OK, but will not deliver to these inactive addresses: ..." (multi-recipient form)
            if message.to.lower() in _inactive_addresses(text):
                return Outcome(message.to, "failed", reason=text, suppress=True)
            if not item.get("MessageID"):
                return Outcome(message.to, "unknown", reason="postmark said OK without a MessageID")
            return Outcome(message.to, "sent", provider_id=str(item["MessageID"]))
        if code == INACTIVE_RECIPIENT:  # hard bounce, spam complaint or manual suppression
            return Outcome(message.to, "failed", reason=f"postmark {code}: {text}", suppress=True)
        if code == INVALID_REQUEST and _ABOUT_TO.search(text):  # "Invalid 'To' address: '...'."
            return Outcome(message.to, "failed", reason=f"postmark {code}: {text}")
        return _Refusal(message.to, code, text)  # about our request or the account, not this recipient

    def _refused_in_200(self, refusals: list[_Refusal], response: requests.Response) -> ProviderError:
        """Every message refused, and at least one for a reason that is not the recipient's: stop, fail nobody."""
        first = refusals[0]
        codes = sorted({r.code for r in refusals}, key=str)
        also = f" (and ErrorCode {', '.join(map(str, codes[1:]))})" if len(codes) > 1 else ""
        return ProviderError(f"postmark refused the batch (ErrorCode {first.code}{also}): {first.text}",
                             status=response.status_code, body=response.text, retryable=False,
                             hint=HINTS.get(first.code, "fix what Postmark says") + "; nothing was sent")

    def _refused(self, body, response: requests.Response) -> ProviderError:
        """A 422 for the whole request (sender signature, stream, payload): stop, change nothing."""
        code = body.get("ErrorCode") if isinstance(body, dict) else None
        text = provider_message(response)
        return ProviderError(f"postmark refused the batch (ErrorCode {code}): {text}", status=422,
                             body=response.text, retryable=False,
                             hint=HINTS.get(code, "fix the sender, message stream or content") + "; nothing was sent")

    # -- before a send ---------------------------------------------------------------
    def preflight(self, session: requests.Session) -> list[str]:
        """The stream must exist, be a Broadcasts stream and not be archived; who handles its unsubscribes
        (Postmark, or the sender: "Custom") decides whose link and List-Unsubscribe headers readers get.

        When Postmark cannot say (429, 5xx, network, an answer we cannot read): a newsletter with its own
        unsubscribe page is sent as configured, with a warning; one that relies on Postmark's link is not,
        since on a stream that leaves unsubscribes to the sender its readers would get none.
        """
        provider_managed = self.settings.unsubscribe.url == PROVIDER_MANAGED
        try:
            kind, handling, archived = self._stream_settings(session)
        except (AuthError, ConfigError):
            raise
        except ProviderError as err:
            if provider_managed:
                raise ProviderError(f"could not ask Postmark whether it handles the unsubscribes of stream "
                                    f"{self.stream!r} ({err.message}), and with [unsubscribe] url = \"provider\" "
                                    "nothing is sent without knowing", status=err.status, body=err.body,
                                    retryable=err.retryable,
                                    hint="try again in a while; nothing was sent") from err
            headers = (", with the List-Unsubscribe headers left to Postmark on its broadcast stream"
                       if self.stream == "broadcast" else "")
            return [f"could not check Postmark's stream {self.stream!r} before sending ({err.message}); sending "
                    f"as configured{headers}"]
        where = self.settings.origins.get("provider.message_stream")
        if kind != "Broadcasts":
            raise ConfigError(f"Postmark's message stream {self.stream!r} is a {kind} stream; Postmark requires "
                              "newsletters to go through a Broadcasts stream", path=where, hint=_BROADCAST)
        if archived:
            purge = f" (it is deleted for good after {archived})" if archived != "archived" else ""
            raise ConfigError(f"Postmark's message stream {self.stream!r} is archived, which stops sending "
                              "through it", path=where, hint=f"unarchive it in Postmark{purge}, or {_BROADCAST}")
        self.manages_unsubscribes = handling == "Postmark"
        if provider_managed and not self.manages_unsubscribes:
            raise ConfigError(f'[unsubscribe] url = "provider", but Postmark\'s stream {self.stream!r} leaves '
                              f"unsubscribes to you (UnsubscribeHandlingType {handling!r}): nobody would get a "
                              "working unsubscribe link", path=self.settings.origins.get("unsubscribe.url"),
                              hint='give your own page: url = "https://example.com/unsubscribe?t={token}"')
        if self.manages_unsubscribes and not provider_managed:
            return [f"Postmark handles the unsubscribes of stream {self.stream!r}: it adds its own unsubscribe link "
                    "beside yours and its own List-Unsubscribe header, and records those who use them in its "
                    'suppressions. Set [unsubscribe] url = "provider" for one link (then `newsletter suppressions '
                    "sync` brings them back), or ask Postmark to let this stream manage its own unsubscribes"]
        return []

    def _stream_settings(self, session: requests.Session) -> tuple[str, str, str]:
        """The stream's MessageStreamType, UnsubscribeHandlingType and ExpectedPurgeDate (or "archived", or
        "" when it is not archived), from ``GET /message-streams/{stream}``."""
        try:
            body = self.get_json(session, f"/message-streams/{self.stream}", None, "message stream look-up",
                                 expect=dict)
        except ProviderError as err:
            if err.status == 422 and _error_code(err.body) == STREAM_NOT_FOUND:
                raise ConfigError(f"Postmark has no message stream {self.stream!r} on this server",
                                  path=self.settings.origins.get("provider.message_stream"),
                                  hint="create it in Postmark as a Broadcasts stream" +
                                       ("" if self.stream == "broadcast" else f", or {_BROADCAST}")) from None
            raise
        kind = body.get("MessageStreamType")
        handling = (body.get("SubscriptionManagementConfiguration") or {}).get("UnsubscribeHandlingType")
        if not isinstance(kind, str) or not isinstance(handling, str):
            raise ProviderError("postmark's message stream look-up answered something we cannot read", status=200,
                                body=json.dumps(body)[:500], retryable=True)
        archived = (str(body.get("ExpectedPurgeDate") or "") or "archived") if body.get("ArchivedAt") else ""
        return kind, handling, archived

    # -- reconciliation --------------------------------------------------------------
    def reconcile(self, batch: Batch, session: requests.Session, *, age: float | None,
                  since_last_try: float | None = None) -> list[Outcome] | None:
        return outcomes_from_logs(
            batch, self._search(batch, session), age=age, since_last_try=since_last_try,
            delay=SEARCH_DELAY, retention=RETENTION, missing="postmark has no record of this message",
            not_yet="not found in postmark's search, which is not conclusive for a batch this recent "
                    "or this old; try again later")

    def _search(self, batch: Batch, session: requests.Session) -> dict[str, str]:
        """recipient -> MessageID for every message Postmark holds with this batch's tag and metadata."""
        accepted: dict[str, str] = {}
        offset = 0
        while True:
            params = {"count": SEARCH_PAGE, "offset": offset, "tag": batch.issue_id,
                      "metadata_batch": batch.batch_id, "messagestream": self.stream}
            body = self.get_json(session, "/messages/outbound", params, "message search", expect=dict)
            if not isinstance(body.get("Messages"), list):
                raise ProviderError("postmark's message search answered something we cannot read", status=200,
                                    body=json.dumps(body)[:500], retryable=True)
            for item in body["Messages"]:
                for address in item.get("Recipients") or [t.get("Email", "") for t in item.get("To") or []]:
                    accepted[str(address).lower()] = str(item.get("MessageID", ""))
            offset += len(body["Messages"])
            if len(body["Messages"]) < SEARCH_PAGE or offset >= int(body.get("TotalCount", 0)) \
                    or offset + SEARCH_PAGE > 10_000:
                return accepted

    # -- suppressions ---------------------------------------------------------------------
    def suppression_list(self, session: requests.Session) -> Iterator[ProviderSuppression]:
        """The message stream's suppressions, in one answer (Postmark's dump has no paging)."""
        body = self.get_json(session, f"/message-streams/{self.stream}/suppressions/dump", None,
                             "suppression dump", expect=dict)
        items = body.get("Suppressions")
        if not isinstance(items, list):
            raise ProviderError("postmark's suppression dump answered something we cannot read", status=200,
                                body=json.dumps(body)[:500], retryable=True)
        for item in items:
            reason, origin = str(item.get("SuppressionReason", "")), str(item.get("Origin", ""))
            yield ProviderSuppression(str(item.get("EmailAddress", "")), _KIND_BY_REASON.get(
                (reason, origin), _KIND_BY_REASON.get((reason, ""), "blocked")), f"{reason} ({origin})")


    # -- per-issue figures ---------------------------------------------------------------
    def issue_stats(self, session: requests.Session, issue_id: str, since: date, *,
                    detail: bool = True) -> IssueStats:
        """The Stats API filtered by tag and stream: the outbound overview, and with ``detail`` the opens and
        clicks per day, the clicks per platform and the most clicked links (from the Messages API's click
        search). No machine-open count: neither the overview nor the open stats give one."""
        params = {"tag": issue_id, "fromdate": since.isoformat(), "messagestream": self.stream}
        overview = self.get_json(session, "/stats/outbound", params, "outbound stats", expect=dict)
        sent, bounced = count(overview.get("Sent")), count(overview.get("Bounced"))
        figures = {"processed": sent, "bounced": bounced, "complained": count(overview.get("SpamComplaints")),
                   "delivered": sent - bounced if sent is not None and bounced is not None else None,
                   "opens": count(overview.get("Opens")), "unique_opens": count(overview.get("UniqueOpens")),
                   "clicks": count(overview.get("TotalClicks")),
                   "unique_clicks": count(overview.get("UniqueLinksClicked"))}
        notes = ["delivered is Postmark's sent less its bounces",
                 "unsubscribes through Postmark's link are counted from the ledger's suppressions "
                 "(`newsletter suppressions sync`)"]
        if not detail:
            return IssueStats(**figures, notes=tuple(notes))
        opens = self.get_json(session, "/stats/outbound/opens", params, "open stats", expect=dict)
        clicks = self.get_json(session, "/stats/outbound/clicks", params, "click stats", expect=dict)
        platforms = self.get_json(session, "/stats/outbound/clicks/platforms", params, "click platform stats",
                                  expect=dict)
        links, complete = self._top_links(session, issue_id)
        if not complete:
            notes.append(f"links are counted from the first {CLICK_SEARCH_LIMIT} clicks (Postmark's search limit)")
        return IssueStats(**figures, opens_by_day=_per_day(opens, "Unique"), clicks_by_day=_per_day(clicks, "Unique"),
                          top_links=links, click_platforms=_platforms(platforms), notes=tuple(notes))

    def _top_links(self, session: requests.Session, issue_id: str) -> tuple[tuple[tuple[str, int], ...], bool]:
        """The most clicked links, from the click search (Postmark's Stats API has no per-link figures), and
        whether every click was read (the search stops at 10,000)."""
        clicked: Counter = Counter()
        offset = 0
        while True:
            params = {"count": SEARCH_PAGE, "offset": offset, "tag": issue_id, "messagestream": self.stream}
            body = self.get_json(session, "/messages/outbound/clicks", params, "click search", expect=dict)
            items = body.get("Clicks")
            if not isinstance(items, list):
                raise ProviderError("postmark's click search answered something we cannot read", status=200,
                                    body=json.dumps(body)[:500], retryable=True)
            clicked.update(str(item.get("OriginalLink", "")) for item in items if isinstance(item, dict))
            offset += len(items)
            total = count(body.get("TotalCount")) or 0
            if len(items) < SEARCH_PAGE or offset >= total:
                return tuple(clicked.most_common(TOP_LINKS)), True
            if offset + SEARCH_PAGE > CLICK_SEARCH_LIMIT:
                return tuple(clicked.most_common(TOP_LINKS)), False


CLICK_PLATFORMS = ("Desktop", "Mobile", "WebMail", "Unknown")  # the totals /stats/outbound/clicks/platforms gives


def _platforms(body: dict) -> tuple[tuple[str, int], ...]:
    """``{"Desktop": 3, "Mobile": 1, "Unknown": 0, "Days": [...]}`` -> ((platform, clicks), ...), most first."""
    found = [(name, count(body.get(name))) for name in CLICK_PLATFORMS]
    return tuple(sorted(((name, n) for name, n in found if n), key=lambda pair: -pair[1]))


def _per_day(body: dict, key: str) -> tuple[tuple[str, int], ...]:
    """``Days: [{"Date": "2026-11-30", "Unique": 3}]`` -> ((date, count), ...), in date order."""
    days = body.get("Days")
    if not isinstance(days, list):
        raise ProviderError("postmark's stats answered without the documented Days", status=200,
                            body=json.dumps(body)[:500], retryable=True)
    found = [(str(day.get("Date", ""))[:10], count(day.get(key)) or 0) for day in days if isinstance(day, dict)]
    return tuple(sorted(found))


# Postmark's SuppressionReason (and Origin): a ManualSuppression from the Recipient is their unsubscribe
# (the broadcast stream's link); from the Customer or an Admin, the account blocked the address.
_KIND_BY_REASON = {("HardBounce", ""): "bounced", ("SpamComplaint", ""): "complained",
                      ("ManualSuppression", "Recipient"): "unsubscribed"}


def _error_code(body: str) -> object:
    """Postmark's ``ErrorCode`` in an error answer's body (None when it has none)."""
    try:
        return json.loads(body).get("ErrorCode")
    except (ValueError, AttributeError):
        return None


@dataclass(frozen=True)
class _Refusal:
    """A message Postmark refused for a reason that is not its recipient's (code and Postmark's text)."""

    to: str
    code: object
    text: str


def _inactive_addresses(text: str) -> set[str]:
    match = _INACTIVE.search(text)
    return {a.strip().lower() for a in match.group(1).split(",")} if match else set()


