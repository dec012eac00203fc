"""``newsletter init`` and ``newsletter new``."""

from __future__ import annotations

from pathlib import Path

import click

from .. import scaffold
from . import App, cli, pass_app


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Rewrite the config, layouts and example issue of an existing workspace "
                                             "(old versions kept as .bak; the subscriber list is never touched).")
@click.option("--template", default="", metavar="NAME",
              help="The layout the workspace uses: digest (default), letter or bulletin.")
@pass_app
def init(app: App, directory: Path, force: bool, template: str) -> None:
    """Create a workspace in DIRECTORY (default: here) with an example issue, layout and list."""
    if template and template not in scaffold.layout_choices():  # a usage slip: exit 2, as click's own
        raise click.BadParameter(f"there is no bundled layout {template!r}; choose one of "
                                 f"{', '.join(scaffold.layout_choices())}", param_hint="'--template'")
    for what, path in scaffold.init_workspace(directory, force=force, template=template):
        app.info(f"{what}: {path}")
    here = directory.resolve() == Path.cwd().resolve()
    app.info(f"\nNext: {'' if here else f'cd {directory} && '}newsletter build issues/2026-11-30-weekly.md --out out")


@cli.command()
@click.argument("title")
@pass_app
def new(app: App, title: str) -> None:
    """Start a new issue titled TITLE in issues/<today>-<slug>.md."""
    settings = app.settings()
    path = scaffold.new_issue(settings.workspace_path("issues"), title)
    click.echo(str(path))
