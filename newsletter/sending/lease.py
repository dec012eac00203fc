"""A run's hold on an issue for its length: taken at the start, its heartbeat kept in a thread, released
at the end (docs/sending.md; docs/team.md for several workers).

On a one-run ledger (SQLite) that hold is the issue's lease: a second run exits 75, and a lease whose
holder has been silent for ``LEASE_STALE_AFTER`` seconds (a killed run, a host gone away) is taken
over; see :class:`newsletter.ledger.base.Lease`. On a many-worker ledger (PostgreSQL) it is this
worker's registration: each heartbeat also records its recipients/s and reads how many workers are
live, and the run's rate becomes its share of the provider's rate (``rate_limit / live workers``).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Callable

from ..errors import LedgerError
from ..ledger.base import Ledger

LEASE_STALE_AFTER = 60.0  # seconds without a heartbeat before another host may take the issue over
HEARTBEAT_EVERY = 5.0


class LeaseKeeper:
    """Holds the issue's lease (or registration) for the run and beats its heart in a thread; ``on_lost``
    when taken over or reaped; ``on_share`` with the number of live workers (many workers only)."""

    def __init__(self, ledger: Ledger, issue_id: str, *, every: float = HEARTBEAT_EVERY,
                 stale_after: float = LEASE_STALE_AFTER):
        self.ledger = ledger
        self.issue_id = issue_id
        self.holder = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.every = every
        self.stale_after = stale_after
        self.on_lost: Callable[[], None] = lambda: None
        self.on_share: Callable[[int], None] = lambda live: None
        self.sent: Callable[[], int] = lambda: 0  # recipients sent so far by this run (for its rate)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "LeaseKeeper":
        self.ledger.acquire_lease(self.issue_id, self.holder, stale_after=self.stale_after)
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.ledger.release_lease(self.issue_id, self.holder)

    def live_workers(self) -> int:
        """Workers registered on the issue and alive (by the reaping rule), this one included; 1 on a
        one-run ledger."""
        if not self.ledger.many_workers:
            return 1
        return max(1, len(self.ledger.live_workers(self.issue_id, stale_after=self.stale_after)))

    def _beat(self) -> None:
        counted, since = self.sent(), time.monotonic()
        while not self._stop.wait(self.every):
            sent, now = self.sent(), time.monotonic()
            rate = (sent - counted) / max(1e-6, now - since)
            counted, since = sent, now
            try:
                alive = self.ledger.heartbeat(self.issue_id, self.holder, rate)
                if alive and self.ledger.many_workers:
                    self.on_share(self.live_workers())
            except LedgerError:
                continue  # busy for a moment: the next beat tries again
            if not alive:
                self.on_lost()
                return
