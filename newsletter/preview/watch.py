"""Recompile when the author saves: the issue file, a template, the config or the subscriber list.

Folders are watched rather than files, because editors save by writing a new
file and renaming it over the old one (a watch on the old file would go quiet).
The folders are not watched recursively (a workspace root can hold ``.git``,
``outbox/`` and the ledger, which change while nothing the preview shows does),
except the templates folder, whose sub-folders are listed one by one. When the
config moves the subscriber list, the watcher starts again on the new paths.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

import watchfiles

from ..render import templates_dir
from .live import LiveIssue, Snapshot

log = logging.getLogger(__name__)
_default_filter = watchfiles.DefaultFilter()


def watched_paths(live: LiveIssue) -> tuple[frozenset[Path], frozenset[Path], Path | None]:
    """(files, folders to watch, templates folder) for the issue and its current settings."""
    files = {Path(live.issue_path).resolve()}
    templates = None
    settings = live.settings
    if settings is not None:
        if settings.path is not None:
            files.add(settings.path.resolve())
        files.add(settings.workspace_path(settings.subscribers.file).resolve())
        templates = templates_dir(settings).resolve()
    folders = {f.parent for f in files}
    if templates is not None and templates.is_dir():
        folders |= {templates, *(p for p in templates.rglob("*") if p.is_dir())}
    return frozenset(files), frozenset(f for f in folders if f.is_dir()), templates


class Watcher(threading.Thread):
    """Calls ``live.rebuild()`` after each burst of relevant changes, then ``on_rebuild``."""

    def __init__(self, live: LiveIssue, on_rebuild: Callable[[Snapshot], None] | None = None):
        super().__init__(name="preview-watcher", daemon=True)
        self.live = live
        self.on_rebuild = on_rebuild or (lambda snapshot: None)
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                if not self._watch_until_paths_change():
                    return
            except Exception:  # a folder vanished mid-watch, say: keep live reload going
                log.exception("preview watcher restarting")
                self._stop_event.wait(1.0)

    def _watch_until_paths_change(self) -> bool:
        """Rebuild on every relevant change; True when the paths changed, False when stopped."""
        files, folders, templates = watched_paths(self.live)
        if not folders:  # the issue's folder is gone for now
            return not self._stop_event.wait(1.0)

        def relevant(change: watchfiles.Change, path: str) -> bool:
            if not _default_filter(change, path):  # editor swap files, .git, __pycache__
                return False
            target = Path(path).resolve()
            return target in files or (templates is not None and templates in target.parents)

        # step: wait for 50 ms of quiet, so that one save (often several writes) is one rebuild
        for _changes in watchfiles.watch(*folders, watch_filter=relevant, recursive=False, step=50,
                                         stop_event=self._stop_event, raise_interrupt=False):
            self.on_rebuild(self.live.rebuild())
            if watched_paths(self.live)[:2] != (files, folders):
                return True  # the config moved something, or a template folder appeared
        return False
