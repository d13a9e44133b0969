"""The deployment queue: workers that run pending deployments from the history.

A queued deployment is a ``pending`` (or ``preview_pending``) row in the history. A
worker claims one atomically (:meth:`DeploymentQueue.claim_next`: oldest first, one deployment
per server at a time, never overtaking an older one on the same server), runs it, and
goes again; several workers, in one process or many, may share a state directory.

A worker that is killed leaves its claim behind. The next worker to start a round
fails what it left unfinished (``interrupted: its worker ... stopped``) and frees its
locks, unless the server's marker (the commit point, written last) names the
deployment: then it did complete, and the history is made to say so. Nothing is ever
left ``running`` by a process that is gone from this host.

>>> with Engine("deployhq-lite.toml") as engine:          # doctest: +SKIP
...     run_worker(engine, once=True, interval=5.0)
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import DeployHQLiteError, StoreBusyError
from .locking import owner_label, take_lock
from .log import get_logger
from .records import Deployment, Release, utcnow
from .store import LockRecord
from .store.gc import GcReport, is_due

if TYPE_CHECKING:
    from .engine import Engine

EventCallback = Callable[[str, Deployment], None]  # ("deployment.finished", deployment)
ReleaseCallback = Callable[[Release, str], None]  # (release, outcome)

_MAX_VERIFICATIONS = 100  # run in one round
RELEASES_KEY = "scheduled-releases"  # the lock row one worker holds while it runs them

log = get_logger(__name__)


def worker_label() -> str:
    """``user@host:pid/xxxxxx``: this process, and which of its workers."""
    return f"{owner_label()}/{secrets.token_hex(3)}"


def run_worker(
    engine: Engine,
    *,
    once: bool,
    interval: float,
    stop: threading.Event | None = None,
    max_jobs: int | None = None,
    on_event: EventCallback | None = None,
    on_release: ReleaseCallback | None = None,
    wake: threading.Event | None = None,
) -> int:
    """Run queued deployments and due scheduled releases, round after round, until
    ``stop`` is set, ``max_jobs`` deployments ran, or (with ``once``) nothing is left
    to claim; between rounds wait ``interval`` seconds. Returns how many ran.

    ``engine`` is used from this thread only (give a thread ``engine.fork()``);
    setting ``wake`` ends the wait between rounds early.
    ``on_event`` gets ``deployment.interrupted`` for each deployment a stopped process
    left unfinished, and ``deployment.finished`` for each one this worker ran.
    """
    stop = stop or threading.Event()
    owner = worker_label()
    projects = frozenset(engine.settings.projects)
    ran = 0
    log.info("worker.started", worker=owner, once=once)
    while not stop.is_set():
        for recovered in recover(engine):
            _notify(on_event, "deployment.interrupted", recovered)
        run_releases(engine, on_release)
        while not stop.is_set() and (max_jobs is None or ran < max_jobs):
            claimed = engine.history.claim_next(owner, projects=projects)
            if claimed is None:
                break
            ran += 1
            _notify(on_event, "deployment.finished", run_claimed(engine, claimed))
        run_verifications(engine, owner, projects, stop)
        if not stop.is_set():  # a gc of a big store takes a while: not when asked to stop
            collect_store_if_due(engine)
        if once or (max_jobs is not None and ran >= max_jobs):
            break
        if wake is None:
            stop.wait(interval)
        else:  # set when a deployment is queued (and on stop): go again at once
            wake.wait(interval)
            wake.clear()
    log.info("worker.stopped", worker=owner, deployments=ran)
    return ran


def collect_store_if_due(engine: Engine) -> GcReport | None:
    """Collect the snapshot store when it has grown by ``snapshot_store_gc_size`` since
    its last gc (see :func:`store.gc.is_due`); not now if it is in use. Never raises."""
    if not is_due(engine.snapshots.path, engine.settings.snapshot_store_gc_size):
        return None
    try:
        report = engine.collect_snapshots()
    except StoreBusyError as exc:  # queued or running deployments: a later round
        log.info("snapshots.collection_deferred", reason=str(exc))
        return None
    except DeployHQLiteError as exc:
        log.warning("snapshots.collection_failed", error=str(exc))
        return None
    return report


def run_claimed(engine: Engine, deployment: Deployment) -> Deployment:
    """Run (or preview) a deployment this worker claimed; return it as it ended."""
    return engine.run_claimed(deployment)


def recover(engine: Engine) -> list[Deployment]:
    """Fail what stopped processes on this host left unfinished (a deployment whose
    marker is on its server completed, and is recorded so); returns them as they are."""
    return engine.recover_abandoned()


def run_verifications(
    engine: Engine, owner: str, projects: frozenset[str], stop: threading.Event
) -> int:
    """Run the queued verifications (after the deployments: a verify queued behind a
    deploy checks what it put there); how many ran."""
    ran = 0
    for _ in range(_MAX_VERIFICATIONS):  # bounded: the next round takes the rest
        if stop.is_set():
            break
        claimed = engine.history.claim_verification(owner, projects=projects)
        if claimed is None:
            break
        engine.run_claimed_verification(claimed)
        ran += 1
    return ran


def run_releases(engine: Engine, on_release: ReleaseCallback | None = None) -> None:
    """Deploy the scheduled releases that are due, unless another worker is doing it."""
    mine = LockRecord(RELEASES_KEY, RELEASES_KEY, worker_label(), utcnow())
    if not take_lock(engine.history, mine, break_stale=True)[0]:
        return  # another worker is running them
    try:
        for release, outcome in engine.run_due_releases():
            log.info("release.scheduled_run", release=release.uid, outcome=outcome)
            if on_release is not None:
                on_release(release, outcome)
    finally:
        engine.history.unlock(RELEASES_KEY, RELEASES_KEY)


def _notify(on_event: EventCallback | None, event: str, deployment: Deployment) -> None:
    if on_event is not None:
        on_event(event, deployment)
