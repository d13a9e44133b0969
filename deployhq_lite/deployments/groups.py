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
from dataclasses import replace
from typing import TYPE_CHECKING

from .. import config as config_module
from .. import readmodel
from ..errors import DeployHQLiteError, DeploymentError
from ..locking import owner_label
from ..log import get_logger
from ..records import GROUP, Deployment, DeploymentMode, DeploymentStatus, Preview, utcnow
from .builds import build
from .creation import Recipient, create_deployment, new_deployment, rollback_to, server_facts
from .options import (
    DeployOptions,
    OutputCallback,
    Phase,
    PhasedProgress,
    ProgressCallback,
    RunOptions,
    report_phase,
)
from .rules import check_group_rollback
from .run import run_deployment, run_preview

if TYPE_CHECKING:
    from ..context import Context

MAX_PARALLEL = 8  # servers of a group deployed at once

log = get_logger(__name__)


def group_recipient(ctx: Context, project: str, key: str) -> Recipient:
    """A server group as the recipient of its group deployment's row."""
    return Recipient(
        project,
        key,
        ctx.settings.get_project(project).name,
        ctx.settings.get_project(project).server_groups[key].name,
        GROUP,
        config_module.server_identifier(project, key),
    )


def create_group_deployment(
    ctx: Context,
    project: str,
    key: str,
    options: DeployOptions,
    *,
    revision: str | None,
    mode: DeploymentMode,
    claimed_by: str | None = None,
) -> Deployment:
    """Record a deployment of ``revision`` to every server of group ``key``."""
    config = ctx.settings.get_project(project)
    group = config.server_groups[key]
    repo = ctx.source(project)
    end_revision = repo.resolve(revision) if revision else repo.resolve_branch(config.branch)
    parent = new_deployment(
        ctx,
        group_recipient(ctx, project, key),
        end_revision=end_revision,
        end_tree=None,
        branch=config.branch,
        mode=mode,
        options=options,
        claimed_by=owner_label(),  # no worker takes it before its members are in
    )
    return _add_members(
        ctx,
        parent,
        lambda server: create_deployment(
            ctx,
            project,
            server,
            options,
            revision=end_revision,
            mode=mode,
            group=parent.identifier,
        ),
        group.servers,
        claimed_by,
    )


def create_group_rollback(
    ctx: Context,
    target: Deployment,
    options: DeployOptions,
    *,
    mode: DeploymentMode,
    claimed_by: str | None = None,
) -> Deployment:
    """Record a rollback of every server of group deployment ``target`` to it."""
    listed = ctx.history.members(target.identifier)
    trees = check_group_rollback(
        target,
        group_configured=ctx.settings.find_group(target.project, target.server) is not None,
        members=[server_facts(ctx, m) for m in listed],
    )
    members = {m.server: m for m in listed}
    parent = new_deployment(
        ctx,
        group_recipient(ctx, target.project, target.server),
        end_revision=target.end_revision,
        end_tree=None,
        branch=target.branch,
        mode=mode,
        options=options.for_rollback(),
        rollback_of=target.identifier,
        claimed_by=owner_label(),  # no worker takes it before its members are in
    )
    return _add_members(
        ctx,
        parent,
        lambda server: rollback_to(
            ctx, members[server], trees[server], options, mode=mode, group=parent.identifier
        ),
        list(members),
        claimed_by,
    )


def _add_members(
    ctx: Context,
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
            ctx.history.update(
                d, status=DeploymentStatus.FAILED, completed_at=utcnow(), error=str(exc)
            )
        raise
    starts = {m.start_revision for m in made}
    return ctx.history.update(
        parent,
        start_revision=starts.pop() if len(starts) == 1 else None,
        end_revision=made[0].end_revision,
        claimed_by=claimed_by,
    )


# -- running -------------------------------------------------------------------------------


def run_group_preview(
    ctx: Context, parent: Deployment, *, on_output: OutputCallback | None = None
) -> Preview:
    """Each member's preview (one build for all); if one cannot be made, all fail."""
    members = _build_members(ctx, parent, ctx.history.members(parent.identifier), on_output)
    try:
        for member in members:
            run_preview(ctx, member)
    except BaseException as exc:
        for member in ctx.history.members(parent.identifier):
            if member.status is DeploymentStatus.PREVIEW_PENDING:
                _skip(ctx, member, f"a preview of this group failed ({exc})")
        _finish(ctx, parent, {"": str(exc)})
        raise
    parent = ctx.history.update(parent, status=DeploymentStatus.PREVIEWED, completed_at=utcnow())
    return readmodel.preview(ctx.history, parent)


def run_group(ctx: Context, parent: Deployment, run: RunOptions) -> Deployment:
    """Build once if the project has build commands, then run every member (in
    parallel, or in order stopping at the first failure); the group deployment fails
    if any member did, after the others' outcomes are recorded."""
    members = ctx.history.members(parent.identifier)
    group = ctx.settings.find_group(parent.project, parent.server)
    parallel = group is None or group.transfer_order == "parallel"
    parent = ctx.history.update(parent, status=DeploymentStatus.RUNNING, started_at=utcnow())
    log.info("group.started", deployment=parent.identifier, servers=len(members))
    ctx.emit("deployment.started", parent)
    if any(m.end_tree is None for m in members):
        report_phase(run.on_progress, Phase.BUILDING)
    members = _build_members(ctx, parent, members, run.on_output)
    progress = _Progress(run.on_progress)
    failures: dict[str, str] = {}

    def run_member(ctx: Context, member: Deployment) -> None:
        own = replace(run, on_progress=progress.for_server(member.server), on_output=None)
        try:
            run_deployment(ctx, member, own)
        except DeployHQLiteError as exc:
            failures[member.server] = str(exc)

    try:
        _run_members(ctx, members, run_member, failures, parallel=parallel)
    except BaseException as exc:
        _finish(ctx, parent, {"": f"interrupted ({type(exc).__name__})"})
        raise
    done = _finish(ctx, parent, failures)
    if done.status is not DeploymentStatus.COMPLETED:
        raise DeploymentError(done.error or "", identifier=done.identifier)
    return done


def _build_members(
    ctx: Context, parent: Deployment, members: list[Deployment], on_output: OutputCallback | None
) -> list[Deployment]:
    """One build for the members whose tree waits on it; if it fails, no server is touched."""
    waiting = [m for m in members if m.end_tree is None]
    if not waiting:
        return members
    try:
        build(ctx, waiting, record=parent, on_output=on_output)
    except BaseException as exc:
        for member in members:
            _skip(ctx, member, f"the build failed ({exc})")
        _finish(ctx, parent, {"": str(exc)})
        raise
    return ctx.history.members(parent.identifier)


def _run_members(
    ctx: Context,
    members: list[Deployment],
    run: Callable[[Context, Deployment], None],
    failures: dict[str, str],
    *,
    parallel: bool,
) -> None:
    if parallel:
        with ThreadPoolExecutor(min(MAX_PARALLEL, len(members) or 1)) as pool:
            for future in [pool.submit(_in_own_engine, ctx, run, m) for m in members]:
                future.result()
        return
    for member in members:
        if failures:
            failed = next(iter(failures))
            _skip(ctx, member, f"{failed} failed before it in this sequential group")
        else:
            run(ctx, member)


def _in_own_engine(
    ctx: Context, run: Callable[[Context, Deployment], None], member: Deployment
) -> None:
    """Run one member in this thread with its own database connection and repositories."""
    with ctx.fork() as own:
        found = own.history.find(member.identifier)
        assert found is not None
        run(own, found)


def _skip(ctx: Context, member: Deployment, why: str) -> None:
    ctx.history.update(
        member,
        status=DeploymentStatus.FAILED,
        completed_at=utcnow(),
        error=f"not run: {why}; this server was not touched",
    )


def _finish(ctx: Context, parent: Deployment, failures: dict[str, str]) -> Deployment:
    """Record the group deployment's outcome: completed only if every member did."""
    members = ctx.history.members(parent.identifier)
    failed = [m for m in members if m.status is not DeploymentStatus.COMPLETED]
    if not failed and not failures:
        done = ctx.history.update(parent, status=DeploymentStatus.COMPLETED, completed_at=utcnow())
        log.info("group.completed", deployment=parent.identifier)
        ctx.emit("deployment.finished", done)
        return done
    first = next((f"{server}: {why}" if server else why for server, why in failures.items()), "")
    names = ", ".join(m.server for m in failed) or "?"
    error = (
        f"group deployment {parent.identifier}: {len(failed)} of {len(members)} servers "
        f"did not complete ({names}); {first or 'see each server'}"
    )
    done = ctx.history.update(
        parent, status=DeploymentStatus.FAILED, completed_at=utcnow(), error=error
    )
    log.error("group.failed", deployment=parent.identifier, servers=names)
    ctx.emit("deployment.failed", done, error=error)
    ctx.emit("deployment.finished", done)
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
