"""Send progress: a rich bar with rate and ETA on a terminal, one plain line per batch otherwise (cron, logs).

Both go to stderr so stdout keeps the final summary (and ``--json``) clean; ``emit`` (dispatch's
event log) takes the plain lines instead, with their facts as fields. Called from the worker threads,
hence the lock.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable

import click

from ..sending.outcomes import BatchReport


class Progress:
    def __init__(self, total: int, *, quiet: bool = False, tty: bool | None = None,
                 emit: Callable[..., None] | None = None):
        self.total = total
        self.quiet = quiet
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.emit: Callable[..., Any] = emit or _echo
        self.done = 0
        self._lock = threading.Lock()
        self._bar = None
        self._task = None

    def __enter__(self) -> "Progress":
        if self.tty and not self.quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                     console=Console(stderr=True), transient=False)
            self._bar.start()
            self._task = self._bar.add_task("send", total=self.total or None, rate="")
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def batch(self, report: BatchReport) -> None:
        finished = sum(n for state, n in report.states.items() if state != "retry")
        with self._lock:
            self.done += finished
            if self._bar is not None:
                speed = self._bar.tasks[0].speed if self._bar.tasks else None
                self._bar.update(self._task, advance=finished, rate=f"{speed:,.0f}/s" if speed else "")
                if report.note:
                    self._bar.console.print(f"batch {report.batch_id}: {report.note}" if report.batch_id
                                            else f"not sent to {report.note}", markup=False, highlight=False)
            elif not self.quiet and not report.batch_id:
                self.emit(f"not sent to {report.note} [{self.done}/{self.total}]", event="not_sent",
                          note=report.note, done=self.done, total=self.total)
            elif not self.quiet:
                states = ", ".join(f"{n} {state}" for state, n in sorted(report.states.items()))
                attempt = f" (attempt {report.attempt})" if report.attempt > 1 else ""
                note = f": {report.note}" if report.note else ""
                self.emit(f"batch {report.batch_id}: {states}{attempt} in {report.seconds:.2f} s "
                          f"[{self.done}/{self.total}]{note}", event="batch", batch=report.batch_id,
                          states=report.states, attempt=report.attempt, seconds=round(report.seconds, 3),
                          note=report.note, done=self.done, total=self.total)


def _echo(text: str, **fields: Any) -> None:
    click.echo(text, err=True)
