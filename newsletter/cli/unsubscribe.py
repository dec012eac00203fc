"""``newsletter unsubscribe serve`` and ``newsletter unsubscribe verify`` (docs/unsubscribe.md)."""

from __future__ import annotations

from urllib.parse import urlsplit

import click

from ..errors import ConfigError
from ..unsubscribe import open_token
from ..unsubscribe_app import Route, serve as serve_app
from ..unsubscribe_records import token_secrets
from . import App, cli, pass_app


class _PageGroup(click.Group):
    """The unsubscribe page's commands; an address where a command should be is the list's `unsubscribe`."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as err:  # `newsletter unsubscribe ada@example.com`: the list's command is meant
            if args and "@" in args[0]:
                err.message += (f" To mark a reader unsubscribed, run `newsletter subscribers unsubscribe {args[0]}`; "
                                f"this group serves your unsubscribe page.")
            raise


@cli.group(cls=_PageGroup)
def unsubscribe() -> None:
    """Your own unsubscribe page: serve it, or check a link for support."""


@unsubscribe.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8025, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@pass_app
def serve(app: App, host: str, port: int) -> None:
    """Serve the unsubscribe page ([unsubscribe] url's path) with the stdlib's wsgiref server.

    For production, run newsletter.unsubscribe_app:application under gunicorn or any WSGI server.
    """
    try:
        serve_app(app.settings(), host, port, ready=lambda line: click.echo(line, err=True))
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    except OSError as err:  # binding: not a path's permissions, as the generic OSError message would say
        if err.filename:
            raise
        what = "is in use" if err.errno in (98, 48, 10048) else f"cannot be used: {err.strerror or err}"
        raise ConfigError(f"{host} port {port} {what}",
                          hint="pass another --port (0 picks a free one), or stop what listens there") from None


@unsubscribe.command("verify")
@click.argument("token_or_url")
@pass_app
def verify(app: App, token_or_url: str) -> None:
    """Print the address and issue an unsubscribe token or link stands for (for support)."""
    settings = app.settings()
    secrets = token_secrets(settings)
    token = token_or_url.strip().removeprefix("<").removesuffix(">")  # copied whole from List-Unsubscribe
    if "://" in token or token.startswith("/"):
        parts = urlsplit(token)
        token = Route.of(settings.unsubscribe.url).token(parts.path, parts.query) or ""
        if not token:
            raise ConfigError("that link holds no token where [unsubscribe] url puts one",
                              path=settings.origins.get("unsubscribe.url"),
                              hint=f"the links look like {settings.unsubscribe.url}")
    facts = open_token(token, secrets)
    if facts is None:
        name = settings.unsubscribe.secret_env
        raise ConfigError(f"the token is not valid: changed or cut short, or made with another secret than "
                          f"${name}{' or $' + name + '_OLD' if len(secrets) > 1 else ''}")
    click.echo(f"address: {facts.email}")
    click.echo(f"newsletter: {settings.newsletter.name}")
    click.echo(f"issue: {facts.issue_id or '(none: a confirmation link)'}")
