"""The ``newsletter`` command line: the only place that imports click.

Library code raises :mod:`newsletter.errors`; :class:`NewsletterGroup` turns them
into one ``Error: ...`` line on stderr and the exit code of docs/sending.md (Ctrl-C: 130).
"""

from __future__ import annotations

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


class NewsletterGroup(click.Group):
    """Turns library errors into ``Error: ...`` + exit code; ``--debug`` shows the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
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


# One module per command group; importing it adds its commands to ``cli``.
from . import archive, build, config_cmd, dispatch, preview, proof, send, status  # noqa: E402,F401
from . import subscribers, suppressions, workspace  # noqa: E402,F401


def main() -> None:
    cli(prog_name="newsletter")

