"""A faithful local fake of Postmark, SendGrid, Mailgun, Resend, Amazon SES and Brevo on one stdlib HTTP server.

It speaks each provider's documented wire format on 127.0.0.1 (port 0): the
same endpoints, auth schemes, limits, per-recipient merge semantics
(SendGrid substitutions, Mailgun recipient variables, SES's Handlebars templates),
answers and error bodies, Resend's idempotency keys and Postmark's / Mailgun's
look-up APIs. SES requests must carry a valid SigV4 signature, checked here by
an implementation of AWS's signing process of its own (not botocore's), for the
access key ``SES_ACCESS_KEY`` with the fake's key as its secret.
Every message it accepts is recorded *as the recipient would see it*
(substitutions applied), so tests can assert zero duplicates and zero skipped.
Provider-managed unsubscribes are played as documented: Postmark's broadcast stream,
SendGrid's unsubscribe group (``asm``) and a Mailgun domain that tracks unsubscribes
each put their own per-recipient link where their placeholder is and add their own
List-Unsubscribe headers.
The stats APIs that ``newsletter report`` reads (Postmark's ``/stats/outbound``, its opens and clicks, its
clicks per platform and its click search; SendGrid's ``/v3/categories/stats``; Mailgun's ``POST
/v1/analytics/metrics`` and its ``clicked`` events) count what the fake accepted under the asked tag, day
by day, and what its readers did with it:
``fake.engage(provider, address, "open" | "click" | "bounce" | "complaint" | "unsubscribe", url=...)``.

Fault injection (``fake.inject(...)``) applies to the next send calls:
``status`` (500, 503, 429 + Retry-After, ...), ``drop`` (accept and record the
batch, then close the socket without answering: an in-doubt batch), ``hold``
(accept and record, then wait until released: the moment to SIGKILL a sender)
``garbage`` (a 200 whose body is not what the docs say), ``accepted`` (accept and
record, then answer ``status``, a 2xx no doc names, with no body) and ``echo``
(answer ``status`` with the request's own headers in the message, as a proxy or a
debugging endpoint may: the key must not reach the user). A wrong key gets
the provider's own 401/403. Resend's keys never expire here unless the test says
so: ``fake.forget_idempotency_keys()`` is a day going by.

Run it by hand (benchmarks, manual tests): ``python tests/fakeproviders.py``.
"""

from __future__ import annotations

import base64
import calendar
import email.parser
import email.policy
import email.utils
import hashlib
import hmac
import json
import random
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, parse_qsl, quote, urlsplit

VALID = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\".]+$")
POSTMARK_STREAMS = {"outbound": ("Transactional", "None"), "broadcast": ("Broadcasts", "Postmark")}
# How an address came onto a provider's suppression list in the fake (each provider shows it its own way).
LISTED_AS = ("bounce", "complaint", "unsubscribe", "invalid", "block", "manual")
SES_ACCESS_KEY = "AKIAFAKEFAKEFAKE7Q3Z"  # the fake's AWS access key id; its secret access key is the fake's api_key
SES_ACCOUNT = {"DedicatedIpAutoWarmupEnabled": False, "EnforcementStatus": "HEALTHY", "ProductionAccessEnabled": True,
               "SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 0.0},
               "SendingEnabled": True, "SuppressionAttributes": {"SuppressedReasons": ["BOUNCE", "COMPLAINT"]},
               "Details": {"MailType": "MARKETING", "WebsiteURL": "https://example.com",
                           "ReviewDetails": {"Status": "GRANTED", "CaseId": "1234"}}}
SENDGRID_GROUP = 4242  # the unsubscribe group the fake SendGrid account has
MAILGUN_UNSUBSCRIBE = {"active": False, "html_footer": "", "text_footer": ""}


@dataclass
class Accepted:
    """One message as its recipient would receive it."""

    provider: str
    to: str
    subject: str
    html: str
    text: str
    headers: dict
    tags: tuple[str, ...]
    batch: str
    message_id: str
    test: bool = False  # accepted in a test/sandbox mode: validated, never delivered
    stream: str = ""  # Postmark message stream
    day: str = field(default_factory=lambda: _today())  # YYYY-MM-DD (UTC) it was accepted


ENGAGEMENTS = ("open", "click", "bounce", "complaint", "unsubscribe")


@dataclass(frozen=True)
class Engagement:
    """What a recipient (or their server) did with one accepted message: the provider's tracking saw it."""

    message: Accepted
    kind: str  # one of ENGAGEMENTS
    day: str  # YYYY-MM-DD (UTC)
    url: str = ""  # the link, for a click
    platform: str = "Desktop"  # where a click came from (Postmark's Desktop, Mobile, WebMail, Unknown)


@dataclass
class Tally:
    """One tag's messages and what became of them, as a provider's stats API counts them."""

    messages: list[Accepted]
    events: list[Engagement]

    def days(self) -> list[str]:
        return sorted({m.day for m in self.messages} | {e.day for e in self.events})

    def processed(self, day: str | None = None) -> int:
        return sum(1 for m in self.messages if day in (None, m.day))

    def delivered(self, day: str | None = None) -> int:
        bounced = {id(e.message) for e in self.events if e.kind == "bounce"}
        return sum(1 for m in self.messages if day in (None, m.day) and id(m) not in bounced)

    def count(self, kind: str, day: str | None = None) -> int:
        return sum(1 for e in self.events if e.kind == kind and day in (None, e.day))

    def unique(self, kind: str, day: str | None = None) -> int:
        """Messages with at least one ``kind`` (on ``day``): unique opens, unique clicks."""
        return len({id(e.message) for e in self.events if e.kind == kind and day in (None, e.day)})

    def unique_links(self, day: str | None = None) -> int:
        """Distinct (message, link) pairs clicked: Postmark's unique clicks ("a click is unique if the
        recipient has never clicked that link within that message")."""
        return len({(id(e.message), e.url) for e in self.events if e.kind == "click" and day in (None, e.day)})


@dataclass
class Fault:
    kind: str  # status | drop | hold | garbage | accepted | echo
    status: int = 500
    retry_after: float | None = None
    release: threading.Event = field(default_factory=threading.Event)  # ``hold``: answer (by dropping) when set
    reached: threading.Event = field(default_factory=threading.Event)  # set when the fault fires


class FakeProviders:
    def __init__(self, api_key: str = "fake-key", domain: str = "mg.example.com"):
        self.api_key = api_key
        self.domain = domain
        self.accepted: list[Accepted] = []
        # Postmark refuses addresses it marked inactive (ErrorCode 406); the others accept any well-formed
        # address and drop bounced ones later, so only malformed addresses are refused there.
        self.inactive: set[str] = set()
        # Postmark's streams: id -> (MessageStreamType, UnsubscribeHandlingType). On a stream whose
        # unsubscribes Postmark handles, it puts its own link in each message and its own headers.
        self.postmark_streams: dict[str, tuple[str, str]] = dict(POSTMARK_STREAMS)
        # SendGrid's unsubscribe groups: id -> addresses that left that group (GET /v3/asm/groups/{id}/suppressions).
        self.sendgrid_groups: dict[int, list[str]] = {SENDGRID_GROUP: []}
        # Mailgun's domain setting "unsubscribe tracking" (off by default, as at Mailgun) and its footers.
        self.mailgun_unsubscribe: dict = dict(MAILGUN_UNSUBSCRIBE)
        # Each provider's own suppression list (``newsletter suppressions sync``), set by tests through
        # ``suppress``: provider -> [(address, kind)], kind one of LISTED_AS.
        self.suppressed: dict[str, list[tuple[str, str]]] = {}
        self.send_calls = 0
        self.chaos_met: Counter = Counter()  # (kind, status) -> send calls that met that chaos fault
        self.engagements: list[Engagement] = []  # opens, clicks, bounces... that the stats APIs count
        self.requests_seen: list[tuple[str, str]] = []  # (method, path)
        self.read_times: list[float] = []  # time.monotonic() of each GET, as it arrived
        self._faults: list[Fault | None] = []  # None: a healthy call
        self._read_faults: list[Fault] = []  # for the look-up (GET) endpoints: ``inject_read``
        self.resend_read_times: list[float] = []  # Resend allows 2 requests a second: its 429 beyond that
        self.rate_limited = 0  # 429s the fake answered for going too fast
        self._idempotency: dict[str, tuple[str, int, bytes]] = {}  # key -> (payload hash, status, body)
        self._in_progress: set[str] = set()
        self._pages: dict[str, dict] = {}  # Mailgun events paging tokens
        self.brevo_credits = True  # False: Brevo's 400 not_enough_credits
        # Amazon SES: GetAccount's answer (ProductionAccessEnabled False: the sandbox, where only
        # ``ses_verified`` addresses receive), and the regions whose signatures were checked.
        self.ses_account: dict = json.loads(json.dumps(SES_ACCOUNT))
        self.ses_verified: set[str] = set()
        self.ses_regions: set[str] = set()
        # Seconds each call waits once its body is read, before it is handled: a real provider's own time
        # (100-500 ms a call); benchmarks/fakesink.py --latency sets it. 0: answer at once.
        self.latency = 0.0
        # Faults drawn at random for send calls no queued fault applies to (``chaos``): [(fault, chance)].
        self._chaos: list[tuple[Fault, float]] = []
        self._chaos_rng = random.Random(0)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> "FakeProviders":
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        with self._lock:
            for fault in self._faults:
                if fault:
                    fault.release.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> "FakeProviders":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- fault injection and assertions --------------------------------------------------
    def inject(self, kind: str, *, status: int = 500, retry_after: float | None = None, times: int = 1,
               after: int = 0) -> Fault:
        """Queue a fault for ``times`` send calls, ``after`` healthy ones; returns it (``hold``: ``.release.set()``)."""
        fault = Fault(kind, status, retry_after)
        with self._lock:
            self._faults.extend([None] * after + [fault] * times)
        return fault

    def chaos(self, faults: list[tuple[str, int, float]], *, seed: int = 0) -> None:
        """Each send call (without a queued fault) meets one of ``faults`` at random: ``(kind, status,
        chance)``, e.g. ``[("status", 500, 0.05), ("status", 429, 0.05), ("drop", 0, 0.03)]``."""
        with self._lock:
            self._chaos = [(Fault(kind, status, None), chance) for kind, status, chance in faults]
            self._chaos_rng = random.Random(seed)

    def inject_read(self, *, status: int, retry_after: float | None = None, times: int = 1) -> None:
        """Answer the next ``times`` look-ups (GET: suppression lists, searches, streams) with ``status``."""
        with self._lock:
            self._read_faults.extend(Fault("status", status, retry_after) for _ in range(times))

    def _next_read_fault(self) -> Fault | None:
        with self._lock:
            return self._read_faults.pop(0) if self._read_faults else None

    def _next_fault(self) -> Fault | None:
        with self._lock:
            self.send_calls += 1
            if self._faults:
                return self._faults.pop(0)
            draw = self._chaos_rng.random()
            for fault, chance in self._chaos:
                if draw < chance:
                    self.chaos_met[fault.kind, fault.status] += 1
                    return fault
                draw -= chance
            return None

    def clear_faults(self) -> None:
        """Drop the faults no send call has met yet."""
        with self._lock:
            for fault in self._faults:
                if fault:
                    fault.release.set()
            self._faults.clear()

    def reset(self) -> None:
        """Everything a test changed back to a fresh fake (held faults are released first)."""
        with self._lock:
            for fault in self._faults:
                if fault:
                    fault.release.set()
            self._faults.clear()
            self._read_faults.clear()
            self._chaos.clear()
            self.resend_read_times.clear()
            self.rate_limited = 0
            self.accepted.clear()
            self.inactive.clear()
            self.postmark_streams = dict(POSTMARK_STREAMS)
            self.sendgrid_groups = {SENDGRID_GROUP: []}
            self.mailgun_unsubscribe = dict(MAILGUN_UNSUBSCRIBE)
            self.suppressed.clear()
            self.engagements.clear()
            self.requests_seen.clear()
            self.read_times.clear()
            self.send_calls = 0
            self.chaos_met.clear()
            self._idempotency.clear()
            self._in_progress.clear()
            self._pages.clear()
            self.brevo_credits = True
            self.ses_account = json.loads(json.dumps(SES_ACCOUNT))
            self.ses_verified.clear()
            self.ses_regions.clear()

    def suppress(self, provider: str, address: str, kind: str) -> None:
        """Put ``address`` on ``provider``'s own suppression list; Postmark then also refuses to send to it."""
        assert kind in LISTED_AS, kind
        with self._lock:
            self.suppressed.setdefault(provider, []).append((address, kind))
            if provider == "postmark":
                self.inactive.add(address.lower())

    def suppressions_of(self, provider: str) -> list[tuple[str, str]]:
        with self._lock:
            return list(self.suppressed.get(provider, []))

    def engage(self, provider: str, to: str, kind: str, *, url: str = "", day: str | None = None,
               platform: str = "Desktop") -> None:
        """``to`` opened, clicked ``url`` (on ``platform``), bounced, complained of or unsubscribed from the last
        message ``provider`` delivered to them: what the provider's stats then count for that message's tag."""
        assert kind in ENGAGEMENTS and (kind == "click") == bool(url), (kind, url)
        with self._lock:
            message = next(a for a in reversed(self.delivered(provider)) if a.to.lower() == to.lower())
            self.engagements.append(Engagement(message, kind, day or _today(), url, platform))

    def tally(self, provider: str, tag: str | None, *, since: str = "", until: str = "9999-12-31",
              stream: str | None = None) -> Tally:
        """The messages ``provider`` delivered with ``tag`` (any tag: None) on ``stream``, from day ``since`` to
        ``until``, and the engagements with them in those days."""
        with self._lock:
            mine = [a for a in self.delivered(provider) if (tag is None or tag in a.tags)
                    and stream in (None, a.stream)]
            ids = {id(a) for a in mine}
            events = [e for e in self.engagements if id(e.message) in ids and since <= e.day <= until]
        return Tally([a for a in mine if since <= a.day <= until], events)

    def forget_idempotency_keys(self) -> None:
        """What 24 hours do to Resend's keys: a replay of an old batch is then a new request, sent again."""
        with self._lock:
            self._idempotency.clear()

    def delivered(self, provider: str | None = None) -> list[Accepted]:
        with self._lock:
            return [a for a in self.accepted if not a.test and (provider is None or a.provider == provider)]

    def duplicates(self) -> dict[str, int]:
        counts = Counter(a.to.lower() for a in self.delivered())
        return {address: n for address, n in counts.items() if n > 1}

    def _record(self, records: list[Accepted]) -> None:
        with self._lock:
            self.accepted.extend(records)


class _Handler(BaseHTTPRequestHandler):
    owner: FakeProviders
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    # -- plumbing ---------------------------------------------------------------------------
    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, status: int, body: object = b"", headers: dict | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        ctype = "application/json" if not isinstance(body, bytes) else "text/html"
        self.send_header("Content-Type", ctype)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _drop(self) -> None:
        """Close the connection without a word: the client cannot know whether we accepted."""
        self.close_connection = True
        try:
            self.connection.shutdown(2)
        except OSError:
            pass

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.owner.requests_seen.append((method, url.path))
        if method == "GET":
            self.owner.read_times.append(time.monotonic())
        body = self._body() if method == "POST" else b""
        if self.owner.latency:
            time.sleep(self.owner.latency)
        self.raw_body = body  # SES signs it
        fault = self.owner._next_read_fault() if method == "GET" else None
        if fault:
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            return self._answer(fault.status, {"message": f"injected HTTP {fault.status}"}, headers)
        routes = [
            ("POST", r"/email/batch", self.postmark_batch), ("GET", r"/messages/outbound", self.postmark_search),
            ("GET", r"/stats/outbound(?:/(opens|clicks|clicks/platforms))?", self.postmark_stats),
            ("GET", r"/messages/outbound/clicks", self.postmark_click_search),
            ("GET", r"/v3/categories/stats", self.sendgrid_category_stats),
            ("POST", r"/v1/analytics/metrics", self.mailgun_metrics),
            ("POST", r"/v3/mail/send", self.sendgrid_send), ("POST", r"/emails/batch", self.resend_batch),
            ("POST", r"/v3/([^/]+)/messages", self.mailgun_send),
            ("GET", r"/v3/([^/]+)/events(?:/(\d+))?", self.mailgun_events),
            ("GET", r"/message-streams/([^/]+)/suppressions/dump", self.postmark_suppressions),
            ("GET", r"/message-streams/([^/]+)", self.postmark_stream),
            ("GET", r"/v3/suppression/(bounces|blocks|invalid_emails|spam_reports|unsubscribes)",
             self.sendgrid_suppressions),
            ("GET", r"/v3/asm/groups/(\d+)/suppressions", self.sendgrid_group_suppressions),
            ("GET", r"/v3/domains/([^/]+)/tracking", self.mailgun_tracking),
            ("GET", r"/v3/([^/]+)/(bounces|complaints|unsubscribes)", self.mailgun_suppressions),
            ("GET", r"/suppressions", self.resend_suppressions),
            ("POST", r"/v2/email/outbound-bulk-emails", self.ses_send),
            ("GET", r"/v2/email/account", self.ses_account_get),
            ("GET", r"/v2/email/suppression/addresses", self.ses_suppressions),
            ("POST", r"(?:/v3)?/smtp/email", self.brevo_send),  # Brevo's paths, under /v3 or an api_base for it
            ("GET", r"(?:/v3)?/smtp/blockedContacts", self.brevo_blocked),
            ("GET", r"(?:/v3)?/smtp/statistics/events", self.brevo_events),
        ]
        for verb, pattern, handler in routes:
            match = re.fullmatch(pattern, url.path)
            if verb == method and match:
                return handler(body, query, *match.groups())
        self._answer(404, {"message": f"no route {method} {url.path}"})

    def _send(self, body: bytes, handle, wait_headers=None) -> None:
        """Shared by the send endpoints: faults first, then the provider's own logic. ``wait_headers``:
        how the provider says how long to wait (seconds -> headers), else Retry-After and X-RateLimit-Reset."""
        fault = self.owner._next_fault()
        if fault and fault.kind == "status":
            fault.reached.set()
            if wait_headers and fault.retry_after is not None:
                return self._answer(fault.status, {"code": "too_many_requests", "message": "Too many requests"},
                                    wait_headers(fault.retry_after))
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            if fault.retry_after is not None:
                headers["X-RateLimit-Reset"] = f"{time.time() + fault.retry_after:.0f}"
            return self._answer(fault.status, {"message": f"injected HTTP {fault.status}"}, headers)
        if fault and fault.kind == "echo":
            fault.reached.set()
            return self._answer(fault.status, {"message": f"bad request; it had the headers {dict(self.headers)}"})
        status, answer, headers = handle(body)
        if fault:
            fault.reached.set()  # only now: the batch is accepted before a test acts on `reached`
        if fault and fault.kind == "garbage":
            return self._answer(200, b"<html><body>502 Bad Gateway (proxy)</body></html>")
        if fault and fault.kind == "accepted":
            return self._answer(fault.status, b"")
        if fault and fault.kind == "drop":
            return self._drop()
        if fault and fault.kind == "hold":
            fault.release.wait(60)
            return self._drop()
        self._answer(status, answer, headers)

    # -- Postmark ---------------------------------------------------------------------------
    def postmark_batch(self, body: bytes, query: dict) -> None:
        token = self.headers.get("X-Postmark-Server-Token")
        if token not in (self.owner.api_key, "POSTMARK_API_TEST"):
            return self._answer(401, {"ErrorCode": 10, "Message": "Bad or missing Server API token."})
        self._send(body, lambda raw: self._postmark_accept(raw, test=token == "POSTMARK_API_TEST"))

    def _postmark_accept(self, raw: bytes, *, test: bool):
        try:
            items = json.loads(raw)
        except ValueError:
            return 422, {"ErrorCode": 402, "Message": "Received invalid JSON input."}, {}
        if not isinstance(items, list) or len(items) > 500 or len(raw) > 50_000_000:
            return 422, {"ErrorCode": 300, "Message": "Invalid email request: the batch must be an array "
                                                      "of at most 500 messages and 50 MB."}, {}
        answers, records = [], []
        for item in items:
            to = str(item.get("To", ""))
            stream = item.get("MessageStream", "outbound")
            base = {"To": to, "SubmittedAt": "2026-11-30T09:00:00.0000000-05:00"}
            if stream not in self.owner.postmark_streams:
                answers.append({**base, "ErrorCode": 1235, "Message": f"The message stream '{stream}' was not "
                                "found on this server."})
            elif not VALID.match(to):
                answers.append({"ErrorCode": 300, "Message": f"Invalid 'To' address: '{to}'."})
            elif to.lower() in self.owner.inactive:
                answers.append({"ErrorCode": 406, "Message": "You tried to send to recipient(s) that have been "
                                f"marked as inactive. Found inactive addresses: {to.lower()}. Inactive recipients "
                                "are ones that have generated a hard bounce, a spam complaint, or a manual "
                                "suppression."})
            else:
                message_id = str(uuid.uuid4())
                answers.append({**base, "MessageID": message_id, "ErrorCode": 0, "Message": "OK"})
                headers = {h["Name"]: h["Value"] for h in item.get("Headers") or []}
                html, text = item.get("HtmlBody", ""), item.get("TextBody", "")
                if self.owner.postmark_streams[stream][1] == "Postmark":
                    html, text = _postmark_unsubscribe(html, text, headers, to)
                records.append(Accepted("postmark", to, item.get("Subject", ""), html, text, headers,
                                        (item.get("Tag", ""),), str((item.get("Metadata") or {}).get("batch", "")),
                                        message_id, test, stream))
        self.owner._record(records)
        return 200, answers, {}

    def postmark_search(self, body: bytes, query: dict) -> None:
        if self.headers.get("X-Postmark-Server-Token") != self.owner.api_key:
            return self._answer(401, {"ErrorCode": 10, "Message": "Bad or missing Server API token."})
        if "count" not in query or "offset" not in query or int(query["count"]) > 500:
            return self._answer(422, {"ErrorCode": 1000, "Message": "count and offset are required; count <= 500"})
        stream = query.get("messagestream", "outbound")  # the search defaults to the transactional stream
        found = [a for a in self.owner.delivered("postmark") if a.stream == stream
                 and ("tag" not in query or query["tag"] in a.tags)
                 and ("metadata_batch" not in query or query["metadata_batch"] == a.batch)
                 and ("recipient" not in query or query["recipient"].lower() == a.to.lower())]
        offset, count = int(query["offset"]), int(query["count"])
        page = [{"Tag": a.tags[0], "MessageID": a.message_id, "To": [{"Email": a.to, "Name": None}],
                 "Recipients": [a.to], "Subject": a.subject, "Status": "Sent", "MessageStream": stream,
                 "Metadata": {"batch": a.batch}} for a in found[offset:offset + count]]
        self._answer(200, {"TotalCount": len(found), "Messages": page})

    def _postmark_stream_found(self, stream: str) -> bool:
        """The stream endpoints' checks: the server token, then the stream (else Postmark's own answers)."""
        if self.headers.get("X-Postmark-Server-Token") != self.owner.api_key:
            self._answer(401, {"ErrorCode": 10, "Message": "Bad or missing Server API token."})
            return False
        if stream not in self.owner.postmark_streams:
            self._answer(422, {"ErrorCode": 1226, "Message": "The message stream for the provided 'ID' was not found."})
            return False
        return True

    def postmark_suppressions(self, body: bytes, query: dict, stream: str) -> None:
        """The suppression dump: every suppression of the stream in one answer."""
        if not self._postmark_stream_found(stream):
            return
        reasons = {"bounce": ("HardBounce", "Recipient"), "complaint": ("SpamComplaint", "Recipient"),
                   "unsubscribe": ("ManualSuppression", "Recipient"), "manual": ("ManualSuppression", "Customer")}
        items = [{"EmailAddress": address, "SuppressionReason": reasons[kind][0], "Origin": reasons[kind][1],
                  "CreatedAt": "2026-11-20T08:15:00-05:00"}
                 for address, kind in self.owner.suppressions_of("postmark") if kind in reasons]
        self._answer(200, {"Suppressions": items})

    def postmark_stream(self, body: bytes, query: dict, stream: str) -> None:
        if not self._postmark_stream_found(stream):
            return
        kind, handling = self.owner.postmark_streams[stream]
        self._answer(200, {"ID": stream, "ServerID": 123457, "Name": stream.title(), "Description": None,
                           "MessageStreamType": kind, "CreatedAt": "2026-01-14T11:00:00-05:00", "UpdatedAt": None,
                           "ArchivedAt": None, "ExpectedPurgeDate": None,
                           "SubscriptionManagementConfiguration": {"UnsubscribeHandlingType": handling}})

    def postmark_stats(self, body: bytes, query: dict, part: str | None) -> None:
        """The Stats API: the outbound overview, opens or clicks per day, or clicks per platform, for ``tag`` and
        ``messagestream`` from ``fromdate`` to ``todate``, counted from what the fake accepted and the
        engagements with it."""
        if self.headers.get("X-Postmark-Server-Token") != self.owner.api_key:
            return self._answer(401, {"ErrorCode": 10, "Message": "Bad or missing Server API token."})
        tally = self.owner.tally("postmark", query.get("tag"), since=query.get("fromdate", ""),
                                 until=query.get("todate", "9999-12-31"), stream=query.get("messagestream"))
        if part is None:
            sent, bounced, complaints = tally.processed(), tally.count("bounce"), tally.count("complaint")
            rate = (lambda n: round(100 * n / sent, 3) if sent else 0)
            return self._answer(200, {
                "Sent": sent, "Bounced": bounced, "SMTPApiErrors": 0, "BounceRate": rate(bounced),
                "SpamComplaints": complaints, "SpamComplaintsRate": rate(complaints),
                "Opens": tally.count("open"), "UniqueOpens": tally.unique("open"), "Tracked": sent,
                "WithLinkTracking": sent, "WithOpenTracking": sent, "TotalTrackedLinksSent": sent,
                "UniqueLinksClicked": tally.unique_links(), "TotalClicks": tally.count("click"),
                "WithClientRecorded": 0, "WithPlatformRecorded": 0, "WithReadTimeRecorded": 0})
        if part == "clicks/platforms":  # the total of each platform, and the days with any clicks
            clicks = [e for e in tally.events if e.kind == "click"]
            days = [{"Date": day, **Counter(e.platform for e in clicks if e.day == day)}
                    for day in sorted({e.day for e in clicks})]
            return self._answer(200, {"Days": days, **Counter(e.platform for e in clicks)})
        kind, total = {"opens": ("open", "Opens"), "clicks": ("click", "Clicks")}[part]
        unique = (lambda day=None: tally.unique(kind, day)) if kind == "open" else tally.unique_links
        days = [{"Date": day, total: tally.count(kind, day), "Unique": unique(day)}
                for day in tally.days() if tally.count(kind, day)]  # Postmark lists the days with any
        self._answer(200, {"Days": days, total: tally.count(kind), "Unique": unique()})

    def postmark_click_search(self, body: bytes, query: dict) -> None:
        """The Messages API's click search: each click, ``count`` (at most 500) from ``offset``; 10,000 at most."""
        if self.headers.get("X-Postmark-Server-Token") != self.owner.api_key:
            return self._answer(401, {"ErrorCode": 10, "Message": "Bad or missing Server API token."})
        if "count" not in query or "offset" not in query or int(query["count"]) > 500 \
                or int(query["count"]) + int(query["offset"]) > 10_000:
            return self._answer(422, {"ErrorCode": 1000, "Message": "count and offset are required; count <= 500 "
                                                                    "and count + offset <= 10000"})
        clicks = [e for e in self.owner.tally("postmark", query.get("tag"), stream=query.get("messagestream")).events
                  if e.kind == "click" and query.get("recipient", e.message.to).lower() == e.message.to.lower()]
        offset, count = int(query["offset"]), int(query["count"])
        page = [{"RecordType": "Click", "ClickLocation": "HTML", "Client": {}, "OS": {}, "Platform": e.platform,
                 "UserAgent": "Mozilla/5.0", "OriginalLink": e.url, "Geo": {}, "MessageID": e.message.message_id,
                 "MessageStream": e.message.stream, "ReceivedAt": f"{e.day}T09:00:00Z",
                 "Tag": e.message.tags[0], "Recipient": e.message.to} for e in clicks[offset:offset + count]]
        self._answer(200, {"TotalCount": len(clicks), "Clicks": page})

    # -- SendGrid ---------------------------------------------------------------------------
    def _sendgrid_auth(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.owner.api_key}":
            self._answer(401, {"errors": [{"field": None, "message": "The provided authorization grant "
                                           "is invalid, expired, or revoked"}]})
            return False
        return True

    def sendgrid_send(self, body: bytes, query: dict) -> None:
        if self._sendgrid_auth():
            self._send(body, self._sendgrid_accept)

    def sendgrid_suppressions(self, body: bytes, query: dict, name: str) -> None:
        """One suppression list, paged by ``limit`` (at most 500) and ``offset``."""
        if not self._sendgrid_auth():
            return
        limit, offset = int(query.get("limit", 500)), int(query.get("offset", 0))
        if not 1 <= limit <= 500:
            return self._answer(400, {"errors": [{"field": "limit", "message": "limit must be between 1 and 500"}]})
        kind = {"bounces": "bounce", "blocks": "block", "invalid_emails": "invalid", "spam_reports": "complaint",
                "unsubscribes": "unsubscribe"}[name]
        found = [address for address, k in self.owner.suppressions_of("sendgrid") if k == kind]
        extra = {"bounce": {"reason": "550 5.1.1 The email account that you tried to reach does not exist",
                            "status": "5.1.1"},
                 "block": {"reason": "421 4.7.0 Try again later", "status": "4.7.0"},
                 "invalid": {"reason": "Mail domain mentioned in email address is unknown"},
                 "complaint": {"ip": "10.63.202.100"}}.get(kind, {})
        self._answer(200, [{"created": 1763626500, "email": address, **extra}
                           for address in found[offset:offset + limit]])

    def sendgrid_group_suppressions(self, body: bytes, query: dict, group: str) -> None:
        """An unsubscribe group's suppressed addresses: a JSON array of strings."""
        if not self._sendgrid_auth():
            return
        found = self.owner.sendgrid_groups.get(int(group))
        if found is None:
            return self._answer(404, {"errors": [{"field": None, "message": "Unsubscribe group not found"}]})
        self._answer(200, list(found))

    def sendgrid_category_stats(self, body: bytes, query: dict) -> None:
        """Category statistics: one row for every day from ``start_date`` to ``end_date`` (today), zeros
        included, with the metrics of the one category asked."""
        if not self._sendgrid_auth():
            return
        missing = [name for name in ("start_date", "categories") if not query.get(name)]
        if missing:
            return self._answer(400, {"errors": [{"field": missing[0], "message": "missing required argument"}]})
        if query.get("aggregated_by", "day") != "day":
            return self._answer(400, {"errors": [{"field": "aggregated_by", "message": "the fake aggregates by day"}]})
        category, end = query["categories"], query.get("end_date", _today())
        tally = self.owner.tally("sendgrid", category, since=query["start_date"], until=end)
        rows = []
        for day in _days(query["start_date"], end):
            metrics = {"blocks": 0, "bounce_drops": 0, "bounces": tally.count("bounce", day),
                       "clicks": tally.count("click", day), "deferred": 0, "delivered": tally.delivered(day),
                       "invalid_emails": 0, "opens": tally.count("open", day), "processed": tally.processed(day),
                       "requests": tally.processed(day), "spam_report_drops": 0,
                       "spam_reports": tally.count("complaint", day), "unique_clicks": tally.unique("click", day),
                       "unique_opens": tally.unique("open", day), "unsubscribe_drops": 0,
                       "unsubscribes": tally.count("unsubscribe", day)}
            rows.append({"date": day, "stats": [{"type": "category", "name": category, "metrics": metrics}]})
        self._answer(200, rows)

    def _sendgrid_accept(self, raw: bytes):
        if len(raw) > 30_000_000:
            return 413, {"errors": [{"field": None, "message": "Payload Too Large"}]}, {}
        mail = json.loads(raw)
        people = mail.get("personalizations") or []
        errors = [{"field": f"personalizations.{i}.to.0.email", "message": "Does not contain a valid address.",
                   "help": "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
                           "#message.personalizations.to"}
                  for i, p in enumerate(people)
                  if not VALID.match(p["to"][0]["email"])]
        if not 1 <= len(people) <= 1000:
            errors.append({"field": "personalizations", "message": "The personalizations field is required and "
                           "must have at least one personalization, and at most 1000."})
        group = (mail.get("asm") or {}).get("group_id")
        if "asm" in mail and (not isinstance(group, int) or isinstance(group, bool)):
            errors.append({"field": "asm.group_id", "message": "The asm.group_id must be an integer."})
        if errors:
            return 400, {"errors": errors}, {}
        content = {c["type"]: c["value"] for c in mail.get("content", [])}
        sandbox = bool(((mail.get("mail_settings") or {}).get("sandbox_mode") or {}).get("enable"))
        message_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        records = []
        for p in people:
            subs = p.get("substitutions") or {}
            fill = (lambda s, subs=subs: _substitute(s, subs))
            to, headers = p["to"][0]["email"], dict(p.get("headers") or {})
            html, text = fill(content.get("text/html", "")), fill(content.get("text/plain", ""))
            if group is not None:
                html, text = _provider_unsubscribe(html, text, headers, SENDGRID_TAG,
                                                   sendgrid_unsubscribe_url(to, group))
            records.append(Accepted("sendgrid", to, fill(p.get("subject", mail.get("subject", ""))), html, text,
                                    headers, tuple(mail.get("categories") or ()),
                                    str((p.get("custom_args") or {}).get("batch", "")), message_id, sandbox))
        self.owner._record(records)
        if sandbox:  # sandbox mode validates and answers 200 with an empty body
            return 200, b"", {}
        return 202, b"", {"X-Message-Id": message_id}

    # -- Mailgun ----------------------------------------------------------------------------
    def _mailgun_auth(self, domain: str) -> bool:
        expected = "Basic " + base64.b64encode(f"api:{self.owner.api_key}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self._answer(401, b"Forbidden")
            return False
        if domain != self.owner.domain:
            self._answer(404, {"message": f"Domain not found: {domain}"})
            return False
        return True

    def mailgun_tracking(self, body: bytes, query: dict, domain: str) -> None:
        """The domain's tracking settings (GET /v3/domains/{name}/tracking)."""
        if self._mailgun_auth(domain):
            self._answer(200, {"tracking": {"open": {"active": False, "place_at_the_top": False},
                                            "click": {"active": False},
                                            "unsubscribe": dict(self.owner.mailgun_unsubscribe),
                                            "web_scheme": "https"}})

    def mailgun_send(self, body: bytes, query: dict, domain: str) -> None:
        if self._mailgun_auth(domain):
            self._send(body, self._mailgun_accept)

    def _mailgun_accept(self, raw: bytes):
        fields = _multipart(self.headers.get("Content-Type", ""), raw)
        get = (lambda name: fields.get(name, [""])[0])
        to_list = fields.get("to", [])
        options = sum(len(k) + len(v.encode()) for k, vs in fields.items() if k[:2] in ("o:", "h:", "v:")
                      for v in vs)
        if options > 16 * 1024:
            return 400, {"message": "o:, h:, v: options exceed 16kB"}, {}
        if not to_list or len(to_list) > 1000:
            return 400, {"message": "Too many recipients: batch sending is limited to 1000 recipients"}, {}
        addresses = [email.utils.parseaddr(t)[1] for t in to_list]
        if any(not VALID.match(a) for a in addresses):
            return 400, {"message": "'to' parameter is not a valid address. please check documentation"}, {}
        variables = json.loads(get("recipient-variables") or "{}")
        message_id = f"<{time.strftime('%Y%m%d%H%M%S')}.{uuid.uuid4().hex[:12]}@{self.owner.domain}>"
        headers = {k[2:]: vs[0] for k, vs in fields.items() if k.startswith("h:")}
        records = []
        for address in addresses:
            mine = variables.get(address, {})
            fill = (lambda s, mine=mine: re.sub(r"%recipient\.([\w:-]+)%",
                                                lambda m: str(mine.get(m.group(1), m.group(0))), s))
            html, text, mine_headers = fill(get("html")), fill(get("text")), {k: fill(v) for k, v in headers.items()}
            tracking = self.owner.mailgun_unsubscribe
            if tracking["active"]:  # its link for the variable, its footers appended, its own headers
                html, text = _provider_unsubscribe(html + tracking["html_footer"], text + tracking["text_footer"],
                                                   mine_headers, MAILGUN_VARIABLE, mailgun_unsubscribe_url(address))
            records.append(Accepted("mailgun", address, fill(get("subject")), html, text,
                                    mine_headers, tuple(fields.get("o:tag", [])),
                                    get("v:newsletter-batch"), message_id, get("o:testmode") == "yes"))
        self.owner._record(records)
        return 200, {"id": message_id, "message": "Queued. Thank you."}, {}

    def mailgun_events(self, body: bytes, query: dict, domain: str, page: str | None) -> None:
        if not self._mailgun_auth(domain):
            return
        if page:  # a "paging.next" URL: the original query, moved on
            query = self.owner._pages.get(page, {})
        offset, limit = int(query.get("_offset", 0)), min(int(query.get("limit", 100)), 300)
        if query.get("event") == "clicked":  # each click on a message of the tag, with its URL
            clicks = [e for e in self.owner.tally("mailgun", query.get("tags")).events if e.kind == "click"]
            items = [{"event": "clicked", "url": e.url, "recipient": e.message.to, "tags": list(e.message.tags),
                      "timestamp": time.time(), "message": {"headers": {"message-id": e.message.message_id.strip("<>")}}}
                     for e in clicks[offset:offset + limit]]
        else:
            found = [a for a in self.owner.delivered("mailgun")
                     if query.get("event", "accepted") == "accepted"
                     and ("tags" not in query or query["tags"] in a.tags)
                     and ("recipient" not in query or query["recipient"].lower() == a.to.lower())]
            items = [{"event": "accepted", "recipient": a.to, "tags": list(a.tags), "timestamp": time.time(),
                      "user-variables": {"newsletter-batch": a.batch},
                      "message": {"headers": {"message-id": a.message_id.strip("<>"), "subject": a.subject}}}
                     for a in found[offset:offset + limit]]
        with self.owner._lock:
            token = str(len(self.owner._pages))
            self.owner._pages[token] = {**query, "_offset": offset + limit}
        next_url = f"http://{self.headers.get('Host')}/v3/{domain}/events/{token}"
        self._answer(200, {"items": items, "paging": {"next": next_url, "previous": next_url}})

    def mailgun_suppressions(self, body: bytes, query: dict, domain: str, name: str) -> None:
        """Bounces, complaints or unsubscribes, by address; ``page=next&address=A`` continues after A."""
        if not self._mailgun_auth(domain):
            return
        limit = int(query.get("limit", 100))
        if not 1 <= limit <= 1000:
            return self._answer(400, {"message": "Limit must be between 1 and 1000"})
        kind = {"bounces": "bounce", "complaints": "complaint", "unsubscribes": "unsubscribe"}[name]
        found = sorted(address for address, k in self.owner.suppressions_of("mailgun") if k == kind)
        if query.get("page") == "next":
            found = [a for a in found if a > query.get("address", "")]
        extra = {"bounce": {"code": "550", "error": "No such mailbox"}, "unsubscribe": {"tags": ["*"]},
                 "complaint": {"count": 1}}[kind]
        items = [{"address": a, "created_at": "Thu, 20 Nov 2026 08:15:00 UTC", **extra} for a in found[:limit]]
        base = f"http://{self.headers.get('Host')}/v3/{domain}/{name}"
        last = items[-1]["address"] if items else query.get("address", "")
        self._answer(200, {"items": items, "paging": {
            "first": f"{base}?limit={limit}", "last": f"{base}?page=last&limit={limit}",
            "next": f"{base}?page=next&address={quote(last)}&limit={limit}",
            "previous": f"{base}?page=previous&address={quote(items[0]['address'] if items else last)}&limit={limit}"}})

    def mailgun_metrics(self, body: bytes, query: dict) -> None:
        """The Metrics API: the asked metrics of the messages matching the filter (domain and tag, ANDed),
        from ``start`` to ``end``, per day with the ``time`` dimension, and their aggregates."""
        expected = "Basic " + base64.b64encode(f"api:{self.owner.api_key}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            return self._answer(401, b"Forbidden")
        try:
            asked = json.loads(body)
            start = email.utils.parsedate_to_datetime(asked["start"]).date().isoformat()
            end = email.utils.parsedate_to_datetime(asked.get("end") or email.utils.format_datetime(
                datetime.now(timezone.utc))).date().isoformat()
            where = {f["attribute"]: [v["value"] for v in f["values"]] for f in asked.get("filter", {}).get("AND", [])
                     if f.get("comparator") == "="}
        except (ValueError, KeyError, TypeError, AttributeError):
            return self._answer(400, {"message": "the query is not valid JSON with a start, an end and a filter"})
        if asked.get("resolution", "day") != "day" or set(asked.get("dimensions") or []) - {"time"}:
            return self._answer(400, {"message": "the fake knows the day resolution and the time dimension only"})
        if where.get("domain", [self.owner.domain]) != [self.owner.domain]:
            return self._answer(200, _metrics_answer(asked, [], {}))
        tally = self.owner.tally("mailgun", (where.get("tag") or [None])[0], since=start, until=end)

        def metrics(day: str | None) -> dict:
            every = {"processed_count": tally.processed(day), "delivered_count": tally.delivered(day),
                     "permanent_failed_count": tally.count("bounce", day),
                     "complained_count": tally.count("complaint", day),
                     "unsubscribed_count": tally.count("unsubscribe", day), "opened_count": tally.count("open", day),
                     "unique_opened_count": tally.unique("open", day), "clicked_count": tally.count("click", day),
                     "unique_clicked_count": tally.unique("click", day)}
            return {name: every.get(name, 0) for name in asked.get("metrics") or []}

        if "time" in (asked.get("dimensions") or []):
            items = [{"dimensions": [{"dimension": "time", "value": _rfc2822(day), "display_value": _rfc2822(day)}],
                      "metrics": metrics(day)} for day in _days(start, end)]
        else:
            items = [{"dimensions": [], "metrics": metrics(None)}]
        self._answer(200, _metrics_answer(asked, items, metrics(None) if asked.get("include_aggregates") else {}))

    # -- Resend -----------------------------------------------------------------------------
    def _resend_auth(self) -> bool:
        auth = self.headers.get("Authorization")
        if not auth:
            self._answer(401, {"statusCode": 401, "name": "missing_api_key",
                               "message": "Missing API key in the authorization header."})
            return False
        if auth != f"Bearer {self.owner.api_key}":
            self._answer(403, {"statusCode": 403, "name": "invalid_api_key", "message": "API key is invalid"})
            return False
        return True

    def resend_suppressions(self, body: bytes, query: dict) -> None:
        """The team's suppressions, newest first, ``limit`` (at most 100) at a time after the ``after`` id."""
        if not self._resend_auth():
            return
        with self.owner._lock:  # 2 requests a second (Resend's default), else its documented 429
            now = time.monotonic()
            recent = [t for t in self.owner.resend_read_times if now - t < 1.0]
            self.owner.resend_read_times = recent + ([] if len(recent) >= 2 else [now])
            if len(recent) >= 2:
                self.owner.rate_limited += 1
                return self._answer(429, {"statusCode": 429, "name": "rate_limit_exceeded", "message": (
                    "Too many requests. You can only make 2 requests per second. See rate limit response headers "
                    "for more information. Or contact support to increase rate limit.")}, {"retry-after": "1"})
        limit = int(query.get("limit", 20))
        if not 1 <= limit <= 100:
            return self._answer(422, {"statusCode": 422, "name": "validation_error",
                                      "message": "The `limit` parameter must be between 1 and 100."})
        origins = {"bounce": "bounce", "complaint": "complaint", "manual": "manual"}
        found = [{"id": str(uuid.uuid5(uuid.NAMESPACE_URL, address)), "email": address, "origin": origins[kind],
                  "source_id": None, "created_at": "2026-11-20 08:15:00.000+00"}
                 for address, kind in self.owner.suppressions_of("resend") if kind in origins]
        if "after" in query:
            ids = [item["id"] for item in found]
            found = found[ids.index(query["after"]) + 1:] if query["after"] in ids else []
        self._answer(200, {"object": "list", "has_more": len(found) > limit, "data": found[:limit]})

    def resend_batch(self, body: bytes, query: dict) -> None:
        if not self._resend_auth():
            return
        key = self.headers.get("Idempotency-Key")
        digest = hashlib.sha256(body).hexdigest()
        with self.owner._lock:
            seen = self.owner._idempotency.get(key) if key else None
            if key and key in self.owner._in_progress:
                return self._answer(409, {"statusCode": 409, "name": "concurrent_idempotent_requests",
                                          "message": "Same idempotency key used while original request is "
                                                     "still in progress."})
            if key and not seen:
                self.owner._in_progress.add(key)
        if seen:
            if seen[0] != digest:
                return self._answer(409, {"statusCode": 409, "name": "invalid_idempotent_request",
                                          "message": "Same idempotency key used with a different request payload."})
            return self._answer(seen[1], json.loads(seen[2]))  # a replay: the original answer, nothing sent
        try:
            self._send(body, lambda raw: self._resend_accept(raw, key, digest))
        finally:
            with self.owner._lock:
                self.owner._in_progress.discard(key)

    def _resend_accept(self, raw: bytes, key: str | None, digest: str):
        emails = json.loads(raw)
        permissive = self.headers.get("x-batch-validation") == "permissive"
        if not isinstance(emails, list) or len(emails) > 100:
            return 422, {"statusCode": 422, "name": "validation_error",
                         "message": "The batch must be an array of at most 100 emails."}, {}
        errors, records, data = [], [], []
        for index, item in enumerate(emails):
            to = item.get("to")
            address = email.utils.parseaddr(to[0] if isinstance(to, list) else str(to))[1]
            if not VALID.match(address):
                errors.append({"index": index, "message": f"Invalid `to` field. {address} is not a valid email"})
                continue
            message_id = str(uuid.uuid4())
            data.append({"id": message_id})
            tags = {t["name"]: t["value"] for t in item.get("tags") or []}
            records.append(Accepted("resend", address, item.get("subject", ""), item.get("html", ""),
                                    item.get("text", ""), dict(item.get("headers") or {}),
                                    tuple(tags.values()), tags.get("batch", ""), message_id))
        if errors and not permissive:  # strict (the default): one bad email refuses the whole batch
            return 422, {"statusCode": 422, "name": "validation_error", "message": errors[0]["message"]}, {}
        answer = {"data": data, "errors": errors} if permissive else {"data": data}
        self.owner._record(records)
        if key:
            with self.owner._lock:
                self.owner._idempotency[key] = (digest, 200, json.dumps(answer).encode())
        return 200, answer, {}

    # -- Amazon SES (v2) ----------------------------------------------------------------------
    def _ses_error(self, status: int, error_type: str, message: str) -> None:
        """SES's rest-json errors: the type in ``x-amzn-ErrorType``, the words in ``{"message"}``."""
        self._answer(status, {"message": message}, {"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/"
                                                                         "coral/com.amazonaws.sesv2/",
                                                    "x-amzn-RequestId": str(uuid.uuid4())})

    def _ses_auth(self) -> bool:
        """SigV4, checked from scratch: a wrong key id 403s as UnrecognizedClientException, a wrong signature
        (secret, body, headers, date) as InvalidSignatureException, as AWS answers them."""
        verdict = sigv4_verdict(self.command, self.path, dict(self.headers.items()), self.raw_body,
                                SES_ACCESS_KEY, self.owner.api_key, service="ses")
        if verdict == "unknown key":
            self._ses_error(403, "UnrecognizedClientException", "The security token included in the request is "
                                                                "invalid.")
            return False
        if verdict != "ok":
            self._ses_error(403, "InvalidSignatureException", "The request signature we calculated does not match "
                            "the signature you provided. Check your AWS Secret Access Key and signing method. "
                            f"Consult the service documentation for details. ({verdict})")
            return False
        self.owner.ses_regions.add(sigv4_scope(self.headers.get("Authorization", ""))[1])
        return True

    def ses_send(self, body: bytes, query: dict) -> None:
        if self._ses_auth():
            self._send(body, self._ses_accept)

    def _ses_accept(self, raw: bytes):
        def error(error_type: str, message: str):
            return 400, {"message": message}, {"x-amzn-ErrorType": error_type}

        try:
            request = json.loads(raw)
        except ValueError:
            return error("SerializationException", "Start of structure or map found where not expected.")
        entries = request.get("BulkEmailEntries") or []
        template = ((request.get("DefaultContent") or {}).get("Template") or {})
        content = template.get("TemplateContent")
        if not 1 <= len(entries) <= 50:
            return error("BadRequestException", "The number of bulk email entries must be between 1 and 50.")
        if not content:
            return error("BadRequestException", "Template must contain either TemplateName, TemplateArn or "
                                                "TemplateContent.")
        sender = email.utils.parseaddr(str(request.get("FromEmailAddress", "")))[1]
        if not VALID.match(sender):
            return error("BadRequestException", "Missing final '@domain'")
        addresses = [email.utils.parseaddr(str(to))[1] for e in entries
                     for to in (e.get("Destination") or {}).get("ToAddresses") or []]
        if any(not VALID.match(a) for a in addresses):  # the whole call is refused, without saying whose
            return error("BadRequestException", "Illegal address")
        defaults = json.loads(template.get("TemplateData") or "{}")
        results, records = [], []
        for entry in entries:
            to = email.utils.parseaddr(entry["Destination"]["ToAddresses"][0])[1]
            if not self.owner.ses_account.get("ProductionAccessEnabled") and to.lower() not in self.owner.ses_verified:
                results.append({"Status": "MESSAGE_REJECTED", "Error": "Email address is not verified. The following "
                                f"identities failed the check in region US-EAST-1: {to}"})
                continue
            data = {**defaults, **json.loads(((entry.get("ReplacementEmailContent") or {}).get("ReplacementTemplate")
                                              or {}).get("ReplacementTemplateData") or "{}")}
            message_id = f"0100018c{uuid.uuid4().hex[:24]}-000000"
            results.append({"Status": "SUCCESS", "MessageId": message_id})
            rendered = [handlebars(content.get(part) or "", data) for part in ("Subject", "Html", "Text")]
            if None in rendered:  # SES accepts, then drops it with a Rendering Failure event: never delivered
                continue
            headers = {h["Name"]: h["Value"] for h in (template.get("Headers") or []) + (entry.get(
                "ReplacementHeaders") or [])}
            tags = {t["Name"]: t["Value"] for t in (request.get("DefaultEmailTags") or []) + (entry.get(
                "ReplacementTags") or [])}
            records.append(Accepted("ses", to, *rendered, headers, tuple(tags.values()), tags.get("batch", ""),
                                    message_id))
        self.owner._record(records)
        return 200, {"BulkEmailEntryResults": results}, {}

    def ses_account_get(self, body: bytes, query: dict) -> None:
        if self._ses_auth():
            self._answer(200, self.owner.ses_account)

    def ses_suppressions(self, body: bytes, query: dict) -> None:
        """The account-level suppression list, ``PageSize`` (1 to 1000) at a time, continued by ``NextToken``."""
        if not self._ses_auth():
            return
        size = int(query.get("PageSize", 1000))
        if not 1 <= size <= 1000:
            return self._ses_error(400, "BadRequestException", "PageSize must be between 1 and 1000.")
        reasons = {"bounce": "BOUNCE", "complaint": "COMPLAINT"}
        found = [{"EmailAddress": address, "Reason": reasons[kind], "LastUpdateTime": 1763626500.0}
                 for address, kind in self.owner.suppressions_of("ses") if kind in reasons]
        start = 0
        if "NextToken" in query:
            token = base64.b64decode(query["NextToken"]).decode()
            if not token.startswith("offset:"):
                return self._ses_error(400, "InvalidNextTokenException", "The specified NextToken is invalid.")
            start = int(token[7:])
        answer: dict = {"SuppressedDestinationSummaries": found[start:start + size]}
        if start + size < len(found):
            answer["NextToken"] = base64.b64encode(f"offset:{start + size}".encode()).decode()
        self._answer(200, answer)

    # -- Brevo ------------------------------------------------------------------------------
    def _brevo_auth(self) -> bool:
        if self.headers.get("api-key") != self.owner.api_key:
            self._answer(401, {"code": "unauthorized", "message": "Key not found"})
            return False
        return True

    def brevo_send(self, body: bytes, query: dict) -> None:
        if self._brevo_auth():
            self._send(body, self._brevo_accept, lambda wait: {
                "x-sib-ratelimit-limit": "1000", "x-sib-ratelimit-remaining": "0",
                "x-sib-ratelimit-reset": f"{wait:g}"})

    def _brevo_accept(self, raw: bytes):
        def error(code: str, message: str):
            return 400, {"code": code, "message": message}, {}

        try:
            mail = json.loads(raw)
        except ValueError:
            return error("bad_request", "Input must be a valid JSON object")
        if not self.owner.brevo_credits:
            return error("not_enough_credits", "Not enough credits to send the email")
        versions = mail.get("messageVersions") or [{"to": mail.get("to") or []}]
        if len(versions) > 1000 or sum(len(v.get("to") or []) for v in versions) > 2000 \
                or any(len(v.get("to") or []) > 99 for v in versions):
            return error("invalid_parameter", "messageVersions: at most 1000 versions, 2000 recipients in all "
                                              "and 99 a version")
        sender = (mail.get("sender") or {}).get("email", "")
        if not VALID.match(sender):
            return error("invalid_parameter", "valid sender email required")
        if not mail.get("subject"):  # mandatory without a templateId, versions or not
            return error("missing_parameter", "subject is missing")
        if not (mail.get("htmlContent") or mail.get("textContent")):  # and the bodies a version may override
            return error("missing_parameter", "htmlContent is missing")
        addresses = [t.get("email", "") for v in versions for t in v.get("to") or []]
        if not addresses or any(not VALID.match(a) for a in addresses):  # refused without saying whose
            return error("invalid_parameter", "email is not valid in to")
        sandbox = str((mail.get("headers") or {}).get("X-Sib-Sandbox", "")).lower() == "drop"
        tags = tuple(mail.get("tags") or ())
        ids, records = [], []
        for version in versions:
            message_id = f"<{time.strftime('%Y%m%d%H%M%S')}.{uuid.uuid4().hex[:16]}@smtp-relay.mailin.fr>"
            ids.append(message_id)
            headers = {**(mail.get("headers") or {}), **(version.get("headers") or {})}
            for to in version["to"]:
                records.append(Accepted("brevo", to["email"], version.get("subject", mail.get("subject", "")),
                                        version.get("htmlContent", mail.get("htmlContent", "")),
                                        version.get("textContent", mail.get("textContent", "")), headers, tags,
                                        str(headers.get("X-Newsletter-Batch", "")), message_id, sandbox))
        self.owner._record(records)
        return 201, {"messageIds": ids}, {}

    def brevo_blocked(self, body: bytes, query: dict) -> None:
        """Blocked or unsubscribed transactional contacts, ``limit`` (at most 100) from ``offset``."""
        if not self._brevo_auth():
            return
        limit, offset = int(query.get("limit", 50)), int(query.get("offset", 0))
        if not 0 <= limit <= 100:
            return self._answer(400, {"code": "out_of_range", "message": "limit must be between 0 and 100"})
        reasons = {"bounce": ("hardBounce", "Hard bounce"), "complaint": ("contactFlaggedAsSpam", "Marked as spam"),
                   "unsubscribe": ("unsubscribedViaEmail", "Unsubscribed via email"),
                   "block": ("adminBlocked", "Admin blocked")}
        found = [{"email": address, "senderEmail": "notes@example.com", "blockedAt": "2026-11-20T08:15:00Z",
                  "reason": {"code": reasons[kind][0], "message": reasons[kind][1]}}
                 for address, kind in self.owner.suppressions_of("brevo") if kind in reasons]
        if not found:
            return self._answer(200, {})  # Brevo's answer when nobody is blocked
        self._answer(200, {"count": len(found), "contacts": found[offset:offset + limit]})

    def brevo_events(self, body: bytes, query: dict) -> None:
        """Transactional events: each accepted message's ``requests`` event, filtered by tag and event."""
        if not self._brevo_auth():
            return
        limit, offset = int(query.get("limit", 2500)), int(query.get("offset", 0))
        if not 0 <= limit <= 5000:
            return self._answer(400, {"code": "out_of_range", "message": "limit must be between 0 and 5000"})
        found = [{"email": a.to, "date": "2026-11-30T09:00:00.000+01:00", "subject": a.subject,
                  "messageId": a.message_id, "event": "requests", "tag": json.dumps(list(a.tags)),
                  "from": "notes@example.com"}
                 for a in self.owner.delivered("brevo")
                 if query.get("event", "requests") == "requests" and ("tags" not in query or query["tags"] in a.tags)]
        self._answer(200, {"events": found[offset:offset + limit]} if found[offset:offset + limit] else {})


def _today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


def _days(first: str, last: str) -> list[str]:
    """Every YYYY-MM-DD from ``first`` to ``last``, both included."""
    day, end, days = date.fromisoformat(first), date.fromisoformat(last), []
    while day <= end:
        days.append(day.isoformat())
        day += timedelta(days=1)
    return days


def _rfc2822(day: str) -> str:
    return email.utils.format_datetime(datetime.combine(date.fromisoformat(day), datetime.min.time(), timezone.utc))


def _metrics_answer(asked: dict, items: list, aggregates: dict) -> dict:
    """Mailgun's metrics answer around its rows: the query's window and its paging."""
    limit = int(asked.get("limit") or 1500)
    return {"start": asked.get("start"), "end": asked.get("end"), "resolution": asked.get("resolution", "day"),
            "duration": "", "dimensions": asked.get("dimensions") or [], "items": items[:limit],
            "pagination": {"sort": "", "skip": 0, "limit": limit, "total": len(items)},
            "aggregates": {"metrics": aggregates}}


PM_UNSUBSCRIBE = "{{{ pm:unsubscribe }}}"


def postmark_unsubscribe_url(address: str) -> str:
    """The link the fake's broadcast stream gives ``address`` (Postmark's own is opaque; ours names them)."""
    return f"https://pm.example/unsubscribe/{quote(address.lower())}"


def _postmark_unsubscribe(html: str, text: str, headers: dict, to: str) -> tuple[str, str]:
    """What Postmark's broadcast stream does to a message: its link where the placeholder is (else
    appended to the footer), and its own List-Unsubscribe headers in place of any the sender set."""
    url = postmark_unsubscribe_url(to)
    if PM_UNSUBSCRIBE in html:
        html = html.replace(PM_UNSUBSCRIBE, url)
    else:
        html += f'<p><a href="{url}">Unsubscribe</a></p>'
    text = text.replace(PM_UNSUBSCRIBE, url) if PM_UNSUBSCRIBE in text else f"{text}\n\nUnsubscribe: {url}"
    for name in [n for n in headers if n.lower() in ("list-unsubscribe", "list-unsubscribe-post")]:
        del headers[name]
    headers.update({"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})
    return html, text


SENDGRID_TAG = "<%asm_group_unsubscribe_raw_url%>"
MAILGUN_VARIABLE = "%unsubscribe_url%"


def sendgrid_unsubscribe_url(address: str, group: int) -> str:
    """The link the fake SendGrid gives ``address`` to leave ``group`` (SendGrid's own is opaque)."""
    return f"https://u.sendgrid.example/asm/{group}/{quote(address.lower())}"


def mailgun_unsubscribe_url(address: str) -> str:
    return f"https://email.mg.example/u/{quote(address.lower())}"


def _provider_unsubscribe(html: str, text: str, headers: dict, placeholder: str, url: str) -> tuple[str, str]:
    """What SendGrid (with an unsubscribe group) and Mailgun (on a domain that tracks unsubscribes) do: the
    reader's link where the placeholder is, and their own List-Unsubscribe headers in place of any set."""
    for name in [n for n in headers if n.lower() in ("list-unsubscribe", "list-unsubscribe-post")]:
        del headers[name]
    headers.update({"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})
    return html.replace(placeholder, url), text.replace(placeholder, url)


def _substitute(text: str, substitutions: dict) -> str:
    """SendGrid replaces every occurrence of each key, longest keys first so ``-x1-`` never eats ``-x10-``."""
    if not substitutions:
        return text
    pattern = re.compile("|".join(re.escape(k) for k in sorted(substitutions, key=len, reverse=True)))
    return pattern.sub(lambda m: substitutions[m.group(0)], text)


def _multipart(content_type: str, raw: bytes) -> dict[str, list[str]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    fields: dict[str, list[str]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields.setdefault(name, []).append(part.get_payload(decode=True).decode("utf-8"))
    return fields


# -- AWS Signature Version 4, written from AWS's description of the signing process ---------------------
_SIGV4 = re.compile(r"AWS4-HMAC-SHA256 Credential=([^,]+), ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$")


def sigv4_scope(authorization: str) -> list[str]:
    """[access key id, region, service] of an Authorization header (empty strings when it is not SigV4)."""
    match = _SIGV4.match(authorization.strip())
    parts = match.group(1).split("/") if match else []
    return [parts[0], parts[2], parts[3]] if len(parts) == 5 else ["", "", ""]


def sigv4_signature(method: str, target: str, headers: dict, body: bytes, signed: list[str], secret: str,
                    amz_date: str, region: str, service: str) -> str:
    """The hex signature of a request: canonical request -> string to sign -> HMAC chain from the secret."""
    url = urlsplit(target)
    path = quote(url.path or "/", safe="/-_.~")  # non-S3 services encode the path twice: once here suffices
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~"))
                   for k, v in parse_qsl(url.query, keep_blank_values=True))
    query = "&".join(f"{k}={v}" for k, v in pairs)
    lower = {k.lower(): v for k, v in headers.items()}
    canonical_headers = "".join(f"{name}:{' '.join(str(lower.get(name, '')).split())}\n" for name in signed)
    canonical = "\n".join([method, path, query, canonical_headers, ";".join(signed),
                           hashlib.sha256(body).hexdigest()])
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret}".encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def sigv4_verdict(method: str, target: str, headers: dict, body: bytes, access_key: str, secret: str, *,
                  service: str, now: float | None = None) -> str:
    """"ok", "unknown key", or what is wrong with the request's signature."""
    lower = {k.lower(): v for k, v in headers.items()}
    match = _SIGV4.match(str(lower.get("authorization", "")).strip())
    if not match:
        return "unknown key" if "authorization" not in lower else "not a SigV4 Authorization header"
    key_id, date, region, scope_service, terminal = (match.group(1).split("/") + [""] * 5)[:5]
    if key_id != access_key:
        return "unknown key"
    amz_date = str(lower.get("x-amz-date", ""))
    if scope_service != service or terminal != "aws4_request" or amz_date[:8] != date:
        return "credential scope does not match"
    signed = match.group(2).split(";")
    if "host" not in signed or signed != sorted(signed) or (body and "x-amz-date" not in signed):
        return "host and x-amz-date must be signed"
    try:
        when = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return "X-Amz-Date is not a date"
    if abs((time.time() if now is None else now) - when) > 300:
        return "signature expired"
    expected = sigv4_signature(method, target, headers, body, signed, secret, amz_date, region, service)
    return "ok" if hmac.compare_digest(expected, match.group(3)) else "signature does not match"


def handlebars(template: str, data: dict) -> str | None:
    """What SES's Handlebars makes of ``template``: ``{{{x}}}`` as it is, ``{{x}}`` HTML-escaped; None when a
    variable has no value (SES then drops the message with a Rendering Failure)."""
    missing = []

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in data:
            missing.append(name)
            return ""
        text = str(data[name])
        return text if match.group(1) else (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                                            .replace('"', "&quot;").replace("'", "&#x27;").replace("`", "&#x60;")
                                            .replace("=", "&#x3D;"))

    out = re.sub(r"\{\{\{\s*([\w.]+)\s*\}\}\}|\{\{\s*([\w.]+)\s*\}\}", value, template)
    return None if missing else out


def sample_batch(count: int = 3, *, issue_id: str = "2026-11-30-weekly", batch_id: str = "b0001",
                 addresses: list[str] | None = None, body_bytes: int = 0, weigh: str = "", unsubscribe: str = ""):
    """A batch with real slot templates and distinct merge values per recipient (no workspace needed).

    ``weigh``: each message's ``body_bytes`` as the send loop sets it ("bodies" or "values").
    ``unsubscribe``: the provider's placeholder as every reader's link, and no List-Unsubscribe headers of
    ours (``[unsubscribe] url = "provider"``)."""
    from newsletter.compile.personalize import values_bytes
    from newsletter.compile.slots import SlotTemplate
    from newsletter.models import Message
    from newsletter.providers.base import Batch
    from newsletter.unsubscribe import list_unsubscribe_headers

    padding = "x" * body_bytes
    template = {"subject": SlotTemplate.split("News for zqslot0qz"),
                "html": SlotTemplate.split(f"<p>Hi zqslot0qz &amp; co</p>{padding}<a href=\"zqslot1qz\">Unsubscribe</a>"),
                "text": SlotTemplate.split(f"Hi zqslot0qz & co\n{padding}\nUnsubscribe: zqslot1qz\n")}
    addresses = addresses or [f"reader{n}@example.com" for n in range(count)]
    messages, values = [], []
    for n, address in enumerate(addresses):
        url = unsubscribe or f"https://example.com/unsubscribe?t=token{n}"
        slot_values = [f"Reader <{n}> & \"friends\"", url]
        messages.append(Message(issue_id=issue_id, to=address, to_name=f"Reader {n}",
                                subject=template["subject"].fill(slot_values, html=False),
                                html=template["html"].fill(slot_values, html=True),
                                text=template["text"].fill(slot_values, html=False),
                                sender="Field Notes <notes@example.com>", reply_to="editor@example.com",
                                headers={} if unsubscribe else list_unsubscribe_headers(url, "unsubscribe@example.com"),
                                body_bytes=-1 if not weigh else values_bytes(slot_values) if weigh == "values" else
                                template["html"].json_size(slot_values, html=True)
                                + template["text"].json_size(slot_values, html=False)))
        values.append(slot_values)
    return Batch(issue_id, batch_id, tuple(messages), tuple(values), template)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key", default="fake-key", help="the API key the fake accepts")
    parser.add_argument("--domain", default="mg.example.com", help="the Mailgun domain the fake serves")
    args = parser.parse_args()
    with FakeProviders(args.key, args.domain) as fake:
        print(f"fake providers on {fake.url} (key {args.key!r}); Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
