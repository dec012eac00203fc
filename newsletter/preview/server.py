"""The preview's HTTP server: a fixed set of routes and nothing read from the disk on request.

    /                 the preview page            /static/preview.css, preview.js
    /email.html?as=   the personalised HTML part  /email.txt?as=  the plain-text part
    /api/state?as=    headers, size, lint findings, subscriber choices or the compile error (JSON)
    &layout=NAME      (on the three above) the issue with another layout of the templates folder:
                      a name listed from that folder, never a path
    /events           Server-Sent Events: a "version" event each time the issue recompiles
    /report.html      the issue's report (`newsletter report ISSUE --html`) once it has been sent; 404 before

Anything else is 404. A target with a ``..`` or ``.`` segment (also percent-encoded),
a backslash or an absolute form is refused with 400 before routing. When the server
listens on loopback, a request whose Host header is not a loopback name is refused
with 403, so that a web page cannot read the issue and subscriber addresses through
DNS rebinding.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import socket
import socketserver
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ConfigError, NewsletterError
from .live import LiveIssue
from .reporttab import is_sent, report_html

KEEPALIVE_SECONDS = 15.0  # a comment line this often lets a stream notice a closed tab

STATIC = {  # the only files the server ever sends, read from the package once
    "index.html": "text/html; charset=utf-8",
    "preview.css": "text/css; charset=utf-8",
    "preview.js": "text/javascript; charset=utf-8",
}

PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; frame-src 'self'; "
            "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# The email is sandboxed twice: by the iframe's sandbox attribute and by this header, so it cannot
# run scripts even when /email.html is opened on its own. Same-origin (without scripts) lets the
# page keep the reader's scroll position across reloads.
# The report page: inline CSS and SVG, nothing else (no script, no request of its own).
REPORT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
              "frame-ancestors 'self'")
EMAIL_CSP = ("sandbox allow-same-origin allow-popups allow-popups-to-escape-sandbox; script-src 'none'; "
             "object-src 'none'; frame-ancestors 'self'")


@functools.cache
def static_file(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` (an address or a name such as ``localhost``) stays on this machine."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if not host:
        return False  # "" means every interface
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def is_loopback_name(host_header: str) -> bool:
    """A Host header naming this machine, judged without DNS (resolving is what rebinding abuses)."""
    try:
        name = urlsplit("//" + host_header).hostname or ""
    except ValueError:
        return False
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def refusal(target: str) -> str | None:
    """Why a request target is refused before routing, or None."""
    if not target.startswith("/") or target.startswith("//"):
        return "only paths on this preview are served"
    path = urlsplit(target).path
    decoded = unquote(path)
    if "\\" in decoded or "\x00" in decoded or any(seg in ("..", ".") for seg in decoded.split("/")):
        return "path outside the preview"
    return None


def with_link_target(html: str) -> str:
    """Links in the email open a new tab instead of navigating the preview frame."""
    base = '<base target="_blank">'
    head = re.search(r"<head\b[^>]*>", html, re.I)
    return html[:head.end()] + base + html[head.end():] if head else base + html


class PreviewHandler(BaseHTTPRequestHandler):
    server: "PreviewServer"
    server_version = "newsletter-preview"

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        why = refusal(self.path)
        if why:
            return self._send(400, f"Refused: {why}.\n".encode(), "text/plain; charset=utf-8")
        host = self.headers.get("Host")
        if self.server.check_host and host and not is_loopback_name(host):
            return self._send(403, f"Refused: Host {host!r} is not this machine; open the address "
                                   f"`newsletter preview` printed.\n".encode(), "text/plain; charset=utf-8")
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        email = query.get("as", [""])[0].strip() or None
        self.layout = query.get("layout", [""])[0].strip() or None  # the page's "Layout" choice
        route = ROUTES.get(url.path)
        if route is None:
            return self._send(404, b"Not found: the preview serves only its page and the compiled email.\n",
                              "text/plain; charset=utf-8")
        route(self, email)

    def page(self, _email: str | None) -> None:
        self._send(200, static_file("index.html"), STATIC["index.html"], csp=PAGE_CSP)

    def asset(self, name: str) -> None:
        self._send(200, static_file(name), STATIC[name], csp=PAGE_CSP)

    def email_html(self, email: str | None) -> None:
        html = self.server.live.email_html(email, self.layout)
        if html is None:
            return self._send(503, b"The issue does not compile right now; the preview page shows why.\n",
                              "text/plain; charset=utf-8")
        self._send(200, with_link_target(html).encode(), "text/html; charset=utf-8", csp=EMAIL_CSP)

    def email_text(self, email: str | None) -> None:
        view = self.server.live.view(email, self.layout)
        if view["error"]:
            return self._send(503, b"The issue does not compile right now.\n", "text/plain; charset=utf-8")
        self._send(200, view["text"].encode(), "text/plain; charset=utf-8")

    def state(self, email: str | None) -> None:
        view = self.server.live.view(email, self.layout)
        view["report"] = is_sent(self.server.live.settings, self.server.live.issue_id)  # the page's Report tab
        self._send(200, json.dumps(view, ensure_ascii=False).encode(), "application/json; charset=utf-8")

    def report(self, _email: str | None) -> None:
        live = self.server.live
        try:
            if live.settings is None:
                raise ConfigError("the configuration does not load; the preview page shows why")
            html = report_html(live.settings, live.issue_id)
        except NewsletterError as err:
            return self._send(404, f"No report: {err.message}.\n".encode(), "text/plain; charset=utf-8")
        self._send(200, html.encode(), "text/html; charset=utf-8", csp=REPORT_CSP)

    def events(self, _email: str | None) -> None:
        """Push the compile tag now and whenever it changes; the page then fetches /api/state."""
        live = self.server.live
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        seen = None
        try:
            self.wfile.write(b"retry: 1000\n\n")  # reconnect quickly after a restart
            while not live.closed:
                tag = live.tag
                self.wfile.write(f"event: version\ndata: {tag}\n\n".encode() if tag != seen else b": waiting\n\n")
                seen = tag
                live.wait_for_change(seen, KEEPALIVE_SECONDS)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the tab was closed

    def _send(self, status: int, body: bytes, content_type: str, *, csp: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")  # links clicked in the email must not leak ?as=<address>
        if csp:
            self.send_header("Content-Security-Policy", csp)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the stdlib's signature)
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


ROUTES = {
    "/": PreviewHandler.page,
    "/static/preview.css": lambda handler, _email: handler.asset("preview.css"),
    "/static/preview.js": lambda handler, _email: handler.asset("preview.js"),
    "/email.html": PreviewHandler.email_html,
    "/email.txt": PreviewHandler.email_text,
    "/api/state": PreviewHandler.state,
    "/events": PreviewHandler.events,
    "/report.html": PreviewHandler.report,
}


class PreviewServer(ThreadingHTTPServer):
    """Serves one :class:`LiveIssue` on ``host:port`` (port 0: a free one)."""

    daemon_threads = True  # open event streams must not keep Ctrl-C waiting
    request_queue_size = socket.SOMAXCONN  # not socketserver's 5: a page asks for its images at once

    def __init__(self, live: LiveIssue, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False):
        self.live = live
        self.verbose = verbose
        self.check_host = is_loopback(host)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            super().__init__((host.strip("[]"), port), PreviewHandler)
        except OSError as err:
            what = "is in use" if port and err.errno in (98, 48, 10048) else f"cannot be used: {err.strerror or err}"
            raise ConfigError(f"{host} port {port} {what}",
                              hint="leave out --port to get a free one, or check --host") from None

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall for seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::"):  # every interface: the local browser uses loopback
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
