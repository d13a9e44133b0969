"""State: the history (deployments, the queue and locks, publish events, releases) and
the snapshot store. The only package that writes SQL or imports a database driver.

- :mod:`.interfaces`: one ``typing.Protocol`` per job (history, queue, captures,
  releases, snapshots); callers type against these.
- :mod:`.sqlite`: the SQLite implementation, ``<state_dir>/history.sqlite3`` (WAL).
- :mod:`.snapshots`: the git snapshot store, ``<state_dir>/snapshots.git`` (one ref per
  deployment: ``refs/deployments/<identifier>``); :mod:`.gc` collects it.

The names below are the package's API.
"""

from .interfaces import (
    DeploymentHistory,
    DeploymentQueue,
    HistoryStore,
    LockRecord,
    PublishCaptures,
    ReleaseHistory,
    SnapshotStorage,
    VerificationHistory,
)
from .snapshots import SnapshotStore
from .sqlite import History, ReleaseStore

__all__ = [
    "DeploymentHistory",
    "DeploymentQueue",
    "History",
    "HistoryStore",
    "LockRecord",
    "PublishCaptures",
    "ReleaseHistory",
    "ReleaseStore",
    "SnapshotStorage",
    "SnapshotStore",
    "VerificationHistory",
]
