"""Recording deployments and rollbacks of one server (a group's are in :mod:`.groups`).

A deployment goes from what the server holds (see :mod:`.plan`) to a revision; a
rollback of D is a new deployment to D's stored end snapshot, refused with DeployHQ's
exact messages when its rules (see :mod:`.rules`) forbid it. Nothing here touches a
server; :mod:`.run` runs what is recorded.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError, RefusedError
from ..log import get_logger
from ..records import Deployment, DeploymentMode, DeploymentStatus
from ..selection import overlay
from .configfiles import config_file_entries, server_config_files, server_tree
from .options import DeployOptions
from .rules import ServerFacts, check_rollback

if TYPE_CHECKING:
    from ..config import Destination
    from ..context import Context

log = get_logger(__name__)


def create_deployment(
    ctx: Context,
    project: str,
    server: str,
    options: DeployOptions,
    *,
    revision: str | None = None,
    mode: DeploymentMode = DeploymentMode.QUEUE,
    group: str | None = None,
    claimed_by: str | None = None,
) -> Deployment:
    """Record a new deployment of ``revision`` (default: the branch head) to one server,
    not yet run. ``claimed_by`` names the process that runs it now (no queue worker may
    take it); None leaves it queued; ``group`` names the group deployment it is part of.

    What it puts on the server is one tree: the revision's selected files (see
    :mod:`selection`), or its build's output, with the server's config files on top
    (without ``copy_config_files``: the ones it holds now). Without
    ``run_build_commands`` the repository's files are deployed, unbuilt. A
    config-files-only deployment puts the config files on top of what the server holds.
    """
    destination = ctx.settings.destination(project, server)
    if options.repair:
        return _create_repair(
            ctx, destination, options, mode=mode, group=group, claimed_by=claimed_by
        )
    config = ctx.settings.get_project(project)
    repo, store = ctx.source(project), ctx.snapshots.repo
    end_revision = repo.resolve(revision) if revision else repo.resolve_branch(destination.branch)
    end_tree: str | None = None
    if options.config_files_only:
        files = config_file_entries(ctx, project, server)
        if not files:
            raise ConfigError(f"server {destination.key} has no config_files to deploy")
        latest = ctx.history.find_latest_completed(project, server)
        if latest is not None:
            end_revision = latest.end_revision
        base = ctx.snapshots.find_tree(latest.identifier) if latest else None
        end_tree = overlay(store, base, files)
    elif not (config.build_commands and options.run_build_commands):  # else: after the build
        repo.fetch_missing(end_revision)  # a partial clone's
        end_tree = server_tree(
            ctx,
            project,
            server,
            repo.tree_of(end_revision),
            copy_config_files=options.copy_config_files,
        )
    return new_deployment(
        ctx,
        Recipient.of(destination),
        end_revision=end_revision,
        end_tree=end_tree,
        branch=destination.branch,
        mode=mode,
        options=options,
        group=group,
        claimed_by=claimed_by,
    )


def _create_repair(
    ctx: Context,
    destination: Destination,
    options: DeployOptions,
    *,
    mode: DeploymentMode,
    group: str | None,
    claimed_by: str | None,
) -> Deployment:
    """A repair: the server brought back to the snapshot of its latest deployment (same
    start and end revision); what differs is found on the server when it runs."""
    latest = ctx.history.find_latest_completed(destination.project, destination.server)
    tree = ctx.snapshots.find_tree(latest.identifier) if latest is not None else None
    if latest is None or tree is None:
        raise RefusedError(
            f"server {destination.key} has no completed deployment to repair to: deploy it "
            f"first (or take it over with `deployhq-lite servers adopt {destination.project} "
            f"{destination.server}`)"
        )
    return new_deployment(
        ctx,
        Recipient.of(destination),
        end_revision=latest.end_revision,
        end_tree=tree,
        branch=latest.branch,
        mode=mode,
        options=options,
        group=group,
        claimed_by=claimed_by,
    )


def create_rollback(
    ctx: Context,
    target: Deployment,
    options: DeployOptions,
    *,
    mode: DeploymentMode = DeploymentMode.QUEUE,
    claimed_by: str | None = None,
) -> Deployment:
    """Record a rollback of one server to deployment ``target`` after checking
    DeployHQ's rules (``claimed_by`` as for :func:`create_deployment`)."""
    end_tree = check_rollback(target, server_facts(ctx, target))
    return rollback_to(ctx, target, end_tree, options, mode=mode, claimed_by=claimed_by)


def rollback_to(
    ctx: Context,
    target: Deployment,
    end_tree: str,
    options: DeployOptions,
    *,
    mode: DeploymentMode,
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
    if options.run_build_commands and ctx.settings.get_project(project).build_commands:
        tree = None
    else:  # never the bodies stored with the target: an old secret would come back
        files = server_config_files(
            ctx, project, target.server, copy_config_files=options.copy_config_files
        )
        if files:
            tree = overlay(ctx.snapshots.repo, end_tree, files)
    return new_deployment(
        ctx,
        Recipient.of(ctx.settings.destination(project, target.server)),
        end_revision=target.end_revision,
        end_tree=tree,
        branch=target.branch,
        mode=mode,
        options=options.for_rollback(),
        rollback_of=target.identifier,
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


@dataclass(frozen=True, slots=True)
class Recipient:
    """What a deployment is recorded for: a server (or a stack's environment), or a
    server group; the names are copied onto the deployment as DeployHQ shows them."""

    project: str
    server: str
    project_name: str
    server_name: str
    protocol_type: str
    identifier: str

    @classmethod
    def of(cls, destination: Destination) -> Recipient:
        return cls(
            destination.project,
            destination.server,
            destination.project_name,
            destination.server_name,
            destination.config.protocol_type,
            destination.identifier,
        )


def new_deployment(
    ctx: Context,
    recipient: Recipient,
    *,
    end_revision: str,
    end_tree: str | None,
    branch: str,
    mode: DeploymentMode,
    options: DeployOptions,
    rollback_of: str | None = None,
    group: str | None = None,
    claimed_by: str | None = None,
) -> Deployment:
    """Add a deployment to the history, not yet run (``end_tree`` None: a group's, or
    one whose build has not run yet)."""
    project, server = recipient.project, recipient.server
    latest = ctx.history.find_latest_completed(project, server)
    deployment = Deployment(
        identifier=str(uuid.uuid4()),
        project=project,
        project_name=recipient.project_name,
        server=server,
        server_name=recipient.server_name,
        server_identifier=recipient.identifier,
        protocol_type=recipient.protocol_type,
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
        copy_config_files=options.copy_config_files,
        run_build_commands=options.run_build_commands,
        rollback_of=rollback_of,
        config_files_only=options.config_files_only,
        repair=options.repair,
        full=options.full,
        delete_extra=options.delete_extra,
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
