"""``newsletter ledger copy``: a whole ledger into another, SQLite and PostgreSQL both ways (docs/team.md)."""

from __future__ import annotations

from pathlib import Path

from ..errors import LedgerError
from .base import COPIED_TABLES, Ledger


def copy_ledger(source: Ledger, target: Ledger, *, merge: bool) -> dict[str, int]:
    """Every issue, delivery row, suppression and notice of ``source`` into ``target``, in one transaction of
    the target; returns table -> rows added. An empty target gets an exact copy; a target that is not empty
    is refused unless ``merge``, which adds only the rows whose key it lacks (so copying again adds nothing).
    Rows keep their states, batch ids and timestamps: a run resumes on the target as it would have on the source.
    """
    if (source.backend, _where(source)) == (target.backend, _where(target)):
        raise LedgerError("the target is the ledger being copied; nothing was copied", path=target.url)
    return target.load_rows({table: source.dump_rows(table) for table in COPIED_TABLES}, merge=merge)


def _where(ledger: Ledger) -> str:
    return str(Path(ledger.url).resolve()) if ledger.backend == "sqlite" else ledger.url
