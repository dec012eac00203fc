"""The embedded ledger: one SQLite file in WAL mode.

``synchronous=FULL`` makes every COMMIT durable before it returns, which the
protocol relies on: a claim is on disk before the API call, an outcome before
the next claim. Each method is one ``BEGIN IMMEDIATE`` transaction (the write
lock is taken up front, so two processes never deadlock upgrading a read
lock), or, where it is a single statement (a batch's claim and record), that
statement alone in autocommit mode, which takes the write lock before it reads
too. One writing connection per ledger object, shared by the send loop's
threads under a lock: SQLite serialises writers anyway, and our transactions are
short; the send loop's look-ups read through a second connection.

The send loop's statements use SQLite's JSON functions and ``UPDATE ... FROM`` (3.35 or newer).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Sequence
from urllib.parse import quote

from ..errors import LeaseHeld, LedgerError, PlanExists
from ..models import Outcome
from .base import (COPIED_TABLES, ISSUE_SUPPRESSIONS_SQL, MERGE_DELIVERY_SQL, RECORD_STATE, STATES, STORE_FIGURES_SQL, UNKNOWN_PROVIDER,
                   CachedFigures, DeliveryRow, IssueRecord, IssueSummary, Lease, Ledger, PlanRow, Suppression,
                   address_key, all_sent_alike, check_outcomes, chunked, erased_key, parse_time,
                   merge_delivery_params, reported_suppressions, suppression_rows)
from .migrations import LATEST, MIGRATIONS

# Per-address statements write "+state" / "+batch_id": the unary plus keeps SQLite's planner on the
# unique key (issue_id, email) instead of scanning every row of a state or batch through an index.
_RESOLVE_STATE = {"sent": "sent", "failed": "failed", "retry": "pending"}
_ISSUE_COLUMNS = COPIED_TABLES["issues"][0]  # every column of an IssueRecord, in its order


# ``m``: the rows of issue ?2 named by the JSON array ?1 of [address key, ...] arrays, with their
# array. The CROSS JOIN and MATERIALIZED pin the plan: one index look-up per address, then the
# update by rowid (left to itself, the planner scans the issue's rows for each address).
_BY_ADDRESS = ("WITH m AS MATERIALIZED (SELECT d.id AS id, j.value AS v FROM json_each(?1) j "
               "CROSS JOIN deliveries d ON d.issue_id = ?2 AND d.email = json_extract(j.value, '$[0]')) ")


def _now() -> str:
    """The ledger's clock (UTC, ISO 8601): every timestamp it writes comes from here (tests move it)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


BUSY_TIMEOUT_S = 30  # how long a command waits for another one holding the ledger
MIN_SQLITE = (3, 35, 0)  # UPDATE ... FROM, MATERIALIZED; and the JSON functions (checked on open)


class SQLiteLedger(Ledger):
    backend = "sqlite"

    def __init__(self, path: Path | str, *, readonly: bool = False):
        self.url = str(path)
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise LedgerError(f"the ledger needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer; this Python "
                              f"uses SQLite {sqlite3.sqlite_version}", path=self.url,
                              hint="use a Python built against a newer SQLite (Debian 12, Ubuntu 22.04 and "
                                   "the python.org builds have one)")
        self._require_json()
        self._lock = threading.RLock()
        try:
            if readonly and (str(path) == ":memory:" or not Path(path).exists()):
                self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            elif readonly:
                self._db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True,
                                           isolation_level=None, check_same_thread=False)
            else:
                if str(path) != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                           timeout=BUSY_TIMEOUT_S)
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
            if not readonly:
                self._enter_wal()
                self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate(readonly and Path(path).exists() and str(path) != ":memory:")
            # The send loop's look-ups read through a connection of their own: in WAL mode a reader
            # does not wait for the writer, so the list streams on while workers claim and record
            # (a chunk is looked up before any of its rows can be claimed: nothing it reads is stale).
            self._lookups, self._lookup_lock = self._db, self._lock
            if not readonly and str(path) != ":memory:":
                self._lookups = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                                timeout=BUSY_TIMEOUT_S)
                self._lookups.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
                self._lookup_lock = threading.Lock()
        except sqlite3.Error as err:
            busy = "locked" in str(err) or "busy" in str(err)
            raise LedgerError(f"cannot open the ledger: {err}", path=self.url,
                              hint=f"another newsletter command held it for over {BUSY_TIMEOUT_S} s: run this again"
                              if busy else "check the path in [ledger] url and that the folder is writable") from err

    def _enter_wal(self) -> None:
        # Switching a new file to WAL takes an exclusive lock WITHOUT calling the busy handler, so
        # two commands opening a fresh ledger at once would fail at once with "database is locked".
        # Wait for the other one here, as busy_timeout does everywhere else.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _require_json(self) -> None:
        probe = sqlite3.connect(":memory:")
        try:
            probe.execute("SELECT json_extract('[1]', '$[0]')")
        except sqlite3.OperationalError as err:
            raise LedgerError(f"the ledger needs SQLite's JSON functions, missing from this Python's SQLite "
                              f"{sqlite3.sqlite_version} ({err})", path=self.url,
                              hint="use a Python whose SQLite is built with JSON1 (the default since 3.38)") from None
        finally:
            probe.close()

    def close(self) -> None:
        with self._lock, self._lookup_lock:
            if self._lookups is not self._db:
                self._lookups.close()
            self._db.close()

    @contextmanager
    def _tx(self, *, one_statement: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction. ``one_statement``: the caller runs a single statement, its own transaction
        in autocommit mode (as atomic, and as durable: ``synchronous=FULL`` syncs the WAL at every commit).
        One step of SQLite's instead of three (BEGIN, it, COMMIT): each gives up the GIL and, holding the
        ledger's lock, waits to get it back while another thread personalises (benchmarks/README.md)."""
        with self._lock:
            if one_statement:
                try:
                    yield self._db
                except sqlite3.OperationalError as err:
                    if "locked" in str(err) or "busy" in str(err) or "readonly" in str(err):
                        raise self._busy(err) from err
                    raise
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as err:
                raise self._busy(err) from err
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def quiescent(self) -> Iterator[None]:
        """While held, no thread of this process is inside SQLite through this ledger: for a fork, whose child
        would otherwise inherit, locked for good, a mutex of SQLite's that another thread held at that instant."""
        with self._lock, self._lookup_lock:  # the same RLock where look-ups share the writing connection
            yield

    def _busy(self, err: sqlite3.OperationalError) -> LedgerError:
        return LedgerError(f"the ledger is busy or read-only: {err}", path=self.url,
                           hint="another newsletter command held it for over 30 s: run this again; if it "
                                "keeps failing, check that the file and its folder are writable")

    def _read(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _migrate(self, readonly: bool) -> None:
        version = self.migrated_from = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > LATEST:
            raise LedgerError(f"the ledger has schema version {version}, newer than this newsletter knows ({LATEST})",
                              path=self.url, hint="upgrade newsletter")
        if version == LATEST:
            return
        if readonly:
            # Read-only commands (status, send --dry-run) must not change the file, but should
            # still work on a ledger an older newsletter wrote: upgrade a private copy in memory.
            # The file itself is upgraded by the next command that writes.
            copy = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            self._db.backup(copy)
            self._db.close()
            self._db = copy
        with self._tx() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have won the race
            for number, _, sql in MIGRATIONS:
                if number > version:
                    for statement in sql.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version = {number}")

    # -- the whole ledger -----------------------------------------------------------
    def schema_version(self) -> int:
        return self._read("PRAGMA user_version")[0][0]

    def row_counts(self) -> dict[str, int]:
        return {table: self._read(f"SELECT count(*) FROM {table}")[0][0] for table in COPIED_TABLES}

    def dump_rows(self, table: str) -> Iterator[tuple]:
        columns, _ = COPIED_TABLES[table]
        order = "id" if table == "deliveries" else "rowid"  # deliveries in plan order
        with self._lock:
            yield from self._db.execute(f"SELECT {columns} FROM {table} ORDER BY {order}")

    def load_rows(self, tables: dict[str, Iterable[tuple]], *, merge: bool) -> dict[str, int]:
        added = {}
        with self._tx() as db:
            if not merge and any(db.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in COPIED_TABLES):
                raise LedgerError("the target ledger is not empty; nothing was copied", path=self.url,
                                  hint="add --merge to add only what it does not have yet")
            for table, rows in tables.items():
                columns, _ = COPIED_TABLES[table]
                marks = ", ".join("?" * len(columns.split(",")))
                before = db.total_changes
                for chunk in chunked(rows, 5000):
                    if merge and table == "deliveries":
                        db.executemany(MERGE_DELIVERY_SQL, merge_delivery_params(chunk))
                        continue
                    db.executemany(f"INSERT OR IGNORE INTO {table} ({columns}) VALUES ({marks})", chunk)
                added[table] = db.total_changes - before
            if merge:  # an issue of both ledgers may have gained rows
                db.execute("UPDATE issues SET planned = (SELECT count(*) FROM deliveries d "
                           "WHERE d.issue_id = issues.issue_id)")
        return added

    # -- the lease ------------------------------------------------------------------
    def acquire_lease(self, issue_id: str, holder: str, *, stale_after: float) -> Lease:
        host, pid, now = socket.gethostname(), os.getpid(), time.time()
        with self._tx() as db:
            row = db.execute("SELECT issue_id, holder, pid, host, heartbeat, acquired FROM leases "
                             "WHERE issue_id = ?", (issue_id,)).fetchone()
            other = Lease(*row) if row else None
            if other and other.holder != holder and other.holder_alive(stale_after=stale_after, now=now):
                since = datetime.fromtimestamp(other.acquired, timezone.utc).isoformat(timespec="seconds")
                raise LeaseHeld(f"another run is sending issue {issue_id} (pid {other.pid} on {other.host}, "
                                f"since {since}); nothing was done",
                                hint="wait for it to finish; if it died, its lease is taken over "
                                     f"automatically (at once on this host, after {stale_after:g} s elsewhere)")
            db.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?)",
                       (issue_id, holder, pid, host, now, now))
        return Lease(issue_id, holder, pid, host, now, now)

    def heartbeat(self, issue_id: str, holder: str, rate: float | None = None) -> bool:
        with self._tx() as db:
            cur = db.execute("UPDATE leases SET heartbeat = ? WHERE issue_id = ? AND holder = ?",
                             (time.time(), issue_id, holder))
            return cur.rowcount == 1

    def release_lease(self, issue_id: str, holder: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM leases WHERE issue_id = ? AND holder = ?", (issue_id, holder))

    def lease(self, issue_id: str) -> Lease | None:
        rows = self._read("SELECT issue_id, holder, pid, host, heartbeat, acquired FROM leases WHERE issue_id = ?",
                          (issue_id,))
        return Lease(*rows[0]) if rows else None

    # -- the plan -------------------------------------------------------------------
    def issue(self, issue_id: str) -> IssueRecord | None:
        rows = self._read(f"SELECT {_ISSUE_COLUMNS} FROM issues WHERE issue_id = ?", (issue_id,))
        return IssueRecord(*rows[0]) if rows else None

    def issues(self) -> list[IssueRecord]:
        rows = self._read(f"SELECT {_ISSUE_COLUMNS} FROM issues ORDER BY created_at, issue_id")
        return [IssueRecord(*row) for row in rows]

    def create_plan(self, issue_id: str, *, content_hash: str, subject: str, segment: str,
                    emails: Iterable[str], provider: str = "", provider_scope: str = "") -> int:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM issues WHERE issue_id = ?", (issue_id,)).fetchone():
                raise PlanExists(f"issue {issue_id} already has a plan", path=self.url)
            db.execute(f"INSERT INTO issues ({_ISSUE_COLUMNS}) VALUES (?, ?, ?, ?, 0, ?, ?, ?, '')",
                       (issue_id, content_hash, subject, segment, _now(), provider, provider_scope))
            return self._insert_pending(db, issue_id, emails)

    def bind_provider(self, issue_id: str, provider: str, provider_scope: str) -> bool:
        with self._tx() as db:
            return db.execute("UPDATE issues SET provider = ?, provider_scope = ? WHERE issue_id = ? "
                              "AND provider IN ('', ?)", (provider, provider_scope, issue_id,
                                                          UNKNOWN_PROVIDER)).rowcount == 1

    def drop_plan(self, issue_id: str, holder: str, *, only_provider: str) -> int:
        with self._tx() as db:
            found = db.execute("SELECT provider FROM issues WHERE issue_id = ?", (issue_id,)).fetchone()
            if found is None:
                return 0
            tried = db.execute("SELECT count(*) FROM deliveries WHERE issue_id = ? AND state NOT IN "
                               "('pending', 'skipped')", (issue_id,)).fetchone()[0]
            if found[0] not in ("", only_provider) and tried:
                raise LedgerError(f"issue {issue_id} was sent through {found[0]}, not only {only_provider}: "
                                  f"its plan is kept", path=self.url)
            self._require_lease(db, issue_id, holder)
            dropped = db.execute("DELETE FROM deliveries WHERE issue_id = ?", (issue_id,)).rowcount
            db.execute("DELETE FROM issues WHERE issue_id = ?", (issue_id,))
            return dropped

    def _require_lease(self, db: sqlite3.Connection, issue_id: str, holder: str) -> None:
        if not db.execute("SELECT 1 FROM leases WHERE issue_id = ? AND holder = ?", (issue_id, holder)).fetchone():
            raise LedgerError(f"this run no longer holds issue {issue_id}'s lease: its plan is kept", path=self.url)

    def cancel_plan(self, issue_id: str, holder: str, reason: str) -> tuple[int, int]:
        with self._tx() as db:
            self._require_lease(db, issue_id, holder)
            now = _now()
            skipped = db.execute("UPDATE deliveries SET state = 'skipped', reason = ?, updated_at = ? "
                                 "WHERE issue_id = ? AND state = 'pending'", (reason, now, issue_id)).rowcount
            in_doubt = db.execute("UPDATE deliveries SET state = 'unknown', reason = ?, updated_at = ? "
                                  "WHERE issue_id = ? AND state = 'sending'", (reason, now, issue_id)).rowcount
            db.execute("UPDATE issues SET cancelled_at = ? WHERE issue_id = ?", (now, issue_id))
            return skipped, in_doubt

    def extend_plan(self, issue_id: str, emails: Iterable[str]) -> int:
        with self._tx() as db:
            return self._insert_pending(db, issue_id, emails)

    def replan(self, issue_id: str, *, segment: str, emails: Iterable[str]) -> int:
        with self._tx() as db:
            tried = db.execute("SELECT count(*) FROM deliveries WHERE issue_id = ? AND state NOT IN "
                               "('pending', 'skipped')", (issue_id,)).fetchone()[0]
            if tried:
                raise LedgerError(f"issue {issue_id}: {tried} recipient(s) were already tried; its plan cannot "
                                  f"change now", path=self.url)
            db.execute("DELETE FROM deliveries WHERE issue_id = ?", (issue_id,))
            db.execute("UPDATE issues SET segment = ?, planned = 0 WHERE issue_id = ?", (segment, issue_id))
            return self._insert_pending(db, issue_id, emails)

    def _insert_pending(self, db: sqlite3.Connection, issue_id: str, emails: Iterable[str]) -> int:
        # Stage the addresses in a temporary table, then one INSERT ... SELECT leaves out the
        # suppressed ones and those erased earlier (kept as a hash), in SQL rather than per row.
        db.execute("CREATE TEMP TABLE IF NOT EXISTS plan_input (email TEXT, erased TEXT)")  # rowid = list order
        db.execute("DELETE FROM plan_input")
        has_erased = db.execute("SELECT 1 FROM deliveries WHERE issue_id = ? AND email >= 'sha256:' "
                                "AND email < 'sha256;' LIMIT 1", (issue_id,)).fetchone()
        for chunk in chunked(emails, 5000):
            db.executemany("INSERT INTO plan_input VALUES (?, ?)",
                           [(address_key(e), erased_key(e) if has_erased else "") for e in chunk])
        before = db.total_changes
        db.execute("INSERT OR IGNORE INTO deliveries (issue_id, email, state, updated_at) "
                   "SELECT ?1, p.email, 'pending', ?2 FROM plan_input p "
                   "WHERE p.email NOT IN (SELECT email FROM suppressions) "
                   "AND p.erased NOT IN (SELECT email FROM deliveries WHERE issue_id = ?1) ORDER BY p.rowid",
                   (issue_id, _now()))
        added = db.total_changes - before
        db.execute("DELETE FROM plan_input")
        db.execute("UPDATE issues SET planned = (SELECT count(*) FROM deliveries WHERE issue_id = ?1) "
                   "WHERE issue_id = ?1", (issue_id,))
        return added

    def set_content_hash(self, issue_id: str, content_hash: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE issues SET content_hash = ? WHERE issue_id = ?", (content_hash, issue_id))

    # -- the send loop --------------------------------------------------------------
    # The send loop's statements take a whole batch as one JSON parameter and answer in one JSON
    # value: Python's sqlite3 releases the GIL around every step, so a statement per row (or a row
    # per step) waits for the GIL once per recipient while other threads personalise and encode;
    # with one step per statement the ledger costs a few hand-overs per batch, whatever its size.
    def lookup_rows(self, issue_id: str, emails: Sequence[str]) -> dict[str, PlanRow]:
        if not emails:
            return {}
        with self._lookup_lock:
            [(found,)] = self._lookups.execute(
                "SELECT json_group_array(json_array(d.email, d.state, s.email IS NOT NULL, d.id)) "
                "FROM json_each(?2) j CROSS JOIN deliveries d ON d.issue_id = ?1 AND d.email = j.value "
                "LEFT JOIN suppressions s ON s.email = d.email",
                (issue_id, json.dumps([address_key(e) for e in emails]))).fetchall()
        return {email: PlanRow(state, bool(suppressed), row) for email, state, suppressed, row in json.loads(found)}

    # By id: "id IN (json_each)" walks the primary key, one look-up per row of the batch; "+issue_id"
    # keeps the planner off the indexes on issue_id (which would scan the issue's rows).
    def claim_rows(self, issue_id: str, batch_id: str, rows: Sequence[int], holder: str) -> set[int]:
        if not rows:
            return set()
        now, wanted = _now(), set(rows)
        with self._tx(one_statement=True) as db:  # durable before it returns, as the send loop needs
            claimed = db.execute(
                "UPDATE deliveries SET state = 'sending', batch_id = ?1, updated_at = ?2, claimed_at = ?2 "
                "WHERE id IN (SELECT value FROM json_each(?4)) AND +issue_id = ?3 AND +state = 'pending' "
                "AND EXISTS (SELECT 1 FROM leases WHERE issue_id = ?3 AND holder = ?5)",
                (batch_id, now, issue_id, json.dumps(sorted(wanted)), holder)).rowcount
        if claimed == len(wanted):  # every row asked for (the usual case): nothing to read back
            return wanted
        # Of the rows asked for, those under this batch id: with the ones it already held (a batch resumed
        # under its own id), found by id as the claim was (no index holds batch ids). Read after the claim's
        # commit, as PostgreSQL's: no other run writes them while this one holds the lease.
        [(found,)] = self._read("SELECT json_group_array(id) FROM deliveries WHERE id IN (SELECT value FROM "
                                "json_each(?3)) AND +issue_id = ?1 AND +batch_id = ?2",
                                (issue_id, batch_id, json.dumps(sorted(wanted))))
        return set(json.loads(found))

    def record_rows(self, issue_id: str, batch_id: str, rows: Sequence[int], outcomes: Sequence[Outcome], *,
                    source: str, holder: str = "") -> None:  # one run per issue: no other holder to fence out
        check_outcomes(outcomes)
        if not outcomes:
            return
        now = _now()
        if all_sent_alike(outcomes):  # SendGrid's and Mailgun's one id for the whole batch
            with self._tx(one_statement=True) as db:
                db.execute("UPDATE deliveries SET state = 'sent', provider_id = ?1, reason = '', "
                           "attempts = attempts + 1, updated_at = ?2 WHERE id IN (SELECT value FROM json_each(?5)) "
                           "AND +issue_id = ?3 AND +batch_id = ?4 AND +state = 'sending'",
                           (outcomes[0].provider_id, now, issue_id, batch_id, json.dumps(list(rows))))
            return
        changes = [(row, RECORD_STATE[o.state], o.provider_id, o.reason[:500]) for row, o in zip(rows, outcomes)]
        suppress = reported_suppressions(outcomes)
        with self._tx(one_statement=not suppress) as db:  # the suppressions are written with the states
            db.execute("UPDATE deliveries SET state = json_extract(m.value, '$[1]'), "
                       "provider_id = json_extract(m.value, '$[2]'), reason = json_extract(m.value, '$[3]'), "
                       "attempts = attempts + 1, updated_at = ?4 FROM json_each(?1) AS m "
                       "WHERE deliveries.id = json_extract(m.value, '$[0]') AND +deliveries.issue_id = ?2 "
                       "AND +deliveries.batch_id = ?3 AND +deliveries.state = 'sending'",
                       (json.dumps(changes), issue_id, batch_id, now))
            if suppress:
                db.execute("INSERT OR IGNORE INTO suppressions (email, reason, source, created_at) "
                           "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), ?2, ?3 "
                           "FROM json_each(?1)", (json.dumps(suppress), source, now))

    def mark_attempt(self, issue_id: str, batch_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE deliveries SET attempts = attempts + 1, updated_at = ? "
                       "WHERE issue_id = ? AND batch_id = ? AND state = 'sending'", (_now(), issue_id, batch_id))

    def skip(self, issue_id: str, reasons: Sequence[tuple[str, str]]) -> int:
        return self._close_pending(issue_id, "skipped", [(address_key(email), reason) for email, reason in reasons])

    def _close_pending(self, issue_id: str, state: str, reasons: Sequence[tuple[str, str]]) -> int:
        """``pending`` rows (address key, reason) -> ``state``, in one statement (see :meth:`lookup`)."""
        if not reasons:
            return 0
        with self._tx() as db:
            before = db.total_changes  # (rowcount is -1 for a statement that starts with WITH)
            db.execute(_BY_ADDRESS + f"UPDATE deliveries SET state = '{state}', reason = json_extract(m.v, '$[1]'), "
                       "updated_at = ?3 "
                       "FROM m WHERE deliveries.id = m.id AND +deliveries.state = 'pending'",
                       (json.dumps(reasons), issue_id, _now()))
            return db.total_changes - before

    def add_skipped(self, issue_id: str, reasons: Sequence[tuple[str, str]]) -> int:
        if not reasons:
            return 0
        now = _now()
        with self._tx() as db:
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO deliveries (issue_id, email, state, reason, updated_at) "
                           "VALUES (?, ?, 'skipped', ?, ?)",
                           [(issue_id, address_key(email), reason, now) for email, reason in reasons if email])
            added = db.total_changes - before
            db.execute("UPDATE issues SET planned = (SELECT count(*) FROM deliveries WHERE issue_id = ?1) "
                       "WHERE issue_id = ?1", (issue_id,))
            return added

    def fail(self, issue_id: str, reasons: Sequence[tuple[str, str]]) -> int:
        return self._close_pending(issue_id, "failed", [(address_key(email), reason[:500])
                                                         for email, reason in reasons])

    def retry_failed(self, issue_id: str) -> int:
        with self._tx() as db:
            return db.execute("UPDATE deliveries SET state = 'pending', reason = substr('sent again after: ' || "
                              "reason, 1, 500), updated_at = ? WHERE issue_id = ? AND state = 'failed' "
                              "AND email NOT IN (SELECT email FROM suppressions)", (_now(), issue_id)).rowcount

    def in_doubt(self, issue_id: str) -> dict[str, list[str]]:
        batches: dict[str, list[str]] = {}
        for batch_id, email in self._read("SELECT batch_id, email FROM deliveries WHERE issue_id = ? "
                                          "AND state = 'sending' ORDER BY batch_id, email", (issue_id,)):
            batches.setdefault(batch_id, []).append(email)
        return batches

    def claim_times(self, issue_id: str, state: str = "sending") -> dict[str, datetime | None]:
        return {batch_id: parse_time(claimed) for batch_id, claimed in self._read(
            "SELECT batch_id, min(claimed_at) FROM deliveries WHERE issue_id = ? AND state = ? AND batch_id != '' "
            "GROUP BY batch_id", (issue_id, state))}

    def mark_unknown(self, issue_id: str, batch_ids: Sequence[str], reason: str) -> int:
        with self._tx() as db:
            before = db.total_changes
            db.executemany("UPDATE deliveries SET state = 'unknown', reason = ?, updated_at = ? "
                           "WHERE issue_id = ? AND batch_id = ? AND state = 'sending'",
                           [(reason, _now(), issue_id, b) for b in batch_ids])
            return db.total_changes - before

    def resend_unknown(self, issue_id: str) -> int:
        with self._tx() as db:
            return db.execute("UPDATE deliveries SET state = 'pending', reason = 'resent after unknown outcome', "
                              "updated_at = ? WHERE issue_id = ? AND state = 'unknown'",
                              (_now(), issue_id)).rowcount

    def pending_keys(self, issue_id: str, holder: str) -> list[str]:  # one run at a time: every pending row
        return [r[0] for r in self._read("SELECT email FROM deliveries WHERE issue_id = ? AND state = 'pending'",
                                         (issue_id,))]

    def counts(self, issue_id: str) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        counts.update(self._read("SELECT state, count(*) FROM deliveries WHERE issue_id = ? GROUP BY state",
                                 (issue_id,)))
        return counts

    # -- reconciliation -------------------------------------------------------------
    def rows(self, issue_id: str, states: Sequence[str] = ("unknown",)) -> list[DeliveryRow]:
        marks = ",".join("?" * len(states))
        return [DeliveryRow(*r) for r in self._read(
            f"SELECT issue_id, email, state, attempts, batch_id, provider_id, reason, updated_at, claimed_at "
            f"FROM deliveries "
            f"WHERE issue_id = ? AND state IN ({marks}) ORDER BY state, email", (issue_id, *states))]

    def resolve(self, issue_id: str, outcomes: Sequence[Outcome]) -> int:
        params = [(_RESOLVE_STATE[o.state], o.provider_id, o.reason[:500], _now(), issue_id, address_key(o.email))
                  for o in outcomes if o.state in _RESOLVE_STATE]
        with self._tx() as db:
            before = db.total_changes
            db.executemany("UPDATE deliveries SET state = ?, provider_id = ?, reason = ?, updated_at = ? "
                           "WHERE issue_id = ? AND email = ? AND +state = 'unknown'", params)
            return db.total_changes - before

    # -- notices --------------------------------------------------------------------
    def mark_noticed(self, issue_id: str, notice: str) -> bool:
        with self._tx() as db:
            return db.execute("INSERT OR IGNORE INTO notices VALUES (?, ?, ?)",
                              (issue_id, notice, _now())).rowcount == 1

    # -- suppressions and erasure ---------------------------------------------------
    def add_suppressions(self, entries: Sequence[tuple[str, ...]], source: str, *, issue_id: str = "") -> int:
        now = _now()
        with self._tx() as db:
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO suppressions (email, reason, source, created_at, issue_id) "
                           "VALUES (?, ?, ?, ?, ?)",
                           [(email, reason, source, now, issue) for email, reason, issue in
                            suppression_rows(entries, issue_id)])
            return db.total_changes - before

    def remove_suppression(self, email: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM suppressions WHERE email = ?", (address_key(email),)).rowcount == 1

    def suppressions(self) -> list[Suppression]:
        return [Suppression(*r) for r in self._read(
            "SELECT email, reason, source, created_at, issue_id FROM suppressions ORDER BY email")]

    def suppressed_set(self) -> set[str]:
        return {r[0] for r in self._read("SELECT email FROM suppressions")}

    def is_suppressed(self, email: str) -> bool:
        return bool(self._read("SELECT 1 FROM suppressions WHERE email = ?", (address_key(email),)))

    def erase_address(self, email: str) -> int:
        """The address becomes a hash, and leaves ``provider_id`` and ``reason`` too.

        The outbox's provider id is the file name ``<address>--<batch>.eml``, and a provider's
        reason may quote the address (in any case, or URL-encoded): each becomes ``[erased]``.
        """
        key = address_key(email)
        forms = {key, re.sub(r"[^a-z0-9@._+-]", "_", key), quote(key, safe=""), quote(key, safe="@")}
        pattern = re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)), re.IGNORECASE)
        with self._lock:
            self._db.execute("PRAGMA secure_delete = ON")  # zero the old values in the file, not just unlink them
            try:
                with self._tx() as db:
                    rows = db.execute("SELECT id, provider_id, reason FROM deliveries WHERE email = ?",
                                      (key,)).fetchall()
                    # OR REPLACE: an older row of the same issue already erased gives way to this newer one
                    db.executemany(
                        "UPDATE OR REPLACE deliveries SET email = ?, provider_id = ?, reason = ? WHERE id = ?",
                        [(erased_key(email), pattern.sub("[erased]", provider_id), pattern.sub("[erased]", reason),
                          row_id) for row_id, provider_id, reason in rows])
            finally:
                self._db.execute("PRAGMA secure_delete = OFF")
        return len(rows)

    # -- reports --------------------------------------------------------------------
    def reason_counts(self, issue_id: str, state: str = "failed") -> dict[str, int]:
        return dict(self._read("SELECT reason, count(*) AS n FROM deliveries WHERE issue_id = ? AND state = ? "
                               "GROUP BY reason ORDER BY n DESC, reason", (issue_id, state)))

    def sent_per_minute(self, issue_id: str) -> list[tuple[str, int]]:
        # Timestamps are written by _now() as UTC ISO 8601, so the first 16 characters are the minute.
        return [(minute, n) for minute, n in self._read(
            "SELECT substr(updated_at, 1, 16) AS minute, count(*) FROM deliveries "
            "WHERE issue_id = ? AND state = 'sent' GROUP BY minute ORDER BY minute", (issue_id,))]

    def summaries(self, limit: int) -> list[IssueSummary]:
        found: dict[str, IssueSummary] = {}
        for *record, state, n in self._read(
                "SELECT i.issue_id, i.content_hash, i.subject, i.segment, i.planned, i.created_at, d.state, "
                "count(d.id) FROM (SELECT * FROM issues ORDER BY created_at DESC, issue_id DESC LIMIT ?) i "
                "LEFT JOIN deliveries d ON d.issue_id = i.issue_id "
                "GROUP BY i.issue_id, d.state ORDER BY i.created_at DESC, i.issue_id DESC", (limit,)):
            summary = found.setdefault(record[0], IssueSummary(IssueRecord(*record), dict.fromkeys(STATES, 0)))
            if state is not None:
                summary.counts[state] = n
        return list(found.values())

    def cached_figures(self, provider: str, issue_ids: Sequence[str]) -> dict[str, CachedFigures]:
        return {row[0]: CachedFigures(row[0], bool(row[1]), row[2], row[3]) for row in self._read(
            "SELECT issue_id, detail, figures, fetched_at FROM provider_figures WHERE provider = ? "
            "AND issue_id IN (SELECT value FROM json_each(?))", (provider, json.dumps(list(issue_ids))))}

    def store_figures(self, provider: str, entries: Sequence[CachedFigures]) -> None:
        with self._tx() as db:
            db.executemany(STORE_FIGURES_SQL.replace("%s", "?"), [(e.issue_id, provider, int(e.detail), e.figures,
                                                                e.fetched_at) for e in entries])

    def issue_suppressions(self, issue_id: str) -> dict[tuple[str, str, str], int]:
        return {(source, kind, attributed): n for source, kind, attributed, n in self._read(
            ISSUE_SUPPRESSIONS_SQL.format(issue="?1", order=""), (issue_id,))}
