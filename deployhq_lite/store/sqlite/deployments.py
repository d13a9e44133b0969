"""The SQLite deployment history: deployments, their commands' results, per-file outcomes."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ...changeset import Changeset
from ...names import escape_path
from ...records import (
    ChangeKind,
    CommandResult,
    Deployment,
    DeploymentMode,
    DeploymentStatus,
    FileOutcome,
    OutcomeStatus,
)
from .database import DatabasePart
from .rows import COLUMNS, deployment_values, from_row, to_sql


class SqliteDeploymentHistory(DatabasePart):
    """:class:`~deployhq_lite.store.interfaces.DeploymentHistory` in the history file."""

    def add(self, deployment: Deployment) -> Deployment:
        values = deployment_values(deployment)
        marks = ", ".join("?" * len(COLUMNS))
        with self._db.transaction() as db:
            cur = db.execute(
                f"INSERT INTO deployments ({', '.join(COLUMNS)}) VALUES ({marks})",  # noqa: S608
                values,
            )
        return dataclasses.replace(deployment, seq=int(cur.lastrowid or 0))

    def update(self, deployment: Deployment, **changes: Any) -> Deployment:
        updated = dataclasses.replace(deployment, **changes)
        sets = ", ".join(f"{name} = ?" for name in changes)
        with self._db.transaction() as db:
            db.execute(
                f"UPDATE deployments SET {sets} WHERE identifier = ?",  # noqa: S608
                [*(to_sql(v) for v in changes.values()), deployment.identifier],
            )
        return updated

    def find(self, identifier: str) -> Deployment | None:
        row = self._db.execute(
            "SELECT * FROM deployments WHERE identifier = ?", (identifier,)
        ).fetchone()
        return None if row is None else from_row(row)

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
        return [from_row(row) for row in rows]

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
        return [from_row(row) for row in rows]

    def members(self, group: str) -> list[Deployment]:
        """The per-server deployments of group deployment ``group``, in server order."""
        rows = self._db.execute(
            "SELECT * FROM deployments WHERE group_id = ? ORDER BY seq", (group,)
        ).fetchall()
        return [from_row(row) for row in rows]

    def find_latest_completed(self, project: str, server: str) -> Deployment | None:
        """The deployment whose files are on the server: latest completed, not a preview."""
        row = self._db.execute(
            "SELECT * FROM deployments WHERE project = ? AND server = ? AND status = ? "
            "AND mode = ? ORDER BY completed_at DESC, seq DESC LIMIT 1",
            (project, server, DeploymentStatus.COMPLETED.value, DeploymentMode.QUEUE.value),
        ).fetchone()
        return None if row is None else from_row(row)

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
        return [from_row(row) for row in rows]

    # -- command results -----------------------------------------------------------------

    def add_command_result(self, identifier: str, result: CommandResult) -> None:
        with self._db.transaction() as db:
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
        with self._db.transaction() as db:
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
