"""Changing the list file: add, unsubscribe, remove (and the rewrite and merge rules ``import`` uses too).

Every change is one :class:`ListEditor` pass: take the list's lock, stream each
row to a temporary file (untouched rows byte for byte, changed rows re-written
in the file's own delimiter and line ends, new rows at the end), then fsync and
rename it over the list. Nothing is written when nothing changed or when the
command fails half-way, so a refused import leaves the file byte-for-byte as it was.

Rules that keep the list trustworthy:

* an import is all-or-nothing unless ``skip_invalid``; every problem is reported;
* an address that unsubscribed, bounced or complained is never made ``subscribed``
  again by an import, nor by ``add`` without ``resubscribe`` (the row stays for that);
* an import fills and updates values but never blanks one; tags are added, never removed;
* column order, unknown columns (merge fields) and row order are kept; new columns go last.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from email_validator import EmailNotValidError

from ..errors import SubscriberError
from .address import normalise_address
from .csvfile import AtomicWriter, Dialect, RowFormatter, locked
from .reader import BUILTIN_COLUMNS, Header, ListReader, Row, RowParser, address_key, header_value_problem


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ListEditor:
    """One locked, streamed, atomic rewrite of a list file.

    ::

        with ListEditor(path, create=BUILTIN_COLUMNS) as edit:
            edit.add_columns(["unsubscribed_at"])        # before reading rows
            for row in edit.rows():                      # a row left alone is copied as it was
                edit.replace(row, {"status": "unsubscribed"})   # or edit.delete(row)
            edit.append({"email": "new@example.com"})
            edit.commit()                                # only writes if something changed
    """

    def __init__(self, path: Path, *, create: Iterable[str] | None = None, dry_run: bool = False):
        self.path = Path(path)
        self.create = tuple(create) if create is not None else None
        self.dry_run = dry_run
        self.changed = False
        self.header = Header((), ())
        self.dialect = Dialect()
        self._reader: ListReader | None = None
        self._out: AtomicWriter | None = None
        self._format = RowFormatter(self.dialect)
        self._keys: list[str] = []
        self._started = False
        self._open_line = False  # the last text written does not end with a line break
        self._untouched: Row | None = None
        self._stack = ExitStack()

    def __enter__(self) -> "ListEditor":
        with ExitStack() as stack:  # unwound in reverse: temp file discarded, list closed, lock released
            if not self.dry_run:  # a dry run writes nothing; writers rename whole files, so it reads one
                if self.create is not None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                stack.enter_context(locked(self.path))
            if self.path.exists() and self.path.stat().st_size > 0:
                self._reader = stack.enter_context(ListReader(self.path, keep_raw=True))
                self._reader.require_header()
                self.header, self.dialect = self._reader.header, self._reader.dialect
            elif self.create is None:
                raise SubscriberError("subscriber list not found" if not self.path.exists() else
                                      "the subscriber list is empty", path=str(self.path),
                                      hint="check [subscribers] file in newsletter.toml")
            else:
                self.header = Header.parse(self.create)
                self.changed = True
            self._keys = list(self.header.keys)
            self._format = RowFormatter(self.dialect)
            if not self.dry_run:
                self._out = AtomicWriter(self.path, bom=self.dialect.bom)
                stack.callback(self._out.discard)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)

    @property
    def exists(self) -> bool:
        """Whether there was a list to read (else this creates it)."""
        return self._reader is not None

    @property
    def keys(self) -> list[str]:
        """The merge-field key of every column of the file being written."""
        return self._keys

    def add_columns(self, keys: Iterable[str]) -> list[str]:
        """Add the columns that are missing (at the end); returns those added."""
        if self._started:
            raise RuntimeError("add_columns() after rows were written")
        added = [k for k in dict.fromkeys(keys) if k not in self._keys]
        self._keys.extend(added)
        self.changed = self.changed or bool(added)
        return added

    def rows(self) -> Iterator[Row]:
        self._start()
        if self._reader is None:
            return
        parse = RowParser(self.header)
        for record in self._reader.records():
            if record.fields == []:
                self._write(record.raw)
                continue
            row = parse(record)
            self._untouched = row
            yield row
            if self._untouched is row:
                self._write(record.raw)
        self._untouched = None

    def replace(self, row: Row, changes: dict[str, str]) -> None:
        """Write ``row`` with ``changes`` (key -> value) applied to its cells."""
        cells = list(row.record.fields or [])
        cells.extend([""] * (len(self._keys) - len(cells)))
        for key, value in changes.items():
            cells[self._keys.index(key)] = value
        self._untouched = None
        self.changed = True
        self._write(self._format(cells))

    def delete(self, row: Row) -> None:
        self._untouched = None
        self.changed = True

    def append(self, values: dict[str, str]) -> None:
        self._start()
        self.changed = True
        self._write(self._format([values.get(key, "") for key in self._keys]))

    def commit(self) -> None:
        """Rename the new file over the list, if anything changed (and this is not a dry run)."""
        self._start()
        if self._out is not None and self.changed:
            self._out.commit()

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        record = self._reader.header_record if self._reader else None
        if record is not None and len(self._keys) == len(self.header.keys):
            self._write(record.raw)
        else:
            self._write(self._format([*self.header.names, *self._keys[len(self.header.names):]]))

    def _write(self, text: str) -> None:
        if self._out is None:
            return
        if self._open_line:
            self._out.write(self.dialect.lineterminator)
        self._out.write(text)
        self._open_line = not text.endswith(("\n", "\r"))


# -- merging a row into the list (import and add) ---------------------------------------------------
@dataclass(frozen=True)
class Incoming:
    """A valid row of an imported file."""

    line: int
    email: str
    values: dict[str, str]  # column key -> value, for every column of the file (email, status, tags aside)
    tags: tuple[str, ...]
    status: str  # "" when the file does not say
    fill_only: frozenset[str] = frozenset()  # keys that fill a blank cell but never replace a value


def merge_row(row: Row, new: Incoming, keys: list[str], *, resubscribe: bool) -> tuple[dict[str, str], bool]:
    """The cells to change so that ``row`` takes ``new``'s values; and whether its status was kept."""
    old = row.subscriber.fields
    changes = {k: v for k, v in new.values.items()
               if v and k in keys and old.get(k, "") != v and not (k in new.fill_only and old.get(k))}
    tags = union_tags(row.subscriber.tags, new.tags)
    if tags != row.subscriber.tags:
        changes["tags"] = ";".join(tags)
    current, kept = row.subscriber.status, False
    if new.status and new.status != current:
        if current != "subscribed" and new.status == "subscribed" and not resubscribe:
            kept = True
        else:
            changes["status"] = new.status
            if new.status == "subscribed" and old.get("unsubscribed_at"):
                changes["unsubscribed_at"] = ""
    return changes, kept


def new_row(new: Incoming) -> dict[str, str]:
    return {**new.values, "email": new.email, "tags": ";".join(new.tags), "status": new.status}


def union_tags(tags: tuple[str, ...], more: Iterable[str]) -> tuple[str, ...]:
    have = {t.casefold() for t in tags}
    return tags + tuple(t for t in more if t.casefold() not in have and not have.add(t.casefold()))


# -- single addresses -----------------------------------------------------------------------------
def _address(email: str) -> str:
    if problem := header_value_problem("email", email.strip()):
        raise SubscriberError(f"{problem}: {email.strip()!r}", hint="give the address on one line")
    try:
        return normalise_address(email)
    except EmailNotValidError as err:
        raise SubscriberError(f"invalid email address {email.strip()!r}: {err}") from None


@dataclass(frozen=True)
class Change:
    """What a single-address command did: ``added``/``updated``/``unchanged``/… and the lines concerned."""

    outcome: str
    email: str
    lines: tuple[int, ...] = ()
    status: str = ""  # the status the row had before


def add_subscriber(list_path: Path, email: str, *, name: str = "", tags: Iterable[str] = (),
                   resubscribe: bool = False, now: str | None = None) -> Change:
    """Add ``email`` (or give an existing subscriber the name and tags); never re-subscribes silently."""
    email = _address(email)
    if problem := header_value_problem("name", name.strip()):
        raise SubscriberError(f"{problem}: {name.strip()!r}",
                              hint="a name goes into the To header: give it on one line")
    new = Incoming(0, email, {"name": name.strip()} if name.strip() else {},
                   union_tags((), (t.strip() for t in tags if t.strip())), "subscribed")
    with ListEditor(list_path, create=BUILTIN_COLUMNS) as edit:
        edit.add_columns([*(["name"] if new.values else []), *(["tags"] if new.tags else [])])
        outcome, lines, before, key = "added", [], "", address_key(email)
        for row in edit.rows():
            if row.key != key:
                continue
            if row.subscriber is None:
                raise SubscriberError(f"{row.email} is already in the list, on a row with a problem: {row.reasons[0]}",
                                      path=str(list_path), line=row.line, hint="fix that row first")
            before, lines, email = row.subscriber.status, [*lines, row.line], row.email
            if before != "subscribed" and not resubscribe:
                raise SubscriberError(f"{row.email} is {before}; add them again only if they asked to be "
                                      "(pass --resubscribe)", path=str(list_path), line=row.line)
            changes, _ = merge_row(row, new, edit.keys, resubscribe=True)
            if changes:
                edit.replace(row, changes)
            outcome = ("resubscribed" if before != "subscribed" else "updated") if changes else "unchanged"
        if not lines:
            edit.append({**new_row(new), "subscribed_at": now or utc_now()})
        edit.commit()
    return Change(outcome, email, tuple(lines), before)


def unsubscribe(list_path: Path, email: str, *, now: str | None = None) -> Change:
    """Mark ``email`` unsubscribed with a timestamp; the row stays so the address is not re-added."""
    key = address_key(_address(email))
    with ListEditor(list_path) as edit:
        if _matching_lines(list_path, key, subscribed_only=True):
            edit.add_columns(["status", "unsubscribed_at"])
        outcome, lines, before, found = "", [], "", email.strip()
        for row in edit.rows():
            if row.key != key:
                continue
            before, lines, found = _status(row), [*lines, row.line], row.email
            if before not in _OPTED_OUT:
                edit.replace(row, {"status": "unsubscribed", "unsubscribed_at": now or utc_now()})
                outcome = "unsubscribed"
            outcome = outcome or "unchanged"
        if not lines:
            raise SubscriberError(f"{email.strip()} is not in the list", path=str(list_path))
        edit.commit()
    return Change(outcome, found, tuple(lines), before)


def remove_subscriber(list_path: Path, email: str) -> Change:
    """Delete every row of ``email`` (erasure); it may be invalid, so that a bad row can be removed too."""
    try:
        key = address_key(normalise_address(email))
    except EmailNotValidError:
        key = address_key(email.strip())
    with ListEditor(list_path) as edit:
        lines, emails = [], []
        for row in edit.rows():
            if (row.key or address_key(row.email)) == key:
                edit.delete(row)
                lines.append(row.line)
                emails.append(row.email)
        edit.commit()
    return Change("removed" if lines else "absent", emails[0] if emails else email.strip(), tuple(lines))


_OPTED_OUT = ("unsubscribed", "bounced", "complained")


def _status(row: Row) -> str:
    """A row's status; "(invalid)" when the row has a problem."""
    if row.subscriber is not None:
        return row.subscriber.status
    return "(invalid)"


def _matching_lines(path: Path, key: str, *, subscribed_only: bool) -> list[int]:
    """Lines whose address is ``key`` (a read-only look, under the caller's lock)."""
    with ListReader(path) as reader:
        return [row.line for row in reader.rows()
                if row.key == key and (not subscribed_only or _status(row) not in _OPTED_OUT)]


def apply_unsubscribes(list_path: Path, unsubscribed_at: dict[str, str], *, dry_run: bool = False) -> list[Change]:
    """Mark every subscribed row whose address key is in ``unsubscribed_at`` unsubscribed, with that
    timestamp, in one locked pass (``newsletter subscribers apply-unsubscribes``). Rows already opted out
    are left alone; addresses not in the list are not added."""
    def applies(row: Row) -> bool:
        return row.key in unsubscribed_at and row.subscriber is not None and row.subscriber.status not in _OPTED_OUT

    with ListEditor(list_path, dry_run=dry_run) as edit:
        with ListReader(list_path) as reader:  # a first look, under the lock: are columns to be added?
            if any(applies(row) for row in reader.rows()):
                edit.add_columns(["status", "unsubscribed_at"])
        changes = []
        for row in edit.rows():
            if applies(row):
                edit.replace(row, {"status": "unsubscribed", "unsubscribed_at": unsubscribed_at[row.key]})
                changes.append(Change("unsubscribed", row.email, (row.line,), row.subscriber.status))
        edit.commit()
    return changes
