"""The DeployHQ model's entry: create, run and preview deployments and rollbacks.

Whether a deployment goes to one server or to a server group is decided here, once:
one server's are made by :mod:`.creation` and run by :mod:`.run`; a group's fan out over
its members in :mod:`.groups`, which use the same two. The Engine calls these; so does a
queue worker for what it claimed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import readmodel
from ..errors import DeployHQLiteError
from ..log import get_logger
from ..records import UNFINISHED, Deployment, DeploymentMode, DeploymentStatus, Preview, utcnow
from . import creation, groups, run
from .creation import Recipient, new_deployment
from .options import DeployOptions, OutputCallback, RunOptions

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..config import Destination
    from ..context import Context

log = get_logger(__name__)


def create(
    ctx: Context,
    project: str,
    server: str,
    options: DeployOptions,
    *,
    revision: str | None = None,
    mode: DeploymentMode = DeploymentMode.QUEUE,
    claimed_by: str | None = None,
) -> Deployment:
    """Record a deployment of ``revision`` (default: the branch head) to a server or a
    server group, not yet run; ``claimed_by`` names the process that runs it now (None:
    a queue worker will)."""
    ctx.settings.check_destination(project, server)
    if ctx.settings.find_group(project, server) is not None:
        return groups.create_group_deployment(
            ctx, project, server, options, revision=revision, mode=mode, claimed_by=claimed_by
        )
    return creation.create_deployment(
        ctx, project, server, options, revision=revision, mode=mode, claimed_by=claimed_by
    )


def create_rollback(
    ctx: Context,
    project: str,
    identifier: str,
    options: DeployOptions,
    *,
    mode: DeploymentMode = DeploymentMode.QUEUE,
    claimed_by: str | None = None,
) -> Deployment:
    """Record a rollback to deployment ``identifier`` (of a server or a group) after
    checking DeployHQ's rules; nothing is recorded when they refuse it."""
    target = readmodel.find_deployment(ctx.history, project, identifier)
    if target.is_group:
        return groups.create_group_rollback(ctx, target, options, mode=mode, claimed_by=claimed_by)
    return creation.create_rollback(ctx, target, options, mode=mode, claimed_by=claimed_by)


def execute(ctx: Context, deployment: Deployment, options: RunOptions) -> Deployment:
    """Run a pending deployment (a server's or a group's) to completion; raise if it is
    refused or fails (the failure is recorded first)."""
    if deployment.is_group:
        return groups.run_group(ctx, deployment, options)
    return run.run_deployment(ctx, deployment, options)


def preview(
    ctx: Context, deployment: Deployment, *, on_output: OutputCallback | None = None
) -> Preview:
    """Compute a preview deployment's file changes (a group's: each server's)."""
    if deployment.is_group:
        return groups.run_group_preview(ctx, deployment, on_output=on_output)
    return run.run_preview(ctx, deployment, on_output=on_output)


def run_claimed(ctx: Context, deployment: Deployment) -> Deployment:
    """Run (or preview) a deployment a queue worker claimed; return it as it ended. A
    failure is recorded on the deployment, not raised; an interrupt is recorded, then
    raised."""
    log.info("queue.claimed", deployment=deployment.identifier, worker=deployment.claimed_by)
    try:
        if deployment.is_preview:
            preview(ctx, deployment)
        else:
            execute(ctx, deployment, RunOptions())
    except DeployHQLiteError as exc:
        log.warning("queue.failed", deployment=deployment.identifier, error=str(exc))
        _fail_unfinished(ctx, deployment, str(exc))
    except BaseException as exc:  # Ctrl-C, or a bug: never leave it claimed and unfinished
        _fail_unfinished(ctx, deployment, f"interrupted ({type(exc).__name__})")
        raise
    return ctx.history.find(deployment.identifier) or deployment


def _fail_unfinished(ctx: Context, deployment: Deployment, error: str) -> None:
    """Fail the deployment, and a group's members, where the runner left them open (a
    preview that could not read the server, say)."""
    for d in [deployment, *ctx.history.members(deployment.identifier)]:
        current = ctx.history.find(d.identifier)
        if current is not None and current.status in UNFINISHED:
            ctx.history.update(
                current, status=DeploymentStatus.FAILED, completed_at=utcnow(), error=error
            )


def deliver(
    ctx: Context,
    destination: Destination,
    *,
    end_revision: str,
    end_tree: str,
    before_run: Callable[[Deployment], None] | None = None,
) -> Deployment:
    """Deploy a tree made elsewhere (a stack environment's published state) to one
    destination now, as a deployment like any other; ``before_run`` hears the recorded
    deployment before it runs. The content model reaches this through the Context."""
    deployment = new_deployment(
        ctx,
        Recipient.of(destination),
        end_revision=end_revision,
        end_tree=end_tree,
        branch=destination.branch,
        mode=DeploymentMode.QUEUE,
        options=DeployOptions(),
    )
    if before_run is not None:
        before_run(deployment)
    return run.run_deployment(ctx, deployment, RunOptions())
