"""The delivery ledger and suppressions; see :mod:`newsletter.ledger.base` for the protocol."""

from __future__ import annotations

from ..config import Settings
from ..errors import ConfigError
from .base import Ledger
from .sqlite import SQLiteLedger


def open_ledger(settings: Settings, *, readonly: bool = False) -> Ledger:
    """The ledger named by ``[ledger] url`` (a path relative to the workspace, or a database URL).

    ``readonly`` (dry runs, ``status``) never creates or changes anything; a missing
    ledger then reads as empty.
    """
    url = settings.ledger.url
    if url.startswith(("postgresql:", "postgres:")):
        raise ConfigError("the PostgreSQL ledger is not available in this version",
                          path=settings.origins.get("ledger.url"),
                          hint="use a SQLite path such as .newsletter/ledger.sqlite3")
    if "://" in url:
        raise ConfigError(f"[ledger] url {url!r} is neither a file path nor postgresql://",
                          path=settings.origins.get("ledger.url"))
    return SQLiteLedger(settings.workspace_path(url), readonly=readonly)

