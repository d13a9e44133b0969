"""The SQLite history database: one connection (WAL, busy timeout), its schema and
migrations, shared explicitly by every part of the history that reads or writes it.

The file is ``<state_dir>/history.sqlite3``; a file made by an older version is brought
up to this schema when it is opened (additive changes only).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ...errors import StoreError

SCHEMA_VERSION = 5  # 2: stacks; 3: server groups; 4: queue; 5: verifications

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    identifier TEXT NOT NULL UNIQUE,
    project TEXT NOT NULL,
    project_name TEXT NOT NULL,
    server TEXT NOT NULL,
    server_name TEXT NOT NULL,
    server_identifier TEXT NOT NULL,
    protocol_type TEXT NOT NULL,
    start_revision TEXT,
    start_deployment TEXT,
    end_revision TEXT NOT NULL,
    end_tree TEXT,
    branch TEXT NOT NULL,
    status TEXT NOT NULL,
    mode TEXT NOT NULL,
    copy_config_files INTEGER NOT NULL,
    run_build_commands INTEGER NOT NULL,
    config_files_only INTEGER NOT NULL,
    rollback_of TEXT,
    repair INTEGER NOT NULL DEFAULT 0,
    full INTEGER NOT NULL DEFAULT 0,
    delete_extra INTEGER NOT NULL DEFAULT 0,
    adopted INTEGER NOT NULL DEFAULT 0,
    queued_at TEXT NOT NULL,
    started_at TEXT,
    completed_at TEXT,
    error TEXT,
    group_id TEXT,
    claimed_by TEXT
);
CREATE INDEX IF NOT EXISTS deployments_by_server ON deployments (project, server, seq);
CREATE TABLE IF NOT EXISTS file_outcomes (
    deployment TEXT NOT NULL REFERENCES deployments (identifier),
    seq INTEGER NOT NULL,
    path TEXT NOT NULL,
    change TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    PRIMARY KEY (deployment, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS publish_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    stack TEXT NOT NULL,
    environment TEXT NOT NULL,
    locale TEXT NOT NULL,
    uid TEXT NOT NULL,
    version INTEGER,
    deployment TEXT NOT NULL REFERENCES deployments (identifier),
    user TEXT NOT NULL,
    release TEXT,
    origin TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS publish_events_by_target
    ON publish_events (stack, environment, locale, uid, seq);
CREATE TABLE IF NOT EXISTS releases (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL UNIQUE,
    stack TEXT NOT NULL,
    name TEXT NOT NULL,
    creator TEXT NOT NULL,
    kind TEXT NOT NULL,
    rollback_of TEXT,
    created_at TEXT NOT NULL,
    scheduled_at TEXT,
    schedule TEXT,
    schedule_status TEXT,
    deleted_at TEXT
);
CREATE TABLE IF NOT EXISTS release_items (
    release TEXT NOT NULL REFERENCES releases (uid),
    seq INTEGER NOT NULL,
    uid TEXT NOT NULL,
    version INTEGER,
    action TEXT NOT NULL,
    locales TEXT NOT NULL,
    reference INTEGER NOT NULL,
    PRIMARY KEY (release, uid)
);
CREATE TABLE IF NOT EXISTS release_deploys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    release TEXT NOT NULL REFERENCES releases (uid),
    user TEXT NOT NULL,
    environment TEXT NOT NULL,
    deployment TEXT NOT NULL REFERENCES deployments (identifier)
);
CREATE TABLE IF NOT EXISTS release_captures (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    release TEXT NOT NULL,
    user TEXT NOT NULL,
    environment TEXT NOT NULL,
    locale TEXT NOT NULL,
    uid TEXT NOT NULL,
    before_version INTEGER,
    deployment TEXT NOT NULL REFERENCES deployments (identifier)
);
CREATE TABLE IF NOT EXISTS command_results (
    deployment TEXT NOT NULL REFERENCES deployments (identifier),
    seq INTEGER NOT NULL,
    command TEXT NOT NULL,
    phase TEXT NOT NULL,
    exit_status INTEGER,
    output TEXT NOT NULL,
    duration REAL NOT NULL,
    timed_out INTEGER NOT NULL,
    PRIMARY KEY (deployment, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS verifications (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    identifier TEXT NOT NULL UNIQUE,
    project TEXT NOT NULL,
    server TEXT NOT NULL,
    status TEXT NOT NULL,
    fast INTEGER NOT NULL,
    deployment TEXT,
    revision TEXT,
    in_sync INTEGER,
    differences TEXT NOT NULL,
    checked INTEGER NOT NULL,
    method TEXT,
    queued_at TEXT NOT NULL,
    completed_at TEXT,
    error TEXT,
    claimed_by TEXT
);
CREATE INDEX IF NOT EXISTS verifications_by_server ON verifications (project, server, seq);
CREATE INDEX IF NOT EXISTS verifications_by_deployment ON verifications (deployment, seq);
CREATE TABLE IF NOT EXISTS locks (
    server_key TEXT PRIMARY KEY,
    deployment TEXT NOT NULL,
    owner TEXT NOT NULL,
    acquired_at TEXT NOT NULL
);
"""


class Database:
    """One SQLite connection to the history file, handed to each part that uses it.

    Reads go through :meth:`execute`; every write runs in :meth:`transaction` (``BEGIN
    IMMEDIATE``: two processes never interleave one), whose SQLite errors become
    ``StoreError``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(path, timeout=30, isolation_level=None)
            self._connection.row_factory = sqlite3.Row
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
            self._connection.execute("PRAGMA busy_timeout=30000")
            self._connection.executescript(_SCHEMA)
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open history database {path}: {exc}") from None

    def _migrate(self) -> None:
        """Bring a database made by an older version up to this schema (additive only)."""
        db = self._connection
        db.execute("BEGIN IMMEDIATE")  # two processes may open an old file at once
        try:
            columns = {row[1] for row in db.execute("PRAGMA table_info(deployments)")}
            if "group_id" not in columns:  # made by schema version 2
                db.execute("ALTER TABLE deployments ADD COLUMN group_id TEXT")
            if "claimed_by" not in columns:  # made by schema version 3
                db.execute("ALTER TABLE deployments ADD COLUMN claimed_by TEXT")
            for flag in ("repair", "full", "delete_extra", "adopted"):  # schema version 4
                if flag not in columns:
                    db.execute(
                        f"ALTER TABLE deployments ADD COLUMN {flag} INTEGER NOT NULL DEFAULT 0"
                    )
            db.execute(
                "CREATE INDEX IF NOT EXISTS deployments_by_group ON deployments (group_id, seq)"
            )
            db.execute(
                "CREATE INDEX IF NOT EXISTS deployments_by_status ON deployments (status, seq)"
            )
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run one statement outside a transaction (a read)."""
        return self._connection.execute(sql, args)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside ``BEGIN IMMEDIATE``: committed on exit, rolled back if
        the block raises."""
        try:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"history database {self.path}: {exc}") from None

    def close(self) -> None:
        self._connection.close()


class DatabasePart:
    """One part of the history (its own tables), given the shared :class:`Database`."""

    def __init__(self, database: Database) -> None:
        self._db = database
