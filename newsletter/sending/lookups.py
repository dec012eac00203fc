"""Look-ups (GET) at the provider's request rate, each tried again after trouble that passes.

Suppression lists, stream settings: reading twice is harmless, so a 429 (after
its ``Retry-After``), a 5xx or a dropped connection costs a wait, not the
pages already read. Sends never come here: a POST tried again could send twice; the only
POSTs taken are read-only queries named by path (``queries``: Mailgun's metrics API).
"""

from __future__ import annotations

import time
from typing import Callable
from urllib.parse import urlsplit

import requests

from ..providers.answers import retry_after
from .ratelimit import Backoff, TokenBucket

TRIES = 4  # tries of each look-up in all
LOOKUP_RETRY = Backoff(tries=TRIES)


class PacedSession(requests.Session):
    """GETs at ``rate`` per second (Resend allows 2), each tried again after a 429, a 5xx or a dropped
    connection as ``retry`` says. What still fails (or asks to wait over its ``max_wait``) is answered as
    is, for the adapter to map to an error."""

    def __init__(self, rate: float, *, retry: Backoff = LOOKUP_RETRY, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, queries: tuple[str, ...] = ()):
        super().__init__()
        self.queries = queries
        self.limiter = TokenBucket(rate, clock=clock, sleep=sleep)
        self.retry, self.sleep = retry, sleep

    def request(self, method, url, *args, **kwargs):  # noqa: ANN001, ANN201 (requests' own signature)
        query = method.upper() == "POST" and any(urlsplit(url).path.endswith(path) for path in self.queries)
        if method.upper() != "GET" and not query:
            raise ValueError(f"PacedSession retries look-ups only, not {method}")
        attempt = 1
        while True:
            self.limiter.acquire()
            try:
                response = super().request(method, url, *args, **kwargs)
            except (requests.ConnectionError, requests.Timeout):
                if not self.retry.tries_left(attempt):
                    raise
                self.sleep(self.retry.delay(attempt))
                attempt += 1
                continue
            wait = retry_after(response.headers)
            if (response.status_code != 429 and response.status_code < 500) or not self.retry.tries_left(attempt) \
                    or self.retry.too_long(wait):
                return response
            response.close()
            self.sleep(self.retry.delay(attempt, wait))
            attempt += 1
