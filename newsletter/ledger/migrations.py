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
    (3, "notices: what dispatch has told the user once already", """
        -- dispatch runs every few minutes: a notice such as "this issue is too old to send unasked"
        -- is recorded here the first time it is given, and never repeated. No personal data.
        CREATE TABLE notices (
            issue_id   TEXT NOT NULL,
            notice     TEXT NOT NULL,   -- what was said, e.g. too-old:<send_at>
            created_at TEXT NOT NULL,
            PRIMARY KEY (issue_id, notice)
        )
    """),
]

LATEST = MIGRATIONS[-1][0]
