"""Recompile when the author saves: the issue file, a template, the config or the subscriber list.

Folders are watched rather than files, because editors save by writing a new
file and renaming it over the old one (a watch on the old file would go quiet).
They are not watched recursively (a workspace root can hold ``.git``, ``outbox/``
and the ledger, which change while nothing the preview shows does), except the
templates folder, whose sub-folders are listed one by one. When the config moves
the subscriber list, the watcher starts again on the new paths.

A watch takes a moment to set up; a save in that moment would be lost, so the
first wake-up compares the inputs' fingerprint with the one the last compile saw.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

import watchfiles

from .live import Inputs, LiveIssue, Snapshot

log = logging.getLogger(__name__)
_default_filter = watchfiles.DefaultFilter()  # editor swap files, .git, __pycache__
WAKE_MS = 300  # how soon after setting up a watch the missed-save check runs


def watched_folders(inputs: Inputs) -> frozenset[Path]:
    folders = {f.parent for f in inputs.files}
    if inputs.templates is not None and inputs.templates.is_dir():
        folders |= {inputs.templates, *(p for p in inputs.templates.rglob("*") if p.is_dir())}
    return frozenset(f for f in folders if f.is_dir())


class Watcher(threading.Thread):
    """Calls ``live.rebuild()`` after each burst of relevant changes, then ``on_rebuild``."""

    def __init__(self, live: LiveIssue, on_rebuild: Callable[[Snapshot], None] | None = None):
        super().__init__(name="preview-watcher", daemon=True)
        self.live = live
        self.on_rebuild = on_rebuild or (lambda snapshot: None)
        self.watching = threading.Event()  # set once the first watch is listening
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                if not self._watch_until_inputs_move():
                    return
            except Exception:  # a folder vanished mid-watch, say: keep live reload going
                log.exception("preview watcher restarting")
                self._stop_event.wait(1.0)

    def _watch_until_inputs_move(self) -> bool:
        """Rebuild on every relevant change; True when the inputs moved, False when stopped."""
        inputs = self.live.inputs()
        folders = watched_folders(inputs)
        if not folders:  # the issue's folder is gone for now
            return not self._stop_event.wait(1.0)

        def relevant(change: watchfiles.Change, path: str) -> bool:
            if not _default_filter(change, path):
                return False
            target = Path(path).resolve()
            return target in inputs.files or (inputs.templates is not None and inputs.templates in target.parents)

        checked = False
        # step: wait for 50 ms of quiet, so that one save (often several writes) is one rebuild
        for changes in watchfiles.watch(*folders, watch_filter=relevant, recursive=False, step=50,
                                        rust_timeout=WAKE_MS, yield_on_timeout=True,
                                        stop_event=self._stop_event, raise_interrupt=False):
            missed = not checked and inputs.fingerprint() != self.live.snapshot.fingerprint
            checked = True
            self.watching.set()
            if changes or missed:
                self.on_rebuild(self.live.rebuild())
                if self.live.inputs() != inputs or watched_folders(inputs) != folders:
                    return True  # the config moved something, or a template folder appeared
        return False
