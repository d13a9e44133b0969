"""One deployment at a time per server: a lock row with owner and time in the history."""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from .errors import DeploymentLockedError
from .log import get_logger
from .records import utcnow
from .store import DeploymentQueue, LockRecord

log = get_logger(__name__)


def owner_label() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


def _local_pid(owner: str) -> int | None:
    """The process id of an owner (``user@host:pid``, maybe followed by ``/name``) that
    ran on this host (None: another host's, or not a label we made)."""
    host_pid = owner.rpartition("@")[2]
    host, _, pid = host_pid.partition("/")[0].rpartition(":")
    return int(pid) if host == socket.gethostname() and pid.isdigit() else None


def looks_stale(owner: str) -> bool:
    """True when the owner (``user@host:pid``, maybe followed by ``/name``) ran on this
    host and its process is gone."""
    pid = _local_pid(owner)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def looks_alive(owner: str) -> bool:
    """True when the owner runs on this host and its process is still there."""
    return _local_pid(owner) is not None and not looks_stale(owner)


def take_lock(
    history: DeploymentQueue, mine: LockRecord, *, steal: bool = False, break_stale: bool = False
) -> tuple[bool, LockRecord | None]:
    """(whether ``mine`` is now held, the holder it met or pushed aside). ``break_stale``
    takes over a lock whose owner process on this host is gone."""
    acquired, holder = history.try_lock(mine, steal=steal)
    if not acquired and break_stale and holder is not None and looks_stale(holder.owner):
        acquired, holder = history.try_lock(mine, steal=True)
    return acquired, holder


def check_unlocked(history: DeploymentQueue, server_keys: Iterable[str]) -> None:
    """Refuse as :func:`server_lock` would when one of the servers is locked now: run
    before a deployment is recorded, a refused one leaves no history row."""
    for key in server_keys:
        holder = history.find_lock(key)
        if holder is not None:
            raise _locked(holder)


def _locked(holder: LockRecord) -> DeploymentLockedError:
    stale = " (its process is gone: the lock looks stale)" if looks_stale(holder.owner) else ""
    return DeploymentLockedError(
        f"server {holder.server_key} is locked by deployment {holder.deployment} "
        f"({holder.owner}) since {holder.acquired_at}{stale}; if that deployment is "
        "no longer running, re-run with --break-lock"
    )


@contextmanager
def server_lock(
    history: DeploymentQueue,
    server_key: str,
    deployment: str,
    *,
    break_lock: bool = False,
    break_stale: bool = False,
) -> Iterator[LockRecord | None]:
    """Hold the server's lock for the block; yields the holder that was pushed aside, if any.

    ``break_stale`` takes over a lock whose owner process on this host is gone.
    """
    mine = LockRecord(server_key, deployment, owner_label(), utcnow())
    acquired, holder = take_lock(history, mine, steal=break_lock, break_stale=break_stale)
    if not acquired:
        assert holder is not None
        raise _locked(holder)
    if holder is not None:
        log.warning(
            "lock.broken",
            server=server_key,
            previous_deployment=holder.deployment,
            previous_owner=holder.owner,
            since=holder.acquired_at,
        )
    log.debug("lock.acquired", server=server_key, deployment=deployment)
    try:
        yield holder
    finally:
        history.unlock(server_key, deployment)
        log.debug("lock.released", server=server_key, deployment=deployment)
