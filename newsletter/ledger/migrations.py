"""Schema versions of the SQLite ledger, applied in order; ``PRAGMA user_version`` says where a file is.

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
]

LATEST = MIGRATIONS[-1][0]
