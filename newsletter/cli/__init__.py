"""The ``newsletter`` command line: the only place that imports click.

Library code raises :mod:`newsletter.errors`; :class:`NewsletterGroup` turns them
into one ``Error: ...`` line on stderr and the exit code of docs/sending.md (Ctrl-C: 130).
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any

import click

from .. import config
from ..errors import NewsletterError


@dataclass
class App:
    """What every command gets: global options and the settings, resolved once."""

    config_path: str | None = None
    verbose: int = 0
    quiet: bool = False
    debug: bool = False
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    _settings: config.Settings | None = None

    def settings(self, flags: dict[str, Any] | None = None, *, required: bool = True) -> config.Settings:
        if self._settings is None or flags:
            path = config.find_config(self.config_path, self.env)
            self._settings = config.load(path, self.env, flags, required=required)
        return self._settings

    def info(self, message: str) -> None:
        if not self.quiet:
            click.echo(message)

    def warn(self, message: str) -> None:
        click.echo(f"Warning: {message}", err=True)


pass_app = click.make_pass_decorator(App)


# command -> (the module of newsletter.cli that defines it, the first line of its help). A command's
# module, and the libraries it needs, load only when that command runs, so `newsletter --help` and a
# quick `status` start fast; tests/test_cli_help.py checks these lines against the commands' own help.
COMMANDS = {
    "archive": ("archive", "Write the static web archive of sent issues: one page each, an index and an Atom feed."),
    "build": ("build", "Compile ISSUE (path or id) and write HTML, text and a sample .eml."),
    "cancel": ("cancel", "Stop ISSUE's send for good: nobody who has not got it yet will."),
    "config": ("config_cmd", "Inspect the resolved configuration."),
    "dispatch": ("dispatch", "For cron: send every issue whose send_at has passed, and resume unfinished ones."),
    "init": ("workspace", "Create a workspace in DIRECTORY (default: here) with an example issue, layout and list."),
    "ledger": ("ledger", "The delivery ledger itself: create or upgrade its schema, show it, copy it (SQLite <-> "
                         "PostgreSQL)."),
    "lint": ("build", "Check ISSUE for deliverability problems; exit 1 if there are errors."),
    "new": ("workspace", "Start a new issue titled TITLE in issues/<today>-<slug>.md."),
    "preview": ("preview", "Preview ISSUE (path or id) in a browser; it recompiles each time you save."),
    "reconcile": ("proof", "Ask the provider what happened to ISSUE's recipients marked unknown."),
    "report": ("report", "How ISSUE (path or id) did, from the ledger and the provider; without ISSUE, a table of "
                         "the latest."),
    "send": ("send", "Send ISSUE (path or id) to every eligible subscriber, or resume an earlier run."),
    "status": ("status", "Delivery counts per state for ISSUE (path or id), or a table of every issue."),
    "subscribers": ("subscribers", "The subscriber list ([subscribers] file, a UTF-8 CSV): import, add, unsubscribe, "
                                   "remove, list, count,"),
    "suppressions": ("suppressions", "Addresses that never get an issue (bounces, complaints, manual blocks)."),
    "test": ("proof", "Send proof copies of ISSUE through the configured provider."),
    "unsubscribe": ("unsubscribe", "Your own unsubscribe page: serve it, or check a link for support."),
}


class NewsletterGroup(click.Group):
    """Loads a command's module when the command is asked for (``COMMANDS``); turns library errors
    into ``Error: ...`` + exit code; ``--debug`` shows the traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            importlib.import_module(f"{__name__}.{COMMANDS[name][0]}")  # its decorators add it to ``cli``
        return self.commands.get(name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as err:  # `newsletter subscriber list`: say which command was meant
            import difflib

            close = difflib.get_close_matches(args[0], self.list_commands(ctx), n=2) if args else []
            if close and err.message.startswith("No such command"):
                err.message += f" Did you mean {' or '.join(repr(name) for name in close)}?"
            raise

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The list in ``--help`` from ``COMMANDS``, without importing every command's module."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, click.Command(name, help=COMMANDS[name][1]).get_short_help_str(limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.NoSuchOption as err:  # `newsletter dispatch -v`: the option is the group's, before the command
            if err.option_name in _GROUP_OPTIONS and err.ctx is not None:
                command = err.ctx.command_path.split(" ", 1)[-1]  # "subscribers import", without the program
                err.message = (f"No such option: {err.option_name} here; it is an option of newsletter itself, "
                               f"written before the command: newsletter {err.option_name} {command} ...")
            raise
        except NewsletterError as err:
            app = ctx.find_object(App)
            if app is not None and app.debug:
                traceback.print_exc()
            click.echo(f"Error: {err.render()}", err=True)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:  # Ctrl-C outside the send loop (which stops gently, see StoppedNow)
            click.echo("Stopped (Ctrl-C).", err=True)
            ctx.exit(130)  # 128 + SIGINT, as a shell reports it; never click's "Aborted!" and 1
        except BrokenPipeError:  # `newsletter subscribers export | head`: the reader left, not an error
            sys.stderr.close()  # nothing more to say, and Python must not complain at exit either
            ctx.exit(141)  # 128 + SIGPIPE, as a shell reports it
        except OSError as err:  # a folder we cannot write, a disk that is full
            app = ctx.find_object(App)
            if app is not None and app.debug:
                traceback.print_exc()
            where = f"{err.filename}: " if err.filename else ""
            click.echo(f"Error: {where}{err.strerror or err} (check the path and its permissions)", err=True)
            ctx.exit(1)


_GROUP_OPTIONS = ("-v", "--verbose", "-q", "--quiet", "--debug", "--config")


@click.group(cls=NewsletterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", envvar="NEWSLETTER_CONFIG",
              help="Workspace config file [env NEWSLETTER_CONFIG; default ./newsletter.toml].")
@click.option("-v", "--verbose", count=True, help="Say more (repeat for even more).")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors and the final summary.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors (never secrets).")
@click.version_option(package_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int, quiet: bool, debug: bool) -> None:
    """Write your newsletter in Markdown; compile, preview and send it exactly once.

    Run `newsletter init DIR` to create a workspace, then `newsletter build`
    and `newsletter send` inside it.
    """
    ctx.obj = App(config_path=config_path, verbose=verbose, quiet=quiet, debug=debug)


def main() -> None:
    cli(prog_name="newsletter")

