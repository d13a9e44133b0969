"""The DeployHQ model: deployments, previews and rollbacks, and their rules.

A deployment's start is what the server holds: the end snapshot of the latest
completed deployment there (none: a full upload). A rollback of D is a new
deployment from that start to D's stored end snapshot. Deployments that failed or
were interrupted since the last completed one left some paths in between; their
paths are rewritten to the target state too, so every run converges.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .changeset import (
    ChangeKind,
    Changeset,
    Entry,
    EntryKind,
    FileChange,
    refuse_writes_under_symlinks,
)
from .errors import (
    DeployHQLiteError,
    DeploymentError,
    MarkerMismatchError,
    PathOutsideRootError,
    RollbackNotAllowedError,
    StoreError,
)
from .locking import server_lock
from .log import get_logger
from .records import (
    Deployment,
    DeploymentMode,
    DeploymentStatus,
    OutcomeStatus,
    Preview,
    utcnow,
)
from .snapshots import EMPTY, Snapshot, TreeSnapshot, changes_between
from .transports import Transport, Upload

if TYPE_CHECKING:
    from .engine import Engine

ROLLBACK_CONFIG_FILES = "Cannot rollback a config files deployment"
ROLLBACK_NO_SERVER = "Deployment has no parent server"
ROLLBACK_LATEST = "Cannot rollback the latest deployment"
ROLLBACK_IMPOSSIBLE = "Deployment cannot be rolled back"

MARKER_PATH = ".deployhq-lite/revision"

ProgressCallback = Callable[[int, int, str], None]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Plan:
    start: Deployment | None
    end: Snapshot
    changeset: Changeset
    uncertain: frozenset[str] = frozenset()  # paths unfinished deployments may have left
    prune: tuple[str, ...] = ()  # directories found where files must go


# -- creating deployments -------------------------------------------------------------------


def create_deployment(
    engine: Engine,
    project: str,
    server: str,
    *,
    revision: str | None = None,
    mode: DeploymentMode = DeploymentMode.QUEUE,
) -> Deployment:
    """Record a new deployment of ``revision`` (default: the branch head), not yet run."""
    config = engine.settings.get_project(project)
    engine.settings.get_server(project, server)
    repo = engine.source(project)
    end_revision = repo.resolve(revision or config.branch)
    return _new(
        engine,
        project,
        server,
        end_revision=end_revision,
        end_tree=repo.tree_of(end_revision),
        branch=config.branch,
        mode=mode,
    )


def create_rollback(
    engine: Engine,
    project: str,
    identifier: str,
    *,
    mode: DeploymentMode = DeploymentMode.QUEUE,
    copy_config_files: bool = True,
    run_build_commands: bool = True,
) -> Deployment:
    """Record a rollback to deployment ``identifier`` after checking DeployHQ's rules."""
    target = engine.get_deployment(project, identifier)
    end_tree = check_rollback(engine, target)
    return _new(
        engine,
        project,
        target.server,
        end_revision=target.end_revision,
        end_tree=end_tree,
        branch=target.branch,
        mode=mode,
        rollback_of=target.identifier,
        copy_config_files=copy_config_files,
        run_build_commands=run_build_commands,
    )


def check_rollback(engine: Engine, target: Deployment) -> str:
    """Refuse with DeployHQ's exact messages; return the target's stored end tree."""
    if target.config_files_only:
        raise RollbackNotAllowedError(ROLLBACK_CONFIG_FILES)
    if engine.settings.find_server(target.project, target.server) is None:
        raise RollbackNotAllowedError(ROLLBACK_NO_SERVER)
    latest = engine.history.find_latest_completed(target.project, target.server)
    if latest is not None and latest.identifier == target.identifier:
        raise RollbackNotAllowedError(ROLLBACK_LATEST)
    tree = engine.snapshots.find_tree(target.identifier)
    if (
        target.status is not DeploymentStatus.COMPLETED
        or target.is_preview
        or latest is None
        or tree is None
    ):
        raise RollbackNotAllowedError(ROLLBACK_IMPOSSIBLE)
    return tree


def _new(
    engine: Engine,
    project: str,
    server: str,
    *,
    end_revision: str,
    end_tree: str,
    branch: str,
    mode: DeploymentMode,
    rollback_of: str | None = None,
    copy_config_files: bool = True,
    run_build_commands: bool = True,
) -> Deployment:
    settings = engine.settings
    project_config = settings.get_project(project)
    server_config = settings.get_server(project, server)
    latest = engine.history.find_latest_completed(project, server)
    deployment = Deployment(
        identifier=str(uuid.uuid4()),
        project=project,
        project_name=project_config.name,
        server=server,
        server_name=server_config.name,
        server_identifier=engine.server_identifier(project, server),
        protocol_type=server_config.protocol_type,
        start_revision=latest.end_revision if latest else None,
        start_deployment=latest.identifier if latest else None,
        end_revision=end_revision,
        end_tree=end_tree,
        branch=branch,
        status=(
            DeploymentStatus.PREVIEW_PENDING
            if mode is DeploymentMode.PREVIEW
            else DeploymentStatus.PENDING
        ),
        mode=mode,
        copy_config_files=copy_config_files,
        run_build_commands=run_build_commands,
        rollback_of=rollback_of,
    )
    deployment = engine.history.add(deployment)
    log.info(
        "deployment.created",
        deployment=deployment.identifier,
        project=project,
        server=server,
        mode=mode.value,
        end_revision=end_revision,
        rollback_of=rollback_of,
    )
    return deployment


# -- planning ---------------------------------------------------------------------------------


def plan(engine: Engine, deployment: Deployment) -> Plan:
    """What running ``deployment`` now would change on its server.

    Paths that deployments which failed (or were cut off) since the last completed one
    may have touched are *uncertain*: the server holds the old state, the new one, or
    half of a type change. Here they are planned as rewrites to the target; at run time
    :func:`settle` looks at what the server really holds at those paths.
    """
    history, store = engine.history, engine.snapshots
    latest = history.find_latest_completed(deployment.project, deployment.server)
    start = _stored_snapshot(engine, latest) if latest else EMPTY
    assert deployment.end_tree is not None
    end = TreeSnapshot(store.repo, deployment.end_tree)
    changeset = changes_between(start, end)
    _refuse_symlinked_writes(changeset, start, end)
    unfinished = [
        d
        for d in history.unfinished_since(
            deployment.project, deployment.server, latest.seq if latest else 0
        )
        if d.identifier != deployment.identifier
    ]
    uncertain = _touched_by(engine, unfinished)
    if uncertain:
        kept = [c for c in changeset if c.path not in uncertain]
        guessed = [_rewrite(p, start.get(p), end.get(p)) for p in uncertain]
        changeset = Changeset.of([*kept, *guessed])
    return Plan(latest, end, changeset, uncertain)


def _refuse_symlinked_writes(changeset: Changeset, start: Snapshot, end: Snapshot) -> None:
    """No write may go under a symlink the server will hold (kept from ``start`` or new)."""
    deleted = {c.path for c in changeset.deletes}

    def is_symlink(path: str) -> bool:
        for side in (end, start):
            entry = side.get(path)
            if entry is not None and entry.kind.is_symlink:
                return side is end or path not in deleted
        return False

    refuse_writes_under_symlinks(changeset, is_symlink)


def _rewrite(path: str, old: Entry | None, new: Entry | None) -> FileChange:
    """Bring an uncertain path to ``new`` whatever is there (a delete if ``new`` is None)."""
    if new is None:
        return FileChange(ChangeKind.DELETED, path, old, None)
    return FileChange(ChangeKind.ADDED if old is None else ChangeKind.MODIFIED, path, old, new)


def _stored_snapshot(engine: Engine, deployment: Deployment) -> TreeSnapshot:
    tree = engine.snapshots.find_tree(deployment.identifier)
    if tree is None:
        raise StoreError(
            f"the snapshot of deployment {deployment.identifier} is missing from "
            f"{engine.snapshots.path}"
        )
    return TreeSnapshot(engine.snapshots.repo, tree)


def _touched_by(engine: Engine, unfinished: list[Deployment]) -> frozenset[str]:
    """Every path the unfinished deployments set out to change."""
    paths: set[str] = set()
    for failed in unfinished:
        tree = engine.snapshots.find_tree(failed.identifier)
        if tree is None:  # it stopped before touching the server
            continue
        failed_start: Snapshot = EMPTY
        if failed.start_deployment is not None:
            started_from = engine.history.find(failed.start_deployment)
            if started_from is not None:
                failed_start = _stored_snapshot(engine, started_from)
        failed_end = TreeSnapshot(engine.snapshots.repo, tree)
        paths |= changes_between(failed_start, failed_end).paths()
    return frozenset(paths)


def settle(the_plan: Plan, transport: Transport) -> Plan:
    """Plan the uncertain paths from what the server really holds there."""
    if not the_plan.uncertain:
        return the_plan
    kept = [c for c in the_plan.changeset if c.path not in the_plan.uncertain]
    settled: list[FileChange] = []
    prune: list[str] = []
    for path in sorted(the_plan.uncertain):
        target = the_plan.end.get(path)
        try:
            found = transport.stat(path)
        except PathOutsideRootError:  # under a symlink, which is uncertain too
            found = None
        if found is not None and found.kind == "dir":
            prune.append(path)  # its tracked children are uncertain paths as well
            found = None
        if target is not None:
            kind = ChangeKind.ADDED if found is None else ChangeKind.MODIFIED
            settled.append(FileChange(kind, path, None, target))
        elif found is not None:
            settled.append(FileChange(ChangeKind.DELETED, path, None, None))
    return Plan(
        the_plan.start,
        the_plan.end,
        Changeset.of([*kept, *settled]),
        the_plan.uncertain,
        tuple(prune),
    )


# -- running ----------------------------------------------------------------------------------


def run_preview(engine: Engine, deployment: Deployment) -> Preview:
    """Compute the file changes of a preview deployment; nothing is written to the server."""
    the_plan = plan(engine, deployment)
    engine.history.record_changes(
        deployment.identifier,
        the_plan.changeset,
        [OutcomeStatus.PREVIEWED] * len(the_plan.changeset),
    )
    deployment = engine.history.update(
        deployment,
        status=DeploymentStatus.PREVIEWED,
        start_revision=the_plan.start.end_revision if the_plan.start else None,
        start_deployment=the_plan.start.identifier if the_plan.start else None,
        completed_at=utcnow(),
    )
    log.info(
        "deployment.previewed", deployment=deployment.identifier, **the_plan.changeset.counts()
    )
    return Preview(deployment, tuple(engine.history.outcomes(deployment.identifier)))


def run_deployment(
    engine: Engine,
    deployment: Deployment,
    *,
    break_lock: bool = False,
    override_marker: bool = False,
    on_progress: ProgressCallback | None = None,
) -> Deployment:
    """Run a pending deployment to completion; raise if it is refused or fails."""
    key = f"{deployment.project}/{deployment.server}"
    try:
        with server_lock(
            engine.history, key, deployment.identifier, break_lock=break_lock
        ) as pushed_aside:
            if pushed_aside is not None:
                _mark_interrupted(engine, pushed_aside.deployment)
            with engine.transport(deployment.project, deployment.server) as transport:
                return _run_locked(engine, deployment, transport, override_marker, on_progress)
    except DeployHQLiteError as exc:
        _mark_failed(engine, deployment, str(exc))
        raise
    except BaseException as exc:  # Ctrl-C, or a bug: never leave it "running"
        _mark_failed(engine, deployment, f"interrupted ({type(exc).__name__})")
        raise


def _mark_failed(engine: Engine, deployment: Deployment, error: str) -> None:
    current = engine.history.find(deployment.identifier) or deployment
    if current.status is DeploymentStatus.COMPLETED:
        return
    failed = engine.history.update(
        current, status=DeploymentStatus.FAILED, completed_at=utcnow(), error=error
    )
    log.error("deployment.failed", deployment=deployment.identifier, error=error)
    engine.emit("deployment.failed", failed, error=error)
    engine.emit("deployment.finished", failed)


def _mark_interrupted(engine: Engine, identifier: str) -> None:
    stale = engine.history.find(identifier)
    if stale is not None and stale.status is DeploymentStatus.RUNNING:
        engine.history.update(
            stale,
            status=DeploymentStatus.FAILED,
            completed_at=utcnow(),
            error="interrupted: its lock was broken by a later deployment",
        )


def _run_locked(
    engine: Engine,
    deployment: Deployment,
    transport: Transport,
    override_marker: bool,
    on_progress: ProgressCallback | None,
) -> Deployment:
    the_plan = plan(engine, deployment)
    check_marker(transport, deployment, the_plan.start, override=override_marker)
    the_plan = settle(the_plan, transport)
    deployment = engine.history.update(
        deployment,
        status=DeploymentStatus.RUNNING,
        started_at=utcnow(),
        start_revision=the_plan.start.end_revision if the_plan.start else None,
        start_deployment=the_plan.start.identifier if the_plan.start else None,
    )
    log.info("deployment.started", deployment=deployment.identifier, **the_plan.changeset.counts())
    engine.emit("deployment.started", deployment)
    source = None if deployment.is_rollback else engine.source(deployment.project)
    assert deployment.end_tree is not None
    engine.snapshots.keep(deployment.identifier, deployment.end_tree, the_plan.changeset, source)
    statuses, failure = apply_changeset(engine, deployment, transport, the_plan, on_progress)
    engine.history.record_changes(deployment.identifier, the_plan.changeset, statuses)
    if failure is not None:
        path, message = failure
        raise DeploymentError(
            f"deployment {deployment.identifier} failed at {path!r}: {message}; the server "
            "marker was not moved; fix the cause and deploy again to converge",
            identifier=deployment.identifier,
            failed_path=path,
        )
    write_marker(transport, deployment)
    deployment = engine.history.update(
        deployment, status=DeploymentStatus.COMPLETED, completed_at=utcnow()
    )
    log.info("deployment.completed", deployment=deployment.identifier)
    engine.emit("deployment.finished", deployment)
    return deployment


def apply_changeset(
    engine: Engine,
    deployment: Deployment,
    transport: Transport,
    the_plan: Plan,
    on_progress: ProgressCallback | None,
) -> tuple[list[OutcomeStatus], tuple[str, str] | None]:
    """Deletes (deepest first), prune emptied directories, then writes; stop at a failure."""
    changes = the_plan.changeset.changes
    statuses = [OutcomeStatus.PENDING] * len(changes)
    seq = {(c.path, c.is_delete): i for i, c in enumerate(changes)}
    failure: list[tuple[str, str]] = []
    done = 0
    total = len(changes)
    read_blob = engine.snapshots.repo.read_blob

    def on_done(path: str, error: Exception | None, *, deleted: bool) -> None:
        nonlocal done
        i = seq[(path, deleted)]
        if error is not None:
            statuses[i] = OutcomeStatus.FAILED
            failure.append((path, str(error)))
            log.error("file.failed", deployment=deployment.identifier, path=path, error=str(error))
            engine.emit("file.failed", deployment, path=path, error=str(error))
            return
        statuses[i] = OutcomeStatus.DONE
        done += 1
        event = "file.deleted" if deleted else "file.uploaded"
        log.debug(event, deployment=deployment.identifier, path=path)
        engine.emit(event, deployment, path=path)
        if on_progress is not None:
            on_progress(done, total, path)

    deletes = (c.path for c in changes if c.is_delete and not failure)
    transport.delete_many(deletes, lambda p, e: on_done(p, e, deleted=True))
    if not failure:
        transport.prune_dirs([*the_plan.changeset.emptied_dirs(), *the_plan.prune])
    uploads = (
        Upload(
            c.path,
            functools.partial(read_blob, c.new.blob),
            mode=0o755 if c.new.kind is EntryKind.EXECUTABLE else 0o644,
            is_symlink=c.new.kind is EntryKind.SYMLINK,
        )
        for c in changes
        if c.new is not None and not c.is_delete and not failure
    )
    if not failure:
        transport.put_many(uploads, lambda p, e: on_done(p, e, deleted=False))
    return statuses, (failure[0] if failure else None)


# -- the server marker -------------------------------------------------------------------------


def read_marker(transport: Transport) -> dict[str, str] | None:
    raw = transport.read_file(MARKER_PATH)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return {"revision": "?", "deployment": "?"}
    return data if isinstance(data, dict) else {"revision": "?", "deployment": "?"}


def check_marker(
    transport: Transport, deployment: Deployment, start: Deployment | None, *, override: bool
) -> None:
    """Refuse when the server's marker disagrees with the history (someone else deployed)."""
    marker = read_marker(transport)
    if marker is None and start is None:
        return
    if marker is not None and start is not None and marker.get("deployment") == start.identifier:
        return
    server = f"{deployment.project}/{deployment.server}"
    if marker is None:
        assert start is not None
        problem = (
            f"server {server} has no deployhq-lite marker, but the history says deployment "
            f"{start.identifier} (revision {start.end_revision[:12]}) is there"
        )
    elif start is None:
        problem = (
            f"server {server} already holds revision {str(marker.get('revision'))[:12]} from "
            f"deployment {marker.get('deployment')}, which this history does not know"
        )
    else:
        problem = (
            f"server {server} holds revision {str(marker.get('revision'))[:12]} "
            f"(deployment {marker.get('deployment')}), but the history expects revision "
            f"{start.end_revision[:12]} (deployment {start.identifier})"
        )
    if override:
        log.warning("marker.overridden", deployment=deployment.identifier, problem=problem)
        return
    raise MarkerMismatchError(
        f"{problem}; check what is deployed there, then re-run with --override-marker "
        "to deploy over it"
    )


def write_marker(transport: Transport, deployment: Deployment) -> None:
    """Make every change durable, then commit the deployment by writing the marker."""
    transport.sync()
    body = {
        "revision": deployment.end_revision,
        "deployment": deployment.identifier,
        "project": deployment.project,
        "server": deployment.server,
        "deployed_at": utcnow(),
    }
    transport.put_file(MARKER_PATH, json.dumps(body, indent=2).encode() + b"\n", mode=0o644)
    transport.sync()
    log.info("marker.written", deployment=deployment.identifier, revision=deployment.end_revision)
