"""The SQLite verifications: what ``verify`` found on a server, and the ones queued."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ...records import (
    Difference,
    DifferenceKind,
    Verification,
    VerificationStatus,
    utcnow,
)
from .database import DatabasePart

_COLUMNS = (
    "identifier, project, server, status, fast, deployment, revision, in_sync, "
    "differences, checked, method, queued_at, completed_at, error, claimed_by"
)


class SqliteVerifications(DatabasePart):
    """:class:`~deployhq_lite.store.interfaces.VerificationHistory` in the history file."""

    def add_verification(self, verification: Verification) -> Verification:
        with self._db.transaction() as db:
            cursor = db.execute(
                f"INSERT INTO verifications ({_COLUMNS}) "  # noqa: S608 - fixed column names
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _row(verification),
            )
        return replace(verification, seq=cursor.lastrowid or 0)

    def update_verification(self, verification: Verification, **changes: Any) -> Verification:
        updated = replace(verification, **changes)
        row = _row(updated)
        with self._db.transaction() as db:
            db.execute(
                "UPDATE verifications SET status = ?, fast = ?, deployment = ?, revision = ?, "
                "in_sync = ?, differences = ?, checked = ?, method = ?, completed_at = ?, "
                "error = ?, claimed_by = ? WHERE identifier = ?",
                (*row[3:11], *row[12:15], updated.identifier),
            )
        return updated

    def find_verification(self, identifier: str) -> Verification | None:
        row = self._db.execute(
            "SELECT * FROM verifications WHERE identifier = ?", (identifier,)
        ).fetchone()
        return _verification(row) if row is not None else None

    def latest_verification(
        self, project: str, server: str, *, deployment: str | None = None
    ) -> Verification | None:
        """The last completed verification of a server (of one deployment's snapshot)."""
        row = self._db.execute(
            "SELECT * FROM verifications WHERE project = ? AND server = ? AND status = ? "
            "AND (? IS NULL OR deployment = ?) ORDER BY seq DESC LIMIT 1",
            (project, server, VerificationStatus.COMPLETED.value, deployment, deployment),
        ).fetchone()
        return _verification(row) if row is not None else None

    def list_verifications(
        self, project: str, server: str, *, limit: int = 20
    ) -> list[Verification]:
        """A server's verifications, newest first (queued and failed ones too)."""
        rows = self._db.execute(
            "SELECT * FROM verifications WHERE project = ? AND server = ? "
            "ORDER BY seq DESC LIMIT ?",
            (project, server, limit),
        ).fetchall()
        return [_verification(row) for row in rows]

    def claim_verification(self, owner: str, *, projects: frozenset[str]) -> Verification | None:
        """The oldest queued verification of one of ``projects``, now ``running`` for
        ``owner`` (None: none queued)."""
        with self._db.transaction() as db:
            for row in db.execute(
                "SELECT * FROM verifications WHERE status = ? ORDER BY seq",
                (VerificationStatus.PENDING.value,),
            ).fetchall():
                if row["project"] not in projects:
                    continue
                db.execute(
                    "UPDATE verifications SET status = ?, claimed_by = ? WHERE identifier = ?",
                    (VerificationStatus.RUNNING.value, owner, row["identifier"]),
                )
                return replace(
                    _verification(row), status=VerificationStatus.RUNNING, claimed_by=owner
                )
        return None

    def recover_verifications(self, is_gone: Callable[[str], bool]) -> list[Verification]:
        """Fail the running verifications whose process is gone (a killed worker's)."""
        failed = []
        with self._db.transaction() as db:
            for row in db.execute(
                "SELECT * FROM verifications WHERE status = ?",
                (VerificationStatus.RUNNING.value,),
            ).fetchall():
                owner = row["claimed_by"] or ""
                if not is_gone(owner):
                    continue
                error = f"interrupted: its worker {owner} stopped"
                db.execute(
                    "UPDATE verifications SET status = ?, completed_at = ?, error = ? "
                    "WHERE identifier = ?",
                    (VerificationStatus.FAILED.value, utcnow(), error, row["identifier"]),
                )
                failed.append(row["identifier"])
        return [v for v in map(self.find_verification, failed) if v is not None]


def _row(v: Verification) -> tuple[Any, ...]:
    return (
        v.identifier,
        v.project,
        v.server,
        v.status.value,
        int(v.fast),
        v.deployment,
        v.revision,
        None if v.in_sync is None else int(v.in_sync),
        json.dumps([[d.path, d.kind.value, d.expected, d.found] for d in v.differences]),
        v.checked,
        v.method,
        v.queued_at,
        v.completed_at,
        v.error,
        v.claimed_by,
    )


def _verification(row: sqlite3.Row) -> Verification:
    return Verification(
        identifier=row["identifier"],
        project=row["project"],
        server=row["server"],
        status=VerificationStatus(row["status"]),
        fast=bool(row["fast"]),
        deployment=row["deployment"],
        revision=row["revision"],
        in_sync=None if row["in_sync"] is None else bool(row["in_sync"]),
        differences=tuple(
            Difference(path, DifferenceKind(kind), expected, found)
            for path, kind, expected, found in json.loads(row["differences"])
        ),
        checked=row["checked"],
        method=row["method"],
        queued_at=row["queued_at"],
        completed_at=row["completed_at"],
        error=row["error"],
        claimed_by=row["claimed_by"],
        seq=row["seq"],
    )
