"""Numbered schema migrations. The database's `PRAGMA user_version` is how many have run.

Append only: a released migration is never edited, and a database whose version is higher than
`len(MIGRATIONS)` was written by a newer reclaim and is refused, never rewritten.
"""

from __future__ import annotations

# Times are Unix seconds (UTC) as REAL.
MIGRATIONS: tuple[str, ...] = (
    # 1: images, containers and the watch checkpoint.
    """
    CREATE TABLE images (
        image_id     TEXT PRIMARY KEY,
        first_seen   REAL NOT NULL,
        last_used    REAL,
        last_source  TEXT,
        last_detail  TEXT,
        tagged_at    REAL,
        refs         TEXT NOT NULL DEFAULT '[]',
        gone_at      REAL
    );
    CREATE TABLE containers (
        container_id TEXT PRIMARY KEY,
        image_id     TEXT NOT NULL,
        name         TEXT NOT NULL DEFAULT '',
        state        TEXT NOT NULL DEFAULT '',
        created      REAL,
        started      REAL,
        finished     REAL,
        last_seen    REAL NOT NULL,
        gone_at      REAL
    );
    CREATE INDEX containers_by_image ON containers (image_id);
    CREATE TABLE checkpoint (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: the deletion journal, and when each volume was first seen dangling.
    """
    CREATE TABLE journal (
        id              INTEGER PRIMARY KEY,
        at              REAL NOT NULL,
        kind            TEXT NOT NULL,
        object_id       TEXT NOT NULL,
        refs            TEXT NOT NULL DEFAULT '[]',
        rule            TEXT NOT NULL,
        detail          TEXT NOT NULL DEFAULT '',
        predicted_bytes INTEGER NOT NULL DEFAULT 0,
        plan_created    REAL
    );
    CREATE INDEX journal_by_time ON journal (at);
    CREATE TABLE volumes (
        name           TEXT PRIMARY KEY,
        first_seen     REAL NOT NULL,
        dangling_since REAL,
        gone_at        REAL
    );
    """,
    # 3: fsck's quarantine batches: what was moved aside from which data root, and what became
    # of each batch (restored, purged) and when. Keyed by data root and batch id: ids are
    # timestamps, unique within the quarantine dir beside one data root.
    """
    CREATE TABLE quarantine (
        data_root    TEXT NOT NULL,
        id           TEXT NOT NULL,
        path         TEXT NOT NULL,
        created      REAL NOT NULL,
        entries      TEXT NOT NULL DEFAULT '[]',
        bytes        INTEGER NOT NULL DEFAULT 0,
        state        TEXT NOT NULL CHECK (state IN ('quarantined', 'restored', 'purged')),
        state_at     REAL NOT NULL,
        purged_bytes INTEGER,
        PRIMARY KEY (data_root, id)
    );
    CREATE INDEX quarantine_by_time ON quarantine (created);
    """,
    # 4: a volume is its name and its instance (a volume created again under the same name is
    # another one); journal rows are written as an intent before each deletion and completed
    # after it, so that a deletion interrupted by a kill is still found in the journal.
    """
    ALTER TABLE volumes ADD COLUMN instance TEXT NOT NULL DEFAULT '';
    ALTER TABLE journal ADD COLUMN instance TEXT NOT NULL DEFAULT '';
    ALTER TABLE journal ADD COLUMN state TEXT NOT NULL DEFAULT 'done'
        CHECK (state IN ('intent', 'done'));
    CREATE INDEX journal_intents ON journal (state) WHERE state = 'intent';
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
