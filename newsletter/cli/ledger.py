"""``newsletter ledger migrate/info/copy``: the ledger itself, SQLite or PostgreSQL (docs/team.md)."""

from __future__ import annotations

import click

from ..config import without_password
from ..errors import ConfigError, LedgerError
from ..ledger import is_postgres_url, open_ledger, open_url
from ..ledger.base import Ledger
from ..ledger.copy import copy_ledger
from . import App, cli, pass_app


@cli.group()
def ledger() -> None:
    """The delivery ledger itself: create or upgrade its schema, show it, copy it (SQLite <-> PostgreSQL)."""


@ledger.command("migrate")
@pass_app
def migrate(app: App) -> None:
    """Create the ledger's schema, or upgrade it to this version's (safe to run again)."""
    with open_ledger(app.settings()) as db:
        version = db.schema_version()
        if db.migrated_from == version:
            click.echo(f"{db.backend} ledger at schema version {version}: nothing to do")
        else:
            click.echo(f"{db.backend} ledger upgraded from schema version {db.migrated_from} to {version}")


@ledger.command("info")
@pass_app
def info(app: App) -> None:
    """Backend, location (never a password), schema version, issues and suppressions."""
    with open_ledger(app.settings(), readonly=True) as db:
        counts = db.row_counts()
        click.echo(f"backend:       {db.backend}")
        click.echo(f"location:      {without_password(db.url)}")
        found = db.migrated_from  # a read-only open upgrades only a private view of an older ledger
        if found == 0 and db.backend == "sqlite":  # no file yet: the first send creates it
            click.echo(f"schema:        none yet (the first `newsletter send` creates version {db.schema_version()}; "
                       f"`newsletter ledger migrate` does it now)")
        else:
            behind = f" (this newsletter uses {db.schema_version()}: run `newsletter ledger migrate`)" \
                if found < db.schema_version() else ""
            click.echo(f"schema:        version {found}{behind}")
        click.echo(f"issues:        {counts['issues']}")
        click.echo(f"deliveries:    {counts['deliveries']}")
        click.echo(f"suppressions:  {counts['suppressions']}")


@ledger.command("copy")
@click.option("--to", "target_url", required=True, metavar="URL",
              help="The ledger to copy into: postgresql://user@host/db, or a SQLite file path.")
@click.option("--merge", is_flag=True, help="Copy into a ledger that is not empty: add only what it lacks.")
@pass_app
def copy(app: App, target_url: str, merge: bool) -> None:
    """Copy the whole configured ledger into another one (SQLite and PostgreSQL, both ways)."""
    settings = app.settings()
    if without_password(target_url) != target_url:
        raise ConfigError("--to contains a password, which would show in the process list and shell history",
                          hint="leave it out of the URL and set PGPASSWORD or use ~/.pgpass")
    if "://" in target_url and not is_postgres_url(target_url):  # a typo'd scheme would be a file name
        raise ConfigError(f"--to {without_password(target_url)!r} is neither postgresql:// nor a file path; "
                          "nothing was copied", hint="a PostgreSQL ledger's URL starts with postgresql://")
    target_path = target_url if is_postgres_url(target_url) else str(settings.workspace_path(target_url))
    with open_ledger(settings, readonly=True) as source:
        running = _running_sends(source)
        if running:  # its rows move while they are read: the copy would hold batches in flight, half recorded
            raise LedgerError(f"a send is running on {running[0]}; nothing was copied", path=without_password(source.url),
                              hint="wait for it to finish (`newsletter status` shows it), or stop it, then copy")
        with open_url(target_path) as target:
            added = copy_ledger(source, target, merge=merge)
    click.echo(f"copied into {without_password(target_path)}: " +
               ", ".join(_rows(n, table) for table, n in added.items()))
    if merge:
        app.info("rows the target had already were kept as they were")


def _running_sends(ledger: Ledger) -> list[str]:
    """``issue X (pid P on HOST)`` of each live run on ``ledger``: its lease's holder, or a live worker."""
    from ..sending.lease import LEASE_STALE_AFTER

    running = []
    for record in ledger.issues():
        if ledger.many_workers:
            holders = ledger.live_workers(record.issue_id, stale_after=LEASE_STALE_AFTER)
        else:
            lease = ledger.lease(record.issue_id)
            holders = [lease] if lease and lease.holder_alive(stale_after=LEASE_STALE_AFTER) else []
        running += [f"issue {record.issue_id} (pid {h.pid} on {h.host})" for h in holders]
    return running


_ONE = {"issues": "issue", "deliveries": "delivery", "suppressions": "suppression", "notices": "notice"}


def _rows(n: int, table: str) -> str:
    """``1 issue``, ``2 issues``: a table's rows counted (each table is named by its rows' plural)."""
    return f"{n} {_ONE.get(table, table) if n == 1 else table}"

