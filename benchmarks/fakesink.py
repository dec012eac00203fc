"""The local fake of the providers (``tests/fakeproviders.py``), made fit for benchmarks.

Two modes, both counting what they are sent (requests, body bytes, recipients,
repeated addresses) and keeping no message, so the fake's memory stays flat
however long the list:

* ``sink`` (default): zero latency. The fake's routes, auth checks, fault
  plumbing and answers, but a send only counts its recipients and answers the
  provider's documented success shape (Postmark's per-message array, SendGrid's
  202 + ``X-Message-Id``, Mailgun's ``Queued. Thank you.``, Resend's ``data[]``,
  SES's ``BulkEmailEntryResults[]``, Brevo's 201 ``messageIds``); SES's SigV4 is
  still checked.
  It stands for a provider that does its work elsewhere: what is left is the cost
  of getting the bytes there.
* ``faithful``: the fake unchanged (each message rebuilt as its recipient would
  see it: SendGrid substitutions, Mailgun recipient variables), only not kept.
  Slower than the client for the template providers: use it to check, not to time.

``--latency MS`` makes every call wait that long once its body is read (a real
provider takes 100-500 ms), on its own connection's thread, so calls in flight
overlap as they do at a provider.

``GET /_bench/stats`` answers the counts and the CPU seconds the fake used;
``POST /_bench/reset`` zeroes them. Standalone: ``python benchmarks/fakesink.py
[--faithful] [--latency MS]`` prints its URL and serves until stdin closes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import uuid
from collections import Counter
from http.server import ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakeproviders import FakeProviders, _Handler  # noqa: E402

# One match per message of a request, whatever the JSON spacing. Inside a JSON string a quote is
# escaped (\"), so text in a body that reads like one of these keys cannot match.
_POSTMARK_MESSAGE = re.compile(rb'"TextBody"\s*:')
_RESEND_MESSAGE = re.compile(rb'"html"\s*:')
_SENDGRID_RECIPIENT = re.compile(rb'"custom_args"\s*:')
_MAILGUN_TO = re.compile(rb'name="to"\r\n')
_SES_ENTRY = re.compile(rb'"Destination"\s*:')
_BREVO_VERSION = re.compile(rb'"to"\s*:\s*\[')  # each message version's; the request itself has none


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.requests = self.bytes = 0
        self.recipients: Counter[str] = Counter()  # provider -> recipients accepted
        self.seen: set[str] = set()  # addresses (faithful mode: exactly-once check)
        self.repeats = 0
        self.first = self.last = 0.0  # epoch seconds of the first and the last send counted (the send's span)
        self.cpu_at_reset = time.process_time()

    def as_dict(self) -> dict:
        return {"requests": self.requests, "bytes": self.bytes, "recipients": dict(self.recipients),
                "repeats": self.repeats, "first": self.first, "last": self.last,
                "cpu": time.process_time() - self.cpu_at_reset}


class _BenchHandler(_Handler):
    owner: "BenchFake"
    # The answer's headers and body leave in two writes: with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms a request on Linux). A provider does not make us wait like that.
    disable_nagle_algorithm = True

    def _body(self) -> bytes:
        raw = super()._body()
        with self.owner.stats.lock:
            self.owner.stats.requests += 1
            self.owner.stats.bytes += len(raw)
        return raw

    def _route(self, method: str) -> None:
        if self.path == "/_bench/stats":
            return self._answer(200, self.owner.stats.as_dict())
        if self.path == "/_bench/reset":
            self._body()
            self.owner.stats.reset()
            return self._answer(200, {})
        return super()._route(method)


class _SinkHandler(_BenchHandler):
    """Each send endpoint counts its recipients and answers success at once."""

    def _count(self, provider: str, n: int) -> None:
        with self.owner.stats.lock:
            self.owner.stats.recipients[provider] += n
            self.owner.stats.first = self.owner.stats.first or time.time()
            self.owner.stats.last = time.time()

    def _postmark_accept(self, raw: bytes, *, test: bool):
        n = len(_POSTMARK_MESSAGE.findall(raw))
        self._count("postmark", n)
        return 200, [{"ErrorCode": 0, "Message": "OK", "MessageID": str(uuid.uuid4()),
                      "SubmittedAt": "2026-11-30T09:00:00.0000000-05:00"} for _ in range(n)], {}

    def _sendgrid_accept(self, raw: bytes):
        self._count("sendgrid", len(_SENDGRID_RECIPIENT.findall(raw)))
        return 202, b"", {"X-Message-Id": uuid.uuid4().hex}

    def _mailgun_accept(self, raw: bytes):
        self._count("mailgun", len(_MAILGUN_TO.findall(raw)))
        return 200, {"id": f"<{uuid.uuid4().hex[:12]}@{self.owner.domain}>", "message": "Queued. Thank you."}, {}

    def _resend_accept(self, raw: bytes, key: str | None, digest: str):
        n = len(_RESEND_MESSAGE.findall(raw))
        self._count("resend", n)
        answer = {"data": [{"id": str(uuid.uuid4())} for _ in range(n)]}
        if self.headers.get("x-batch-validation") == "permissive":
            answer["errors"] = []
        return 200, answer, {}


    def _ses_accept(self, raw: bytes):
        n = len(_SES_ENTRY.findall(raw))
        self._count("ses", n)
        return 200, {"BulkEmailEntryResults": [{"Status": "SUCCESS", "MessageId": f"0100018c{uuid.uuid4().hex}"}
                                               for _ in range(n)]}, {}

    def _brevo_accept(self, raw: bytes):
        n = len(_BREVO_VERSION.findall(raw))
        self._count("brevo", n)
        return 201, {"messageIds": [f"<{uuid.uuid4().hex}@smtp-relay.mailin.fr>" for _ in range(n)]}, {}


class BenchFake(FakeProviders):
    """:class:`FakeProviders` that counts instead of keeping (``faithful``), or a zero-latency sink."""

    def __init__(self, *, faithful: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.faithful = faithful
        self.stats = _Stats()

    def start(self) -> "BenchFake":
        fake = self

        class Handler(_BenchHandler if self.faithful else _SinkHandler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _record(self, records) -> None:  # faithful mode: count, check, forget
        with self.stats.lock:
            for record in records:
                if record.test:
                    continue
                self.stats.recipients[record.provider] += 1
                key = record.to.lower()
                if key in self.stats.seen:
                    self.stats.repeats += 1
                self.stats.seen.add(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faithful", action="store_true", help="the fake's full per-recipient work")
    parser.add_argument("--latency", type=float, default=0.0, metavar="MS", help="each call's wait, in ms")
    parser.add_argument("--key", default="fake-key")
    parser.add_argument("--domain", default="mg.example.com")
    args = parser.parse_args()
    with BenchFake(faithful=args.faithful, api_key=args.key, domain=args.domain) as fake:
        fake.latency = args.latency / 1000
        print(json.dumps({"url": fake.url}), flush=True)
        sys.stdin.read()  # serve until the parent closes our stdin (or exits)


if __name__ == "__main__":
    main()
