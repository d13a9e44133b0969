"""State: the history database (SQLite) and the snapshot store (a bare git repository).

The only module that writes SQL. Both live in the state directory::

    <state_dir>/history.sqlite3     deployments, per-file outcomes, locks (WAL)
    <state_dir>/snapshots.git       one ref per deployment: refs/deployments/<identifier>
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import git
from .changeset import Changeset
from .errors import StoreError
from .records import Deployment, DeploymentMode, DeploymentStatus, FileOutcome, OutcomeStatus

SCHEMA_VERSION = 1

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
    queued_at TEXT NOT NULL,
    started_at TEXT,
    completed_at TEXT,
    error TEXT
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
CREATE TABLE IF NOT EXISTS locks (
    server_key TEXT PRIMARY KEY,
    deployment TEXT NOT NULL,
    owner TEXT NOT NULL,
    acquired_at TEXT NOT NULL
);
"""

_FIELDS = [f.name for f in dataclasses.fields(Deployment)]
_COLUMNS = [name for name in _FIELDS if name != "seq"]


@dataclasses.dataclass(frozen=True, slots=True)
class LockRecord:
    server_key: str
    deployment: str
    owner: str
    acquired_at: str


class History:
    """Deployments, per-file outcomes and locks in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open history database {path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"history database {self.path}: {exc}") from None

    # -- deployments -----------------------------------------------------------------

    def add(self, deployment: Deployment) -> Deployment:
        values = [_to_sql(getattr(deployment, name)) for name in _COLUMNS]
        marks = ", ".join("?" * len(_COLUMNS))
        with self._transaction() as db:
            cur = db.execute(
                f"INSERT INTO deployments ({', '.join(_COLUMNS)}) VALUES ({marks})",  # noqa: S608
                values,
            )
        return dataclasses.replace(deployment, seq=int(cur.lastrowid or 0))

    def update(self, deployment: Deployment, **changes: Any) -> Deployment:
        updated = dataclasses.replace(deployment, **changes)
        sets = ", ".join(f"{name} = ?" for name in changes)
        with self._transaction() as db:
            db.execute(
                f"UPDATE deployments SET {sets} WHERE identifier = ?",  # noqa: S608
                [*(_to_sql(v) for v in changes.values()), deployment.identifier],
            )
        return updated

    def find(self, identifier: str) -> Deployment | None:
        row = self._db.execute(
            "SELECT * FROM deployments WHERE identifier = ?", (identifier,)
        ).fetchone()
        return None if row is None else _from_row(row)

    def query(
        self, project: str, server: str | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[Deployment]:
        sql = "SELECT * FROM deployments WHERE project = ?"
        args: list[Any] = [project]
        if server is not None:
            sql += " AND server = ?"
            args.append(server)
        sql += " ORDER BY seq DESC LIMIT ? OFFSET ?"
        rows = self._db.execute(sql, [*args, limit, offset]).fetchall()
        return [_from_row(row) for row in rows]

    def find_latest_completed(self, project: str, server: str) -> Deployment | None:
        """The deployment whose files are on the server: latest completed, not a preview."""
        row = self._db.execute(
            "SELECT * FROM deployments WHERE project = ? AND server = ? AND status = ? "
            "AND mode = ? ORDER BY completed_at DESC, seq DESC LIMIT 1",
            (project, server, DeploymentStatus.COMPLETED.value, DeploymentMode.QUEUE.value),
        ).fetchone()
        return None if row is None else _from_row(row)

    def unfinished_since(self, project: str, server: str, seq: int) -> list[Deployment]:
        """Queue deployments after ``seq`` that failed or never finished, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM deployments WHERE project = ? AND server = ? AND seq > ? "
            "AND mode = ? AND status IN (?, ?) AND end_tree IS NOT NULL ORDER BY seq",
            (
                project,
                server,
                seq,
                DeploymentMode.QUEUE.value,
                DeploymentStatus.FAILED.value,
                DeploymentStatus.RUNNING.value,
            ),
        ).fetchall()
        return [_from_row(row) for row in rows]

    # -- file outcomes -----------------------------------------------------------------

    def record_changes(
        self, identifier: str, changeset: Changeset, statuses: Sequence[OutcomeStatus]
    ) -> None:
        """Replace the per-file outcomes of a deployment (one row per change, in order)."""
        with self._transaction() as db:
            db.execute("DELETE FROM file_outcomes WHERE deployment = ?", (identifier,))
            db.executemany(
                "INSERT INTO file_outcomes VALUES (?, ?, ?, ?, ?, NULL)",
                (
                    (identifier, i, c.path, c.kind.value, status.value)
                    for i, (c, status) in enumerate(zip(changeset, statuses, strict=True))
                ),
            )

    def outcomes(self, identifier: str, *, limit: int = -1) -> list[FileOutcome]:
        """Per-file outcomes in order (``limit`` -1: all of them)."""
        rows = self._db.execute(
            "SELECT path, change, status, error FROM file_outcomes WHERE deployment = ? "
            "ORDER BY seq LIMIT ?",
            (identifier, limit),
        ).fetchall()
        return [FileOutcome(p, c, OutcomeStatus(s), e) for p, c, s, e in rows]

    def change_counts(self, identifier: str) -> dict[str, int]:
        """How many paths were added, modified and deleted."""
        counts = {"added": 0, "modified": 0, "deleted": 0}
        rows = self._db.execute(
            "SELECT change, COUNT(*) FROM file_outcomes WHERE deployment = ? GROUP BY change",
            (identifier,),
        ).fetchall()
        counts.update({change: n for change, n in rows})
        return counts

    # -- locks -----------------------------------------------------------------------------

    def try_lock(self, lock: LockRecord, *, steal: bool = False) -> tuple[bool, LockRecord | None]:
        """Take the lock (``steal`` takes it over); return whether we hold it and the holder."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT * FROM locks WHERE server_key = ?", (lock.server_key,)
            ).fetchone()
            holder = None if row is None else LockRecord(*row)
            if holder is not None and not steal:
                return False, holder
            db.execute(
                "INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?)",
                (lock.server_key, lock.deployment, lock.owner, lock.acquired_at),
            )
        return True, holder

    def unlock(self, server_key: str, deployment: str) -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM locks WHERE server_key = ? AND deployment = ?",
                (server_key, deployment),
            )


def _to_sql(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


def _from_row(row: sqlite3.Row) -> Deployment:
    data = dict(zip(row.keys(), row, strict=True))
    data["status"] = DeploymentStatus(data["status"])
    data["mode"] = DeploymentMode(data["mode"])
    for flag in ("copy_config_files", "run_build_commands", "config_files_only"):
        data[flag] = bool(data[flag])
    return Deployment(**{name: data[name] for name in _FIELDS})


class SnapshotStore:
    """A bare git repository holding every deployment's end snapshot under its own ref.

    ``repo`` also reads the source repositories' objects (alternates added in memory),
    so diffs between a stored snapshot and a new revision run in one libgit2 diff.
    ``keep()`` makes the store self-sufficient for a tree before a ref points at it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.repo = git.Repository.init_bare(path)  # reads sources' objects too
        self._own = git.Repository(path)  # only what the store really holds
        self._sources: set[str] = set()

    def attach(self, source: git.Repository) -> None:
        if source.path not in self._sources:
            self.repo.add_alternate(source)
            self._sources.add(source.path)

    def keep(
        self, identifier: str, tree: str, changeset: Changeset, source: git.Repository | None
    ) -> None:
        """Keep ``tree`` for a deployment; objects outside ``changeset`` are already here."""
        if source is not None:
            self._own.import_packs(source)
            needed = self.repo.subtree_ids(tree, changeset.paths())
            needed.update(c.new.blob for c in changeset if c.new is not None)
            missing = self._own.missing_objects(needed)
            if missing:
                self._own.copy_objects(missing, source)
        if self._own.missing_objects([tree]):
            raise StoreError(f"snapshot {tree} for deployment {identifier} is incomplete")
        commit = self._own.commit_tree(tree, f"deployment {identifier}\n")
        self._own.set_ref(f"refs/deployments/{identifier}", commit)

    def find_tree(self, identifier: str) -> str | None:
        commit = self._own.find_ref(f"refs/deployments/{identifier}")
        return None if commit is None else self._own.tree_of(commit)

    def close(self) -> None:
        self.repo.close()
        self._own.close()
