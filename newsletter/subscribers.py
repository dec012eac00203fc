"""Read the subscriber list (minimal reader; the subscribers issue grows this module)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from .errors import SubscriberError
from .models import Subscriber

BUILTIN_COLUMNS = ("email", "name", "status", "tags", "subscribed_at")


def normalise_column(name: str) -> str:
    """A CSV header as a merge-field identifier: ``First Name`` -> ``first_name``."""
    ident = re.sub(r"[^0-9a-zA-Z]+", "_", name.strip()).strip("_").lower()
    return ident if ident and not ident[0].isdigit() else f"col_{ident}"


def load_subscribers(path: Path) -> list[Subscriber]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "email" not in [normalise_column(c) for c in reader.fieldnames]:
                raise SubscriberError("no 'email' column in the header row", path=str(path), line=1)
            rows = []
            for row in reader:
                fields = {normalise_column(k): (v or "").strip() for k, v in row.items() if k is not None}
                rows.append(Subscriber(
                    email=fields["email"], name=fields.get("name", ""),
                    status=fields.get("status") or "subscribed",
                    tags=tuple(t.strip() for t in fields.get("tags", "").split(";") if t.strip()),
                    fields=fields, line=reader.line_num))
            return rows
    except FileNotFoundError:
        raise SubscriberError("subscriber list not found", path=str(path),
                              hint="create it, or set [subscribers] file in newsletter.toml") from None


def merge_columns(path: Path) -> set[str]:
    """Every merge field the list provides (normalised header names)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except FileNotFoundError:
        return {"email"}
    return {normalise_column(c) for c in header} | {"email"}
