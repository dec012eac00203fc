"""``newsletter preview``: the issue in a browser, recompiled as the author saves.

    Watcher (watchfiles) --rebuild()--> LiveIssue (latest Snapshot) <--view()-- PreviewServer --> page
                                             '--- notify ---> /events (Server-Sent Events) ----------'

The page (``static/``: hand-written HTML, CSS and JS, no build step, no CDN) shows the
email in a sandboxed iframe and asks ``/api/state`` for headers, size, lint findings
and subscriber choices each time ``/events`` announces a new compile.
"""

from __future__ import annotations

import sys
import threading
from typing import Callable, Mapping

from ..config import Settings
from .live import LiveIssue, Snapshot
from .server import PreviewServer
from .watch import Watcher



def has_display(env: Mapping[str, str], platform: str = sys.platform) -> bool:
    """Whether a browser can open a window; on a headless Linux box webbrowser would start lynx."""
    return platform in ("darwin", "win32") or bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


class PreviewSession:
    """A running preview: the first compile, the server socket and the watcher thread.

    ``serve_forever()`` blocks (the CLI runs it in the main thread, so Ctrl-C lands there);
    ``close()`` stops everything and may be called from any thread.
    """

    def __init__(self, issue_path: str, load_settings: Callable[[], Settings], *, host: str = "127.0.0.1",
                 port: int = 0, default_email: str | None = None, settings: Settings | None = None,
                 on_rebuild: Callable[[Snapshot], None] | None = None, verbose: bool = False):
        self.live = LiveIssue(issue_path, load_settings, default_email=default_email, settings=settings)
        self.first = self.live.rebuild()
        self.server = PreviewServer(self.live, host, port, verbose=verbose)
        self.watcher = Watcher(self.live, on_rebuild)
        self.watcher.start()
        self._serving = threading.Event()

    @property
    def url(self) -> str:
        return self.server.url

    def serve_forever(self) -> None:
        self._serving.set()
        try:
            self.server.serve_forever(poll_interval=0.2)
        finally:
            self._serving.clear()

    def close(self) -> None:
        self.watcher.stop()
        self.live.close()  # ends the open event streams
        if self._serving.is_set():  # serving in another thread; after Ctrl-C the loop has already ended
            self.server.shutdown()
        self.server.server_close()
        self.watcher.join(timeout=2)

    def __enter__(self) -> "PreviewSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
