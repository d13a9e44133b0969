"""Running one server's deployment: lock, marker, plan, commands, changes, marker.

Running takes the server's lock, checks the marker against the history, stores the end
snapshot, runs the ``before`` commands, applies the changes (deletes, then writes, each
atomic), runs the ``after`` commands and writes the marker last: the commit point. A
group's members are run one by one by :mod:`.groups`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..changeset import EntryKind
from ..errors import DeployHQLiteError, DeploymentError, TransportError
from ..locking import looks_alive, server_lock
from ..log import get_logger
from ..marker import check_marker, marker_agrees, read_marker, write_marker
from ..records import CommandResult, Deployment, DeploymentStatus, OutcomeStatus, Preview, utcnow
from ..transports import Transport, Upload
from .builds import build, deployment_variables
from .options import OutputCallback, Phase, ProgressCallback, RunOptions, report_phase
from .plan import Plan, held_by_marker, plan, prunable, settle
from .repair import repair_plan

if TYPE_CHECKING:
    from ..config import Destination, SSHCommandConfig
    from ..context import Context
    from ..store import LockRecord

log = get_logger(__name__)


def run_preview(
    ctx: Context, deployment: Deployment, *, on_output: OutputCallback | None = None
) -> Preview:
    """Compute the file changes of a preview deployment; nothing is written to the server
    (a project with build commands builds first: the changes are the output's)."""
    if deployment.end_tree is None:
        try:
            deployment = build(ctx, [deployment], record=deployment, on_output=on_output)[0]
        except DeployHQLiteError as exc:
            _mark_failed(ctx, deployment, str(exc))
            raise
    if deployment.repair:  # what differs is seen on the server itself
        destination = ctx.settings.destination(deployment.project, deployment.server)
        with ctx.transport(destination) as transport:
            the_plan = repair_plan(ctx, deployment, transport)
    else:
        the_plan = plan(ctx, deployment)
    ctx.history.record_changes(
        deployment.identifier,
        the_plan.changeset,
        [OutcomeStatus.PREVIEWED] * len(the_plan.changeset),
    )
    deployment = ctx.history.update(
        deployment,
        status=DeploymentStatus.PREVIEWED,
        start_revision=the_plan.start.end_revision if the_plan.start else None,
        start_deployment=the_plan.start.identifier if the_plan.start else None,
        completed_at=utcnow(),
    )
    log.info(
        "deployment.previewed", deployment=deployment.identifier, **the_plan.changeset.counts()
    )
    return Preview(deployment, tuple(ctx.history.outcomes(deployment.identifier)))


def run_deployment(ctx: Context, deployment: Deployment, run: RunOptions) -> Deployment:
    """Run one server's pending deployment to completion; raise if it is refused or fails."""
    on_progress = run.on_progress
    try:
        if deployment.end_tree is None:  # nothing touches the server before the build
            report_phase(on_progress, Phase.BUILDING)
            deployment = build(ctx, [deployment], record=deployment, on_output=run.on_output)[0]
        destination = ctx.settings.destination(deployment.project, deployment.server)
        with server_lock(
            ctx.history, destination.key, deployment.identifier, break_lock=run.break_lock
        ) as pushed_aside:
            if pushed_aside is not None:
                _interrupt_holder(ctx, pushed_aside, by=deployment.identifier)
            report_phase(on_progress, Phase.CONNECTING)
            with ctx.transport(destination) as transport:
                return _run_locked(
                    ctx, deployment, destination, transport, run.override_marker, on_progress
                )
    except DeployHQLiteError as exc:
        _mark_failed(ctx, deployment, str(exc))
        raise
    except BaseException as exc:  # Ctrl-C, or a bug: never leave it "running"
        _mark_failed(ctx, deployment, f"interrupted ({type(exc).__name__})")
        raise


def _mark_failed(ctx: Context, deployment: Deployment, error: str) -> None:
    current = ctx.history.find(deployment.identifier) or deployment
    if current.status is DeploymentStatus.COMPLETED:
        return
    failed = ctx.history.update(
        current, status=DeploymentStatus.FAILED, completed_at=utcnow(), error=error
    )
    log.error("deployment.failed", deployment=deployment.identifier, error=error)
    ctx.emit("deployment.failed", failed, error=error)
    ctx.emit("deployment.finished", failed)


def _interrupt_holder(ctx: Context, holder: LockRecord, *, by: str) -> None:
    """Finish what the holder of a broken lock left unfinished (pending, say, if it was
    killed while connecting, or running), with a reason; unless its process still runs
    here, its group deployment and the group's other unfinished servers too."""
    why = f"its lock was broken by deployment {by}"
    whole_group = not looks_alive(holder.owner)
    for failed in ctx.history.interrupt(holder.deployment, why, whole_group=whole_group):
        log.warning("deployment.interrupted", deployment=failed.identifier, error=failed.error)


def _run_locked(
    ctx: Context,
    deployment: Deployment,
    destination: Destination,
    transport: Transport,
    override_marker: bool,
    on_progress: ProgressCallback | None,
) -> Deployment:
    report_phase(on_progress, Phase.PLANNING)
    marker = read_marker(transport)
    _recover_committed(ctx, deployment, marker)
    if deployment.repair:  # from what the server holds: its marker is rewritten last
        the_plan = repair_plan(ctx, deployment, transport)
    else:
        the_plan = _plan_against_marker(ctx, deployment, destination, marker, override_marker)
    the_plan = settle(the_plan, transport)
    deployment = ctx.history.update(
        deployment,
        status=DeploymentStatus.RUNNING,
        started_at=utcnow(),
        start_revision=the_plan.start_revision,
        start_deployment=the_plan.start.identifier if the_plan.start else None,
    )
    log.info("deployment.started", deployment=deployment.identifier, **the_plan.changeset.counts())
    ctx.emit("deployment.started", deployment)
    commands = _commands(ctx, deployment, first=the_plan.start is None)
    _run_commands(ctx, deployment, transport, commands, "before")  # nothing touched yet
    assert deployment.end_tree is not None
    ctx.snapshots.keep(
        deployment.identifier, deployment.end_tree, the_plan.changeset, the_plan.source
    )
    report_phase(on_progress, Phase.UPLOADING)
    statuses, failure = apply_changeset(ctx, deployment, transport, the_plan, on_progress)
    ctx.history.record_changes(deployment.identifier, the_plan.changeset, statuses)
    if failure is not None:
        path, message = failure
        raise DeploymentError(
            f"deployment {deployment.identifier} failed at {path!r}: {message}; the server "
            "marker was not moved; fix the cause and deploy again to converge",
            identifier=deployment.identifier,
            failed_path=path,
        )
    _run_commands(ctx, deployment, transport, commands, "after")
    write_marker(transport, deployment)
    deployment = ctx.history.update(
        deployment, status=DeploymentStatus.COMPLETED, completed_at=utcnow()
    )
    log.info("deployment.completed", deployment=deployment.identifier)
    ctx.emit("deployment.finished", deployment)
    return deployment


def _plan_against_marker(
    ctx: Context,
    deployment: Deployment,
    destination: Destination,
    marker: dict[str, str] | None,
    override_marker: bool,
) -> Plan:
    """The plan from the history's start, when the server's marker agrees; else refused
    (see :func:`marker.check_marker`), or with ``override_marker`` planned from what the
    marker says the server holds. A full deployment writes everything whatever the server
    holds: its marker cannot mislead it, so it is not checked."""
    the_plan = plan(ctx, deployment)
    if deployment.full or marker_agrees(marker, the_plan.start):
        return the_plan
    held = held_by_marker(ctx, deployment, marker)
    check_marker(
        marker,
        deployment,
        the_plan.start,
        server=destination.key,
        override=override_marker,
        held=held.revision,
    )
    return plan(ctx, deployment, held=held)  # from what the server holds


def _commands(ctx: Context, deployment: Deployment, *, first: bool) -> list[SSHCommandConfig]:
    """The server's SSH commands this run executes (``first_deployment`` ones only when
    the server has had no deployment yet)."""
    target = ctx.settings.find_server(deployment.project, deployment.server)
    return [c for c in (target.ssh_commands if target else []) if c.run == "always" or first]


def _run_commands(
    ctx: Context,
    deployment: Deployment,
    transport: Transport,
    commands: list[SSHCommandConfig],
    when: str,
) -> None:
    """Run the ``when`` commands in order, recording each; a failing one with
    ``halt_on_error`` stops the deployment (the marker is not moved)."""
    variables = deployment_variables(deployment)
    for command in (c for c in commands if c.when == when):
        log.info("command.started", deployment=deployment.identifier, when=when)
        status, output, seconds = transport.run_command(
            command.command, timeout=command.timeout, variables=variables
        )
        result = CommandResult(command.command, when, status, output, seconds, status is None)
        ctx.history.add_command_result(deployment.identifier, result)
        if result.ok:
            continue
        why = (
            f"timed out after {command.timeout:g} s"
            if result.timed_out
            else f"exited with status {status}"
        )
        log.warning("command.failed", deployment=deployment.identifier, when=when, why=why)
        if command.halt_on_error:
            where = "before any file changed" if when == "before" else "after the file changes"
            raise DeploymentError(
                f"deployment {deployment.identifier}: {when} command {command.command!r} "
                f"{why} ({where}); the server marker was not moved",
                identifier=deployment.identifier,
            )


def _recover_committed(ctx: Context, deployment: Deployment, marker: dict[str, str] | None) -> None:
    """The marker is the commit point: a deployment that wrote it but was cut off before
    the history said so did complete. Record that, so the history matches the server."""
    named = ctx.history.find(marker.get("deployment", "")) if marker else None
    if (
        named is None
        or named.status is DeploymentStatus.COMPLETED
        or (named.project, named.server) != (deployment.project, deployment.server)
        or named.is_preview
        or ctx.snapshots.find_tree(named.identifier) is None
    ):
        return
    latest = ctx.history.find_latest_completed(deployment.project, deployment.server)
    if latest is not None and latest.seq > named.seq:
        return
    assert marker is not None
    record_committed(ctx, named, marker, by=deployment.identifier)


def record_committed(
    ctx: Context, deployment: Deployment, marker: dict[str, str], *, by: str
) -> Deployment:
    """Record ``deployment``, which its server's marker names, as completed (when the
    marker says): it wrote the marker, its commit point, before it was cut off."""
    done = ctx.history.update(
        deployment,
        status=DeploymentStatus.COMPLETED,
        completed_at=marker.get("deployed_at") or utcnow(),
        error=None,
    )
    log.warning("deployment.recovered", deployment=deployment.identifier, by=by)
    return done


def apply_changeset(
    ctx: Context,
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

    def on_done(path: str, error: Exception | None, *, deleted: bool) -> None:
        nonlocal done
        i = seq[(path, deleted)]
        if error is not None:
            statuses[i] = OutcomeStatus.FAILED
            failure.append((path, str(error)))
            log.error("file.failed", deployment=deployment.identifier, path=path, error=str(error))
            ctx.emit("file.failed", deployment, path=path, error=str(error))
            return
        statuses[i] = OutcomeStatus.DONE
        done += 1
        event = "file.deleted" if deleted else "file.uploaded"
        log.debug(event, deployment=deployment.identifier, path=path)
        ctx.emit(event, deployment, path=path)
        if on_progress is not None:
            on_progress(done, total, path)

    try:
        _apply(ctx, transport, the_plan, on_done, failure)
    except TransportError as exc:  # the connection is gone: name the first file not done
        pending = next(
            (c.path for c, s in zip(changes, statuses, strict=True) if s is OutcomeStatus.PENDING),
            "",
        )
        failure.append((pending, str(exc)))
    return statuses, (failure[0] if failure else None)


def _apply(
    ctx: Context,
    transport: Transport,
    the_plan: Plan,
    on_done: Callable[..., None],
    failure: list[tuple[str, str]],
) -> None:
    changes = the_plan.changeset.changes
    if the_plan.uncertain:  # the temp files interrupted runs left there, so dirs can empty
        transport.delete_temps(sorted(the_plan.uncertain))
    deletes = (c.path for c in changes if c.is_delete and not failure)
    transport.delete_many(deletes, lambda p, e: on_done(p, e, deleted=True))
    if not failure:
        transport.prune_dirs(prunable(the_plan))
    writes = [c for c in changes if c.new is not None and not c.is_delete]
    if failure or not writes:
        return
    with ctx.snapshots.repo.open_blob_reader([c.new.blob for c in writes if c.new]) as blobs:
        uploads = (
            Upload(
                c.path,
                functools.partial(blobs.read, c.new.blob),
                mode=0o755 if c.new.kind is EntryKind.EXECUTABLE else 0o644,
                is_symlink=c.new.kind is EntryKind.SYMLINK,
                open=functools.partial(blobs.open, c.new.blob),
            )
            for c in writes
            if c.new is not None and not failure
        )
        transport.put_many(uploads, lambda p, e: on_done(p, e, deleted=False))
