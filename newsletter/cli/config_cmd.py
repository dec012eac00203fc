"""``newsletter config show``."""

from __future__ import annotations

import json

import click

from .. import config as config_module
from . import App, cli, pass_app


@cli.group()
def config() -> None:
    """Inspect the resolved configuration."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@pass_app
def show(app: App, as_json: bool) -> None:
    """Print every setting, its value and where it came from (secrets masked)."""
    settings = app.settings()
    rows = config_module.describe(settings)
    if as_json:
        click.echo(json.dumps({key: {"value": value, "origin": origin} for key, value, origin in rows}, indent=2))
        return
    click.echo(f"# {settings.path}")
    width = max(len(key) for key, _, _ in rows)
    for key, value, origin in rows:
        shown = value if key.startswith("$") else config_module.display(value)  # "$NAME": set or not, as words
        click.echo(f"{key:<{width}}  {shown:<40}  {origin}")
