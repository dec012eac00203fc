"""Schema versions of the ledger, applied in order: one list of steps for SQLite and PostgreSQL.

``PRAGMA user_version`` says where a SQLite file is, the ``schema_version`` table where a PostgreSQL
database is. A step's SQL is shared where both dialects take it as written; where they differ,
:data:`POSTGRES_VARIANTS` holds PostgreSQL's text of that same step number (:func:`steps`).
Never edit a released step: add a new one. A ledger newer than this code is refused.
Statements are split at ";", so comments in the SQL must not contain one.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "issues, deliveries, leases, suppressions", """
        CREATE TABLE issues (
            issue_id     TEXT PRIMARY KEY,
            content_hash TEXT NOT NULL,      -- compiled content at the first send: resuming with other content asks
            subject      TEXT NOT NULL,
            segment      TEXT NOT NULL DEFAULT '',
            planned      INTEGER NOT NULL,   -- rows in the plan
            created_at   TEXT NOT NULL
        );
        CREATE TABLE deliveries (
            id          INTEGER PRIMARY KEY, -- plan order: a batch's rows sit together on disk, so a claim
                                             -- or record dirties a few pages, not one per recipient
            issue_id    TEXT NOT NULL REFERENCES issues(issue_id),
            email       TEXT NOT NULL,       -- lower-cased address, or sha256:... once erased
            state       TEXT NOT NULL CHECK (state IN ('pending','sending','sent','failed','unknown','skipped')),
            attempts    INTEGER NOT NULL DEFAULT 0,
            batch_id    TEXT NOT NULL DEFAULT '',
            provider_id TEXT NOT NULL DEFAULT '',
            reason      TEXT NOT NULL DEFAULT '',
            updated_at  TEXT NOT NULL,
            UNIQUE (issue_id, email)
        );
        CREATE INDEX deliveries_by_state ON deliveries(issue_id, state);
        CREATE INDEX deliveries_by_batch ON deliveries(issue_id, batch_id);
        CREATE TABLE leases (
            issue_id  TEXT PRIMARY KEY,
            holder    TEXT NOT NULL,
            pid       INTEGER NOT NULL,
            host      TEXT NOT NULL,
            heartbeat REAL NOT NULL,
            acquired  REAL NOT NULL
        );
        CREATE TABLE suppressions (
            email      TEXT PRIMARY KEY,
            reason     TEXT NOT NULL DEFAULT '',
            source     TEXT NOT NULL DEFAULT 'manual',
            created_at TEXT NOT NULL
        );
    """),
    (2, "deliveries.claimed_at: when the row's batch id was first claimed", """
        -- The age of an in-doubt batch decides whether its idempotency key still holds (Resend
        -- forgets keys after 24 h) and whether a provider's logs are conclusive. updated_at
        -- moves on every change, so it can be later than the send: too young an age.
        ALTER TABLE deliveries ADD COLUMN claimed_at TEXT NOT NULL DEFAULT '';
        -- Rows claimed before this column existed: the plan's creation is the latest time known
        -- to be no later than their claim, so their age errs on the old side (safe).
        UPDATE deliveries SET claimed_at = (SELECT created_at FROM issues i WHERE i.issue_id = deliveries.issue_id)
            WHERE batch_id != ''
    """),
    (3, "issues.provider, issues.provider_scope: where the plan is sent (docs/sending.md, provider binding)", """
        -- A plan belongs to the provider of its first send (and Mailgun's domain or Postmark's
        -- stream, the scope): a run through another one is refused, so a trial through the
        -- outbox never counts as the real send, nor does a lost override finish a real send
        -- in the outbox. '' = not bound yet (the next run binds it), 'unknown' = sent by a
        -- version that did not record it, and the rows cannot tell which provider.
        ALTER TABLE issues ADD COLUMN provider TEXT NOT NULL DEFAULT '';
        ALTER TABLE issues ADD COLUMN provider_scope TEXT NOT NULL DEFAULT '';
        -- Older plans: what their rows' provider ids prove. The outbox's id is the file name
        -- (ends .eml), Mailgun's is <...@domain> (the sending domain), Postmark's, Resend's and
        -- SendGrid's cannot be told apart. A row in doubt (sending, unknown, or sent without
        -- an id) may have gone through any provider.
        CREATE TEMP TABLE v3_evidence AS SELECT issue_id,
            sum(provider_id LIKE '%.eml') AS outbox,
            sum(provider_id LIKE '<%@%>') AS mailgun,
            count(DISTINCT CASE WHEN provider_id LIKE '<%@%>' THEN substr(provider_id,
                instr(provider_id, '@') + 1, length(provider_id) - instr(provider_id, '@') - 1) END) AS domains,
            max(CASE WHEN provider_id LIKE '<%@%>' THEN substr(provider_id,
                instr(provider_id, '@') + 1, length(provider_id) - instr(provider_id, '@') - 1) END) AS domain,
            sum(provider_id != '' AND provider_id NOT LIKE '%.eml' AND provider_id NOT LIKE '<%@%>') AS other,
            sum(state IN ('sending', 'unknown') OR (state = 'sent' AND provider_id = '')) AS doubt
            FROM deliveries GROUP BY issue_id;
        -- Mailgun (one domain) wins over outbox rows: the plan went on through Mailgun, and a
        -- restart must not give its readers a second real copy. Nothing sent and nothing in
        -- doubt: nobody has a copy, the next run may bind the plan to its provider.
        UPDATE issues SET provider = coalesce((SELECT CASE
                WHEN e.other > 0 OR e.domains > 1 THEN 'unknown'
                WHEN e.mailgun > 0 THEN 'mailgun'
                WHEN e.doubt > 0 THEN 'unknown'
                WHEN e.outbox > 0 THEN 'outbox'
                ELSE '' END FROM v3_evidence e WHERE e.issue_id = issues.issue_id), '');
        UPDATE issues SET provider_scope = coalesce((SELECT e.domain FROM v3_evidence e
            WHERE e.issue_id = issues.issue_id), '') WHERE provider = 'mailgun';
        DROP TABLE v3_evidence
    """),
    (4, "suppressions.issue_id: the issue whose link a reader unsubscribed with", """
        -- An unsubscribe through the link of an issue (docs/unsubscribe.md) records that issue,
        -- so a complaint about "I left after issue X" can be answered. '' for every other source.
        ALTER TABLE suppressions ADD COLUMN issue_id TEXT NOT NULL DEFAULT ''
    """),
    (5, "notices: what dispatch has told the user once already", """
        -- dispatch runs every few minutes: a notice such as "this issue is too old to send unasked"
        -- is recorded here the first time it is given, and never repeated. No personal data.
        CREATE TABLE notices (
            issue_id   TEXT NOT NULL,
            notice     TEXT NOT NULL,   -- what was said, e.g. too-old:<send_at>
            created_at TEXT NOT NULL,
            PRIMARY KEY (issue_id, notice)
        )
    """),
    (6, "provider_figures: what a provider said of an issue, and when (newsletter report)", """
        -- `newsletter report` keeps the figures it read from the provider, so the table of the latest
        -- issues does not ask it once per issue per run: reused while younger than an hour, read
        -- again after (or with --refresh). A cache: `ledger copy` leaves it behind. No personal data.
        CREATE TABLE provider_figures (
            issue_id   TEXT NOT NULL,
            provider   TEXT NOT NULL,             -- name:scope (Mailgun's domain, Postmark's stream)
            detail     INTEGER NOT NULL,          -- 1 = read in detail (per day, links), 0 = totals only
            figures    TEXT NOT NULL,             -- the figures as JSON (newsletter/providers/stats.py)
            fetched_at DOUBLE PRECISION NOT NULL, -- when they were read, epoch seconds
            PRIMARY KEY (issue_id, provider)
        )
    """),
    (7, "workers, deliveries.claimed_by: several workers on one issue (docs/team.md)", """
        -- A many-worker ledger (PostgreSQL) registers each run sending an issue here instead of
        -- taking the issue's one lease: its heartbeat (epoch seconds) and its recipients per second.
        -- A registration silent for the stale time is reaped by another worker.
        CREATE TABLE workers (
            issue_id  TEXT NOT NULL,
            holder    TEXT NOT NULL,
            pid       INTEGER NOT NULL,
            host      TEXT NOT NULL,
            heartbeat REAL NOT NULL,
            started   REAL NOT NULL,
            rate      REAL NOT NULL DEFAULT 0,
            PRIMARY KEY (issue_id, holder)
        )
        -- SQLite keeps one run per issue (its lease): the table stays empty there, and its
        -- deliveries need no claimed_by (PostgreSQL's text of this step adds it).
    """),
    (8, "deliveries' fillfactor: room beside each row for its reservation (PostgreSQL, docs/team.md)", """
        -- Nothing to do on SQLite: it has no such setting, and one run per issue reserves nothing.
        -- PostgreSQL's text of this step sets it.
    """),
    (9, "deliveries without the batch index (PostgreSQL: nor the state index): cheaper claims and records", """
        -- A claim and a record find their rows by id (the plan's order), never by batch id, yet each
        -- wrote every row's new batch id into this index too. What still asks for a batch id (a run's
        -- start, a batch that failed) looks among the issue's rows in doubt, which the state index
        -- finds (benchmarks/README.md, "Indexes"). PostgreSQL's text of this step drops both.
        DROP INDEX deliveries_by_batch
    """),
    (10, "issues.cancelled_at: a send stopped for good (newsletter cancel, docs/sending.md)", """
        -- '' = not cancelled. Once set, send and dispatch send nobody more of the issue, whatever
        -- its rows say later (reconcile may put a row back to pending).
        ALTER TABLE issues ADD COLUMN cancelled_at TEXT NOT NULL DEFAULT ''
    """),
]

# PostgreSQL's text of the steps whose SQLite text it does not take (docs/team.md).
POSTGRES_VARIANTS: dict[int, str] = {
    1: """
        CREATE TABLE issues (
            issue_id     TEXT PRIMARY KEY,
            content_hash TEXT NOT NULL,
            subject      TEXT NOT NULL,
            segment      TEXT NOT NULL DEFAULT '',
            planned      INTEGER NOT NULL,
            created_at   TEXT NOT NULL
        );
        CREATE TABLE deliveries (
            id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, -- plan order
            issue_id    TEXT NOT NULL REFERENCES issues(issue_id),
            email       TEXT NOT NULL,
            state       TEXT NOT NULL CHECK (state IN ('pending','sending','sent','failed','unknown','skipped')),
            attempts    INTEGER NOT NULL DEFAULT 0,
            batch_id    TEXT NOT NULL DEFAULT '',
            provider_id TEXT NOT NULL DEFAULT '',
            reason      TEXT NOT NULL DEFAULT '',
            updated_at  TEXT NOT NULL,
            UNIQUE (issue_id, email)
        );
        CREATE INDEX deliveries_by_state ON deliveries(issue_id, state);
        CREATE INDEX deliveries_by_batch ON deliveries(issue_id, batch_id);
        -- Epoch seconds need a double: PostgreSQL's REAL is 4 bytes (a 2-minute resolution today).
        CREATE TABLE leases (
            issue_id  TEXT PRIMARY KEY,
            holder    TEXT NOT NULL,
            pid       INTEGER NOT NULL,
            host      TEXT NOT NULL,
            heartbeat DOUBLE PRECISION NOT NULL,
            acquired  DOUBLE PRECISION NOT NULL
        );
        CREATE TABLE suppressions (
            email      TEXT PRIMARY KEY,
            reason     TEXT NOT NULL DEFAULT '',
            source     TEXT NOT NULL DEFAULT 'manual',
            created_at TEXT NOT NULL
        )
    """,
    3: """
        -- No PostgreSQL ledger existed before this step, so there are no older plans whose provider
        -- must be inferred from their rows: only the columns. (A SQLite ledger copied over with
        -- `ledger copy` is migrated, inference included, before it is read.)
        ALTER TABLE issues ADD COLUMN provider TEXT NOT NULL DEFAULT '';
        ALTER TABLE issues ADD COLUMN provider_scope TEXT NOT NULL DEFAULT ''
    """,
    7: """
        CREATE TABLE workers (
            issue_id  TEXT NOT NULL,
            holder    TEXT NOT NULL,
            pid       INTEGER NOT NULL,
            host      TEXT NOT NULL,
            heartbeat DOUBLE PRECISION NOT NULL,
            started   DOUBLE PRECISION NOT NULL,
            rate      DOUBLE PRECISION NOT NULL DEFAULT 0,
            PRIMARY KEY (issue_id, holder)
        );
        -- The worker that reserved a pending row (a hint: it personalises and claims it) or claimed
        -- a sending one (the batch in flight is its own). '' = nobody.
        ALTER TABLE deliveries ADD COLUMN claimed_by TEXT NOT NULL DEFAULT ''
    """,
    8: """
        -- A worker's reservation changes only claimed_by, which no index holds. When the row's page has
        -- room, the server writes the new version there and leaves the four indexes alone (a HOT
        -- update). A plan's pages are now filled to 40%, which made a 1,000-row reservation
        -- 3x cheaper (benchmarks/README.md). Pages written before this step keep no room.
        ALTER TABLE deliveries SET (fillfactor = 40)
    """,
    9: """
        -- A claim and a record change a row's state and batch id, and once these two indexes are gone
        -- no index holds anything they change: the server writes each new version beside the old one,
        -- in the room step 8 left, and no index entry at all (a HOT update, as a reservation is). A
        -- claim and a record of 50 took half the time (benchmarks/README.md, "Indexes"). What still
        -- asks by state or batch id (a run's start and end, status, a batch that failed) reads the
        -- issue's rows through (issue_id, email): tens of milliseconds for 200,000.
        DROP INDEX deliveries_by_batch;
        DROP INDEX deliveries_by_state
    """,
}

LATEST = MIGRATIONS[-1][0]
# Steps that change only how rows are stored or found, not what a query sees: a read-only view of an
# older PostgreSQL schema skips them, so `status` or `--dry-run` holds no lock they would take (ALTER
# TABLE ... SET takes one that blocks ANALYZE and another process's migration, DROP INDEX one that
# blocks every reader of the table until the view ends) and needs no ownership.
STORAGE_ONLY = frozenset({8, 9})


def steps(dialect: str) -> list[tuple[int, str, str]]:
    """``(version, description, sql)`` for ``dialect`` ("sqlite" or "postgresql"), in order."""
    if dialect == "sqlite":
        return MIGRATIONS
    return [(number, about, POSTGRES_VARIANTS.get(number, sql)) for number, about, sql in MIGRATIONS]
