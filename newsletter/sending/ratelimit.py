"""Pacing: a token bucket for the request rate, and the one retry policy (:class:`Backoff`) that the
send loop (``pool.py``), the paced look-ups (``lookups.py``) and proof copies (``proofs.py``) all use
(docs/architecture.md, the send protocol)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Callable

# The longest wait a run accepts from a provider's Retry-After / X-RateLimit-Reset. A longer one
# (an exhausted daily quota) stops the run as incomplete (exit 4) instead of holding cron for hours.
MAX_WAIT = 15 * 60.0


def wait_words(seconds: float) -> str:
    """A wait in words: "45 s", "15 min", "2.5 h"."""
    if seconds < 10:  # a back-off of 0.6 s is not "1 s"
        return f"{seconds:.1f} s".replace(".0 s", " s")
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h".replace(".0 h", " h")


class TokenBucket:
    """``rate`` requests per second shared by every worker thread; ``rate <= 0`` means unlimited.

    The bucket starts full with ``burst`` tokens. :meth:`pause` stops everyone
    until a moment (a 429's ``Retry-After`` applies to the whole account, not
    just the batch that got it).
    """

    def __init__(self, rate: float, burst: float = 1.0, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate = rate
        self._full_burst = max(1.0, burst)
        self.burst = self._full_burst
        self._tokens = self.burst
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._resume_at = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping as long as needed; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                delay = self._resume_at - now
                if delay <= 0:
                    if self.rate <= 0:
                        return waited
                    self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                    self._last = now
                    if self._tokens >= 1 - 1e-9:  # float rounding must not leave us a hair short forever
                        self._tokens = max(0.0, self._tokens - 1)
                        return waited
                    delay = (1 - self._tokens) / self.rate
            self._sleep(delay)
            waited += delay

    def set_rate(self, rate: float) -> None:
        """A new rate from now on (a worker's share of the global rate, as workers come and go). The burst
        shrinks with it (never below one call): N workers each holding the whole burst would start N
        bursts at once, over the account's rate."""
        with self._lock:
            now = self._clock()
            if self.rate > 0:  # the tokens earned so far at the old rate are kept
                self._tokens = self._tokens + (now - self._last) * self.rate
            self.burst = max(1.0, min(self._full_burst, rate)) if rate > 0 else self._full_burst
            self._tokens = min(self.burst, self._tokens)
            self._last = now
            self.rate = rate

    def pause(self, seconds: float) -> None:
        """Nobody gets a token for ``seconds`` from now (never shortens an earlier pause)."""
        with self._lock:
            self._resume_at = max(self._resume_at, self._clock() + seconds)


@dataclass(frozen=True)
class Backoff:
    """The retry policy: exponential backoff with jitter, a server's ``Retry-After`` honoured up to
    ``max_wait``, and ``tries`` in all.

    Attempt n waits between half and all of ``base * 2**(n-1)``, capped at ``cap``; jitter keeps the
    workers that failed together from retrying together. A ``Retry-After`` replaces the exponential
    delay; one longer than ``max_wait`` is not waited for (:meth:`too_long`): the caller stops instead.
    """

    base: float = 1.0
    cap: float = 60.0
    max_wait: float = MAX_WAIT
    tries: int = 5

    def delay(self, attempt: int, retry_after: float | None = None, *, rand: Callable[[], float] = random.random) -> float:
        ceiling = min(self.cap, self.base * 2 ** max(0, attempt - 1))
        jittered = ceiling * (0.5 + 0.5 * rand())
        if retry_after is not None:
            # At least what the server asked for, plus a little jitter so workers do not return in step.
            return max(0.0, retry_after) + 0.1 * jittered
        return jittered

    def too_long(self, retry_after: float | None) -> bool:
        """True when the server asks for a longer wait than this policy accepts."""
        return retry_after is not None and retry_after > self.max_wait

    def tries_left(self, attempt: int) -> bool:
        """True when another try may follow try number ``attempt``."""
        return attempt < self.tries
