"""What stopped workers and killed runs left unfinished on this host, made true again.

A worker that is killed leaves its claim behind. The next worker to start a round fails
what it left unfinished (``interrupted: its worker ... stopped``) and frees its locks,
unless the server's marker (the commit point, written last) names the deployment: then
it did complete, and the history is made to say so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import DeployHQLiteError
from ..locking import looks_stale
from ..log import get_logger
from ..marker import read_marker
from ..records import Deployment, DeploymentStatus, utcnow
from .run import record_committed

if TYPE_CHECKING:
    from ..context import Context

log = get_logger(__name__)


def recover(ctx: Context) -> list[Deployment]:
    """Fail what stopped workers and killed runs on this host left unfinished (see
    :meth:`DeploymentQueue.recover_abandoned`); a deployment whose marker is on its server did
    complete, and is recorded so. Returns them as they are now."""
    recovered = []
    for failed in ctx.history.recover_abandoned(looks_stale):
        log.warning("deployment.interrupted", deployment=failed.identifier, error=failed.error)
        recovered.append(_reconcile(ctx, failed))
    return recovered


def _reconcile(ctx: Context, deployment: Deployment) -> Deployment:
    """The marker is the commit point: a deployment (or group member) cut off after
    writing it completed. Only what got as far as keeping its snapshot is checked."""
    if deployment.is_preview:
        return deployment
    history = ctx.history
    parts = history.members(deployment.identifier) if deployment.is_group else [deployment]
    for part in parts:
        if part.status is DeploymentStatus.COMPLETED or not ctx.snapshots.find_tree(
            part.identifier
        ):
            continue
        try:
            destination = ctx.settings.destination(part.project, part.server)
            with ctx.transport(destination) as transport:
                marker = read_marker(transport)
        except DeployHQLiteError as exc:
            log.warning("deployment.unchecked", deployment=part.identifier, error=str(exc))
            continue
        if marker is not None and marker.get("deployment") == part.identifier:
            record_committed(ctx, part, marker, by="worker recovery")
    members = history.members(deployment.identifier)
    if (
        deployment.is_group
        and members
        and all(m.status is DeploymentStatus.COMPLETED for m in members)
    ):
        history.update(
            deployment, status=DeploymentStatus.COMPLETED, completed_at=utcnow(), error=None
        )
    return history.find(deployment.identifier) or deployment
