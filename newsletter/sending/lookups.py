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
from .ratelimit import MAX_WAIT, Backoff, TokenBucket

TRIES = 4  # tries of each look-up in all


class PacedSession(requests.Session):
    """GETs at ``rate`` per second (Resend allows 2), each tried up to ``tries`` times in all on a 429, 5xx
    or dropped connection. What still fails (or asks to wait over MAX_WAIT) is answered as is, for the
    adapter to map to an error."""

    def __init__(self, rate: float, *, tries: int = TRIES, backoff: Backoff = Backoff(),
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 queries: tuple[str, ...] = ()):
        super().__init__()
        self.queries = queries
        self.limiter = TokenBucket(rate, clock=clock, sleep=sleep)
        self.tries, self.backoff, self.sleep = tries, backoff, sleep

    def request(self, method, url, *args, **kwargs):  # noqa: ANN001, ANN201 (requests' own signature)
        query = method.upper() == "POST" and any(urlsplit(url).path.endswith(path) for path in self.queries)
        if method.upper() != "GET" and not query:
            raise ValueError(f"PacedSession retries look-ups only, not {method}")
        for attempt in range(1, self.tries + 1):
            self.limiter.acquire()
            try:
                response = super().request(method, url, *args, **kwargs)
            except (requests.ConnectionError, requests.Timeout):
                if attempt == self.tries:
                    raise
                self.sleep(self.backoff.delay(attempt))
                continue
            wait = retry_after(response.headers)
            if (response.status_code != 429 and response.status_code < 500) or attempt == self.tries \
                    or (wait or 0) > MAX_WAIT:
                return response
            response.close()
            self.sleep(self.backoff.delay(attempt, wait))
        raise AssertionError("unreachable")
