"""The SQLite queue: claims of queued deployments, failing abandoned ones, server locks."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Collection

from ...records import GROUP, Deployment, DeploymentMode, DeploymentStatus, server_key, utcnow
from ..interfaces import LockRecord
from .database import DatabasePart
from .rows import UNFINISHED_VALUES, from_row


class SqliteDeploymentQueue(DatabasePart):
    """:class:`~deployhq_lite.store.interfaces.DeploymentQueue` in the history file."""

    def unfinished(self) -> list[str]:
        """The identifiers of deployments queued or running (any project), oldest first."""
        rows = self._db.execute(
            "SELECT identifier FROM deployments WHERE status IN (?, ?, ?) ORDER BY seq",
            UNFINISHED_VALUES,
        ).fetchall()
        return [row[0] for row in rows]

    def claim_next(
        self, owner: str, *, projects: Collection[str] | None = None
    ) -> Deployment | None:
        """Claim for ``owner`` the oldest unclaimed top-level deployment that may run now
        (of ``projects``, if given): a preview at any time; a deployment when none of its
        servers (a group's: its members') is busy: locked, held by a claimed or running
        deployment, or waited on by an older queued deployment (no overtaking)."""
        with self._db.transaction() as db:
            rows = db.execute(
                "SELECT * FROM deployments WHERE group_id IS NULL AND status IN (?, ?, ?) "
                "ORDER BY seq",
                UNFINISHED_VALUES,
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
                return dataclasses.replace(from_row(row), claimed_by=owner)
        return None

    def recover_abandoned(self, is_gone: Callable[[str], bool]) -> list[Deployment]:
        """Fail what a stopped process left unfinished, and free its locks: deployments
        claimed by a worker that is gone, and ones whose lock's owner is gone (a killed
        ``deploy``). ``is_gone(owner)`` tells whether that process stopped; a live
        worker's deployments are never touched. Returns the deployments failed."""
        failed: list[Deployment] = []
        with self._db.transaction() as db:
            claimed = db.execute(
                "SELECT * FROM deployments WHERE group_id IS NULL AND claimed_by IS NOT NULL "
                "AND status IN (?, ?, ?) ORDER BY seq",
                UNFINISHED_VALUES,
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
        with self._db.transaction() as db:
            row = _unfinished(db, identifier)
            found = db.execute(
                "SELECT group_id FROM deployments WHERE identifier = ?", (identifier,)
            ).fetchone()
            group = found[0] if found is not None and whole_group else None
            row = (_unfinished(db, group) if group else None) or row
            return [] if row is None else [_interrupt(db, row, why)]

    # -- locks ----------------------------------------------------------------------------

    def try_lock(self, lock: LockRecord, *, steal: bool = False) -> tuple[bool, LockRecord | None]:
        """Take the lock (``steal`` takes it over); return whether we hold it and the holder."""
        with self._db.transaction() as db:
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
        with self._db.transaction() as db:
            db.execute(
                "DELETE FROM locks WHERE server_key = ? AND deployment = ?",
                (server_key, deployment),
            )


def _server_keys(db: sqlite3.Connection, row: sqlite3.Row) -> set[str]:
    """The ``project/server`` lock keys a deployment takes (a group's: its members')."""
    if row["protocol_type"] != GROUP:
        return {server_key(row["project"], row["server"])}
    members = db.execute(
        "SELECT project, server FROM deployments WHERE group_id = ?", (row["identifier"],)
    )
    return {server_key(project, server) for project, server in members}


def _unfinished(db: sqlite3.Connection, identifier: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = db.execute(
        "SELECT * FROM deployments WHERE identifier = ? AND status IN (?, ?, ?)",
        (identifier, *UNFINISHED_VALUES),
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
            (row["identifier"], *UNFINISHED_VALUES),
        )
    ]
    for identifier in ids:
        db.execute(
            "UPDATE deployments SET status = ?, completed_at = ?, error = ? "
            "WHERE identifier = ? AND status IN (?, ?, ?)",
            (DeploymentStatus.FAILED.value, now, error, identifier, *UNFINISHED_VALUES),
        )
        db.execute("DELETE FROM locks WHERE deployment = ?", (identifier,))
    return dataclasses.replace(
        from_row(row), status=DeploymentStatus.FAILED, completed_at=now, error=error
    )
