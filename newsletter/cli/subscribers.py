"""``newsletter subscribers import/add/unsubscribe/apply-unsubscribes/remove/list/count/export/check``.

The list is a CSV file (``[subscribers] file``); the rules live in
:mod:`newsletter.subscribers.reader` (reading, validating),
:mod:`newsletter.subscribers.edits` (locked, atomic changes) and
:mod:`newsletter.subscribers.importer`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import SubscriberError
from ..subscribers import edits as edits
from ..subscribers.export import export_columns, write_csv, write_json
from ..subscribers.importer import import_subscribers
from ..subscribers.reader import (
    STATUSES,
    Problem,
    check_list,
    count_by_status,
    in_segment,
    iter_subscribers,
    problems_error,
    validate_list,
)
from . import App, cli, pass_app

segment_option = click.option("--segment", metavar="TAG", help="Only subscribers tagged TAG (any case).")
skip_invalid_option = click.option(
    "--skip-invalid", is_flag=True,
    help="Leave out the rows with a problem (invalid, or a repeat of an earlier row) and name them on stderr.")


def _list_path(app: App) -> Path:
    settings = app.settings()
    return settings.workspace_path(settings.subscribers.file)


def _echo(text: str) -> None:
    click.echo(text, nl=False)


def _readable(path: Path, skip_invalid: bool) -> list[Problem]:
    """The rows ``list``/``count``/``export`` leave out: none, or refuse the list, unless ``skip_invalid``."""
    problems = check_list(path, skip_invalid=skip_invalid)
    for problem in problems:
        click.echo(f"skipped {problem}", err=True)
    return problems


@cli.group()
def subscribers() -> None:
    """The subscriber list ([subscribers] file, a UTF-8 CSV): import, add, unsubscribe, remove, list, count,
    check, export."""


@subscribers.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Add TAG to every imported subscriber (repeatable).")
@click.option("--status", type=click.Choice(STATUSES),
              help="Give every imported subscriber this status (the file's status column is ignored).")
@click.option("--map", "overrides", multiple=True, metavar="COLUMN=FIELD",
              help="Read COLUMN as FIELD (email, name, status, tags, subscribed_at, unsubscribed_at, a merge field "
                   "name, or - to leave it out); repeatable.")
@click.option("--skip-invalid", is_flag=True, help="Import the valid rows and print the rejected ones.")
@click.option("--dry-run", is_flag=True, help="Print how the columns map, check and count, but write nothing.")
@pass_app
def import_command(app: App, file: Path, tags: tuple[str, ...], status: str | None, overrides: tuple[str, ...],
                   skip_invalid: bool, dry_run: bool) -> None:
    """Merge FILE into the list: all rows or none (every problem is reported as FILE:LINE).

    FILE may be another tool's export (Mailchimp, Buttondown, Substack,
    listmonk): its email, name, tag, date and status columns are recognised,
    and the mapping is printed (every column with --dry-run). Existing
    subscribers get the file's non-blank values and tags; an address that
    unsubscribed, bounced or complained is never re-subscribed by an import.
    """
    path = _list_path(app)
    result = import_subscribers(path, file, tags=tags, status=status, overrides=overrides,
                                skip_invalid=skip_invalid, dry_run=dry_run)
    if dry_run:
        click.echo("columns (change one with --map COLUMN=FIELD):")
        for line in result.mapping:
            click.echo(f"  {line}")
    elif result.mapped:
        app.info("mapped columns: " + ", ".join(result.mapped))
    if result.new_columns:
        app.info(f"new columns in {path}: {', '.join(result.new_columns)}")
    for problem in result.rejected:
        click.echo(f"rejected {problem}", err=True)
    for email, kept in result.kept:
        app.info(f"kept {email} {kept} (an import never re-subscribes; "
                 f"`newsletter subscribers add {email} --resubscribe` does, if they asked)")
    summary = f"{file}: {result.added} added, {result.updated} updated, {result.unchanged} unchanged"
    if result.rejected:
        summary += f", {len(result.rejected)} rejected"
    click.echo(summary + (" (dry run: nothing was written)" if dry_run else ""))


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="The subscriber's name.")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Tag the subscriber with TAG (repeatable).")
@click.option("--resubscribe", is_flag=True,
              help="Subscribe an address that unsubscribed, bounced or complained (only if they asked).")
@pass_app
def add(app: App, email: str, name: str, tags: tuple[str, ...], resubscribe: bool) -> None:
    """Subscribe EMAIL (or give an existing subscriber a name and tags)."""
    path = _list_path(app)
    change = edits.add_subscriber(path, email, name=name, tags=tags, resubscribe=resubscribe)
    where = f" (line {', '.join(map(str, change.lines))})" if change.lines else ""
    if change.outcome == "unchanged":
        click.echo(f"{change.email} is already subscribed{where}; nothing changed")
    else:
        click.echo(f"{change.outcome} {change.email}{where} in {path}")
    if change.outcome in ("added", "resubscribed"):
        _lift_unsubscribe(app, change.email, resubscribe=resubscribe)


def _lift_unsubscribe(app: App, email: str, *, resubscribe: bool) -> None:
    """A reader subscribed again may still be suppressed in the ledger, and a send would leave them out in
    silence (and `apply-unsubscribes` mark the row unsubscribed again). With --resubscribe their own
    unsubscribe is lifted: the editor says they asked back. A bounce, a complaint or a manual block is
    not theirs to lift this way: say so."""
    from ..ledger import open_ledger

    settings = app.settings()
    if not _ledger_made(settings):
        return  # nothing is suppressed yet
    with open_ledger(settings) as ledger:
        found = _suppression_of(ledger, email)
        if found is None:
            return
        if found.reason == "unsubscribed" and resubscribe:
            ledger.remove_suppression(found.email)
            click.echo(f"lifted the ledger's unsubscribe of {email} (source {found.source}, "
                       f"{found.created_at[:10]}): issues go to them again")
            return
    why = ("they unsubscribed (add --resubscribe if they asked to come back)" if found.reason == "unsubscribed"
           else f"{found.reason}, source {found.source}")
    app.warn(f"{email} is still suppressed in the ledger ({why}): no issue goes to them until "
             f"`newsletter suppressions remove {email}`")


@subscribers.command("unsubscribe")
@click.argument("email")
@pass_app
def unsubscribe(app: App, email: str) -> None:
    """Mark EMAIL unsubscribed, with a timestamp (the row stays, so it is never re-added silently)."""
    path = _list_path(app)
    change = edits.unsubscribe(path, email)
    where = f"line {', '.join(map(str, change.lines))}"
    if change.outcome == "unchanged":
        click.echo(f"{change.email} is already {change.status} ({where}); nothing changed")
    else:
        click.echo(f"unsubscribed {change.email} ({where}) in {path}")


@subscribers.command("apply-unsubscribes")
@click.option("--dry-run", is_flag=True, help="Say what would change, but write nothing.")
@pass_app
def apply_unsubscribes(app: App, dry_run: bool) -> None:
    """Mark unsubscribed in the list everyone the ledger holds as unsubscribed (links served on another
    machine), with the time they left. Rows already unsubscribed, bounced or complained stay as they are."""
    from ..ledger import open_ledger
    from ..ledger.base import parse_time

    settings = app.settings()
    path = _list_path(app)
    with open_ledger(settings, readonly=True) as ledger:
        left = {s.email: _list_time(parse_time(s.created_at)) or s.created_at
                for s in ledger.suppressions() if s.reason == "unsubscribed"}
    changes = edits.apply_unsubscribes(path, left, dry_run=dry_run)
    for change in changes:
        click.echo(f"{'would unsubscribe' if dry_run else 'unsubscribed'} {change.email} (line {change.lines[0]})")
    click.echo(f"{len(changes)} row(s) {'would be ' if dry_run else ''}marked unsubscribed in {path}"
               f" ({len(left)} unsubscribe(s) in the ledger)")


def _list_time(when) -> str:
    """A ledger time as the list writes its timestamps (``2026-05-01T12:00:00Z``)."""
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else ""


@subscribers.command("remove")
@click.argument("email")
@pass_app
def remove(app: App, email: str) -> None:
    """Delete EMAIL from the list, past issues' records (a hash stays) and the outbox's files (GDPR erasure)."""
    settings = app.settings()
    path = _list_path(app)
    change = edits.remove_subscriber(path, email)
    if change.lines:
        click.echo(f"removed {change.email} from {path} (line {', '.join(map(str, change.lines))})")
    else:
        click.echo(f"{change.email} is not in {path}")
    erased, kept = _erase_from_ledger(settings, change.email)
    click.echo(f"ledger: {erased} delivery record(s) of {change.email} now keep only a hash" if erased else
               f"ledger: no delivery records of {change.email}")
    if kept is not None:  # erasure is not consent: the block stays unless the user lifts it
        click.echo(f"ledger: its suppression ({kept.reason}, source {kept.source}) is kept, with the address, so it "
                   f"is never mailed again; `newsletter suppressions remove {change.email}` deletes it too")
    outbox = settings.workspace_path("outbox")
    deleted = _erase_from_outbox(outbox, change.email)
    if outbox.is_dir():
        click.echo(f"outbox: deleted {deleted} message file(s) of {change.email}" if deleted else
                   f"outbox: no message files of {change.email}")
    if not change.lines and not erased and not deleted:
        raise SubscriberError(f"{change.email} is neither in the list nor in the ledger; nothing was removed",
                              hint="check the spelling of the address")


def _erase_from_ledger(settings, email: str):
    """GDPR erasure in the delivery ledger (past issues): the address becomes a hash there. Returns the rows
    changed and the address's suppression, which stays (None when there is none)."""
    from ..ledger import open_ledger  # the ledger is optional for every other subscribers command

    if not _ledger_made(settings):
        return 0, None  # nothing to erase, and no ledger to create
    with open_ledger(settings) as ledger:
        return ledger.erase_address(email), _suppression_of(ledger, email)


def _ledger_made(settings) -> bool:
    """Whether the ledger exists: a SQLite file is made by the first send, and opening it here would make it."""
    from ..ledger import is_postgres_url

    url = settings.ledger.url  # a URL that is not a file is open_ledger's to accept or refuse
    return is_postgres_url(url) or "://" in url or settings.workspace_path(url).exists()


def _suppression_of(ledger, email: str):
    """The ledger's suppression of ``email`` (compared as the list compares addresses), or None."""
    from ..ledger.base import address_key

    key = address_key(email)
    return next((s for s in ledger.suppressions() if address_key(s.email) == key), None)


def _erase_from_outbox(outbox: Path, email: str) -> int:
    """Delete ``outbox/*/<address>--<batch>.eml`` (the address in any case) and leftover temporary files."""
    from ..providers.outbox import outbox_name

    key = email.strip().lower()
    deleted = 0
    for issue in (outbox.iterdir() if outbox.is_dir() else ()):
        for file in (issue.iterdir() if issue.is_dir() else ()):
            name = file.name.lower()
            if name.startswith(".") and name.endswith(".tmp"):  # a write a killed run left behind
                name = name[1:-len(".tmp")]
            batch = name.rpartition("--")[2].removesuffix(".eml")
            if name.endswith(".eml") and outbox_name(key, batch).lower() == name and file.is_file():
                file.unlink()
                deleted += 1
    return deleted


@subscribers.command("list")
@segment_option
@click.option("--status", type=click.Choice(STATUSES), help="Only subscribers with this status.")
@click.option("--json", "as_json_flag", is_flag=True, help="Print a JSON array with every column.")
@skip_invalid_option
@pass_app
def list_command(app: App, segment: str | None, status: str | None, as_json_flag: bool, skip_invalid: bool) -> None:
    """Print the subscribers: email, name, status and tags, tab-separated."""
    path = _list_path(app)
    skip = _readable(path, skip_invalid)
    chosen = (s for s in iter_subscribers(path, skip=skip)
              if (status is None or s.status == status) and in_segment(s, segment))
    if as_json_flag:
        write_json(chosen, export_columns(path), _echo)
        return
    for s in chosen:
        click.echo("\t".join(" ".join(value.split()) for value in (s.email, s.name, s.status, ";".join(s.tags))))


@subscribers.command("count")
@segment_option
@click.option("--json", "as_json_flag", is_flag=True, help="Print one JSON object.")
@skip_invalid_option
@pass_app
def count(app: App, segment: str | None, as_json_flag: bool, skip_invalid: bool) -> None:
    """How many subscribers have each status."""
    path = _list_path(app)
    counts = count_by_status(path, segment, skip=_readable(path, skip_invalid))
    counts["total"] = sum(counts.values())
    if as_json_flag:
        click.echo(json.dumps(counts))
        return
    if segment:
        click.echo(f"segment {segment}:")
    for status, n in counts.items():
        click.echo(f"{status:<13}{n:>8}")


@subscribers.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True,
              help="CSV (what `import` reads back) or a JSON array.")
@skip_invalid_option
@pass_app
def export(app: App, fmt: str, skip_invalid: bool) -> None:
    """Write the whole list, normalised, to standard output (--skip-invalid: without its bad rows, to fix them)."""
    path = _list_path(app)
    skip = _readable(path, skip_invalid)
    (write_csv if fmt == "csv" else write_json)(iter_subscribers(path, skip=skip), export_columns(path), _echo)


@subscribers.command("check")
@pass_app
def check(app: App) -> None:
    """Validate the whole list without changing it; exit 1 and list every problem if there are any."""
    path = _list_path(app)
    problems = validate_list(path)
    if problems:
        raise problems_error(f"{path}: {len(problems)} problem(s)", problems,
                             "Fix them, then run `newsletter subscribers check` again.")
    counts = {status: n for status, n in count_by_status(path).items() if n}
    detail = ", ".join(f"{n} {status}" for status, n in counts.items())
    click.echo(f"{path}: {sum(counts.values())} subscriber(s), no problems" + (f" ({detail})" if detail else ""))

