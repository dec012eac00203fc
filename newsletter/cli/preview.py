"""``newsletter preview``: a local web preview with live reload."""

from __future__ import annotations

import signal
import threading
import time
import webbrowser

import click

from .. import config
from ..compile.pipeline import issue_path
from ..errors import IssueError
from ..preview import PreviewSession, has_display
from ..preview.live import Snapshot
from ..preview.server import is_loopback
from . import App, cli, pass_app


@cli.command()
@click.argument("issue")
@click.option("--port", type=click.IntRange(0, 65535), default=0,
              help="Port to listen on [default: a free one].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback lets your network read the issue "
                   "and your subscribers' addresses.")
@click.option("--no-open", is_flag=True, help="Do not open a browser (also skipped when there is no display).")
@click.option("--as", "as_email", metavar="EMAIL",
              help="Show the email as this subscriber first (the page can switch to others).")
@pass_app
def preview(app: App, issue: str, port: int, host: str, no_open: bool, as_email: str | None) -> None:
    """Preview ISSUE (path or id) in a browser; it recompiles each time you save.

    Watches the issue file, the templates, the config and the subscriber list.
    A compile error shows in the page until you fix it. Ctrl-C stops the server.
    """
    settings = app.settings()
    path = issue_path(settings, issue)
    if not path.is_file():
        raise IssueError("no such issue file", path=str(path),
                         hint="give the path of an issue, e.g. issues/2026-11-30-weekly.md, or its id")
    if not is_loopback(host):
        app.warn(f"--host {host} is not a loopback address: anyone who can reach this machine can read "
                 f"the issue and your subscribers' names and addresses. Use it only on a network you trust.")

    def load_settings() -> config.Settings:
        return config.load(config.find_config(app.config_path, app.env), app.env)

    session = PreviewSession(str(path), load_settings, host=host, port=port, default_email=as_email,
                             settings=settings, on_rebuild=lambda snapshot: _report(app, snapshot),
                             verbose=app.verbose > 0)
    _report(app, session.first)
    lookup = session.first.lookup  # it has looked --as up already: no second read of the list
    if as_email and lookup and lookup.find(as_email) is None:
        app.warn(f"{as_email} is not in {settings.subscribers.file}: previewing a reader with no name or fields")
    click.echo(f"Previewing {path} at {session.url}  (Ctrl-C to stop)")  # even with -q: the URL is the point
    if not no_open and has_display(app.env):
        webbrowser.open(session.url)
    _stop_on_sigterm()
    try:
        session.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        session.close()
    app.info("Preview stopped.")


def _stop_on_sigterm() -> None:
    """``kill`` stops the preview as cleanly as Ctrl-C does (the main thread only can set handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def _report(app: App, snapshot: Snapshot) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(snapshot.compiled_at))
    if snapshot.error:
        click.secho(f"{stamp} Error: {snapshot.error}", fg="red", err=True)
    else:
        errors = sum(1 for f in snapshot.findings if f.level == "error")
        lint = f", lint: {errors} error(s), {len(snapshot.findings) - errors} warning(s)" if snapshot.findings else ""
        app.info(f"{stamp} compiled in {snapshot.took_ms:.0f} ms{lint}")
