"""One line per event on stderr, for ``newsletter dispatch`` (docs/sending.md, "Cron").

Three styles: on a terminal, plain text (warnings and errors in colour); without one (cron, systemd,
a pipe), each line starts with an ISO-8601 timestamp; with ``--log-json``, one JSON object per line
for log shippers: ``{"time", "level", "event", "message", ...fields}``. stdout is never written here:
it is kept for ``--json``.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import datetime
from typing import Any, Callable

import click

PLAIN, STAMPED, JSON = "plain", "stamped", "json"
_PREFIX = {"warning": "Warning: ", "error": "Error: "}
_COLOUR = {"warning": "yellow", "error": "red"}


def local_now() -> datetime:
    return datetime.now().astimezone()


class EventLog:
    """Writes events; ``quiet`` keeps only warnings, errors and what is marked ``final``; ``verbose``
    lets ``detail`` through. Safe to call from the send loop's worker threads."""

    def __init__(self, style: str, *, quiet: bool = False, verbose: int = 0,
                 clock: Callable[[], datetime] = local_now):
        self.style = style
        self.quiet = quiet
        self.verbose = verbose
        self.clock = clock
        self._lock = threading.Lock()

    @classmethod
    def for_stderr(cls, *, as_json: bool, quiet: bool = False, verbose: int = 0) -> "EventLog":
        style = JSON if as_json else PLAIN if sys.stderr.isatty() else STAMPED
        return cls(style, quiet=quiet, verbose=verbose)

    @property
    def on_terminal(self) -> bool:
        return self.style == PLAIN

    def info(self, message: str, *, event: str = "info", final: bool = False, **fields: Any) -> None:
        if final or not self.quiet:
            self._write("info", event, message, fields)

    def detail(self, message: str, *, event: str = "detail", **fields: Any) -> None:
        """Only with ``-v``: why nothing happened."""
        if self.verbose:
            self._write("debug", event, message, fields)

    def warn(self, message: str, *, event: str = "warning", **fields: Any) -> None:
        self._write("warning", event, message, fields)

    def error(self, message: str, *, event: str = "error", **fields: Any) -> None:
        self._write("error", event, message, fields)

    def _write(self, level: str, event: str, message: str, fields: dict[str, Any]) -> None:
        if self.style == JSON:
            line = json.dumps({"time": self.clock().isoformat(timespec="milliseconds"), "level": level,
                               "event": event, "message": message, **fields}, default=str)
        else:
            line = _PREFIX.get(level, "") + message
            if self.style == STAMPED:
                line = f"{self.clock().isoformat(timespec='seconds')} {line}"
            elif level in _COLOUR:
                line = click.style(line, fg=_COLOUR[level])
        with self._lock:
            click.echo(line, err=True)
