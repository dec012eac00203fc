"""The delivery ledger and suppressions; see :mod:`newsletter.ledger.base` for the protocol."""

from __future__ import annotations

from ..config import Settings, without_password
from ..errors import ConfigError
from .base import Ledger
from .sqlite import SQLiteLedger


def open_ledger(settings: Settings, *, readonly: bool = False) -> Ledger:
    """The ledger named by ``[ledger] url`` (a path relative to the workspace, or a database URL).

    ``readonly`` (dry runs, ``status``) never creates or changes anything; a missing
    ledger then reads as empty.
    """
    url = settings.ledger.url
    if is_postgres_url(url):
        return open_url(url, readonly=readonly)
    if "://" in url:
        raise ConfigError(f"[ledger] url {without_password(url)!r} is neither a file path nor postgresql://",
                          path=settings.origins.get("ledger.url"))
    return SQLiteLedger(settings.workspace_path(url), readonly=readonly)


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def open_url(url: str, *, readonly: bool = False) -> Ledger:
    """A ledger by URL alone (``ledger copy --to``): postgresql://... or a SQLite path as given."""
    if not is_postgres_url(url):
        return SQLiteLedger(url, readonly=readonly)
    try:  # psycopg costs ~200 ms to import: only for a PostgreSQL ledger
        from .postgres import PostgresLedger
    except ImportError as err:
        raise ConfigError(f"the PostgreSQL ledger needs psycopg, which cannot be imported ({err})",
                          hint="pip install 'psycopg[binary]'") from None
    return PostgresLedger(url, readonly=readonly)

