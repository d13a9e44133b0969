"""Adopt: take over a server that another tool deployed (``servers adopt``), so the next
deploy is incremental instead of a full upload.

The revision the server holds comes from the operator (``--revision``) or from the
record the other tool left at the server's root:

- git-ftp: ``.git-ftp.log``, the 40-hex SHA-1 of the last commit it uploaded (one line);
- PHPloy: ``.revision``, the SHA-1 of the deployed commit (one line);
- dandelion: ``.revision`` (its default ``revision_file``), the same.

An "adopted" deployment of that revision is recorded as completed (its snapshot is what
deploying the revision here would put there), then our marker is written. A server that
already has our marker is refused: it is ours already.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import DeployHQLiteError, RefusedError, RevisionNotFoundError
from ..locking import owner_label, server_lock
from ..log import get_logger
from ..marker import read_marker, write_marker
from ..records import Deployment, DeploymentMode, DeploymentStatus, Verification, utcnow
from ..snapshots import EMPTY, TreeSnapshot, changes_between
from .builds import build
from .configfiles import server_tree
from .creation import Recipient, new_deployment
from .options import DeployOptions
from .verify import differences_from, new_verification, record

if TYPE_CHECKING:
    from ..config import Destination
    from ..context import Context
    from ..transports import Transport

log = get_logger(__name__)

# (file at the server's root, the tools that write it), tried in this order
PEER_RECORDS = ((".git-ftp.log", "git-ftp"), (".revision", "PHPloy or dandelion"))
_SHA1 = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True, slots=True)
class Adoption:
    deployment: Deployment
    source: str  # where the revision came from: "--revision" or the peer's record
    verification: Verification | None = None  # with ``check``: the server against it


def adopt(
    ctx: Context, project: str, server: str, *, revision: str | None, check: bool
) -> Adoption:
    """Record what the server holds as an adopted deployment and write our marker; with
    ``check``, compare the server with that revision first (the result is recorded)."""
    destination = ctx.settings.destination(project, server)
    lock = server_lock(ctx.history, destination.key, f"adopt-{owner_label()}")
    with lock, ctx.transport(destination) as transport:
        marker = read_marker(transport)
        if marker is not None:
            raise RefusedError(
                f"server {destination.key} already has a deployhq-lite marker (deployment "
                f"{marker.get('deployment')}, revision {str(marker.get('revision'))[:12]}): "
                "it is deployed by deployhq-lite already; deploy to it, or `verify` it"
            )
        wanted, source = (revision, "--revision") if revision else peer_revision(transport)
        deployment = _record(ctx, destination, wanted)
        try:
            if deployment.end_tree is None:  # what a deploy would put there: the build's
                deployment = build(ctx, [deployment], record=deployment)[0]
            verification = _check(ctx, transport, deployment) if check else None
            done = _complete(ctx, deployment, transport)
        except BaseException as exc:  # never left running: failed, with why
            why = str(exc) if isinstance(exc, DeployHQLiteError) else type(exc).__name__
            ctx.history.update(
                deployment, status=DeploymentStatus.FAILED, completed_at=utcnow(), error=why
            )
            raise
    log.info("server.adopted", server=destination.key, deployment=done.identifier, source=source)
    return Adoption(done, source, verification)


def peer_revision(transport: Transport) -> tuple[str, str]:
    """The revision another tool's record at the root names, and which record it was."""
    for name, tools in PEER_RECORDS:
        raw = transport.read_file(name)
        if raw is None:
            continue
        text = raw.decode("utf-8", "replace").strip()
        if not _SHA1.fullmatch(text.lower()):
            shown = text[:60] + ("..." if len(text) > 60 else "")
            raise RefusedError(
                f"server {transport.server}: {name} (written by {tools}) does not hold a "
                f"commit id (found {shown!r}); pass --revision REV to say what the server holds"
            )
        return text.lower(), f"{name} ({tools})"
    names = ", ".join(name for name, _ in PEER_RECORDS)
    raise RefusedError(
        f"server {transport.server} has no deployhq-lite marker and no record of another "
        f"tool ({names}); pass --revision REV to say which revision it holds"
    )


def _record(ctx: Context, destination: Destination, revision: str) -> Deployment:
    repo = ctx.source(destination.project)
    try:
        resolved = repo.resolve(revision)
    except RevisionNotFoundError:
        raise RevisionNotFoundError(
            revision,
            f"{repo.path} (the revision the server says it holds: fetch it into the "
            "repository, or pass --revision)",
        ) from None
    repo.fetch_missing(resolved)
    project = ctx.settings.get_project(destination.project)
    tree = None
    if not project.build_commands:
        tree = server_tree(ctx, destination.project, destination.server, repo.tree_of(resolved))
    deployment = new_deployment(
        ctx,
        Recipient.of(destination),
        end_revision=resolved,
        end_tree=tree,
        branch=destination.branch,
        mode=DeploymentMode.QUEUE,
        options=DeployOptions(),
        claimed_by=owner_label(),  # run here and now
    )
    return ctx.history.update(deployment, adopted=True, start_revision=None)


def _check(ctx: Context, transport: Transport, deployment: Deployment) -> Verification:
    assert deployment.end_tree is not None
    verification = new_verification(ctx, deployment.project, deployment.server, fast=False)
    found = differences_from(ctx, transport, deployment.end_tree, deployment, fast=False)
    return record(ctx, verification, deployment, found)


def _complete(ctx: Context, deployment: Deployment, transport: Transport) -> Deployment:
    assert deployment.end_tree is not None
    everything = changes_between(EMPTY, TreeSnapshot(ctx.snapshots.repo, deployment.end_tree))
    source = ctx.source(deployment.project)
    ctx.snapshots.keep(deployment.identifier, deployment.end_tree, everything, source)
    now = utcnow()
    deployment = ctx.history.update(deployment, status=DeploymentStatus.RUNNING, started_at=now)
    write_marker(transport, deployment)
    return ctx.history.update(deployment, status=DeploymentStatus.COMPLETED, completed_at=utcnow())
