"""``newsletter archive``: the static web archive that "View this issue online" links point to."""

from __future__ import annotations

from pathlib import Path

import click

from ..archive import build_archive, write_archive
from . import App, cli, pass_app


@cli.command()
@click.argument("issues", nargs=-1)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to publish as [newsletter] site_url: <id>.html, index.html, feed.xml, and the images "
                   "under issues/ [default: [newsletter] archive_dir, archive].")
@click.option("--all", "include_all", is_flag=True,
              help="Publish every issue in issues/, not only those the ledger shows as sent.")
@pass_app
def archive(app: App, issues: tuple[str, ...], out_dir: Path, include_all: bool) -> None:
    """Write the static web archive of sent issues: one page each, an index and an Atom feed.

    ISSUES (ids) are published too, sent or not; `--all` publishes every issue
    but `newsletter init`'s example, unless it is named.

    Pages are rendered for an anonymous reader: merge fields show their
    default(...) fallback or nothing, and the unsubscribe link carries no token.
    Every issue is compiled before anything is written; each file is replaced
    atomically. Pages of issues no longer in the archive are left alone.
    """
    settings = app.settings()
    out_dir = out_dir or settings.workspace_path(settings.newsletter.archive_dir)
    built = build_archive(settings, include_all=include_all, named=issues)
    for warning in built.warnings:
        app.warn(warning)
    report = write_archive(out_dir, built)
    for path in report.written:
        app.info(f"wrote {path}")
    if report.stale:
        app.info(f"left alone: {', '.join(p.name for p in report.stale)} (not in this archive; delete by hand "
                 f"if they should go)")
    count = len(built.pages)
    unchanged = f", {len(report.unchanged)} unchanged" if report.unchanged else ""
    app.info(f"archive: {count} issue{'s' if count != 1 else ''} in {out_dir}/ "
             f"({len(report.written)} file(s) written{unchanged})")
    if not built.pages and not include_all:
        app.info("No issue has been sent yet; `newsletter archive --all` publishes unsent issues too.")
