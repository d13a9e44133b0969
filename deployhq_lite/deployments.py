"""The DeployHQ model: deployments, previews and rollbacks.

A deployment goes from what the server holds (see :mod:`planning`) to a revision; a
rollback of D is a new deployment to D's stored end snapshot, refused with DeployHQ's
exact messages when its rules (see :mod:`rules`) forbid it. Running one takes the
server's lock, checks the marker, stores the end snapshot, applies the changes and writes
the marker last.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from . import config as config_module
from .changeset import (
    EntryKind,
)
from .errors import (
    ConfigError,
    DeployHQLiteError,
    DeploymentError,
    TransportError,
)
from .git import MODE_FILE, RawEntry
from .locking import looks_alive, server_lock
from .log import get_logger
from .marker import check_marker, marker_agrees, read_marker, write_marker
from .planning import Held, Plan, plan, prunable, settle
from .readmodel import find_deployment
from .records import (
    GROUP,
    CommandResult,
    Deployment,
    DeploymentMode,
    DeploymentStatus,
    OutcomeStatus,
    Preview,
    utcnow,
)
from .rules import ServerFacts, check_rollback
from .selection import overlay, select_tree
from .snapshots import EMPTY, TreeSnapshot
from .transports import Transport, Upload

if TYPE_CHECKING:
    from . import git
    from .config import Destination, SSHCommandConfig
    from .context import Context
    from .store import LockRecord

ProgressCallback = Callable[[int, int, str], None]
OutputCallback = Callable[[str], None]  # a line of build output, as it comes


class Phase(StrEnum):
    """What a running deployment is busy with, in order (building only with build commands)."""

    BUILDING = "building"
    CONNECTING = "connecting"
    PLANNING = "planning"
    UPLOADING = "uploading"


@runtime_checkable
class PhasedProgress(Protocol):
    """A progress callback that also hears each phase as it starts (the CLI's bar does;
    a plain callable hears the file counts only)."""

    def __call__(self, done: int, total: int, path: str) -> None: ...

    def phase(self, name: str) -> None: ...  # a Phase, or "<server>: <phase>" in a group


def report_phase(on_progress: ProgressCallback | None, name: str) -> None:
    if isinstance(on_progress, PhasedProgress):
        on_progress.phase(name)


log = get_logger(__name__)


# -- creating deployments -------------------------------------------------------------------


def create_deployment(
    ctx: Context,
    project: str,
    server: str,
    *,
    revision: str | None = None,
    mode: DeploymentMode = DeploymentMode.QUEUE,
    config_files_only: bool = False,
    copy_config_files: bool = True,
    run_build_commands: bool = True,
    group: str | None = None,
    claimed_by: str | None = None,
) -> Deployment:
    """Record a new deployment of ``revision`` (default: the branch head), not yet run;
    ``server`` may name a server group (see :mod:`groups`). ``claimed_by`` names the
    process that runs it now (no queue worker may take it); None leaves it queued.

    What it puts on the server is one tree: the revision's selected files (see
    :mod:`selection`), or its build's output, with the server's config files on top
    (without ``copy_config_files``: the ones it holds now). Without
    ``run_build_commands`` the repository's files are deployed, unbuilt. A
    config-files-only deployment puts the config files on top of what the server holds.
    """
    ctx.settings.check_destination(project, server)
    if ctx.settings.find_group(project, server) is not None:
        from .groups import create_group_deployment

        return create_group_deployment(
            ctx,
            project,
            server,
            revision=revision,
            mode=mode,
            config_files_only=config_files_only,
            copy_config_files=copy_config_files,
            run_build_commands=run_build_commands,
            claimed_by=claimed_by,
        )
    destination = ctx.settings.destination(project, server)
    config = ctx.settings.get_project(project)
    repo, store = ctx.source(project), ctx.snapshots.repo
    end_revision = repo.resolve(revision) if revision else repo.resolve_branch(destination.branch)
    end_tree: str | None = None
    if config_files_only:
        files = config_file_entries(ctx, project, server)
        if not files:
            raise ConfigError(f"server {destination.key} has no config_files to deploy")
        latest = ctx.history.find_latest_completed(project, server)
        if latest is not None:
            end_revision = latest.end_revision
        base = ctx.snapshots.find_tree(latest.identifier) if latest else None
        end_tree = overlay(store, base, files)
    elif not (config.build_commands and run_build_commands):  # else: once the build ran
        repo.fetch_missing(end_revision)  # a partial clone's
        end_tree = server_tree(
            ctx,
            project,
            server,
            repo.tree_of(end_revision),
            copy_config_files=copy_config_files,
        )
    return new_deployment(
        ctx,
        project,
        server,
        end_revision=end_revision,
        end_tree=end_tree,
        branch=destination.branch,
        mode=mode,
        config_files_only=config_files_only,
        copy_config_files=copy_config_files,
        run_build_commands=run_build_commands,
        group=group,
        claimed_by=claimed_by,
    )


def server_tree(
    ctx: Context,
    project: str,
    server: str,
    source: str,
    *,
    built: bool = False,
    copy_config_files: bool = True,
) -> str:
    """What a deployment puts on ``server`` from ``source`` (a revision's tree, or with
    ``built`` a build's output): the server's selection of it (:mod:`selection`) with
    its config files on top, or, without ``copy_config_files``, the ones it holds now."""
    config = ctx.settings.get_project(project)
    server_config = ctx.settings.get_server(project, server)
    store = ctx.snapshots.repo
    # a build_output is the project's deployed directory; a server may take part of it
    project_sub = None if built and config.build_output else config.subdirectory
    tree = select_tree(
        store,  # reads the source through it; writes a selection there
        source,
        subdirectory=server_config.subdirectory or project_sub,
        exclude=server_config.excluded_files,
    )
    files = server_config_files(ctx, project, server, copy_config_files=copy_config_files)
    return overlay(store, tree, files) if files else tree


def server_config_files(
    ctx: Context, project: str, server: str, *, copy_config_files: bool
) -> dict[str, RawEntry | None]:
    """What a deployment or a rollback puts at ``server``'s config file paths: the bodies
    configured now (DeployHQ copies the server's current config files, a rollback too),
    or, without ``copy_config_files``, what the server holds there now."""
    if copy_config_files:
        return config_file_entries(ctx, project, server)
    return config_files_now(ctx, project, server)


def config_file_entries(ctx: Context, project: str, server: str) -> dict[str, RawEntry | None]:
    """The server's config files as the config says them now."""
    store = ctx.snapshots.repo
    return {
        f.path: RawEntry(store.write_blob(f.read()), MODE_FILE)
        for f in ctx.settings.config_files(project, server)
    }


def config_files_now(ctx: Context, project: str, server: str) -> dict[str, RawEntry | None]:
    """The server's config file paths as its latest deployment left them (None: absent)."""
    latest = ctx.history.find_latest_completed(project, server)
    now = ctx.snapshots.find_tree(latest.identifier) if latest else None
    store = ctx.snapshots.repo
    return {
        f.path: store.tree_entry(now, f.path) if now else None
        for f in ctx.settings.config_files(project, server)
    }


def create_rollback(
    ctx: Context,
    project: str,
    identifier: str,
    *,
    mode: DeploymentMode = DeploymentMode.QUEUE,
    copy_config_files: bool = True,
    run_build_commands: bool = True,
    claimed_by: str | None = None,
) -> Deployment:
    """Record a rollback to deployment ``identifier`` after checking DeployHQ's rules
    (``claimed_by`` as for :func:`create_deployment`)."""
    target = find_deployment(ctx.history, project, identifier)
    if target.is_group:
        from .groups import create_group_rollback

        return create_group_rollback(
            ctx,
            target,
            mode=mode,
            copy_config_files=copy_config_files,
            run_build_commands=run_build_commands,
            claimed_by=claimed_by,
        )
    end_tree = check_rollback(target, server_facts(ctx, target))
    return rollback_to(
        ctx,
        target,
        end_tree,
        mode=mode,
        copy_config_files=copy_config_files,
        run_build_commands=run_build_commands,
        claimed_by=claimed_by,
    )


def rollback_to(
    ctx: Context,
    target: Deployment,
    end_tree: str,
    *,
    mode: DeploymentMode,
    copy_config_files: bool,
    run_build_commands: bool,
    group: str | None = None,
    claimed_by: str | None = None,
) -> Deployment:
    """Record a (checked) rollback of ``target``'s server to ``end_tree`` with the
    server's config files as they are configured now (or, without ``copy_config_files``,
    as the server holds them now) on top; with ``run_build_commands`` and build commands
    configured, the tree is rebuilt at run time from the target's end revision instead
    (and gets the same config files, see :func:`build`)."""
    project = target.project
    tree: str | None = end_tree
    if run_build_commands and ctx.settings.get_project(project).build_commands:
        tree = None
    else:  # never the bodies stored with the target: an old secret would come back
        files = server_config_files(
            ctx, project, target.server, copy_config_files=copy_config_files
        )
        if files:
            tree = overlay(ctx.snapshots.repo, end_tree, files)
    return new_deployment(
        ctx,
        project,
        target.server,
        end_revision=target.end_revision,
        end_tree=tree,
        branch=target.branch,
        mode=mode,
        rollback_of=target.identifier,
        copy_config_files=copy_config_files,
        run_build_commands=run_build_commands,
        group=group,
        claimed_by=claimed_by,
    )


def server_facts(ctx: Context, deployment: Deployment) -> ServerFacts:
    """What DeployHQ's rollback rules need to know about ``deployment``'s server."""
    return ServerFacts(
        deployment,
        configured=ctx.settings.find_server(deployment.project, deployment.server) is not None,
        latest=ctx.history.find_latest_completed(deployment.project, deployment.server),
        tree=ctx.snapshots.find_tree(deployment.identifier),
    )


def new_deployment(
    ctx: Context,
    project: str,
    server: str,
    *,
    end_revision: str,
    end_tree: str | None,
    branch: str,
    mode: DeploymentMode,
    rollback_of: str | None = None,
    copy_config_files: bool = True,
    run_build_commands: bool = True,
    config_files_only: bool = False,
    group: str | None = None,
    claimed_by: str | None = None,
) -> Deployment:
    """Add a deployment to the history, not yet run (``end_tree`` None: a group's, or
    one whose build has not run yet)."""
    found = ctx.settings.find_group(project, server)
    if found is not None:
        project_name = ctx.settings.get_project(project).name
        server_name, protocol_type = found.name, GROUP
        server_identifier = config_module.server_identifier(project, server)
    else:
        destination = ctx.settings.destination(project, server)
        project_name, server_name = destination.project_name, destination.server_name
        protocol_type, server_identifier = destination.config.protocol_type, destination.identifier
    latest = ctx.history.find_latest_completed(project, server)
    deployment = Deployment(
        identifier=str(uuid.uuid4()),
        project=project,
        project_name=project_name,
        server=server,
        server_name=server_name,
        server_identifier=server_identifier,
        protocol_type=protocol_type,
        group=group,
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
        config_files_only=config_files_only,
        claimed_by=claimed_by,
    )
    deployment = ctx.history.add(deployment)
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


# -- running ----------------------------------------------------------------------------------


def build(
    ctx: Context,
    waiting: list[Deployment],
    *,
    record: Deployment,
    on_output: OutputCallback | None = None,
) -> list[Deployment]:
    """Run the project's build commands once for deployments whose tree waits on them
    (one deployment, or a group's members: same project and end revision) and give
    each its server's part of the output. The commands' results are kept on ``record``;
    a failing build raises ``BuildError`` before anything touches a server."""
    from .builds import run_build

    first = waiting[0]
    log.info("build.queued", deployment=record.identifier, revision=first.end_revision)
    result = run_build(
        source=ctx.source(first.project),
        store=ctx.snapshots.repo,
        revision=first.end_revision,
        project=ctx.settings.get_project(first.project),
        work_root=ctx.state_dir / "builds",
        cache_root=ctx.state_dir / "build-cache" / first.project,
        variables=deployment_variables(record),  # a group's: same project, branch, revision
        on_output=on_output,
        on_command=lambda r: ctx.history.add_command_result(record.identifier, r),
    )
    return [
        ctx.history.update(
            d,
            end_tree=server_tree(
                ctx,
                d.project,
                d.server,
                result.tree,
                built=True,
                copy_config_files=d.copy_config_files,
            ),
        )
        for d in waiting
    ]


def deployment_variables(deployment: Deployment) -> dict[str, str]:
    """The ``DEPLOYHQ_*`` variables every command of ``deployment`` sees: its build
    commands, and its SSH commands on a local or an SSH server. None holds a secret."""
    return {
        "DEPLOYHQ_PROJECT": deployment.project,
        "DEPLOYHQ_SERVER": deployment.server,
        "DEPLOYHQ_DEPLOYMENT": deployment.identifier,
        "DEPLOYHQ_BRANCH": deployment.branch,
        "DEPLOYHQ_START_REVISION": deployment.start_revision or "",
        "DEPLOYHQ_END_REVISION": deployment.end_revision,
        "DEPLOYHQ_ROLLBACK": "1" if deployment.is_rollback else "0",
    }


def run_preview(
    ctx: Context, deployment: Deployment, *, on_output: OutputCallback | None = None
) -> Preview:
    """Compute the file changes of a preview deployment; nothing is written to the server
    (a project with build commands builds first: the changes are the output's)."""
    if deployment.is_group:
        from .groups import run_group_preview

        return run_group_preview(ctx, deployment, on_output=on_output)
    if deployment.end_tree is None:
        try:
            deployment = build(ctx, [deployment], record=deployment, on_output=on_output)[0]
        except DeployHQLiteError as exc:
            _mark_failed(ctx, deployment, str(exc))
            raise
    _source(ctx, deployment)
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


def run_deployment(
    ctx: Context,
    deployment: Deployment,
    *,
    break_lock: bool = False,
    override_marker: bool = False,
    on_progress: ProgressCallback | None = None,
    on_output: OutputCallback | None = None,
) -> Deployment:
    """Run a pending deployment to completion; raise if it is refused or fails."""
    if deployment.is_group:
        from .groups import run_group

        return run_group(
            ctx,
            deployment,
            break_lock=break_lock,
            override_marker=override_marker,
            on_progress=on_progress,
            on_output=on_output,
        )
    try:
        if deployment.end_tree is None:  # nothing touches the server before the build
            report_phase(on_progress, Phase.BUILDING)
            deployment = build(ctx, [deployment], record=deployment, on_output=on_output)[0]
        destination = ctx.settings.destination(deployment.project, deployment.server)
        with server_lock(
            ctx.history, destination.key, deployment.identifier, break_lock=break_lock
        ) as pushed_aside:
            if pushed_aside is not None:
                _interrupt_holder(ctx, pushed_aside, by=deployment.identifier)
            report_phase(on_progress, Phase.CONNECTING)
            with ctx.transport(destination) as transport:
                return _run_locked(
                    ctx, deployment, destination, transport, override_marker, on_progress
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
    source = _source(ctx, deployment)
    the_plan = plan(ctx, deployment)
    if not marker_agrees(marker, the_plan.start):
        held = held_by_marker(ctx, deployment, marker)
        check_marker(
            marker,
            deployment,
            the_plan.start,
            server=destination.key,
            override=override_marker,
            held=held.revision,
        )
        the_plan = plan(ctx, deployment, held=held)  # from what the server holds
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
    ctx.snapshots.keep(deployment.identifier, deployment.end_tree, the_plan.changeset, source)
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


def held_by_marker(ctx: Context, deployment: Deployment, marker: dict[str, str] | None) -> Held:
    """What the server holds by its marker, when that disagrees with the history: the
    snapshot of the deployment it names, else of its revision as a completed deployment
    to this server or (no build commands) the source repository has it; else nothing we
    know (EMPTY: every file is written, none deleted)."""
    if marker is None:
        return Held(EMPTY)
    store = ctx.snapshots
    named = ctx.history.find(str(marker.get("deployment", "")))
    revision = str(marker.get("revision", ""))
    if named is None or (named.project, named.server) != (deployment.project, deployment.server):
        named = _completed_at(ctx, deployment, revision)
    tree = store.find_tree(named.identifier) if named is not None else None
    if named is not None and tree is not None:
        return Held(TreeSnapshot(store.repo, tree), named.end_revision, named)
    tree = _source_tree(ctx, deployment, revision)
    return Held(EMPTY) if tree is None else Held(TreeSnapshot(store.repo, tree), revision)


def _completed_at(ctx: Context, deployment: Deployment, revision: str) -> Deployment | None:
    """The latest completed deployment of ``revision`` to the deployment's server."""
    done = ctx.history.query(
        deployment.project, deployment.server, status=DeploymentStatus.COMPLETED, limit=1000
    )
    return next((d for d in done if d.end_revision == revision and not d.is_preview), None)


def _source_tree(ctx: Context, deployment: Deployment, revision: str) -> str | None:
    """What deploying ``revision`` from the source puts on the server (None: not a
    revision of the source, or the project builds it, which the source does not say)."""
    if not revision or ctx.settings.get_project(deployment.project).build_commands:
        return None
    repo = ctx.source(deployment.project)
    try:
        if repo.resolve(revision) != revision:  # a full revision, not a branch name
            return None
        tree = repo.tree_of(revision)
    except DeployHQLiteError:
        return None
    return server_tree(ctx, deployment.project, deployment.server, tree)


def _source(ctx: Context, deployment: Deployment) -> git.Repository | None:
    """The repository whose objects ``deployment``'s end tree may name, opened (which
    lets the snapshot store read them; an ctx in another thread or process has not
    opened it yet). None for a rollback: its end tree is a kept snapshot."""
    return None if deployment.is_rollback else ctx.source(deployment.project)


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
