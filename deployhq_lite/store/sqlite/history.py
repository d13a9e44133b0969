"""The SQLite history: one file, one connection, shared by each part explicitly."""

from __future__ import annotations

from pathlib import Path

from .captures import SqlitePublishCaptures
from .database import Database
from .deployments import SqliteDeploymentHistory
from .queue import SqliteDeploymentQueue
from .releases import ReleaseStore
from .verifications import SqliteVerifications


class History(
    SqliteDeploymentHistory, SqliteDeploymentQueue, SqlitePublishCaptures, SqliteVerifications
):
    """:class:`~deployhq_lite.store.interfaces.HistoryStore` in one SQLite file:
    deployments, the queue and locks, publish events, verifications; ``releases`` on the
    same connection."""

    def __init__(self, path: Path) -> None:
        database = Database(path)
        super().__init__(database)
        self.path = path
        self.releases = ReleaseStore(database)

    def close(self) -> None:
        self._db.close()
