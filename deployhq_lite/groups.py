"""Server groups: one deployment to several servers, one after another or all at once.

A group deployment is a row of its own (``protocol_type`` "group") plus one ordinary
deployment per member server (``group`` = the group deployment's identifier). Each
member has its own start (that server's latest end), lock, marker and per-file
outcomes; the group deployment completes when every member did. Rolling a group
deployment back rolls every member server back to what that deployment put there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from .deployments import (
    OutputCallback,
    Phase,
    PhasedProgress,
    ProgressCallback,
    build,
    create_deployment,
    new_deployment,
    report_phase,
    rollback_to,
    run_deployment,
    run_preview,
    server_facts,
)
from .errors import DeployHQLiteError, DeploymentError
from .locking import owner_label
from .log import get_logger
from .records import Deployment, DeploymentMode, DeploymentStatus, Preview, utcnow
from .rules import check_group_rollback

if TYPE_CHECKING:
    from .engine import Engine

MAX_PARALLEL = 8  # servers of a group deployed at once

log = get_logger(__name__)


def create_group_deployment(
    engine: Engine,
    project: str,
    key: str,
    *,
    revision: str | None,
    mode: DeploymentMode,
    config_files_only: bool,
    copy_config_files: bool = True,
    run_build_commands: bool = True,
    claimed_by: str | None = None,
) -> Deployment:
    """Record a deployment of ``revision`` to every server of group ``key``."""
    config = engine.settings.get_project(project)
    group = config.server_groups[key]
    repo = engine.source(project)
    end_revision = repo.resolve(revision) if revision else repo.resolve_branch(config.branch)
    parent = new_deployment(
        engine,
        project,
        key,
        end_revision=end_revision,
        end_tree=None,
        branch=config.branch,
        mode=mode,
        config_files_only=config_files_only,
        copy_config_files=copy_config_files,
        run_build_commands=run_build_commands,
        claimed_by=owner_label(),  # no worker takes it before its members are in
    )
    return _add_members(
        engine,
        parent,
        lambda server: create_deployment(
            engine,
            project,
            server,
            revision=end_revision,
            mode=mode,
            config_files_only=config_files_only,
            copy_config_files=copy_config_files,
            run_build_commands=run_build_commands,
            group=parent.identifier,
        ),
        group.servers,
        claimed_by,
    )


def create_group_rollback(
    engine: Engine,
    target: Deployment,
    *,
    mode: DeploymentMode,
    copy_config_files: bool,
    run_build_commands: bool,
    claimed_by: str | None = None,
) -> Deployment:
    """Record a rollback of every server of group deployment ``target`` to it."""
    listed = engine.history.members(target.identifier)
    trees = check_group_rollback(
        target,
        group_configured=engine.settings.find_group(target.project, target.server) is not None,
        members=[server_facts(engine, m) for m in listed],
    )
    members = {m.server: m for m in listed}
    parent = new_deployment(
        engine,
        target.project,
        target.server,
        end_revision=target.end_revision,
        end_tree=None,
        branch=target.branch,
        mode=mode,
        rollback_of=target.identifier,
        copy_config_files=copy_config_files,
        run_build_commands=run_build_commands,
        claimed_by=owner_label(),  # no worker takes it before its members are in
    )
    return _add_members(
        engine,
        parent,
        lambda server: rollback_to(
            engine,
            members[server],
            trees[server],
            mode=mode,
            copy_config_files=copy_config_files,
            run_build_commands=run_build_commands,
            group=parent.identifier,
        ),
        list(members),
        claimed_by,
    )


def _add_members(
    engine: Engine,
    parent: Deployment,
    make: Callable[[str], Deployment],
    servers: list[str],
    claimed_by: str | None,
) -> Deployment:
    """Add a member deployment per server, then hand the group deployment to whoever
    runs it (``claimed_by``; None: the queue). If a member cannot be made, none is
    left pending."""
    made: list[Deployment] = []
    try:
        made.extend(make(server) for server in servers)
    except BaseException as exc:
        for d in [*made, parent]:
            engine.history.update(
                d, status=DeploymentStatus.FAILED, completed_at=utcnow(), error=str(exc)
            )
        raise
    starts = {m.start_revision for m in made}
    return engine.history.update(
        parent,
        start_revision=starts.pop() if len(starts) == 1 else None,
        end_revision=made[0].end_revision,
        claimed_by=claimed_by,
    )


# -- running -------------------------------------------------------------------------------


def run_group_preview(
    engine: Engine, parent: Deployment, *, on_output: OutputCallback | None = None
) -> Preview:
    """Each member's preview (one build for all); if one cannot be made, all fail."""
    members = _build_members(engine, parent, engine.history.members(parent.identifier), on_output)
    try:
        for member in members:
            run_preview(engine, member)
    except BaseException as exc:
        for member in engine.history.members(parent.identifier):
            if member.status is DeploymentStatus.PREVIEW_PENDING:
                _skip(engine, member, f"a preview of this group failed ({exc})")
        _finish(engine, parent, {"": str(exc)})
        raise
    parent = engine.history.update(parent, status=DeploymentStatus.PREVIEWED, completed_at=utcnow())
    return engine.get_preview(parent.project, parent.identifier)


def run_group(
    engine: Engine,
    parent: Deployment,
    *,
    break_lock: bool = False,
    override_marker: bool = False,
    on_progress: ProgressCallback | None = None,
    on_output: OutputCallback | None = None,
) -> Deployment:
    """Build once if the project has build commands, then run every member (in
    parallel, or in order stopping at the first failure); the group deployment fails
    if any member did, after the others' outcomes are recorded."""
    members = engine.history.members(parent.identifier)
    group = engine.settings.find_group(parent.project, parent.server)
    parallel = group is None or group.transfer_order == "parallel"
    parent = engine.history.update(parent, status=DeploymentStatus.RUNNING, started_at=utcnow())
    log.info("group.started", deployment=parent.identifier, servers=len(members))
    engine.emit("deployment.started", parent)
    if any(m.end_tree is None for m in members):
        report_phase(on_progress, Phase.BUILDING)
    members = _build_members(engine, parent, members, on_output)
    progress = _Progress(on_progress)
    failures: dict[str, str] = {}

    def run(engine: Engine, member: Deployment) -> None:
        try:
            run_deployment(
                engine,
                member,
                break_lock=break_lock,
                override_marker=override_marker,
                on_progress=progress.for_server(member.server),
            )
        except DeployHQLiteError as exc:
            failures[member.server] = str(exc)

    try:
        _run_members(engine, members, run, failures, parallel=parallel)
    except BaseException as exc:
        _finish(engine, parent, {"": f"interrupted ({type(exc).__name__})"})
        raise
    done = _finish(engine, parent, failures)
    if done.status is not DeploymentStatus.COMPLETED:
        raise DeploymentError(done.error or "", identifier=done.identifier)
    return done


def _build_members(
    engine: Engine, parent: Deployment, members: list[Deployment], on_output: OutputCallback | None
) -> list[Deployment]:
    """One build for the members whose tree waits on it; if it fails, no server is touched."""
    waiting = [m for m in members if m.end_tree is None]
    if not waiting:
        return members
    try:
        build(engine, waiting, record=parent, on_output=on_output)
    except BaseException as exc:
        for member in members:
            _skip(engine, member, f"the build failed ({exc})")
        _finish(engine, parent, {"": str(exc)})
        raise
    return engine.history.members(parent.identifier)


def _run_members(
    engine: Engine,
    members: list[Deployment],
    run: Callable[[Engine, Deployment], None],
    failures: dict[str, str],
    *,
    parallel: bool,
) -> None:
    if parallel:
        with ThreadPoolExecutor(min(MAX_PARALLEL, len(members) or 1)) as pool:
            for future in [pool.submit(_in_own_engine, engine, run, m) for m in members]:
                future.result()
        return
    for member in members:
        if failures:
            failed = next(iter(failures))
            _skip(engine, member, f"{failed} failed before it in this sequential group")
        else:
            run(engine, member)


def _in_own_engine(
    engine: Engine, run: Callable[[Engine, Deployment], None], member: Deployment
) -> None:
    """Run one member in this thread with its own database connection and repositories."""
    with engine.fork() as own:
        found = own.history.find(member.identifier)
        assert found is not None
        run(own, found)


def _skip(engine: Engine, member: Deployment, why: str) -> None:
    engine.history.update(
        member,
        status=DeploymentStatus.FAILED,
        completed_at=utcnow(),
        error=f"not run: {why}; this server was not touched",
    )


def _finish(engine: Engine, parent: Deployment, failures: dict[str, str]) -> Deployment:
    """Record the group deployment's outcome: completed only if every member did."""
    members = engine.history.members(parent.identifier)
    failed = [m for m in members if m.status is not DeploymentStatus.COMPLETED]
    if not failed and not failures:
        done = engine.history.update(
            parent, status=DeploymentStatus.COMPLETED, completed_at=utcnow()
        )
        log.info("group.completed", deployment=parent.identifier)
        engine.emit("deployment.finished", done)
        return done
    first = next((f"{server}: {why}" if server else why for server, why in failures.items()), "")
    names = ", ".join(m.server for m in failed) or "?"
    error = (
        f"group deployment {parent.identifier}: {len(failed)} of {len(members)} servers "
        f"did not complete ({names}); {first or 'see each server'}"
    )
    done = engine.history.update(
        parent, status=DeploymentStatus.FAILED, completed_at=utcnow(), error=error
    )
    log.error("group.failed", deployment=parent.identifier, servers=names)
    engine.emit("deployment.failed", done, error=error)
    engine.emit("deployment.finished", done)
    return done


class _Progress:
    """One progress line for all servers: the sums of each server's done and total."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._lock = threading.Lock()
        self._done: dict[str, int] = {}
        self._total: dict[str, int] = {}

    def for_server(self, server: str) -> ProgressCallback | None:
        if self._callback is None:
            return None
        callback = self._callback

        def update(done: int, total: int, path: str) -> None:
            with self._lock:
                self._done[server], self._total[server] = done, total
                callback(sum(self._done.values()), sum(self._total.values()), f"{server}: {path}")

        if isinstance(callback, PhasedProgress):
            return _ServerPhases(update, callback, server)
        return update


class _ServerPhases:
    """A member's progress that passes its phases on, named by its server."""

    def __init__(self, update: ProgressCallback, parent: PhasedProgress, server: str) -> None:
        self._update, self._parent, self._server = update, parent, server

    def __call__(self, done: int, total: int, path: str) -> None:
        self._update(done, total, path)

    def phase(self, name: str) -> None:
        self._parent.phase(f"{self._server}: {name}")
