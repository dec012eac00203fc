"""The shared ledger: a PostgreSQL database, for a team or several machines (docs/team.md).

The same protocol as the SQLite ledger (:mod:`newsletter.ledger.base`), the same tables and the same
text timestamps (so ``ledger copy`` moves rows unchanged). Each method is one transaction. Several
workers send one issue together (``many_workers``): each run registers in ``workers`` instead of
taking the issue's lease. :meth:`PostgresLedger.claim_rows` takes its rows with ``SELECT ... FOR UPDATE
SKIP LOCKED`` and holds its own registration ``FOR KEY SHARE`` until it commits, so a reaper (which
deletes it ``FOR UPDATE``) waits for a claim in flight, and a claim after the reaping finds no
registration and claims nothing (the fencing token).

A connection per thread that uses the ledger object (the send loop, its ``[provider] concurrency``
worker threads, the heartbeat), opened on the thread's first use and closed by :meth:`close`, so
one thread's transaction never waits for another's (docs/team.md, "Measured"). A thread's methods
all run on its own connection: one that reads inside another's transaction sees what it wrote. The
one exception is a read-only view of an older schema, upgraded inside a transaction that is never
committed: it exists on one connection only, so every thread shares that one under a lock.

psycopg is imported only here, only for a postgresql:// URL (about 200 ms). A password comes from
``PGPASSWORD`` or ``~/.pgpass`` (libpq reads both); the configuration refuses one written in
``newsletter.toml``.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterable, Iterator, Sequence
from urllib.parse import quote

import psycopg

from ..config import without_password
from ..errors import LedgerError, PlanExists
from ..models import Outcome
from .base import (COPIED_TABLES, ISSUE_SUPPRESSIONS_SQL, MERGE_DELIVERY_SQL, RECORD_STATE, STATES, STORE_FIGURES_SQL, UNKNOWN_PROVIDER,
                   CachedFigures, DeliveryRow, IssueRecord, IssueSummary, Lease, Ledger, PlanRow, Suppression, Worker,
                   address_key, all_sent_alike, check_outcomes, chunked, erased_key, parse_time,
                   merge_delivery_params, reported_suppressions, suppression_rows)
from .migrations import LATEST, STORAGE_ONLY, steps

_RESOLVE_STATE = {"sent": "sent", "failed": "failed", "retry": "pending"}
_MERGE_DELIVERY = re.sub(r":(\w+)", r"%(\1)s", MERGE_DELIVERY_SQL)  # psycopg's named parameters
_ISSUE_COLUMNS = COPIED_TABLES["issues"][0]  # every column of an IssueRecord, in its order
_WORKER_COLUMNS = "issue_id, holder, pid, host, heartbeat, started, rate"
_DB_NOW = "extract(epoch from clock_timestamp())::double precision"  # heartbeats: the server's clock, not each host's
# A row reserved or claimed by nobody, or by a worker no longer registered, is anybody's.
_FREE = ("(d.claimed_by = '' OR NOT EXISTS (SELECT 1 FROM workers w WHERE w.issue_id = d.issue_id "
         "AND w.holder = d.claimed_by))")
_ROW_COLUMNS = "issue_id, email, state, attempts, batch_id, provider_id, reason, updated_at, claimed_at"
_C = 'COLLATE "C"'  # order text byte-wise, as SQLite does, whatever the database's locale
# A claim, one statement (docs/team.md, "Claims"). ``w`` locks the worker's own registration FOR KEY SHARE
# until the claim commits: a reaper (reap_workers' FOR UPDATE, its DELETE) waits for it, and a registration
# deleted meanwhile (READ COMMITTED re-reads the row it waited for) or before yields no row, so the claim
# takes none. The heartbeat (an UPDATE of no key column) does not wait, nor do claims queue behind a waiting
# heartbeat, as they would with FOR SHARE (benchmarks/README.md). A locking CTE is never inlined and runs
# once; the final SELECT reads it whatever the rows (a CTE nobody reads never runs), and ``c`` reads it
# before it locks a row. Returns (registered, the ids claimed).
_CLAIM = (
    "WITH w AS MATERIALIZED (SELECT 1 FROM workers WHERE issue_id = %(issue)s AND holder = %(holder)s "
    "FOR KEY SHARE), "
    "c AS (SELECT id FROM deliveries WHERE id = ANY(%(rows)s) AND issue_id = %(issue)s AND state = 'pending' "
    "AND EXISTS (SELECT 1 FROM w) FOR UPDATE SKIP LOCKED), "
    "u AS (UPDATE deliveries d SET state = 'sending', batch_id = %(batch)s, updated_at = %(now)s, "
    "claimed_at = %(now)s, claimed_by = %(holder)s FROM c WHERE d.id = c.id AND d.state = 'pending' "
    "RETURNING d.id) "
    "SELECT EXISTS (SELECT 1 FROM w), ARRAY(SELECT id FROM u)")
_LOST = "the connection to PostgreSQL was lost; run the command again once the server is reachable"


def _failed_step_hint(err: psycopg.Error) -> str:
    """What a failed step left behind. An error the server answered with rolled the step back; a connection
    lost on the way may have lost the answer to a commit that happened (a claim, say): the next run
    resolves such rows as it does a dead run's (docs/team.md)."""
    if isinstance(err, psycopg.OperationalError):
        return f"this step may or may not have been written; {_LOST}: it resolves what was left in doubt"
    return "nothing of this step was written; run the command again"


def _refused(err: psycopg.Error, path: str) -> LedgerError | None:
    """A LedgerError that says what to grant, when the server refused this role a table or the schema
    (running again cannot help), else None."""
    if not isinstance(err, psycopg.errors.InsufficientPrivilege):
        return None
    if "denied for schema" in str(err):  # creating the tables (ledger migrate, a first send)
        hint = ("the ledger's tables are created by the database's owner: run `newsletter ledger migrate` once as "
                "that role (createdb --owner ROLE), then the others need only rights on the tables")
    else:
        hint = ("the database's owner can grant them: GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "
                "public TO this role; GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO this role")
    return LedgerError(f"the PostgreSQL ledger refused this role: {str(err).strip().splitlines()[0]}", path=path,
                       hint=hint)


_MIGRATION_LOCK = 7_262_011  # pg_advisory_xact_lock key: one migrating process at a time
CONNECT_TIMEOUT_S = 10
_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"


def _now() -> str:
    """The ledger's clock (UTC, ISO 8601): every timestamp it writes comes from here (tests move it)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def schema_version(db: psycopg.Connection) -> int:
    """The database's schema version; 0 for a database without a ledger yet."""
    if not db.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]:
        return 0
    return db.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0


class PostgresLedger(Ledger):
    backend = "postgresql"

    def __init__(self, url: str, *, readonly: bool = False):
        self.url = url
        self._shown = without_password(url)
        self._lock = threading.RLock()  # guards _own, and _shared (a read-only upgraded view) in use
        self._own: dict[threading.Thread, psycopg.Connection] = {}  # each thread's connection
        self._shared: psycopg.Connection | None = None
        self._closed = False
        first = self._own[threading.current_thread()] = self._connect()  # this thread's: it migrates
        try:
            self._migrate(readonly)
        except BaseException:
            first.close()
            raise
        if readonly and self.migrated_from < LATEST:  # the upgrade is only visible inside this transaction
            self._shared = first

    def _connect(self) -> psycopg.Connection:
        db = None
        try:
            db = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                 application_name="newsletter")
            # No JIT: the ledger's statements take milliseconds, and once a run has moved the rows a
            # plan's statistics no longer match, a cost estimated in millions made the server compile
            # for 150-200 ms a look-up that then ran in 60 (benchmarks/README.md, "Several workers").
            # A SET, not the URL's ``options``: those stay the user's.
            db.execute("SET jit = off")
            return db
        except psycopg.Error as err:
            if db is not None:
                db.close()
            raise LedgerError(f"cannot connect to the PostgreSQL ledger: {str(err).strip()}", path=self._shown,
                              hint="check [ledger] url (or NEWSLETTER_LEDGER_URL) and that the server runs; a "
                                   "password goes in PGPASSWORD or ~/.pgpass") from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for db in self._own.values():  # a thread still using its connection gets an error, not a hang
                db.close()
            self._own.clear()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """This thread's connection (opened on its first use), or the one shared under the lock."""
        if self._shared is not None:
            with self._lock:
                yield self._shared
            return
        db = self._own.get(threading.current_thread())
        if db is None:
            db = self._open_own()
        yield db

    def _open_own(self) -> psycopg.Connection:
        """A connection for this thread; those of threads that have ended are closed (a send's worker
        threads end with the run, the ledger object may outlive it)."""
        with self._lock:
            if self._closed:
                raise LedgerError("the PostgreSQL ledger was used after it was closed", path=self._shown)
            for thread in [t for t in self._own if not t.is_alive()]:
                self._own.pop(thread).close()
            db = self._own[threading.current_thread()] = self._connect()
            return db

    @contextmanager
    def _tx(self, *, one_statement: bool = False) -> Iterator[psycopg.Connection]:
        """A transaction on this thread's connection. ``one_statement``: the caller runs a single statement,
        its own transaction in autocommit mode: one round trip instead of BEGIN, it, COMMIT (each round
        trip also waits for the GIL while another thread personalises)."""
        with self._connection() as db:
            try:
                if one_statement:
                    yield db
                    return
                with db.transaction():
                    yield db
            except psycopg.Error as err:
                raise _refused(err, self._shown) or LedgerError(
                    f"the PostgreSQL ledger failed: {str(err).strip()}", path=self._shown,
                    hint=_failed_step_hint(err)) from err

    def _read(self, sql: str, params: Sequence | dict = ()) -> list[tuple]:
        with self._connection() as db:
            try:
                return db.execute(sql, params).fetchall()
            except psycopg.Error as err:
                raise _refused(err, self._shown) or LedgerError(
                    f"the PostgreSQL ledger failed: {str(err).strip()}", path=self._shown,
                    hint=_LOST if isinstance(err, psycopg.OperationalError) else None) from err

    def schema_version(self) -> int:
        with self._connection() as db:
            try:
                return schema_version(db)
            except psycopg.Error as err:
                raise _refused(err, self._shown) or LedgerError(
                    f"the PostgreSQL ledger failed: {str(err).strip()}", path=self._shown, hint=_LOST) from err

    def _migrate(self, readonly: bool) -> None:
        version = self.migrated_from = self.schema_version()
        if version > LATEST:
            raise LedgerError(f"the ledger has schema version {version}, newer than this newsletter knows ({LATEST})",
                              path=self._shown, hint="upgrade newsletter")
        if version == LATEST:
            return
        if readonly:
            # Read-only commands (status, send --dry-run) must not change the database, but should still
            # work on one an older newsletter wrote, or on a new empty one: upgrade it inside a transaction
            # that is never committed (rolled back on close), as SQLite upgrades a private copy in memory.
            # On an older schema that transaction holds its tables' locks until the command ends.
            db = self._own[threading.current_thread()]
            db.execute("BEGIN")
            try:
                self._apply(db, version, readonly=True)
            except psycopg.Error as err:  # another process created or upgraded the tables meanwhile
                refused = _refused(err, self._shown)
                if refused is not None:
                    raise refused from None
                raise LedgerError(f"the ledger's schema (version {version}, this newsletter uses {LATEST}) was "
                                  f"being upgraded by another process: {str(err).strip()}", path=self._shown,
                                  hint="run `newsletter ledger migrate` once before starting several workers, "
                                       "then run this again") from None
            return
        with self._tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            # Another process may have won the race. Read its version from the table itself: a catalog
            # look-up right after the advisory lock (to_regclass) can still miss the tables it committed.
            db.execute(_VERSION_TABLE)
            self._apply(db, db.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0)

    @staticmethod
    def _apply(db: psycopg.Connection, version: int, *, readonly: bool = False) -> None:
        """The steps after ``version``, in the transaction ``db`` is in. A read-only view (rolled back)
        leaves out what the steps that change only how rows are stored would do, and counts them done."""
        db.execute(_VERSION_TABLE)
        for number, _, sql in steps("postgresql"):
            if number > version:
                if not (readonly and number in STORAGE_ONLY):
                    for statement in sql.split(";"):
                        if statement.strip():
                            db.execute(statement)
                db.execute("INSERT INTO schema_version VALUES (%s, %s)", (number, _now()))

    def row_counts(self) -> dict[str, int]:
        return {table: self._read(f"SELECT count(*) FROM {table}")[0][0] for table in COPIED_TABLES}

    def dump_rows(self, table: str) -> Iterator[tuple]:
        columns, key = COPIED_TABLES[table]
        order = "id" if table == "deliveries" else key  # deliveries in plan order
        with self._connection() as db, db.transaction(), db.cursor(name=f"dump_{table}") as cursor:
            cursor.itersize = 5000  # a server-side cursor: the rows stream, never all in memory
            yield from cursor.execute(f"SELECT {columns} FROM {table} ORDER BY {order}")

    def load_rows(self, tables: dict[str, Iterable[tuple]], *, merge: bool) -> dict[str, int]:
        added = {}
        with self._tx() as db:
            db.execute("LOCK TABLE issues, deliveries, suppressions, notices IN SHARE ROW EXCLUSIVE MODE")
            if not merge and any(db.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in COPIED_TABLES):
                raise LedgerError("the target ledger is not empty; nothing was copied", path=self._shown,
                                  hint="add --merge to add only what it does not have yet")
            for table, rows in tables.items():
                columns, key = COPIED_TABLES[table]
                marks = ", ".join(["%s"] * len(columns.split(",")))
                added[table] = 0
                with db.cursor() as cursor:
                    for chunk in chunked(rows, 5000):
                        if merge and table == "deliveries":
                            cursor.executemany(_MERGE_DELIVERY, merge_delivery_params(chunk))
                        else:
                            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks}) "
                                               f"ON CONFLICT ({key}) DO NOTHING", chunk)
                        added[table] += cursor.rowcount
            if merge:  # an issue of both ledgers may have gained rows
                db.execute("UPDATE issues SET planned = (SELECT count(*) FROM deliveries d "
                           "WHERE d.issue_id = issues.issue_id)")
        return added

    # -- the workers (many_workers: a registration each, no single lease) -----------------
    many_workers = True

    def acquire_lease(self, issue_id: str, holder: str, *, stale_after: float) -> Lease:
        host, pid = socket.gethostname(), os.getpid()
        with self._tx() as db:
            (now,) = db.execute(f"INSERT INTO workers ({_WORKER_COLUMNS}) VALUES (%s, %s, %s, %s, {_DB_NOW}, "
                                f"{_DB_NOW}, 0) ON CONFLICT (issue_id, holder) DO UPDATE SET heartbeat = "
                                "excluded.heartbeat RETURNING heartbeat", (issue_id, holder, pid, host)).fetchone()
        return Worker(issue_id, holder, pid, host, now, now)

    def heartbeat(self, issue_id: str, holder: str, rate: float | None = None) -> bool:
        with self._tx(one_statement=True) as db:
            return db.execute(f"UPDATE workers SET heartbeat = {_DB_NOW}, rate = coalesce(%s, rate) "
                              "WHERE issue_id = %s AND holder = %s", (rate, issue_id, holder)).rowcount == 1

    def release_lease(self, issue_id: str, holder: str) -> None:
        with self._tx() as db:
            # Rows reserved and not sent (--limit, an interrupt, retries left) are free for the others at once.
            db.execute("UPDATE deliveries SET claimed_by = '' WHERE issue_id = %s AND claimed_by = %s "
                       "AND state = 'pending'", (issue_id, holder))
            db.execute("DELETE FROM workers WHERE issue_id = %s AND holder = %s", (issue_id, holder))

    def lease(self, issue_id: str) -> Lease | None:
        return None  # no single holder: see workers()

    def workers(self, issue_id: str) -> list[Worker]:
        return [Worker(*row) for row in self._read(
            f"SELECT {_WORKER_COLUMNS} FROM workers WHERE issue_id = %s ORDER BY started, holder {_C}",
            (issue_id,))]

    def clock(self) -> float:
        return self._read(f"SELECT {_DB_NOW}")[0][0]

    def reap_workers(self, issue_id: str, holder: str, *, stale_after: float) -> list[str]:
        with self._tx() as db:
            (now,) = db.execute(f"SELECT {_DB_NOW}").fetchone()
            # FOR UPDATE waits for every claim in flight (they hold their registration FOR KEY SHARE).
            rows = db.execute(f"SELECT {_WORKER_COLUMNS} FROM workers WHERE issue_id = %s FOR UPDATE",
                              (issue_id,)).fetchall()
            dead = [w.holder for w in map(lambda row: Worker(*row), rows)
                    if w.holder != holder and not w.holder_alive(stale_after=stale_after, now=now)]
            if dead:
                db.execute("DELETE FROM workers WHERE issue_id = %s AND holder = ANY(%s)", (issue_id, dead))
        return dead

    def adopt_in_doubt(self, issue_id: str, holder: str) -> dict[str, list[str]]:
        with self._tx() as db:
            # Rows of a live worker stay its own; those of a reaped (or pre-workers) run become ours. A
            # second adopter waits on the row locks, then finds them registered to us: it takes none.
            adopted = db.execute(
                "UPDATE deliveries d SET claimed_by = %s WHERE d.issue_id = %s AND d.state = 'sending' "
                f"AND {_FREE} RETURNING d.batch_id, d.email", (holder, issue_id)).fetchall()
        batches: dict[str, list[str]] = {}
        for batch_id, email in sorted(adopted):
            batches.setdefault(batch_id, []).append(email)
        return batches

    def others_unfinished(self, issue_id: str, holder: str, *, stale_after: float) -> int:
        live = [w.holder for w in self.live_workers(issue_id, stale_after=stale_after) if w.holder != holder]
        if not live:
            return 0
        return self._read("SELECT count(*) FROM deliveries WHERE issue_id = %s AND state IN ('pending', 'sending') "
                          "AND claimed_by = ANY(%s)", (issue_id, live))[0][0]

    def reserve(self, issue_id: str, holder: str, rows: Sequence[int]) -> set[int] | None:
        if not rows:
            return set()
        with self._tx(one_statement=True) as db:
            # One statement: the SELECT after UNION ALL reads the snapshot from before the UPDATE (the rows
            # that were already ours), the UPDATE returns those it made ours: together, ours now. By the
            # rows' ids (the primary key), as a claim and a record are: cheaper than by address
            # (benchmarks/README.md, "Several workers").
            return {row for (row,) in db.execute(
                "WITH u AS (UPDATE deliveries d SET claimed_by = %(holder)s WHERE d.id = ANY(%(rows)s) "
                f"AND d.issue_id = %(issue)s AND d.state = 'pending' AND d.claimed_by != %(holder)s AND {_FREE} "
                "RETURNING d.id) SELECT id FROM u UNION ALL SELECT id FROM deliveries "
                "WHERE id = ANY(%(rows)s) AND issue_id = %(issue)s AND state = 'pending' "
                "AND claimed_by = %(holder)s", {"holder": holder, "issue": issue_id, "rows": list(rows)})}

    # -- the plan -------------------------------------------------------------------
    def issue(self, issue_id: str) -> IssueRecord | None:
        rows = self._read(f"SELECT {_ISSUE_COLUMNS} FROM issues WHERE issue_id = %s", (issue_id,))
        return IssueRecord(*rows[0]) if rows else None

    def issues(self) -> list[IssueRecord]:
        rows = self._read(f"SELECT {_ISSUE_COLUMNS} FROM issues ORDER BY created_at {_C}, issue_id {_C}")
        return [IssueRecord(*row) for row in rows]

    def create_plan(self, issue_id: str, *, content_hash: str, subject: str, segment: str,
                    emails: Iterable[str], provider: str = "", provider_scope: str = "") -> int:
        with self._tx() as db:
            # A second planner waits here on the key until the first commits, then finds its plan.
            inserted = db.execute(f"INSERT INTO issues ({_ISSUE_COLUMNS}) VALUES (%s, %s, %s, %s, 0, %s, %s, %s, '') "
                                  "ON CONFLICT (issue_id) DO NOTHING",
                                  (issue_id, content_hash, subject, segment, _now(), provider,
                                   provider_scope)).rowcount
            if not inserted:
                raise PlanExists(f"issue {issue_id} already has a plan", path=self._shown)
            return self._insert_pending(db, issue_id, emails)

    def bind_provider(self, issue_id: str, provider: str, provider_scope: str) -> bool:
        with self._tx() as db:
            return db.execute("UPDATE issues SET provider = %s, provider_scope = %s WHERE issue_id = %s "
                              "AND provider IN ('', %s)", (provider, provider_scope, issue_id,
                                                           UNKNOWN_PROVIDER)).rowcount == 1

    def drop_plan(self, issue_id: str, holder: str, *, only_provider: str) -> int:
        with self._tx() as db:
            found = db.execute("SELECT provider FROM issues WHERE issue_id = %s FOR UPDATE", (issue_id,)).fetchone()
            if found is None:
                return 0
            tried = db.execute("SELECT count(*) FROM deliveries WHERE issue_id = %s AND state NOT IN "
                               "('pending', 'skipped')", (issue_id,)).fetchone()[0]
            if found[0] not in ("", only_provider) and tried:
                raise LedgerError(f"issue {issue_id} was sent through {found[0]}, not only {only_provider}: "
                                  f"its plan is kept", path=self._shown)
            self._require_alone(db, issue_id, holder, again=f"newsletter send {issue_id} --restart")
            dropped = db.execute("DELETE FROM deliveries WHERE issue_id = %s", (issue_id,)).rowcount
            db.execute("DELETE FROM issues WHERE issue_id = %s", (issue_id,))
            return dropped

    def _require_alone(self, db: psycopg.Connection, issue_id: str, holder: str, *, again: str) -> None:
        """``holder`` is the only worker registered on the issue (locked until the transaction ends)."""
        others = [h for (h,) in db.execute("SELECT holder FROM workers WHERE issue_id = %s FOR UPDATE",
                                           (issue_id,))]
        if holder not in others:
            raise LedgerError(f"this run is no longer registered on issue {issue_id}: its plan is kept",
                              path=self._shown, hint=f"run `{again}` again")
        if len(others) > 1:
            raise LedgerError(f"{len(others) - 1} other worker(s) are registered on issue {issue_id}: its "
                              f"plan is kept", path=self._shown,
                              hint=f"wait for them to finish (`newsletter status {issue_id}` lists them); a "
                                   "worker that died is reaped once its heartbeat is a minute old")

    def cancel_plan(self, issue_id: str, holder: str, reason: str) -> tuple[int, int]:
        with self._tx() as db:
            db.execute("SELECT 1 FROM issues WHERE issue_id = %s FOR UPDATE", (issue_id,))
            self._require_alone(db, issue_id, holder, again=f"newsletter cancel {issue_id}")
            now = _now()
            skipped = db.execute("UPDATE deliveries SET state = 'skipped', reason = %s, updated_at = %s, "
                                 "claimed_by = '' WHERE issue_id = %s AND state = 'pending'",
                                 (reason, now, issue_id)).rowcount
            in_doubt = db.execute("UPDATE deliveries SET state = 'unknown', reason = %s, updated_at = %s "
                                  "WHERE issue_id = %s AND state = 'sending'", (reason, now, issue_id)).rowcount
            db.execute("UPDATE issues SET cancelled_at = %s WHERE issue_id = %s", (now, issue_id))
            return skipped, in_doubt

    def extend_plan(self, issue_id: str, emails: Iterable[str]) -> int:
        with self._tx() as db:
            db.execute("SELECT 1 FROM issues WHERE issue_id = %s FOR UPDATE", (issue_id,))
            return self._insert_pending(db, issue_id, emails)

    def replan(self, issue_id: str, *, segment: str, emails: Iterable[str]) -> int:
        with self._tx() as db:
            db.execute("SELECT 1 FROM issues WHERE issue_id = %s FOR UPDATE", (issue_id,))
            tried = db.execute("SELECT count(*) FROM deliveries WHERE issue_id = %s AND state NOT IN "
                               "('pending', 'skipped')", (issue_id,)).fetchone()[0]
            if tried:
                raise LedgerError(f"issue {issue_id}: {tried} recipient(s) were already tried; its plan cannot "
                                  f"change now", path=self._shown)
            db.execute("DELETE FROM deliveries WHERE issue_id = %s", (issue_id,))
            db.execute("UPDATE issues SET segment = %s, planned = 0 WHERE issue_id = %s", (segment, issue_id))
            return self._insert_pending(db, issue_id, emails)

    def _insert_pending(self, db: psycopg.Connection, issue_id: str, emails: Iterable[str]) -> int:
        # One INSERT ... SELECT per chunk of the list, pipelined (executemany): the server inserts a chunk
        # (the heap, four indexes, the foreign key: ~15 us a row) while this process walks the list for
        # the next. Staging the whole list in a temporary table first made each wait for the other
        # (200,000 readers from the list: 3.9-5.0 s against 3.3-4.3 s, benchmarks/planrows.py).
        # Suppressed addresses and those erased earlier (kept as a hash) are left out in SQL; a chunk
        # keeps the list's order (ord).
        has_erased = db.execute("SELECT 1 FROM deliveries WHERE issue_id = %s AND email >= 'sha256:' "
                                "AND email < 'sha256;' LIMIT 1", (issue_id,)).fetchone()
        now = _now()
        cursor = db.cursor()
        cursor.executemany(
            "INSERT INTO deliveries (issue_id, email, state, updated_at) SELECT %(issue)s, u.email, 'pending', %(now)s "
            "FROM unnest(%(keys)s::text[], %(erased)s::text[]) WITH ORDINALITY AS u(email, erased, ord) "
            "WHERE NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.email = u.email) "
            "AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.issue_id = %(issue)s AND e.email = u.erased) "
            "ORDER BY u.ord ON CONFLICT (issue_id, email) DO NOTHING",
            ({"issue": issue_id, "now": now, "keys": [address_key(e) for e in chunk],
              "erased": [erased_key(e) for e in chunk] if has_erased else [""] * len(chunk)}
             for chunk in chunked(emails, 1000)))
        added = cursor.rowcount  # the rows the chunks inserted, summed (psycopg >= 3.1)
        # Statistics now, not when autovacuum gets to it: without them the planner reads a claim's or a
        # reservation's rows through (issue_id, state), every pending row of the issue, not by their keys.
        db.execute("ANALYZE deliveries")
        db.execute("UPDATE issues SET planned = (SELECT count(*) FROM deliveries WHERE issue_id = %(issue)s) "
                   "WHERE issue_id = %(issue)s", {"issue": issue_id})
        return added

    def set_content_hash(self, issue_id: str, content_hash: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE issues SET content_hash = %s WHERE issue_id = %s", (content_hash, issue_id))

    # -- the send loop: one statement per batch, the addresses as one array parameter -------------
    def lookup_rows(self, issue_id: str, emails: Sequence[str]) -> dict[str, PlanRow]:
        if not emails:
            return {}
        found = self._read("SELECT d.email, d.state, s.email IS NOT NULL, d.id FROM deliveries d "
                           "LEFT JOIN suppressions s ON s.email = d.email WHERE d.issue_id = %s AND d.email = ANY(%s)",
                           (issue_id, [address_key(e) for e in emails]))
        return {email: PlanRow(state, suppressed, row) for email, state, suppressed, row in found}

    def claim_rows(self, issue_id: str, batch_id: str, rows: Sequence[int], holder: str) -> set[int]:
        if not rows:
            return set()
        with self._tx(one_statement=True) as db:  # one round trip: its own transaction, in autocommit
            registered, claimed = db.execute(_CLAIM, {"issue": issue_id, "rows": list(rows), "batch": batch_id,
                                                      "now": _now(), "holder": holder}).fetchone()
        if not registered:  # reaped (or never registered): the fence, nothing claimed
            return set()
        if len(claimed) == len(set(rows)):  # every row asked for (the usual case): nothing to read back
            return set(claimed)
        # As SQLite's: of the rows asked for, those under this batch id, found by id.
        return {row for (row,) in self._read("SELECT id FROM deliveries WHERE id = ANY(%s) AND issue_id = %s "
                                             "AND batch_id = %s", (list(rows), issue_id, batch_id))}

    def record_rows(self, issue_id: str, batch_id: str, rows: Sequence[int], outcomes: Sequence[Outcome], *,
                    source: str, holder: str = "") -> None:
        check_outcomes(outcomes)
        if not outcomes:
            return
        now = _now()
        if all_sent_alike(outcomes):  # SendGrid's and Mailgun's one id for the whole batch
            with self._tx(one_statement=True) as db:
                db.execute("UPDATE deliveries SET state = 'sent', provider_id = %s, reason = '', "
                           "attempts = attempts + 1, updated_at = %s WHERE id = ANY(%s) AND issue_id = %s "
                           "AND batch_id = %s AND state = 'sending'",
                           (outcomes[0].provider_id, now, list(rows), issue_id, batch_id))
            return
        suppress = reported_suppressions(outcomes)
        with self._tx(one_statement=not suppress) as db:
            db.execute("UPDATE deliveries d SET state = v.state, provider_id = v.provider_id, reason = v.reason, "
                       "attempts = d.attempts + 1, updated_at = %s "
                       "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[]) AS v(id, state, provider_id, "
                       "reason) WHERE d.id = v.id AND d.issue_id = %s AND d.batch_id = %s AND d.state = 'sending' "
                       # Only "sent" lands whoever records it; the rest only on rows we still hold.
                       "AND (v.state = 'sent' OR %s = '' OR d.claimed_by = %s)",
                       (now, list(rows), [RECORD_STATE[o.state] for o in outcomes],
                        [o.provider_id for o in outcomes], [o.reason[:500] for o in outcomes], issue_id, batch_id,
                        holder, holder))
            if suppress:
                self._insert_suppressions(db, suppression_rows(suppress, ""), source, now)

    def mark_attempt(self, issue_id: str, batch_id: str) -> None:
        with self._tx(one_statement=True) as db:
            db.execute("UPDATE deliveries SET attempts = attempts + 1, updated_at = %s "
                       "WHERE issue_id = %s AND batch_id = %s AND state = 'sending'", (_now(), issue_id, batch_id))

    def skip(self, issue_id: str, reasons: Sequence[tuple[str, str]]) -> int:
        return self._close_pending(issue_id, "skipped", [(address_key(email), reason) for email, reason in reasons])

    def _close_pending(self, issue_id: str, state: str, reasons: Sequence[tuple[str, str]]) -> int:
        if not reasons:
            return 0
        with self._tx(one_statement=True) as db:
            return db.execute("UPDATE deliveries d SET state = %s, reason = v.reason, updated_at = %s "
                              "FROM unnest(%s::text[], %s::text[]) AS v(email, reason) "
                              "WHERE d.issue_id = %s AND d.email = v.email AND d.state = 'pending'",
                              (state, _now(), [k for k, _ in reasons], [r for _, r in reasons],
                               issue_id)).rowcount

    def add_skipped(self, issue_id: str, reasons: Sequence[tuple[str, str]]) -> int:
        entries = [(address_key(email), reason) for email, reason in reasons if email]
        if not entries:
            return 0
        with self._tx() as db:
            added = db.execute("INSERT INTO deliveries (issue_id, email, state, reason, updated_at) "
                               "SELECT %s, v.email, 'skipped', v.reason, %s FROM unnest(%s::text[], %s::text[]) "
                               "WITH ORDINALITY AS v(email, reason, n) ORDER BY v.n "
                               "ON CONFLICT (issue_id, email) DO NOTHING",
                               (issue_id, _now(), [k for k, _ in entries], [r for _, r in entries])).rowcount
            db.execute("UPDATE issues SET planned = (SELECT count(*) FROM deliveries WHERE issue_id = %(issue)s) "
                       "WHERE issue_id = %(issue)s", {"issue": issue_id})
            return added

    def fail(self, issue_id: str, reasons: Sequence[tuple[str, str]]) -> int:
        return self._close_pending(issue_id, "failed", [(address_key(email), reason[:500])
                                                         for email, reason in reasons])

    def retry_failed(self, issue_id: str) -> int:
        with self._tx() as db:
            return db.execute("UPDATE deliveries SET state = 'pending', reason = substr('sent again after: ' || "
                              "reason, 1, 500), updated_at = %s WHERE issue_id = %s AND state = 'failed' "
                              "AND email NOT IN (SELECT email FROM suppressions)", (_now(), issue_id)).rowcount

    def in_doubt(self, issue_id: str) -> dict[str, list[str]]:
        return self._batches_in_doubt(issue_id, [])

    def _batches_in_doubt(self, issue_id: str, live: list[str]) -> dict[str, list[str]]:
        """Rows ``sending``, by batch, but for those claimed by the ``live`` workers."""
        batches: dict[str, list[str]] = {}
        for batch_id, email in self._read("SELECT batch_id, email FROM deliveries WHERE issue_id = %s "
                                          "AND state = 'sending' AND NOT claimed_by = ANY(%s) "
                                          f"ORDER BY batch_id {_C}, email {_C}", (issue_id, live)):
            batches.setdefault(batch_id, []).append(email)
        return batches

    def dead_in_doubt(self, issue_id: str, *, stale_after: float) -> dict[str, list[str]]:
        return self._batches_in_doubt(issue_id, [w.holder for w in self.live_workers(issue_id,
                                                                                      stale_after=stale_after)])

    def claim_times(self, issue_id: str, state: str = "sending") -> dict[str, datetime | None]:
        return {batch_id: parse_time(claimed) for batch_id, claimed in self._read(
            "SELECT batch_id, min(claimed_at) FROM deliveries WHERE issue_id = %s AND state = %s AND batch_id != '' "
            "GROUP BY batch_id", (issue_id, state))}

    def mark_unknown(self, issue_id: str, batch_ids: Sequence[str], reason: str) -> int:
        with self._tx() as db:
            return db.execute("UPDATE deliveries SET state = 'unknown', reason = %s, updated_at = %s "
                              "WHERE issue_id = %s AND batch_id = ANY(%s) AND state = 'sending'",
                              (reason, _now(), issue_id, list(batch_ids))).rowcount

    def resend_unknown(self, issue_id: str) -> int:
        with self._tx() as db:
            return db.execute("UPDATE deliveries SET state = 'pending', reason = 'resent after unknown outcome', "
                              "updated_at = %s WHERE issue_id = %s AND state = 'unknown'",
                              (_now(), issue_id)).rowcount

    def pending_keys(self, issue_id: str, holder: str) -> list[str]:
        return [r[0] for r in self._read("SELECT d.email FROM deliveries d WHERE d.issue_id = %(issue)s "
                                         f"AND d.state = 'pending' AND (d.claimed_by = %(holder)s OR {_FREE}) "
                                         "ORDER BY d.id", {"issue": issue_id, "holder": holder})]

    def counts(self, issue_id: str) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        counts.update(self._read("SELECT state, count(*) FROM deliveries WHERE issue_id = %s GROUP BY state",
                                 (issue_id,)))
        return counts

    # -- reconciliation -------------------------------------------------------------
    def rows(self, issue_id: str, states: Sequence[str] = ("unknown",)) -> list[DeliveryRow]:
        return [DeliveryRow(*r) for r in self._read(
            f"SELECT {_ROW_COLUMNS} FROM deliveries WHERE issue_id = %s AND state = ANY(%s) "
            f"ORDER BY state {_C}, email {_C}", (issue_id, list(states)))]

    def resolve(self, issue_id: str, outcomes: Sequence[Outcome]) -> int:
        known = [o for o in outcomes if o.state in _RESOLVE_STATE]
        with self._tx() as db:
            return db.execute("UPDATE deliveries d SET state = v.state, provider_id = v.provider_id, "
                              "reason = v.reason, updated_at = %s "
                              "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) "
                              "AS v(email, state, provider_id, reason) "
                              "WHERE d.issue_id = %s AND d.email = v.email AND d.state = 'unknown'",
                              (_now(), [address_key(o.email) for o in known], [_RESOLVE_STATE[o.state] for o in known],
                               [o.provider_id for o in known], [o.reason[:500] for o in known], issue_id)).rowcount

    # -- notices --------------------------------------------------------------------
    def mark_noticed(self, issue_id: str, notice: str) -> bool:
        with self._tx() as db:
            return db.execute("INSERT INTO notices VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                              (issue_id, notice, _now())).rowcount == 1

    # -- suppressions and erasure ---------------------------------------------------
    @staticmethod
    def _insert_suppressions(db: psycopg.Connection, rows: Sequence[tuple[str, str, str]], source: str,
                             now: str) -> int:
        """Insert ``(address key, reason, issue)`` rows (:func:`suppression_rows`)."""
        # WITH ORDINALITY ... ORDER BY: of an address given twice, the first entry is the one kept.
        return db.execute("INSERT INTO suppressions (email, reason, source, created_at, issue_id) "
                          "SELECT v.email, v.reason, %s, %s, v.issue FROM unnest(%s::text[], %s::text[], %s::text[]) "
                          "WITH ORDINALITY AS v(email, reason, issue, n) ORDER BY v.n ON CONFLICT (email) DO NOTHING",
                          (source, now, *(list(column) for column in zip(*rows)))).rowcount

    def add_suppressions(self, entries: Sequence[tuple[str, ...]], source: str, *, issue_id: str = "") -> int:
        if not entries:
            return 0
        with self._tx() as db:
            return self._insert_suppressions(db, suppression_rows(entries, issue_id), source, _now())

    def remove_suppression(self, email: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM suppressions WHERE email = %s", (address_key(email),)).rowcount == 1

    def suppressions(self) -> list[Suppression]:
        return [Suppression(*r) for r in self._read(
            f"SELECT email, reason, source, created_at, issue_id FROM suppressions ORDER BY email {_C}")]

    def suppressed_set(self) -> set[str]:
        return {r[0] for r in self._read("SELECT email FROM suppressions")}

    def is_suppressed(self, email: str) -> bool:
        return bool(self._read("SELECT 1 FROM suppressions WHERE email = %s", (address_key(email),)))

    def erase_address(self, email: str) -> int:
        """The address becomes a hash, and leaves ``provider_id`` and ``reason`` too (see the SQLite ledger).

        PostgreSQL keeps old row versions until VACUUM; autovacuum reclaims them (docs/team.md).
        """
        key, erased = address_key(email), erased_key(email)
        forms = {key, re.sub(r"[^a-z0-9@._+-]", "_", key), quote(key, safe=""), quote(key, safe="@")}
        pattern = re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)), re.IGNORECASE)
        with self._tx() as db:
            rows = db.execute("SELECT id, issue_id, provider_id, reason FROM deliveries WHERE email = %s FOR UPDATE",
                              (key,)).fetchall()
            # An older row of the same issue already erased gives way to this newer one (SQLite's OR REPLACE).
            db.execute("DELETE FROM deliveries WHERE email = %s AND issue_id = ANY(%s)",
                       (erased, [issue for _, issue, _, _ in rows]))
            with db.cursor() as cursor:
                cursor.executemany("UPDATE deliveries SET email = %s, provider_id = %s, reason = %s WHERE id = %s",
                                   [(erased, pattern.sub("[erased]", provider_id), pattern.sub("[erased]", reason),
                                     row_id) for row_id, _, provider_id, reason in rows])
        return len(rows)

    # -- reports --------------------------------------------------------------------
    def reason_counts(self, issue_id: str, state: str = "failed") -> dict[str, int]:
        return dict(self._read("SELECT reason, count(*) AS n FROM deliveries WHERE issue_id = %s AND state = %s "
                               f"GROUP BY reason ORDER BY n DESC, reason {_C}", (issue_id, state)))

    def sent_per_minute(self, issue_id: str) -> list[tuple[str, int]]:
        return [(minute, n) for minute, n in self._read(
            # ORDER BY an alias with COLLATE is an expression, where an alias cannot be named: spell it out.
            "SELECT substr(updated_at, 1, 16) AS minute, count(*) FROM deliveries "
            f"WHERE issue_id = %s AND state = 'sent' GROUP BY minute ORDER BY substr(updated_at, 1, 16) {_C}",
            (issue_id,))]

    def summaries(self, limit: int) -> list[IssueSummary]:
        found: dict[str, IssueSummary] = {}
        for *record, state, n in self._read(
                "SELECT i.issue_id, i.content_hash, i.subject, i.segment, i.planned, i.created_at, d.state, "
                f"count(d.id) FROM (SELECT * FROM issues ORDER BY created_at {_C} DESC, issue_id {_C} DESC "
                "LIMIT %s) i LEFT JOIN deliveries d ON d.issue_id = i.issue_id "
                "GROUP BY i.issue_id, i.content_hash, i.subject, i.segment, i.planned, i.created_at, d.state "
                f"ORDER BY i.created_at {_C} DESC, i.issue_id {_C} DESC", (limit,)):
            summary = found.setdefault(record[0], IssueSummary(IssueRecord(*record), dict.fromkeys(STATES, 0)))
            if state is not None:
                summary.counts[state] = n
        return list(found.values())

    def cached_figures(self, provider: str, issue_ids: Sequence[str]) -> dict[str, CachedFigures]:
        return {row[0]: CachedFigures(row[0], bool(row[1]), row[2], row[3]) for row in self._read(
            "SELECT issue_id, detail, figures, fetched_at FROM provider_figures WHERE provider = %s "
            "AND issue_id = ANY(%s)", (provider, list(issue_ids)))}

    def store_figures(self, provider: str, entries: Sequence[CachedFigures]) -> None:
        with self._tx() as db:
            db.cursor().executemany(STORE_FIGURES_SQL, [(e.issue_id, provider, int(e.detail), e.figures, e.fetched_at)
                                                       for e in entries])

    def issue_suppressions(self, issue_id: str) -> dict[tuple[str, str, str], int]:
        return {(source, kind, attributed): n for source, kind, attributed, n in self._read(
            ISSUE_SUPPRESSIONS_SQL.replace("%", "%%").format(issue="%(issue)s", order=_C),
            {"issue": issue_id})}
