"""The subscriber list: read, validate and normalise ``subscribers/*.csv`` (docs/subscribers.md).

Header: ``email`` is required (``Email``, ``Email Address``, ``E-mail`` … are mapped
to it); ``name``, ``status``, ``tags`` (``;``-separated) and ``subscribed_at`` are
optional; every other column is a merge field ``subscriber.<column>`` under its
normalised name (:func:`normalise_column`); two columns with one name are refused.

Rows: an address is valid for email-validator (syntax only, no DNS), normalised
(trimmed, domain lower-cased) and unique case-insensitively; ``status`` is blank
(= subscribed) or one of :data:`STATUSES`; the name and address hold no line break or
other control character (they go into the To header; other columns may).

For the send loop::

    problems = check_list(path, skip_invalid=...)   # raises SubscriberError unless allowed
    for subscriber in iter_subscribers(path, skip=problems):   # streamed, one row in memory
        if eligible(subscriber, segment): ...

:func:`validate_list` reads the file once with a Bloom filter of the addresses
(half a byte of memory per byte of file, at most 8 MB: see :func:`bloom_bits`) and reads it a
second time only when the filter saw a possible repeat, to confirm it and name the first line.
Changing the file is :mod:`newsletter.subscribers.edits`.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from email_validator import EmailNotValidError

from ..errors import SubscriberError
from ..models import Subscriber
from ..text import has_line_break
from .address import normalise_address
from .csvfile import Dialect, Record, read_records

STATUSES = ("subscribed", "unsubscribed", "bounced", "complained")
BUILTIN_COLUMNS = ("email", "name", "status", "tags", "subscribed_at")
# The column names of other services' exports (normalised) -> ours. Used only when
# our own name is not in the header too; the CLI says which columns were mapped.
COLUMN_ALIASES = {
    "email_address": "email", "e_mail": "email", "e_mail_address": "email", "emailaddress": "email",
    "full_name": "name", "fullname": "name",
    "tag": "tags",
    "created_at": "subscribed_at", "creation_date": "subscribed_at", "date_added": "subscribed_at",
    "optin_time": "subscribed_at", "signup_date": "subscribed_at",
    "unsub_time": "unsubscribed_at", "unsubscription_date": "unsubscribed_at",  # Mailchimp, Buttondown
}


def aliased_keys(names: Iterable[str]) -> list[str]:
    """Each column's key: its normalised name, or the :data:`COLUMN_ALIASES` target that no column is named."""
    keys = [normalise_column(n) for n in names]
    for i, key in enumerate(keys):
        target = COLUMN_ALIASES.get(key)
        if target and target not in keys:
            keys[i] = target
    return keys


def normalise_column(name: str) -> str:
    """A CSV header as a merge-field identifier: ``First Name`` -> ``first_name``."""
    ident = re.sub(r"[^0-9a-zA-Z]+", "_", name.strip()).strip("_").lower()
    return ident if ident and not ident[0].isdigit() else f"col_{ident}"


def address_key(email: str) -> str:
    """How two addresses are compared: case-insensitively."""
    return email.lower()


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def header_value_problem(column: str, value: str) -> str | None:
    """Why ``value`` (an address or name: they go into the To header) cannot be used, or None.

    A line break could add headers to the message (docs/architecture.md, security); other control characters
    (a tab, NUL, …) have no place in a name or an address either.
    """
    found = _CONTROL.search(value)
    if found is None:
        return None
    if has_line_break(value):
        return f"{column} contains a line break"
    return f"{column} contains a control character (U+{ord(found.group()):04X})"


# -- problems -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """Why a row (or the whole file, when ``fatal``) cannot be used: ``FILE:LINE: reason``."""

    path: str
    line: int
    reason: str
    email: str = ""  # the row's email cell, trimmed ("" when there is none)
    fatal: bool = False  # the file itself is unusable: --skip-invalid cannot skip it

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def problems_error(headline: str, problems: Iterable[Problem], advice: str) -> SubscriberError:
    """One error that lists every problem on its own line."""
    return SubscriberError("\n".join([headline, *map(str, problems), advice]))


# -- the header -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Header:
    """The header row: each column's name as written and its merge-field key."""

    names: tuple[str, ...]
    keys: tuple[str, ...]
    problems: tuple[str, ...] = ()

    @classmethod
    def parse(cls, names: Iterable[str]) -> "Header":
        names = tuple(n.strip() for n in names)
        while len(names) > 1 and not names[-1]:  # "Email;Name;" as Excel writes it: no column, only a delimiter
            names = names[:-1]
        return cls.checked(names, aliased_keys(names))

    @classmethod
    def checked(cls, names: tuple[str, ...], keys: Iterable[str]) -> "Header":
        """The header of these columns under these keys, with its problems (no email, two of one key)."""
        keys = list(keys)
        problems = [f"column {i} has no name (name it, or delete the column)"
                    for i, name in enumerate(names, 1) if not name]
        first: dict[str, int] = {}
        for i, (name, key) in enumerate(zip(names, keys)):
            if not name:
                continue
            if key in first:
                problems.append(f"columns {names[first[key]]!r} and {name!r} are both subscriber.{key} "
                                "(rename or delete one)")
            else:
                first[key] = i
        if "email" not in keys:
            problems.append(f"no email column in the header row (columns: {', '.join(names) or 'none'}); "
                            "name the column of addresses 'email'")
        return cls(names, tuple(keys), tuple(problems))

    def index(self, key: str) -> int | None:
        return self.keys.index(key) if key in self.keys else None

    def mapped(self) -> list[tuple[str, str]]:
        """``(name, key)`` for every column whose name is not already its key."""
        return [(n, k) for n, k in zip(self.names, self.keys) if n != k]


# -- rows -----------------------------------------------------------------------------------------
class Row(NamedTuple):
    """One data record parsed: the subscriber (None when the row is invalid) and what is wrong."""

    record: Record
    subscriber: Subscriber | None
    reasons: list[str]
    email: str  # the email cell, trimmed (normalised when valid)
    key: str  # address_key of the normalised address; "" when it is empty or invalid

    @property
    def line(self) -> int:
        return self.record.line


class RowParser:
    """Checks records against one header and builds subscribers (the hot path: keep it lean)."""

    def __init__(self, header: Header, *, ignore_status: bool = False):
        self.keys = header.keys
        self.width = len(header.keys)
        self.email_at = header.keys.index("email")
        self.status_at = None if ignore_status else header.index("status")
        self.name_at = header.index("name")
        self.tags_at = header.index("tags")

    def check(self, fields: list[str]) -> tuple[list[str], str, str]:
        """``(reasons, email, key)`` for one record's values, without building anything."""
        reasons = []
        if len(fields) > self.width and any(fields[self.width:]):  # empty extra values: a trailing delimiter
            reasons.append(f"{len(fields)} values but the header has {self.width} columns "
                           "(put a value that contains the delimiter in quotes)")
        email = fields[self.email_at].strip() if len(fields) > self.email_at else ""
        key = ""
        if not email:
            reasons.append("empty email")
        elif problem := header_value_problem("email", email):
            reasons.append(problem)
        else:
            try:
                email = normalise_address(email)
                key = email.lower()
            except EmailNotValidError as err:
                reasons.append(f"invalid email address {email!r}: {err}")
        at = self.name_at
        if at is not None and len(fields) > at and (problem := header_value_problem("name", fields[at].strip())):
            reasons.append(problem)
        at = self.status_at
        if at is not None and len(fields) > at and (given := fields[at].strip()) and given.lower() not in STATUSES:
            reasons.append(f"unknown status {given!r} (expected one of: {', '.join(STATUSES)}; blank means "
                           "subscribed)")
        return reasons, email, key

    def eligible(self, fields: list[str], segment: str) -> bool:
        """What :func:`eligible` says of the subscriber a valid record's ``fields`` make, without making it
        (``segment`` casefolded, "" for everyone)."""
        at = self.status_at
        if at is not None and at < len(fields) and fields[at].strip().lower() not in ("", "subscribed"):
            return False
        if not segment:
            return True
        at = self.tags_at
        return at is not None and at < len(fields) and any(
            tag.strip().casefold() == segment for tag in fields[at].split(";"))

    def __call__(self, record: Record) -> Row:
        if record.fields is None:
            return Row(record, None, [record.error], "", "")
        reasons, email, key = self.check(record.fields)
        if reasons:
            return Row(record, None, reasons, email, key)
        values = [v.strip() for v in record.fields]
        if len(values) < self.width:
            values.extend([""] * (self.width - len(values)))
        fields = dict(zip(self.keys, values))
        fields["email"] = email
        status = "subscribed"
        if self.status_at is not None:
            status = fields["status"] = values[self.status_at].lower() or status
        cell = values[self.tags_at] if self.tags_at is not None else ""
        if ";" in cell:
            tags = tuple(t for t in map(str.strip, cell.split(";")) if t)
        else:  # one tag or none (the cell is stripped): a list's common case, four times faster this way
            tags = (cell,) if cell else ()
        name = values[self.name_at] if self.name_at is not None else ""
        return Row(record, Subscriber(email, name, status, tags, fields, record.line), reasons, email, key)


class ListReader:
    """A list file opened for one pass: ``dialect``, ``header``, then :meth:`rows`.

    Header problems are fatal and raised by :meth:`rows` (and by :meth:`require_header`);
    a missing or non-UTF-8 file raises on entry.
    """

    def __init__(self, path: Path, *, ignore_status: bool = False, keep_raw: bool = False):
        self.path = Path(path)
        self.ignore_status = ignore_status
        self.keep_raw = keep_raw  # records keep their exact text (for rewriting the file)
        self.dialect = Dialect()
        self.header = Header((), ())
        self.header_record: Record | None = None
        self._records: Iterator[Record] = iter(())
        self._stack = ExitStack()

    def __enter__(self) -> "ListReader":
        with ExitStack() as stack:
            try:
                self.dialect, self._records = stack.enter_context(read_records(self.path, keep_raw=self.keep_raw))
            except FileNotFoundError:
                raise SubscriberError("subscriber list not found", path=str(self.path),
                                      hint="create it (newsletter subscribers add EMAIL), or set [subscribers] file "
                                           "in newsletter.toml") from None
            self.header_record = next(self._records, None)
            if self.header_record is None:
                self.header = Header((), (), ("the file is empty: the first row must be a header with an email "
                                              "column",))
            elif self.header_record.fields is None:
                self.header = Header((), (), (self.header_record.error,))
            else:
                self.header = Header.parse(self.header_record.fields)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)

    def header_problems(self) -> list[Problem]:
        return [Problem(str(self.path), 1, reason, fatal=True) for reason in self.header.problems]

    def require_header(self) -> None:
        if self.header.problems:
            raise problems_error(f"{self.path}: the header row cannot be used", self.header_problems(),
                                 "Fix the header row (the first line) of the file.")

    def records(self, *, check_header: bool = True) -> Iterator[Record]:
        """Every data record as read (blank lines too: their ``fields`` are []).

        ``check_header=False`` is for a reader that maps the columns itself (``import --map``).
        """
        if check_header:
            self.require_header()
        return self._records

    def parser(self) -> RowParser:
        """The parser of this file's rows; a header it cannot be used with (none, no email column) is
        refused first, as :meth:`records` refuses it."""
        self.require_header()
        return RowParser(self.header, ignore_status=self.ignore_status)

    def rows(self) -> Iterator[Row]:
        """Every data record parsed; blank lines are left out."""
        parse = self.parser()
        for record in self.records():
            if record.fields != []:
                yield parse(record)


# -- the API the rest of the package uses --------------------------------------------------------
def iter_subscribers(path: Path, *, skip: Iterable[Problem] = ()) -> Iterator[Subscriber]:
    """Stream the list, one row at a time.

    An invalid row raises :class:`SubscriberError` unless its line is among ``skip``
    (the problems :func:`validate_list` or :func:`check_list` returned). Repeated
    addresses are found by :func:`validate_list`, not here.
    """
    skipped = _skipped_lines(skip)
    with ListReader(path) as reader:
        for row in reader.rows():
            if row.line in skipped:
                continue
            if row.subscriber is None:
                raise _unusable_row(path, row.line, row.reasons[0])
            yield row.subscriber


def _skipped_lines(skip: Iterable[Problem]) -> set[int]:
    """The lines a send leaves out: its rows' non-fatal problems (--skip-invalid)."""
    return {p.line for p in skip if not p.fatal}


def _unusable_row(path: Path, line: int, reason: str) -> SubscriberError:
    """An invalid row met while streaming the list to send (the list changed since it was checked)."""
    return SubscriberError(reason, path=str(path), line=line, hint="`newsletter subscribers check` lists every problem")


def iter_eligible_keys(path: Path, segment: str | None, *, skip: Iterable[Problem] = ()) -> Iterator[str]:
    """The address keys of the rows :func:`eligible` for ``segment``, in list order, without building each
    subscriber: what a plan and a send's summary walk the list for (in about two thirds of the time of
    :func:`iter_subscribers`, benchmarks/README.md). Invalid rows raise as there, unless their line is
    among ``skip``."""
    skipped = _skipped_lines(skip)
    wanted = segment.casefold() if segment else ""
    with ListReader(path) as reader:
        parse = reader.parser()
        for record in reader.records():
            fields = record.fields
            if fields == [] or record.line in skipped:
                continue
            reasons, _, key = parse.check(fields) if fields is not None else ([record.error], "", "")
            if reasons:
                raise _unusable_row(path, record.line, reasons[0])
            if parse.eligible(fields, wanted):
                yield key


def validate_list(path: Path) -> list[Problem]:
    """Every problem of the list, in line order ([] when it can be sent to as it is)."""
    path = Path(path)
    name = str(path)
    problems: list[Problem] = []
    maybe_repeated: set[str] = set()
    try:
        with ListReader(path) as reader:
            if reader.header.problems:
                return reader.header_problems()
            check = RowParser(reader.header).check
            seen = _BloomFilter(bloom_bits(path.stat().st_size))
            for line, fields, _, error, end in reader.records():
                if fields is None:  # swallowing the rows after it, it cannot be skipped: they would be lost
                    problems.append(Problem(name, line, error, fatal=end > line))
                elif fields:
                    reasons, email, key = check(fields)
                    if reasons:
                        problems.extend(Problem(name, line, reason, email) for reason in reasons)
                    if key and seen.add(key):
                        maybe_repeated.add(key)
    except SubscriberError as err:
        if err.line is None:
            raise
        reason = f"{err.message} ({err.hint})" if err.hint else err.message
        return problems + [Problem(name, err.line, reason, fatal=True)]
    if maybe_repeated:
        problems.extend(_repeats(path, maybe_repeated))
        problems.sort(key=lambda p: p.line)
    return problems


def _repeats(path: Path, candidates: set[str]) -> Iterator[Problem]:
    """The second pass: which of the filter's candidates really repeat, and where they first appeared."""
    first: dict[str, int] = {}
    with ListReader(path) as reader:
        check = reader.parser().check
        for line, fields, _, _, _ in reader.records():
            if fields:
                _, email, key = check(fields)
                if key not in candidates:
                    continue
                if key in first:
                    yield Problem(str(path), line, f"duplicate of line {first[key]} ({email})", email)
                else:
                    first[key] = line


BLOOM_MAX_BITS = 1 << 26  # 8 MB


def bloom_bits(file_size: int) -> int:
    """The filter's size for a list of ``file_size`` bytes: 4 bits a byte (~260 a row of 65 bytes), capped at 8 MB.

    The cap keeps a send's memory flat with the list (benchmarks/memory.py: uncapped, the filter
    was 30 MB of a 77 MB peak at 1,000,000 readers). At 1M rows it still holds ~64 bits a row: a
    handful of false "maybe"s, each only a candidate the second pass checks exactly.
    """
    return min(max(file_size * 4, 1 << 16), BLOOM_MAX_BITS)


class _BloomFilter:
    """'Certainly new' or 'maybe seen' for strings, in ``bits`` bits (4 probes, double hashing)."""

    def __init__(self, bits: int):
        self.size = bits
        self.bits = bytearray(bits // 8 + 1)

    def add(self, item: str) -> bool:
        """Remember ``item``; True if it may have been added before."""
        h = hash(item)
        a, b = h & 0xFFFFFFFF, (h >> 32) | 1
        bits, size, seen = self.bits, self.size, True
        for bit in (a % size, (a + b) % size, (a + 2 * b) % size, (a + 3 * b) % size):
            byte, mask = bit >> 3, 1 << (bit & 7)
            if not bits[byte] & mask:
                bits[byte] |= mask
                seen = False
        return seen


def check_list(path: Path, *, skip_invalid: bool = False,
               skip_advice: str = "or pass --skip-invalid to skip those rows.") -> list[Problem]:
    """The list's problems, or :class:`SubscriberError` listing them all.

    With ``skip_invalid`` the row problems are returned (pass them to
    :func:`iter_subscribers` as ``skip``); problems with the file itself always raise.
    ``skip_advice``: how the caller's user leaves invalid rows out (`dispatch` has no --skip-invalid).
    """
    problems = validate_list(path)
    fatal = [p for p in problems if p.fatal]
    if fatal or (problems and not skip_invalid):
        shown = fatal or problems
        advice = ("Fix the file; --skip-invalid cannot skip a problem with the file itself." if fatal else
                  f"Fix them (`newsletter subscribers check` lists them again), {skip_advice}")
        raise problems_error(f"{path}: {len(shown)} problem(s) in the subscriber list", shown, advice)
    return problems


def in_segment(subscriber: Subscriber, segment: str | None) -> bool:
    """Is ``subscriber`` tagged ``segment`` (compared case-insensitively)? Everyone is, without a segment."""
    return not segment or segment.casefold() in (t.casefold() for t in subscriber.tags)


def eligible(subscriber: Subscriber, segment: str | None) -> bool:
    """Should ``subscriber`` get an issue sent to ``segment``?"""
    return subscriber.status == "subscribed" and in_segment(subscriber, segment)


def load_subscribers(path: Path) -> list[Subscriber]:
    """Every valid row, in memory (for builds and previews; sending streams with :func:`iter_subscribers`).

    Invalid rows are left out rather than refused: a build only needs sample values.
    A file that cannot be read at all raises :class:`SubscriberError`.
    """
    return list(iter_valid_subscribers(path))


def iter_valid_subscribers(path: Path) -> Iterator[Subscriber]:
    """Stream the valid rows, leaving invalid ones out (samples, lint counts; never for sending)."""
    if not Path(path).exists():
        return
    with ListReader(path) as reader:
        if reader.header.problems:  # no row can be read: no sample either (a send's check says why)
            return
        for row in reader.rows():
            if row.subscriber is not None:
                yield row.subscriber


def merge_columns(path: Path) -> set[str]:
    """Every merge field the list provides (normalised header names)."""
    try:
        with ListReader(path) as reader:
            return set(reader.header.keys) | {"email"}
    except SubscriberError:
        if not Path(path).exists():
            return {"email"}
        raise


def count_by_status(path: Path, segment: str | None = None, *, skip: Iterable[Problem] = ()) -> dict[str, int]:
    """How many subscribers have each status (those tagged ``segment`` when given; ``skip`` as for iter_subscribers)."""
    counts = dict.fromkeys(STATUSES, 0)
    for subscriber in iter_subscribers(path, skip=skip):
        if in_segment(subscriber, segment):
            counts[subscriber.status] += 1
    return counts
