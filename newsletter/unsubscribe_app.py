"""The unsubscribe page as a WSGI application (docs/unsubscribe.md).

``newsletter.unsubscribe_app:application`` reads its workspace from ``NEWSLETTER_CONFIG`` (for
gunicorn or any WSGI server); ``newsletter unsubscribe serve`` runs :func:`make_app` under the
stdlib's ``wsgiref`` with a thread per request (:func:`serve`).

It answers only at the path of ``[unsubscribe] url``:

* ``POST`` with ``List-Unsubscribe=One-Click`` (RFC 8058; the page's button sends the same):
  records the unsubscribe (:mod:`newsletter.unsubscribe_records`), then 200, no redirect;
* ``GET`` never changes anything (link scanners follow GETs): a page with the masked address
  and one button that POSTs;
* a tampered or unknown token: 400, nothing changes; too many from one address: 429;
* no token (the archive's link): a form asking for the address, which is mailed its own link.

Bodies are capped at :data:`MAX_BODY`; the full token is never logged (:func:`redact`).
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from html import escape
from socketserver import ThreadingMixIn
from typing import Callable, Iterable
from urllib.parse import parse_qs, parse_qsl, urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from . import config
from .config import Settings
from .errors import NewsletterError
from .unsubscribe import TokenFacts, open_token
from .unsubscribe_records import is_subscribed, record_unsubscribe, send_confirmation, token_secrets

MAX_BODY = 4096  # a one-click POST is 26 bytes, the address form a few hundred
REQUEST_TIMEOUT = 10.0  # seconds a client may take to send its request (wsgiref; gunicorn has --timeout)
BAD_TOKENS_PER_WINDOW = 20  # bad tokens (and address-form posts) one client may send per window
WINDOW_SECONDS = 600.0
ONE_CLICK = "One-Click"


@dataclass(frozen=True)
class Route:
    """Where ``[unsubscribe] url`` puts the token: in the path (``/u/{token}``) or a query parameter."""

    path: str  # the page's path (the token-less one when the token is in the path)
    suffix: str = ""  # what follows the token in the path
    param: str = ""  # the query parameter holding the token ("" when it is in the path)

    @classmethod
    def of(cls, template: str) -> "Route":
        parts = urlsplit(template)
        if "{token}" in parts.path:
            before, _, after = parts.path.partition("{token}")
            return cls(before, suffix=after)
        param = next(key for key, value in parse_qsl(parts.query, keep_blank_values=True) if value == "{token}")
        return cls(parts.path or "/", param=param)

    def token(self, path: str, query: str) -> str | None:
        """The token of a request to this page ("" when it has none); None when it is not this page."""
        if self.param:
            if path != self.path:
                return None
            return (parse_qs(query).get(self.param) or [""])[0]
        if path == self.path:
            return ""
        if path.startswith(self.path) and path.endswith(self.suffix):
            middle = path[len(self.path):len(path) - len(self.suffix)]
            return middle if "/" not in middle else None
        return None


class Limiter:
    """At most ``allowed`` strikes per client per ``window`` seconds (a sliding window, in memory,
    per process: each gunicorn worker keeps its own). Remembers at most ``clients`` clients."""

    def __init__(self, allowed: int = BAD_TOKENS_PER_WINDOW, window: float = WINDOW_SECONDS,
                 clients: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.allowed, self.window, self.clients, self.clock = allowed, window, clients, clock
        self._strikes: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def blocked(self, client: str) -> bool:
        with self._lock:
            return len(self._recent(client)) >= self.allowed

    def strike(self, client: str) -> None:
        with self._lock:
            self._recent(client).append(self.clock())
            self._strikes.move_to_end(client)
            while len(self._strikes) > self.clients:
                self._strikes.popitem(last=False)

    def _recent(self, client: str) -> deque[float]:
        times = self._strikes.setdefault(client, deque())
        while times and times[0] <= self.clock() - self.window:
            times.popleft()
        return times


def mask(email: str) -> str:
    """``ada@example.com`` -> ``a***@example.com``: enough for a reader to recognise, little for others."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def redact(text: str, token: str) -> str:
    """``text`` with the token cut to its first 6 characters: logs never hold a working link."""
    return text.replace(token, token[:6] + "…") if token else text


class UnsubscribeApp:
    def __init__(self, settings: Settings, *, limiter: Limiter | None = None, log=None):
        self.settings = settings
        self.secrets = token_secrets(settings)  # refuses a url without {token} or an unset secret
        self.route = Route.of(settings.unsubscribe.url)
        self.limiter = limiter or Limiter()
        self.name = settings.newsletter.name
        self._log = log

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        token = self.route.token(path, environ.get("QUERY_STRING", ""))
        method = environ.get("REQUEST_METHOD", "GET")
        if token is None:
            return self._page(start_response, "404 Not Found", "Not found", "<p>There is nothing here.</p>")
        if method not in ("GET", "HEAD", "POST"):
            return self._page(start_response, "405 Method Not Allowed", "Not allowed",
                              "<p>Use the link from the email.</p>", [("Allow", "GET, HEAD, POST")])
        client = _client(environ)
        if method == "POST":
            body = _body(environ)
            if body is None:
                return self._page(start_response, "413 Content Too Large", "Too large", "<p>That request is too large.</p>")
        if not token:
            return self._ask_address(environ, start_response, client, body if method == "POST" else None)
        facts = open_token(token, self.secrets)
        if facts is None:
            # Only what fails is limited: a valid token cannot be forged, and mail providers' one-click POSTs
            # share addresses (and a proxy without X-Forwarded-For makes every reader 127.0.0.1), so counting
            # them would let anyone with bad tokens block everyone's unsubscribes.
            if self.limiter.blocked(client):
                return self._too_many(start_response)
            self.limiter.strike(client)
            self.log(environ, f"refused a token that does not open ({redact(token, token)}) from {client}")
            return self._page(start_response, "400 Bad Request", "Link not recognised",
                              "<p>This unsubscribe link is not valid: it may have been cut short or changed.</p>"
                              + self._address_form("Enter your address and we will mail you a link that works."))
        if method == "POST":
            return self._unsubscribe(environ, start_response, facts, body, token)
        return self._confirm_page(start_response, facts)

    # -- the token's pages ---------------------------------------------------------------
    def _confirm_page(self, start_response, facts: TokenFacts) -> Iterable[bytes]:
        return self._page(start_response, "200 OK", f"Unsubscribe from {self.name}",
                          f"<p>Unsubscribe <strong>{escape(mask(facts.email))}</strong> from "
                          f"{escape(self.name)}?</p>"
                          '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
                          '<button type="submit">Unsubscribe</button></form>')

    def _unsubscribe(self, environ, start_response, facts: TokenFacts, body: bytes, token: str) -> Iterable[bytes]:
        if _form(environ, body).get("List-Unsubscribe") != ONE_CLICK:
            return self._page(start_response, "400 Bad Request", "Not a one-click unsubscribe",
                              "<p>Use the button on the unsubscribe page.</p>")
        try:
            done = record_unsubscribe(self.settings, facts)
        except NewsletterError as err:  # the ledger is busy or unwritable: say so, the reader can try again
            self.log(environ, f"could not record an unsubscribe ({redact(token, token)}): {err.render()}")
            return self._page(start_response, "503 Service Unavailable", "Please try again",
                              "<p>We could not record your unsubscribe just now. Please try again in a minute.</p>",
                              [("Retry-After", "60")])
        self.log(environ, f"unsubscribed {mask(facts.email)} (issue {facts.issue_id or '-'}; "
                          f"{'new' if done.suppressed else 'already suppressed'}; list: {done.list_note})")
        return self._page(start_response, "200 OK", "Unsubscribed",
                          f"<p>{escape(mask(facts.email))} will get no more mail from {escape(self.name)}.</p>")

    # -- the token-less page: ask for the address, mail it its link ----------------------
    def _ask_address(self, environ, start_response, client: str, body: bytes | None) -> Iterable[bytes]:
        if body is None:
            return self._page(start_response, "200 OK", f"Unsubscribe from {self.name}",
                              self._address_form("Enter your address: we will mail you a link to unsubscribe."))
        if self.limiter.blocked(client):
            return self._too_many(start_response)
        self.limiter.strike(client)  # each request may send a mail: counted like a bad token
        email = (_form(environ, body).get("email") or "").strip()
        if "@" not in email or len(email) > 254 or any(c in email for c in "\r\n"):
            return self._page(start_response, "400 Bad Request", "Not an address",
                              self._address_form("That does not look like an email address."))
        try:
            if is_subscribed(self.settings, email):
                send_confirmation(self.settings, email, self.secrets[0])
                self.log(environ, f"mailed an unsubscribe link to {mask(email)}")
        except NewsletterError as err:
            self.log(environ, f"could not mail an unsubscribe link to {mask(email)}: {err.render()}")
            return self._page(start_response, "503 Service Unavailable", "Please try again",
                              "<p>We could not send the mail just now. Please try again later.</p>")
        # The same answer whether or not the address is on the list: the page tells nobody who reads it.
        return self._page(start_response, "200 OK", "Check your inbox",
                          f"<p>If {escape(email)} is subscribed to {escape(self.name)}, a mail with a link to "
                          "unsubscribe is on its way.</p>")

    def _address_form(self, prompt: str) -> str:
        return (f"<p>{escape(prompt)}</p><form method=\"post\" action=\"{escape(self.route.path)}\">"
                '<input type="email" name="email" required autocomplete="email"> '
                '<button type="submit">Send me the link</button></form>')

    def _too_many(self, start_response) -> Iterable[bytes]:
        return self._page(start_response, "429 Too Many Requests", "Too many attempts",
                          "<p>Too many attempts from your address. Please try again later.</p>",
                          [("Retry-After", str(int(self.limiter.window)))])

    # -- plumbing ------------------------------------------------------------------------
    def _page(self, start_response, status: str, title: str, body: str,
              extra: list[tuple[str, str]] | None = None) -> Iterable[bytes]:
        page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
                f'content="width=device-width"><title>{escape(title)}</title><style>body{{font-family:sans-serif;'
                f'max-width:32em;margin:3em auto;padding:0 1em}}</style></head><body><h1>{escape(title)}</h1>'
                f"{body}</body></html>").encode()
        start_response(status, [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(page))),
                                ("Cache-Control", "no-store"), ("Referrer-Policy", "no-referrer"),
                                ("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                                ("Content-Security-Policy",
                                 "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"),
                                *(extra or [])])
        return [page]

    def log(self, environ: dict, line: str) -> None:
        stream = self._log or environ.get("wsgi.errors") or sys.stderr
        stream.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} unsubscribe: {line}\n")
        stream.flush()


def _client(environ: dict) -> str:
    """The client's address; behind a proxy on this host, the last hop it appended to X-Forwarded-For."""
    remote = environ.get("REMOTE_ADDR", "")
    forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
    if forwarded and remote in ("127.0.0.1", "::1"):
        return forwarded.rsplit(",", 1)[-1].strip() or remote
    return remote


def _body(environ: dict) -> bytes | None:
    """The request body, or None when it is over :data:`MAX_BODY` (not read then)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if length > MAX_BODY or length < 0:
        return None
    return environ["wsgi.input"].read(length) if length else b""


def _form(environ: dict, body: bytes) -> dict[str, str]:
    """A urlencoded or multipart form's fields (RFC 8058 allows either for the one-click POST)."""
    kind = environ.get("CONTENT_TYPE", "")
    text = body.decode("utf-8", "replace")
    if kind.startswith("multipart/form-data"):
        fields = {}
        for part in text.split("--")[1:]:
            head, _, value = part.partition("\r\n\r\n")
            if 'name="' in head:
                fields[head.split('name="', 1)[1].split('"', 1)[0]] = value.rstrip("\r\n")
        return fields
    return {key: value for key, value in parse_qsl(text, keep_blank_values=True)}


def make_app(settings: Settings, **kwargs) -> UnsubscribeApp:
    return UnsubscribeApp(settings, **kwargs)


_QUERY_VALUE = re.compile(r"([?&][^=&]*=)([^&]{7,})")


class _QuietHandler(WSGIRequestHandler):
    """wsgiref's handler with a read timeout and request lines logged without the token."""

    timeout = REQUEST_TIMEOUT

    def log_request(self, code="-", size="-") -> None:
        path, _, query = self.path.partition("?")
        token = self.server.app_route.token(path, query) if hasattr(self.server, "app_route") else None  # type: ignore[attr-defined]
        # Every query value cut too: a token sent to a path that is not the page's (a stray slash) is still one.
        shown = _QUERY_VALUE.sub(lambda m: m.group(1) + redact(m.group(2), m.group(2)), redact(self.path, token or ""))
        self.log_message('"%s %s" %s', self.command, shown, str(code))


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow client never keeps the process from stopping
    # socketserver listens with a backlog of 5: a burst of one-click POSTs (mail clients fire them as
    # readers click, many at once after a send) would have its SYNs dropped or its connections reset.
    request_queue_size = socket.SOMAXCONN


def open_server(settings: Settings, host: str, port: int, **kwargs) -> ThreadingServer:
    """The app under wsgiref, bound (port 0: any free port) but not serving yet."""
    app = make_app(settings, **kwargs)
    server = make_server(host, port, app, server_class=ThreadingServer, handler_class=_QuietHandler)
    server.app_route = app.route  # type: ignore[attr-defined]
    return server


def serve(settings: Settings, host: str, port: int, *, ready: Callable[[str], None] = print) -> None:
    """Run the app under wsgiref until interrupted."""
    with open_server(settings, host, port) as server:
        ready(f"Serving unsubscribes for {settings.newsletter.name} at http://{host}:{server.server_port}"
              f"{server.app_route.path} (Ctrl-C to stop)")  # type: ignore[attr-defined]
        server.serve_forever()


def _application() -> Callable:
    """The app for a WSGI server: the workspace of ``NEWSLETTER_CONFIG`` (else ./newsletter.toml)."""
    return make_app(config.load(config.find_config(None, os.environ)))


class _LazyApplication:
    """Loads the workspace on the first request, so importing the module needs no configuration."""

    def __init__(self) -> None:
        self._app: Callable | None = None
        self._lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        with self._lock:
            if self._app is None:
                self._app = _application()
        return self._app(environ, start_response)


application = _LazyApplication()
