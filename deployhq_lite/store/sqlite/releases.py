"""The SQLite release history: releases, their items, deploys and captures."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from ...records import DeploymentStatus, ItemAction, Release, ReleaseItem
from .database import DatabasePart


class ReleaseStore(DatabasePart):
    """:class:`~deployhq_lite.store.interfaces.ReleaseHistory` in the history file.

    A deploy or capture counts once its deployment completed, like publish events."""

    def add(self, release: Release) -> Release:
        with self._db.transaction() as db:
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
        with self._db.transaction() as db:
            db.execute("DELETE FROM release_items WHERE release = ?", (uid,))
            self._write_items(db, uid, items)

    def update(self, uid: str, **changes: Any) -> None:
        allowed = {"scheduled_at", "schedule", "schedule_status", "deleted_at"}
        if not changes.keys() <= allowed:
            raise ValueError(f"cannot change {sorted(changes.keys() - allowed)}")
        sets = ", ".join(f"{name} = ?" for name in changes)
        with self._db.transaction() as db:
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
        with self._db.transaction() as db:
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
