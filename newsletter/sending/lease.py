"""The issue's lease for the length of a run: taken at the start (or exit 75), its heartbeat kept in a
thread, released at the end. A lease whose holder has been silent for ``LEASE_STALE_AFTER`` seconds (a
killed run, a host gone away) is taken over; see :class:`newsletter.ledger.base.Lease`."""

from __future__ import annotations

import os
import threading
import uuid
from typing import Callable

from ..errors import LedgerError
from ..ledger.base import Ledger

LEASE_STALE_AFTER = 60.0  # seconds without a heartbeat before another host may take the issue over
HEARTBEAT_EVERY = 5.0


class LeaseKeeper:
    """Holds the issue's lease for the run and beats its heart in a thread; ``on_lost`` when taken over."""

    def __init__(self, ledger: Ledger, issue_id: str, *, every: float = HEARTBEAT_EVERY):
        self.ledger = ledger
        self.issue_id = issue_id
        self.holder = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.every = every
        self.on_lost: Callable[[], None] = lambda: None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "LeaseKeeper":
        self.ledger.acquire_lease(self.issue_id, self.holder, stale_after=LEASE_STALE_AFTER)
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.ledger.release_lease(self.issue_id, self.holder)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                alive = self.ledger.heartbeat(self.issue_id, self.holder)
            except LedgerError:
                continue  # busy for a moment: the next beat tries again
            if not alive:
                self.on_lost()
                return
