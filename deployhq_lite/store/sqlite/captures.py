"""The SQLite publish captures: the publish events stack deployments make."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ...records import DeploymentStatus, PublishEvent
from .database import DatabasePart


class SqlitePublishCaptures(DatabasePart):
    """:class:`~deployhq_lite.store.interfaces.PublishCaptures` in the history file.

    An event counts once its deployment completed."""

    def add_publish_events(self, deployment: str, events: Sequence[PublishEvent]) -> None:
        """Events a stack deployment makes; they count once the deployment completed."""
        with self._db.transaction() as db:
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
