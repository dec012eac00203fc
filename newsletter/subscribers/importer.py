"""``subscribers import``: merge another CSV file into the list, all rows or none.

The file is read and checked whole first (every problem reported as ``FILE:LINE``);
then one :class:`~newsletter.subscribers.edits.ListEditor` pass updates the rows
already in the list and appends the new ones, by the rules of
:mod:`newsletter.subscribers.edits`: values are filled and updated, never blanked;
tags are added, never removed; an address that left is never re-subscribed. A new
subscribed row that does not say since when gets ``subscribed_at`` = now, as ``add`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import SubscriberError
from .edits import Incoming, ListEditor, merge_row, new_row, union_tags, utc_now
from .csvfile import Record
from .mapping import Mapping, plan_mapping
from .reader import STATUSES, ListReader, Problem, Row, RowParser, problems_error, validate_list


@dataclass
class ImportResult:
    source: str
    mapping: list[str] = field(default_factory=list)  # "'COLUMN' -> what", every column of the file
    mapped: list[str] = field(default_factory=list)  # the same, for the columns not already named as their field
    new_columns: list[str] = field(default_factory=list)
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    kept: list[tuple[str, str]] = field(default_factory=list)  # (email, status) not re-subscribed
    rejected: list[Problem] = field(default_factory=list)  # invalid rows left out (skip_invalid)


def read_import(source: Path, *, tags: Iterable[str] = (), status: str | None = None, overrides: Iterable[str] = ()
                ) -> tuple[Mapping, dict[str, Incoming], list[Problem]]:
    """How ``source``'s columns map, its valid rows by address key, and the problems of the others."""
    extra_tags = tuple(dict.fromkeys(t.strip() for t in tags if t.strip()))
    incoming: dict[str, Incoming] = {}
    problems: list[Problem] = []
    with ListReader(source) as reader:
        if not reader.header.names:  # an empty file, or a header row that cannot be read
            reader.require_header()
        mapping = plan_mapping(reader.header.names, overrides, source=str(source), status_given=status is not None)
        if mapping.header.problems:
            raise problems_error(f"{source}: the header row cannot be used",
                                 [Problem(str(source), 1, reason, fatal=True) for reason in mapping.header.problems],
                                 "Fix the header row (the first line) of the file, or say which column is which "
                                 "with --map COLUMN=FIELD.")
        parse = RowParser(mapping.header, ignore_status=status is not None)
        # a name made of First Name + Last Name fills a blank name; it never replaces one ("Ada" for "Ada Lovelace")
        fill_only = frozenset(("name",) if mapping.name_parts else ())
        status_at = mapping.header.index("status")
        for record in reader.records(check_header=False):
            if record.fields == []:
                continue
            row = _parsed(parse, mapping, record)
            if row.reasons:  # a broken quote that swallowed the rows after it cannot be skipped: they would be lost
                problems.extend(Problem(str(source), row.line, reason, row.email, fatal=record.end > record.line)
                                for reason in row.reasons)
            elif row.key in incoming:
                problems.append(Problem(str(source), row.line,
                                        f"duplicate of line {incoming[row.key].line} ({row.email})", row.email))
            else:
                given = status or (row.subscriber.status if status_at is not None
                                   and row.record.fields[status_at].strip() else "")
                values = {k: v for k, v in row.subscriber.fields.items() if k not in ("email", "status", "tags")}
                incoming[row.key] = Incoming(row.line, row.email, values, union_tags(row.subscriber.tags, extra_tags),
                                             given, fill_only)
        return mapping, incoming, problems


def _parsed(parse: RowParser, mapping: Mapping, record: Record) -> Row:
    """One record of the file mapped to a list row's values and checked as the list's rows are."""
    if record.fields is None:
        return parse(record)
    values, reasons = mapping.translate(record.fields)
    row = parse(record._replace(fields=values))
    if reasons:
        return row._replace(subscriber=None, reasons=reasons + row.reasons)
    return row


def import_subscribers(list_path: Path, source: Path, *, tags: Iterable[str] = (), status: str | None = None,
                       overrides: Iterable[str] = (), skip_invalid: bool = False, dry_run: bool = False,
                       now: str | None = None) -> ImportResult:
    """Merge ``source`` into the list (see the module docstring for the rules); ``now`` stamps new rows.

    ``overrides`` are ``COLUMN=FIELD`` (``import --map``): :mod:`newsletter.subscribers.mapping`.
    """
    if status is not None and status not in STATUSES:
        raise SubscriberError(f"unknown status {status!r}", hint=f"use one of: {', '.join(STATUSES)}")
    mapping, incoming, problems = read_import(source, tags=tags, status=status, overrides=overrides)
    header = mapping.header
    result = ImportResult(str(source), mapping=mapping.lines(), mapped=mapping.changed())
    if problems and (not skip_invalid or any(p.fatal for p in problems)):
        advice = ("Fix them; --skip-invalid cannot skip a quote that swallows the rows after it."
                  if any(p.fatal for p in problems) else "Fix them, or pass --skip-invalid to import only the valid rows.")
        raise problems_error(f"{source}: {len(problems)} problem(s); nothing was imported", problems, advice)
    result.rejected = problems
    columns = list(dict.fromkeys([
        "email", *header.keys, *(["tags"] if any(i.tags for i in incoming.values()) else []),
        *(["status"] if status else [])]))
    with ListEditor(list_path, create=columns, dry_run=dry_run) as edit:
        if edit.exists and (list_problems := validate_list(list_path)):
            raise problems_error(f"{list_path}: {len(list_problems)} problem(s) in the list; nothing was imported",
                                 list_problems, "Fix them first (`newsletter subscribers check` lists them).")
        stamp = {k for k, new in incoming.items() if _unstamped(new)}
        if stamp and "subscribed_at" not in edit.keys and (not edit.exists or _any_absent(list_path, stamp)):
            columns.append("subscribed_at")
        result.new_columns = edit.add_columns(columns)
        for row in edit.rows():
            new = incoming.pop(row.key, None)
            if new is None:
                continue
            changes, kept = merge_row(row, new, edit.keys, resubscribe=False)
            if kept:
                result.kept.append((row.email, row.subscriber.status))
            if changes:
                edit.replace(row, changes)
                result.updated += 1
            else:
                result.unchanged += 1
        now = now or utc_now()
        for new in incoming.values():
            edit.append({**new_row(new), **({"subscribed_at": now} if _unstamped(new) else {})})
            result.added += 1
        edit.commit()
    return result


def _unstamped(new: Incoming) -> bool:
    """A subscribed row that does not say since when (``import`` then stamps it if it is new)."""
    return not new.values.get("subscribed_at") and new.status in ("", "subscribed")


def _any_absent(path: Path, keys: set[str]) -> bool:
    """Whether some of these address keys are not in the list (a read-only pass, under the caller's lock)."""
    keys = set(keys)
    with ListReader(path) as reader:
        check = reader.parser().check
        for record in reader.records():
            if record.fields:
                keys.discard(check(record.fields)[2])
                if not keys:
                    return False
    return True
