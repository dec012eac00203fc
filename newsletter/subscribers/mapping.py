"""How the columns of a file to import map to the list's (docs/subscribers.md, "Importing from other tools").

The exports of Mailchimp, Buttondown, Substack and listmonk import as they are:
their email, name, tag and date columns are aliases (:data:`~newsletter.subscribers.reader.COLUMN_ALIASES`);
their status columns say each row's ``status`` through :data:`KNOWN_COLUMNS`; ``First Name`` and
``Last Name`` fill ``name`` when no column is the name; tags are split on ``,`` as well as ``;``.
Every other column is a merge field under its normalised name. ``--map COLUMN=FIELD`` overrides a
column's field (``-`` leaves it out).

:class:`Mapping` turns each record of the file into the values of a list row, so that the list's own
:class:`~newsletter.subscribers.reader.RowParser` checks it as it checks the list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from ..errors import SubscriberError
from .reader import BUILTIN_COLUMNS, STATUSES, Header, aliased_keys, normalise_column

SKIP = "-"  # --map COLUMN=- : leave the column out
FIELDS = (*BUILTIN_COLUMNS, "unsubscribed_at")
_FIELD_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_FIRST_NAMES = ("first_name", "fname", "firstname", "given_name")
_LAST_NAMES = ("last_name", "lname", "lastname", "surname", "family_name")
_TAG_SEPARATORS = re.compile(r"[;,]")


@dataclass(frozen=True)
class StatusRule:
    """How one column's values say a row's status: by a table, or any value at all (``when_set``)."""

    tool: str
    values: dict[str, str] = field(default_factory=dict)  # casefolded value -> status ("" says nothing)
    when_set: str = ""  # a non-blank value means this status
    summary: str = ""  # what the dry run says instead of the whole table

    def status(self, value: str) -> str | None:
        """The status ``value`` says ("" for none), or None when the value is not known."""
        if not value:
            return ""
        if self.when_set:
            return self.when_set
        return self.values.get(value.casefold())

    def describe(self) -> str:
        if self.when_set:
            return f"status {self.when_set} when set"
        if self.summary:
            return f"status ({self.summary})"
        said = {}
        for value, status in self.values.items():
            said.setdefault(status or "no say", []).append(value)
        return "status (" + "; ".join(f"{'/'.join(vs)} = {s}" for s, vs in said.items()) + ")"


_OURS = {s: s for s in STATUSES}
_LISTMONK = StatusRule("listmonk", {**_OURS, "enabled": "subscribed", "disabled": "unsubscribed",
                                    "blocklisted": "unsubscribed"})
# Buttondown's subscriber types (docs.buttondown.com, "Subscriber type"): the ones who get the newsletter,
# the ones who left or never confirmed, and the ones it cannot deliver to.
_BUTTONDOWN = StatusRule("Buttondown", {
    **dict.fromkeys(("regular", "premium", "trialed", "unpaid", "gifted", "churning", "paused", "past_due"),
                    "subscribed"),
    **dict.fromkeys(("unsubscribed", "unactivated", "removed", "blocked", "churned"), "unsubscribed"),
    **dict.fromkeys(("undeliverable", "spammy", "malformed", "disposable"), "bounced"),
    "complained": "complained"}, summary="regular, premium, … = subscribed; unsubscribed, unactivated = "
                                        "unsubscribed; undeliverable = bounced; complained = complained")
_SUBSTACK = StatusRule("Substack", {"true": "unsubscribed", "false": "", "1": "unsubscribed", "0": ""})


@dataclass(frozen=True)
class Known:
    """A column of another tool's export: the list column it fills ("" none) and how it says the status."""

    field: str
    rule: StatusRule | None = None
    note: str = ""


# Normalised column names of the four tools' exports that are more than a merge field.
KNOWN_COLUMNS = {
    "status": Known("status", _LISTMONK),  # ours, and listmonk's enabled / disabled / blocklisted
    "unsubscribed_at": Known("unsubscribed_at", StatusRule("", when_set="unsubscribed")),
    "unsubscription_date": Known("unsubscribed_at", StatusRule("Buttondown", when_set="unsubscribed")),
    "unsub_time": Known("unsubscribed_at", StatusRule("Mailchimp", when_set="unsubscribed")),
    "clean_time": Known("", StatusRule("Mailchimp", when_set="bounced")),  # Mailchimp's "cleaned" = bounced
    "member_rating": Known("member_rating", note="Mailchimp's 1-5 engagement stars: a merge field, not a status"),
    "subscriber_type": Known("", _BUTTONDOWN),
    "undeliverability_date": Known("", StatusRule("Buttondown", when_set="bounced")),
    "email_disabled": Known("", _SUBSTACK),
    "active_subscription": Known("active_subscription",
                                 note="Substack's paid-subscription flag, false for free readers: a merge field, "
                                      "not a status"),
}


@dataclass(frozen=True)
class ColumnMap:
    """One column of the file: the list column it fills ("" none), how it says the status, and why."""

    name: str
    field: str
    rule: StatusRule | None = None
    note: str = ""
    mapped_by_user: bool = False

    def describe(self, name_parts: tuple[str, ...] = ()) -> str:
        """What the dry run prints after ``'COLUMN' ->``."""
        if self.field == SKIP:
            return "left out" + (" (--map)" if self.mapped_by_user else f" ({self.note})" if self.note else "")
        said = [self.field] if self.field else []
        if name_parts and self.name in name_parts:
            others = [f"{n!r}" for n in name_parts if n != self.name]
            said.append("name" + (f", with {', '.join(others)}" if others else ""))
        if self.rule and self.field != "status":
            said.append(self.rule.describe())
        elif self.rule and any(v != k for k, v in self.rule.values.items()):
            said[said.index("status")] = self.rule.describe()
        text = "; ".join(said)
        tool = self.rule.tool if self.rule and self.rule.tool not in ("", "listmonk") else ""
        extra = [x for x in (tool, self.note, "--map" if self.mapped_by_user else "") if x]
        return text + (f" ({'; '.join(extra)})" if extra else "")


@dataclass
class Mapping:
    """The columns of one file mapped, and the header of the list rows its records become."""

    columns: list[ColumnMap]
    header: Header  # of the translated values (see :meth:`translate`)
    name_parts: tuple[str, ...] = ()  # the columns that make up ``name`` when no column is the name
    _take: list[int] = field(default_factory=list)  # source index of each translated value (-1: made here)
    _status_from: list[tuple[int, StatusRule]] = field(default_factory=list)
    _name_from: list[int] = field(default_factory=list)
    _tags_at: int | None = None

    def lines(self) -> list[str]:
        """``'COLUMN' -> what`` for every column (the dry run's report)."""
        return [f"{c.name!r} -> {c.describe(self.name_parts)}" for c in self.columns]

    def changed(self) -> list[str]:
        """``'COLUMN' -> fields`` in short, for the columns whose name is not already their only field."""
        said = []
        for c in self.columns:
            fields = [c.field] if c.field not in ("", SKIP) else []
            fields += ["name"] if c.name in self.name_parts else []
            fields += ["status"] if c.rule and c.field != "status" else []
            short = " + ".join(fields) or "left out"
            if short != c.name:
                said.append(f"{c.name!r} -> {short}")
        return said

    def translate(self, fields: list[str]) -> tuple[list[str], list[str]]:
        """A record of the file as the values of a list row, and why it cannot be used."""
        reasons = []
        if len(fields) > len(self.columns) and any(fields[len(self.columns):]):  # empty ones: trailing delimiters
            reasons.append(f"{len(fields)} values but the header has {len(self.columns)} columns "
                           "(put a value that contains the delimiter in quotes)")
        cell = [v.strip() for v in fields] + [""] * (len(self.columns) - len(fields))
        values = [cell[i] if i >= 0 else "" for i in self._take]
        keys = self.header.keys
        if self._tags_at is not None:
            at = keys.index("tags")
            values[at] = ";".join(t for t in map(_unquoted, _TAG_SEPARATORS.split(cell[self._tags_at])) if t)
        if self._name_from:
            values[keys.index("name")] = " ".join(cell[i] for i in self._name_from if cell[i])
        if self._status_from:
            values[keys.index("status")] = self._status(cell, reasons)
        return values, reasons

    def _status(self, cell: list[str], reasons: list[str]) -> str:
        said = ""
        for i, rule in self._status_from:
            status = rule.status(cell[i])
            if status is None:
                if self.columns[i].field == "status":  # the list's own vocabulary: RowParser names the problem
                    return cell[i]
                known = ", ".join(dict.fromkeys(rule.values))
                reasons.append(f"unknown {self.columns[i].name} {cell[i]!r} (known: {known}); pass --status S to "
                               f"give every row one status, or --map '{self.columns[i].name}=-' to leave the "
                               "column out")
            elif status and (not said or said == "subscribed"):  # any column that says "not to them" wins
                said = status
        return said


def _unquoted(tag: str) -> str:
    """A tag without the quotes Mailchimp puts around each (its TAGS cell reads ``"weekly","vip"``)."""
    tag = tag.strip()
    return tag[1:-1].strip() if len(tag) > 1 and tag[0] == tag[-1] == '"' else tag


def plan_mapping(names: Iterable[str], overrides: Iterable[str] = (), *, source: str = "",
                 status_given: bool = False) -> Mapping:
    """Map the columns ``names`` (the file's header row), with ``--map COLUMN=FIELD`` overrides.

    ``status_given`` (``import --status``): no column says the status.
    """
    names = tuple(n.strip() for n in names)
    given = _parse_overrides(overrides, names, source)
    columns = [_without_status(c) if status_given else c for c in _columns(names, given)]
    return _build(columns)


def _without_status(column: ColumnMap) -> ColumnMap:
    if column.rule is None and column.field != "status":
        return column
    if not column.field:
        return ColumnMap(column.name, SKIP, note="--status")
    return ColumnMap(column.name, column.field, None, column.note, column.mapped_by_user)


# Buttondown's current export renamed subscriber_type to `type`, a name too common to read as a status in
# any file: it is Buttondown's where a column only Buttondown writes is beside it. Read as a merge field, its
# "unsubscribed" and "undeliverable" readers were imported as subscribed and sent to.
_BUTTONDOWN_ONLY = frozenset({"unsubscription_date", "undeliverability_date", "creation_date"})


def _columns(names: tuple[str, ...], given: dict[str, str]) -> list[ColumnMap]:
    columns = []
    buttondown = bool(_BUTTONDOWN_ONLY & {normalise_column(n) for n in names})
    for name, key in zip(names, aliased_keys(names)):
        known = KNOWN_COLUMNS.get(normalise_column(name)) or KNOWN_COLUMNS.get(key)
        if known is None and buttondown and normalise_column(name) == "type":
            known = KNOWN_COLUMNS["subscriber_type"]
        if name in given:
            target = given[name]
            rule = known.rule if known and target in (known.field, "status") else None
            if target == "status" and rule is None:
                rule = _LISTMONK
            columns.append(ColumnMap(name, target, rule, mapped_by_user=True))
        elif known:
            columns.append(ColumnMap(name, known.field, known.rule, known.note))
        else:
            columns.append(ColumnMap(name, key))
    return columns


def _parse_overrides(overrides: Iterable[str], names: tuple[str, ...], source: str) -> dict[str, str]:
    given: dict[str, str] = {}
    where = f"{source}: " if source else ""
    for text in overrides:
        column, sep, target = text.partition("=")
        column, target = column.strip(), target.strip()
        if not sep or not column or not target:
            raise SubscriberError(f"--map {text!r}: expected COLUMN=FIELD",
                                  hint="e.g. --map 'E-mail Address=email', or --map 'Notes=-' to leave a column out")
        match = [n for n in names if n == column] or [n for n in names if n.casefold() == column.casefold()]
        if not match:
            raise SubscriberError(f"--map {text!r}: {where}no column {column!r} in the header row",
                                  hint=f"its columns are: {', '.join(repr(n) for n in names) or 'none'}")
        if match[0] in given:
            raise SubscriberError(f"--map {text!r}: column {match[0]!r} is mapped twice",
                                  hint="give each column one --map")
        field_name = target if target == SKIP else target.lower()
        if field_name != SKIP and not _FIELD_NAME.fullmatch(field_name):
            raise SubscriberError(f"--map {text!r}: {target!r} is not a field name",
                                  hint=f"use one of {', '.join(FIELDS)}, a merge field name (letters, digits "
                                       f"and _, e.g. first_name), or - to leave the column out")
        given[match[0]] = field_name
    return given


def _build(columns: list[ColumnMap]) -> Mapping:
    fields = [c.field for c in columns]
    for field_name in set(fields) - {"", SKIP}:
        users = [c for c in columns if c.field == field_name]
        if len(users) > 1 and any(c.mapped_by_user for c in users):
            first, second = users[0].name, users[1].name
            raise SubscriberError(f"--map: columns {first!r} and {second!r} would both be {field_name}",
                                  hint=f"map one of them elsewhere (--map '{second}=-' leaves it out)")
    take = [i for i, c in enumerate(columns) if c.field not in ("", SKIP)]
    names = [columns[i].name for i in take]
    keys = [columns[i].field for i in take]
    mapping = Mapping(columns, Header((), ()), _take=list(take))
    first = next((i for i, c in enumerate(columns) if c.field in _FIRST_NAMES), None)
    last = next((i for i, c in enumerate(columns) if c.field in _LAST_NAMES), None)
    parts = [i for i in (first, last) if i is not None]
    if "name" not in keys and parts:
        mapping.name_parts = tuple(columns[i].name for i in parts)
        mapping._name_from = parts
        names.append(" + ".join(mapping.name_parts))
        keys.append("name")
        mapping._take.append(-1)
    mapping._status_from = [(i, c.rule) for i, c in enumerate(columns) if c.rule and c.field != SKIP]
    mapping._status_from.sort(key=lambda item: columns[item[0]].field != "status")  # the status column first
    if mapping._status_from and "status" not in keys:
        names.append("status")
        keys.append("status")
        mapping._take.append(-1)
    if "tags" in keys:
        mapping._tags_at = take[keys.index("tags")]
    mapping.header = Header.checked(tuple(names), keys)
    return mapping
