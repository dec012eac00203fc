"""The list out of the file: normalised CSV (what `import` reads back) and JSON, streamed.

Columns: ``email, name, status, tags`` first, then the list's other columns in
its own order; addresses and statuses normalised (a blank status is written
``subscribed``). ``export`` then ``import`` into an empty list gives the same list
(plus ``subscribed_at`` = now where a subscribed row had none).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

from ..models import Subscriber
from .csvfile import Dialect, RowFormatter
from .reader import ListReader

FIRST_COLUMNS = ("email", "name", "status", "tags")


def export_columns(path: Path) -> list[str]:
    """The columns an export of ``path`` has."""
    with ListReader(path) as reader:
        reader.require_header()
        keys = reader.header.keys
    return [*FIRST_COLUMNS, *(k for k in keys if k not in FIRST_COLUMNS)]


def _value(subscriber: Subscriber, key: str) -> str:
    if key == "email":
        return subscriber.email
    if key == "status":
        return subscriber.status
    if key == "tags":
        return ";".join(subscriber.tags)
    return subscriber.fields.get(key, "")


def write_csv(subscribers: Iterable[Subscriber], columns: list[str], write: Callable[[str], object]) -> int:
    """Write a header and one row per subscriber (comma, LF, minimal quoting); returns the count."""
    row = RowFormatter(Dialect())
    write(row(columns))
    count = 0
    for count, subscriber in enumerate(subscribers, 1):
        write(row(_value(subscriber, key) for key in columns))
    return count


def as_json(subscriber: Subscriber, columns: list[str]) -> dict[str, object]:
    """One subscriber as a JSON object: every column, ``tags`` as a list."""
    return {key: list(subscriber.tags) if key == "tags" else _value(subscriber, key) for key in columns}


def write_json(subscribers: Iterable[Subscriber], columns: list[str], write: Callable[[str], object]) -> int:
    """Write a JSON array, one object per line, without holding the list; returns the count."""
    count = 0
    for count, subscriber in enumerate(subscribers, 1):
        write(("[\n" if count == 1 else ",\n") + json.dumps(as_json(subscriber, columns), ensure_ascii=False))
    write("\n]\n" if count else "[]\n")
    return count
