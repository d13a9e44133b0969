"""State: the history database (SQLite) and the snapshot store (a bare git repository).

The only module that writes SQL. Both live in the state directory::

    <state_dir>/history.sqlite3     deployments, per-file outcomes, locks (WAL)
    <state_dir>/snapshots.git       one ref per deployment: refs/deployments/<identifier>
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import git
from .changeset import Changeset
from .errors import StoreError
from .names import escape_path
from .records import (
    GROUP,
    UNFINISHED,
    ChangeKind,
    CommandResult,
    Deployment,
    DeploymentMode,
    DeploymentStatus,
    FileOutcome,
    ItemAction,
    OutcomeStatus,
    PublishEvent,
    Release,
    ReleaseItem,
    utcnow,
)
from .storegc import store_lock

SCHEMA_VERSION = 4  # 2: stacks (publish events, releases); 3: server groups; 4: queue

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
CREATE TABLE IF NOT EXISTS locks (
    server_key TEXT PRIMARY KEY,
    deployment TEXT NOT NULL,
    owner TEXT NOT NULL,
    acquired_at TEXT NOT NULL
);
"""

_FIELDS = [f.name for f in dataclasses.fields(Deployment)]
_UNFINISHED = tuple(sorted(status.value for status in UNFINISHED))  # for "IN (?, ?, ?)"
_COLUMNS = [name if name != "group" else "group_id" for name in _FIELDS if name != "seq"]


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
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open history database {path}: {exc}") from None

    def _migrate(self) -> None:
        """Bring a database made by an older version up to this schema (additive only)."""
        self._db.execute("BEGIN IMMEDIATE")  # two processes may open an old file at once
        try:
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(deployments)")}
            if "group_id" not in columns:  # made by schema version 2
                self._db.execute("ALTER TABLE deployments ADD COLUMN group_id TEXT")
            if "claimed_by" not in columns:  # made by schema version 3
                self._db.execute("ALTER TABLE deployments ADD COLUMN claimed_by TEXT")
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS deployments_by_group ON deployments (group_id, seq)"
            )
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS deployments_by_status ON deployments (status, seq)"
            )
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

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
        values = [_to_sql(getattr(deployment, name)) for name in _FIELDS if name != "seq"]
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
        self,
        project: str,
        server: str | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
        status: DeploymentStatus | None = None,
    ) -> list[Deployment]:
        """Newest first: one server's (or group's) deployments, or, without ``server``,
        the project's top-level ones (a group deployment, not its per-server parts); only
        those in ``status`` if given."""
        where, args = _listing(project, server, status)
        rows = self._db.execute(
            f"SELECT * FROM deployments WHERE {where} ORDER BY seq DESC LIMIT ? OFFSET ?",  # noqa: S608
            [*args, limit, offset],
        ).fetchall()
        return [_from_row(row) for row in rows]

    def count(
        self, project: str, server: str | None = None, *, status: DeploymentStatus | None = None
    ) -> int:
        """How many deployments :meth:`query` pages through."""
        where, args = _listing(project, server, status)
        sql = f"SELECT COUNT(*) FROM deployments WHERE {where}"  # noqa: S608
        return int(self._db.execute(sql, args).fetchone()[0])

    def find_prefix(self, project: str, prefix: str) -> list[Deployment]:
        """Up to two deployments of ``project`` whose identifier starts with ``prefix``."""
        rows = self._db.execute(
            "SELECT * FROM deployments WHERE project = ? AND identifier >= ? "
            "AND identifier < ? ORDER BY identifier LIMIT 2",
            (project, prefix, prefix + "\uffff"),
        ).fetchall()
        return [_from_row(row) for row in rows]

    def members(self, group: str) -> list[Deployment]:
        """The per-server deployments of group deployment ``group``, in server order."""
        rows = self._db.execute(
            "SELECT * FROM deployments WHERE group_id = ? ORDER BY seq", (group,)
        ).fetchall()
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

    def unfinished(self) -> list[str]:
        """The identifiers of deployments queued or running (any project), oldest first."""
        rows = self._db.execute(
            "SELECT identifier FROM deployments WHERE status IN (?, ?, ?) ORDER BY seq",
            _UNFINISHED,
        ).fetchall()
        return [row[0] for row in rows]

    # -- the queue (see queue.py) ----------------------------------------------------------

    def claim_next(
        self, owner: str, *, projects: Collection[str] | None = None
    ) -> Deployment | None:
        """Claim for ``owner`` the oldest unclaimed top-level deployment that may run now
        (of ``projects``, if given): a preview at any time; a deployment when none of its
        servers (a group's: its members') is busy: locked, held by a claimed or running
        deployment, or waited on by an older queued deployment (no overtaking)."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT * FROM deployments WHERE group_id IS NULL AND status IN (?, ?, ?) "
                "ORDER BY seq",
                _UNFINISHED,
            ).fetchall()
            busy = {row[0] for row in db.execute("SELECT server_key FROM locks")}
            waiting = []
            for row in rows:
                if row["claimed_by"] is None:  # a running one not claimed holds a lock
                    waiting.append(row)
                elif row["mode"] == DeploymentMode.QUEUE:
                    busy |= _server_keys(db, row)
            for row in (r for r in waiting if r["status"] != DeploymentStatus.RUNNING):
                keys = _server_keys(db, row)
                if not keys:  # a group deployment whose members are not added yet
                    continue
                if row["mode"] != DeploymentMode.QUEUE:
                    keys = set()  # a preview touches no server
                if keys & busy or (projects is not None and row["project"] not in projects):
                    busy |= keys
                    continue
                db.execute(
                    "UPDATE deployments SET claimed_by = ? WHERE identifier = ?",
                    (owner, row["identifier"]),
                )
                return dataclasses.replace(_from_row(row), claimed_by=owner)
        return None

    def recover_abandoned(self, is_gone: Callable[[str], bool]) -> list[Deployment]:
        """Fail what a stopped process left unfinished, and free its locks: deployments
        claimed by a worker that is gone, and ones whose lock's owner is gone (a killed
        ``deploy``). ``is_gone(owner)`` tells whether that process stopped; a live
        worker's deployments are never touched. Returns the deployments failed."""
        failed: list[Deployment] = []
        with self._transaction() as db:
            claimed = db.execute(
                "SELECT * FROM deployments WHERE group_id IS NULL AND claimed_by IS NOT NULL "
                "AND status IN (?, ?, ?) ORDER BY seq",
                _UNFINISHED,
            ).fetchall()
            for row in claimed:
                if is_gone(row["claimed_by"]):
                    failed.append(_interrupt(db, row, f"its worker {row['claimed_by']} stopped"))
            for lock in db.execute("SELECT * FROM locks").fetchall():
                if not is_gone(lock["owner"]):
                    continue
                db.execute("DELETE FROM locks WHERE server_key = ?", (lock["server_key"],))
                row = _unfinished(db, lock["deployment"])
                top = _unfinished(db, row["group_id"]) if row and row["group_id"] else None
                row = top or row
                if row is None or (row["claimed_by"] and not is_gone(row["claimed_by"])):
                    continue
                failed.append(_interrupt(db, row, f"its process {lock['owner']} stopped"))
        return failed

    def interrupt(self, identifier: str, why: str, *, whole_group: bool) -> list[Deployment]:
        """Fail deployment ``identifier`` if it is unfinished (any status in
        ``records.UNFINISHED``: its process stopped before or while running it) and drop
        its locks; with ``whole_group``, a member's unfinished group deployment and its
        other unfinished members too. Returns the deployment failed (the group's)."""
        with self._transaction() as db:
            row = _unfinished(db, identifier)
            found = db.execute(
                "SELECT group_id FROM deployments WHERE identifier = ?", (identifier,)
            ).fetchone()
            group = found[0] if found is not None and whole_group else None
            row = (_unfinished(db, group) if group else None) or row
            return [] if row is None else [_interrupt(db, row, why)]

    # -- publish events (stacks) ---------------------------------------------------------

    def add_publish_events(self, deployment: str, events: Sequence[PublishEvent]) -> None:
        """Events a stack deployment makes; they count once the deployment completed."""
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO publish_events (stack, environment, locale, uid, version, "
                "deployment, user, release, origin, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        e.stack,
                        e.environment,
                        e.locale,
                        e.uid,
                        e.version,
                        deployment,
                        e.user,
                        e.release,
                        e.origin,
                        e.created_at,
                    )
                    for e in events
                ),
            )

    def published(self, stack: str, environment: str) -> dict[tuple[str, str], PublishEvent]:
        """The latest completed event per (locale, uid): what the environment publishes
        (an event with version None is an unpublish)."""
        rows = self._db.execute(
            "SELECT e.* FROM publish_events e JOIN deployments d "
            "ON d.identifier = e.deployment AND d.status = ? "
            "WHERE e.stack = ? AND e.environment = ? ORDER BY e.seq",
            (DeploymentStatus.COMPLETED.value, stack, environment),
        ).fetchall()
        latest: dict[tuple[str, str], PublishEvent] = {}
        for row in rows:
            event = _event(row)
            latest[(event.locale, event.uid)] = event
        return latest

    def published_versions_of(
        self, stack: str, environment: str, locale: str, uid: str
    ) -> list[int]:
        """Every version of a document ever published (and completed) in a locale."""
        rows = self._db.execute(
            "SELECT DISTINCT e.version FROM publish_events e JOIN deployments d "
            "ON d.identifier = e.deployment AND d.status = ? WHERE e.stack = ? "
            "AND e.environment = ? AND e.locale = ? AND e.uid = ? AND e.version IS NOT NULL "
            "ORDER BY e.version",
            (DeploymentStatus.COMPLETED.value, stack, environment, locale, uid),
        ).fetchall()
        return [int(row[0]) for row in rows]

    # -- command results -----------------------------------------------------------------

    def add_command_result(self, identifier: str, result: CommandResult) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO command_results VALUES ((?), "
                "(SELECT COUNT(*) FROM command_results WHERE deployment = ?), ?, ?, ?, ?, ?, ?)",
                (
                    identifier,
                    identifier,
                    result.command,
                    result.when,
                    result.exit_status,
                    result.output,
                    result.duration,
                    int(result.timed_out),
                ),
            )

    def command_results(self, identifier: str) -> list[CommandResult]:
        rows = self._db.execute(
            "SELECT * FROM command_results WHERE deployment = ? ORDER BY seq", (identifier,)
        ).fetchall()
        return [
            CommandResult(
                r["command"],
                r["phase"],
                r["exit_status"],
                r["output"],
                r["duration"],
                bool(r["timed_out"]),
            )
            for r in rows
        ]

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
                    (identifier, i, escape_path(c.path), c.kind.value, status.value)
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
        return [FileOutcome(p, ChangeKind(c), OutcomeStatus(s), e) for p, c, s, e in rows]

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

    def find_lock(self, server_key: str) -> LockRecord | None:
        row = self._db.execute("SELECT * FROM locks WHERE server_key = ?", (server_key,)).fetchone()
        return None if row is None else LockRecord(*row)

    def unlock(self, server_key: str, deployment: str) -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM locks WHERE server_key = ? AND deployment = ?",
                (server_key, deployment),
            )


def _listing(
    project: str, server: str | None, status: DeploymentStatus | None = None
) -> tuple[str, list[Any]]:
    """The WHERE clause (fixed text) and arguments of a project's or a server's list."""
    if server is None:
        where, args = "project = ? AND group_id IS NULL", [project]
    else:
        where, args = "project = ? AND server = ?", [project, server]
    if status is not None:
        where, args = f"{where} AND status = ?", [*args, status.value]
    return where, args


def _to_sql(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


def _from_row(row: sqlite3.Row) -> Deployment:
    data = dict(zip(row.keys(), row, strict=True))
    data["group"] = data.pop("group_id")
    data["status"] = DeploymentStatus(data["status"])
    data["mode"] = DeploymentMode(data["mode"])
    for flag in ("copy_config_files", "run_build_commands", "config_files_only"):
        data[flag] = bool(data[flag])
    return Deployment(**{name: data[name] for name in _FIELDS})


def _server_keys(db: sqlite3.Connection, row: sqlite3.Row) -> set[str]:
    """The ``project/server`` lock keys a deployment takes (a group's: its members')."""
    if row["protocol_type"] != GROUP:
        return {f"{row['project']}/{row['server']}"}
    members = db.execute(
        "SELECT project, server FROM deployments WHERE group_id = ?", (row["identifier"],)
    )
    return {f"{project}/{server}" for project, server in members}


def _unfinished(db: sqlite3.Connection, identifier: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = db.execute(
        "SELECT * FROM deployments WHERE identifier = ? AND status IN (?, ?, ?)",
        (identifier, *_UNFINISHED),
    ).fetchone()
    return row


def _interrupt(db: sqlite3.Connection, row: sqlite3.Row, why: str) -> Deployment:
    """Fail a deployment (and a group's unfinished members) whose process stopped, and
    drop the locks they hold."""
    error = f"interrupted: {why}; deploy again to converge"
    now = utcnow()
    ids = [row["identifier"]]
    ids += [
        m[0]
        for m in db.execute(
            "SELECT identifier FROM deployments WHERE group_id = ? AND status IN (?, ?, ?)",
            (row["identifier"], *_UNFINISHED),
        )
    ]
    for identifier in ids:
        db.execute(
            "UPDATE deployments SET status = ?, completed_at = ?, error = ? "
            "WHERE identifier = ? AND status IN (?, ?, ?)",
            (DeploymentStatus.FAILED.value, now, error, identifier, *_UNFINISHED),
        )
        db.execute("DELETE FROM locks WHERE deployment = ?", (identifier,))
    return dataclasses.replace(
        _from_row(row), status=DeploymentStatus.FAILED, completed_at=now, error=error
    )


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
        """Keep ``tree`` for a deployment; objects outside ``changeset`` are already here.

        Holds the store lock shared: a gc must not prune what is copied before the ref
        reaches it (see :mod:`storegc`)."""
        with store_lock(self.path, exclusive=False):
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


def _event(row: sqlite3.Row) -> PublishEvent:
    return PublishEvent(
        stack=row["stack"],
        environment=row["environment"],
        locale=row["locale"],
        uid=row["uid"],
        version=row["version"],
        user=row["user"],
        release=row["release"],
        origin=row["origin"],
        created_at=row["created_at"],
        seq=row["seq"],
        deployment=row["deployment"],
    )


class ReleaseStore:
    """Releases, their items, deploys and captures (in the history database).

    A deploy or capture counts once its deployment completed, like publish events."""

    def __init__(self, history: History) -> None:
        self._h = history
        self._db = history._db

    def add(self, release: Release) -> Release:
        with self._h._transaction() as db:
            db.execute(
                "INSERT INTO releases (uid, stack, name, creator, kind, rollback_of, "
                "created_at, scheduled_at, schedule, schedule_status, deleted_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    release.uid,
                    release.stack,
                    release.name,
                    release.creator,
                    release.kind,
                    release.rollback_of,
                    release.created_at,
                    release.scheduled_at,
                    release.schedule,
                    release.schedule_status,
                    release.deleted_at,
                ),
            )
            self._write_items(db, release.uid, release.items)
        return release

    def set_items(self, uid: str, items: Sequence[ReleaseItem]) -> None:
        with self._h._transaction() as db:
            db.execute("DELETE FROM release_items WHERE release = ?", (uid,))
            self._write_items(db, uid, items)

    def update(self, uid: str, **changes: Any) -> None:
        allowed = {"scheduled_at", "schedule", "schedule_status", "deleted_at"}
        if not changes.keys() <= allowed:
            raise ValueError(f"cannot change {sorted(changes.keys() - allowed)}")
        sets = ", ".join(f"{name} = ?" for name in changes)
        with self._h._transaction() as db:
            db.execute(
                f"UPDATE releases SET {sets} WHERE uid = ?",  # noqa: S608 - fixed names
                [*changes.values(), uid],
            )

    def find(self, uid: str) -> Release | None:
        row = self._db.execute("SELECT * FROM releases WHERE uid = ?", (uid,)).fetchone()
        return None if row is None else self._release(row)

    def query(self, stack: str, *, deleted: bool = False) -> list[Release]:
        sql = "SELECT * FROM releases WHERE stack = ?"
        if not deleted:
            sql += " AND deleted_at IS NULL"
        rows = self._db.execute(sql + " ORDER BY seq", (stack,)).fetchall()
        return [self._release(row) for row in rows]

    def rollbacks_of(self, original: str, user: str) -> list[Release]:
        rows = self._db.execute(
            "SELECT * FROM releases WHERE rollback_of = ? AND creator = ? ORDER BY seq",
            (original, user),
        ).fetchall()
        return [self._release(row) for row in rows]

    def due(self, now: str) -> list[Release]:
        rows = self._db.execute(
            "SELECT * FROM releases WHERE schedule_status = 'pending' AND scheduled_at <= ? "
            "AND deleted_at IS NULL ORDER BY scheduled_at, seq",
            (now,),
        ).fetchall()
        return [self._release(row) for row in rows]

    def record_deploy(
        self,
        release: str,
        user: str,
        environment: str,
        deployment: str,
        captures: Sequence[tuple[str, str, int | None]],
    ) -> None:
        """A deploy of a release and the state it found, per (locale, uid) -> version."""
        with self._h._transaction() as db:
            db.execute(
                "INSERT INTO release_deploys (release, user, environment, deployment) "
                "VALUES (?, ?, ?, ?)",
                (release, user, environment, deployment),
            )
            db.executemany(
                "INSERT INTO release_captures (release, user, environment, locale, uid, "
                "before_version, deployment) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (release, user, environment, locale, uid, version, deployment)
                    for locale, uid, version in captures
                ),
            )

    def completed_deploys(
        self, release: str, user: str | None = None, since: str | None = None
    ) -> list[tuple[str, str, str]]:
        """(user, environment, completed_at) of the release's completed deploys."""
        sql = (
            "SELECT r.user, r.environment, d.completed_at FROM release_deploys r "
            "JOIN deployments d ON d.identifier = r.deployment AND d.status = ? "
            "WHERE r.release = ?"
        )
        args: list[Any] = [DeploymentStatus.COMPLETED.value, release]
        if user is not None:
            sql += " AND r.user = ?"
            args.append(user)
        if since is not None:
            sql += " AND d.completed_at > ?"
            args.append(since)
        rows = self._db.execute(sql + " ORDER BY r.seq", args).fetchall()
        return [(row[0], row[1], row[2]) for row in rows]

    def captures(
        self, release: str, user: str, environment: str
    ) -> dict[tuple[str, str], int | None]:
        """The first completed capture per (locale, uid): the state before the first
        deploy of the release by ``user`` in ``environment``."""
        rows = self._db.execute(
            "SELECT c.locale, c.uid, c.before_version FROM release_captures c "
            "JOIN deployments d ON d.identifier = c.deployment AND d.status = ? "
            "WHERE c.release = ? AND c.user = ? AND c.environment = ? ORDER BY c.seq",
            (DeploymentStatus.COMPLETED.value, release, user, environment),
        ).fetchall()
        out: dict[tuple[str, str], int | None] = {}
        for locale, uid, version in rows:
            out.setdefault((locale, uid), version)
        return out

    @staticmethod
    def _write_items(db: sqlite3.Connection, uid: str, items: Sequence[ReleaseItem]) -> None:
        db.executemany(
            "INSERT INTO release_items VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                (uid, i, it.uid, it.version, it.action, json.dumps(it.locales), int(it.reference))
                for i, it in enumerate(items)
            ),
        )

    def _release(self, row: sqlite3.Row) -> Release:
        items = tuple(
            ReleaseItem(
                uid=r["uid"],
                version=r["version"],
                action=ItemAction(r["action"]),
                locales=tuple(json.loads(r["locales"])),
                reference=bool(r["reference"]),
            )
            for r in self._db.execute(
                "SELECT * FROM release_items WHERE release = ? ORDER BY seq", (row["uid"],)
            )
        )
        fields = {k: row[k] for k in row.keys() if k != "seq"}  # noqa: SIM118 - sqlite3.Row
        return Release(**fields, items=items, deployed=bool(self.completed_deploys(row["uid"])))
