"""Verify: compare what a server holds with the snapshot of its latest completed
deployment (exactly what that deployment put there: subdirectory, exclusions and config
files applied), and record what was found.

Content is compared by git blob id: the snapshot's ids are known, so only the server's
files are hashed, and only those of the expected kind and size (the others differ
already). ``fast`` compares kind, size and mode only. Excluded paths and the marker's
``.deployhq-lite/`` are never listed, so never reported.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..drift import Expected, ExpectedKind, compare, content_differences, merge
from ..errors import DeployHQLiteError, RefusedError, StoreError
from ..git import MODE_EXECUTABLE, MODE_SYMLINK, MODE_TREE
from ..log import get_logger
from ..marker import MARKER_PATH
from ..records import Deployment, Difference, Verification, VerificationStatus, utcnow
from ..selection import deployignore_lines, exclusion_spec

if TYPE_CHECKING:
    from ..context import Context
    from ..transports import Transport

log = get_logger(__name__)

_OURS = MARKER_PATH.partition("/")[0]  # .deployhq-lite


def new_verification(ctx: Context, project: str, server: str, *, fast: bool) -> Verification:
    """Record a verification of one server, queued for a worker (or to run now)."""
    ctx.settings.destination(project, server)  # a server, not a group: refused otherwise
    return ctx.history.add_verification(Verification(str(uuid.uuid4()), project, server, fast=fast))


def run_verification(ctx: Context, verification: Verification) -> Verification:
    """Compare the server with its latest deployment's snapshot; the result is recorded
    (``completed``, with ``in_sync``), or the failure is, and raised."""
    history = ctx.history
    verification = history.update_verification(verification, status=VerificationStatus.RUNNING)
    try:
        done = _compare(ctx, verification)
    except BaseException as exc:
        error = str(exc) if isinstance(exc, DeployHQLiteError) else f"interrupted ({exc!r})"
        history.update_verification(
            verification, status=VerificationStatus.FAILED, completed_at=utcnow(), error=error
        )
        raise
    log.info(
        "verify.completed",
        verification=done.identifier,
        server=f"{done.project}/{done.server}",
        in_sync=done.in_sync,
        differences=len(done.differences),
        method=done.method,
    )
    return done


def _compare(ctx: Context, verification: Verification) -> Verification:
    project, server = verification.project, verification.server
    destination = ctx.settings.destination(project, server)
    latest = ctx.history.find_latest_completed(project, server)
    if latest is None:
        raise RefusedError(
            f"server {destination.key} has no completed deployment to verify against: "
            f"deploy it first, or take it over with `deployhq-lite servers adopt {project} "
            f"{server}`"
        )
    tree = ctx.snapshots.find_tree(latest.identifier)
    if tree is None:
        raise StoreError(
            f"the snapshot of deployment {latest.identifier} is missing from {ctx.snapshots.path}"
        )
    with ctx.transport(destination) as transport:
        found = differences_from(ctx, transport, tree, latest, fast=verification.fast)
    return record(ctx, verification, latest, found)


@dataclass(frozen=True, slots=True)
class Found:
    """What a comparison found: the differences, how many paths, by which method."""

    differences: list[Difference]
    checked: int
    method: str


def differences_from(
    ctx: Context, transport: Transport, tree: str, deployment: Deployment, *, fast: bool
) -> Found:
    """How the open server differs from ``tree`` (what ``deployment`` put there, or would
    have: its exclusions apply)."""
    prune = server_prune(ctx, deployment)
    with ThreadPoolExecutor(1) as pool:  # the server listed while the snapshot is read
        listing = pool.submit(lambda: dict(transport.list_tree(prune)))
        expected = expected_entries(ctx, tree)
        listed = listing.result()
    comparison = compare(expected, listed, fast=fast)
    if fast:
        return Found(comparison.differences, comparison.checked, "fast")
    digests = transport.file_digests(comparison.to_hash)
    matches, label = blob_matcher(ctx, digests.method)
    content = content_differences(expected, digests.digests, matches=matches, label=label)
    return Found(merge(comparison.differences, content), comparison.checked, digests.method)


def record(
    ctx: Context, verification: Verification, deployment: Deployment, found: Found
) -> Verification:
    """The verification completed with what was found against ``deployment``."""
    return ctx.history.update_verification(
        verification,
        status=VerificationStatus.COMPLETED,
        deployment=deployment.identifier,
        revision=deployment.end_revision,
        in_sync=not found.differences,
        differences=tuple(found.differences),
        checked=found.checked,
        method=found.method,
        completed_at=utcnow(),
    )


def expected_entries(ctx: Context, tree: str) -> dict[str, Expected]:
    """What the snapshot ``tree`` puts on a server, path by path (gitlinks: nothing)."""
    repo = ctx.snapshots.repo
    sized = repo.sized_entries(tree)
    if sized is None:  # no git here, or objects only in an attached source
        sized = [(p, e, -1) for p, e in repo.walk_tree(tree)]
    expected: dict[str, Expected] = {}
    for path, entry, size in sized:
        if entry.mode == MODE_SYMLINK:
            target = repo.read_blob(entry.oid).decode("utf-8", "surrogateescape")
            expected[path] = Expected("symlink", entry.oid, len(target), target)
        elif entry.mode != MODE_TREE and entry.mode & 0o170000 == 0o100000:
            kind: ExpectedKind = "executable" if entry.mode == MODE_EXECUTABLE else "file"
            known = size if size >= 0 else repo.object_size(entry.oid)
            expected[path] = Expected(kind, entry.oid, known)
    return expected


def server_prune(ctx: Context, deployment: Deployment) -> Callable[[str], bool]:
    """What a listing of the server leaves out: our ``.deployhq-lite/`` and the paths the
    deployment excluded (the server's ``excluded_files`` and the revision's
    ``.deployignore``), which a deploy neither writes nor deletes."""
    target = ctx.settings.find_server(deployment.project, deployment.server)
    lines = list(target.excluded_files) if target else []
    lines += _deployignore(ctx, deployment)
    spec = exclusion_spec(lines)

    def prune(path: str) -> bool:
        if path == _OURS or path.startswith(_OURS + "/"):
            return True
        return spec is not None and bool(spec.match_file(path))

    return prune


def _deployignore(ctx: Context, deployment: Deployment) -> list[str]:
    """The revision's ``.deployignore`` patterns (none when the source cannot say)."""
    project = ctx.settings.projects.get(deployment.project)
    if project is None:
        return []  # a stack's environment: no .deployignore
    server = ctx.settings.find_server(deployment.project, deployment.server)
    subdirectory = (server.subdirectory if server else None) or project.subdirectory
    try:
        repo = ctx.source(deployment.project)
        tree = repo.tree_of(deployment.end_revision)
        if subdirectory:
            tree = repo.subtree(tree, subdirectory.strip("/")) or tree
        return deployignore_lines(repo, tree)
    except DeployHQLiteError:
        return []


def blob_matcher(ctx: Context, method: str) -> tuple[Callable[[Expected, str], bool], str]:
    """How a digest of ``method`` is compared with a snapshot entry, and its label."""
    if method == "sha1sum":
        return _sha1_matches(ctx), "sha1"
    return _blob_matches, "blob"


def _blob_matches(want: Expected, digest: str) -> bool:
    return digest == want.blob


def _sha1_matches(ctx: Context) -> Callable[[Expected, str], bool]:
    """sha1sum gives the SHA-1 of the bytes: compare with the blob's, read from the store."""
    repo = ctx.snapshots.repo

    def matches(want: Expected, digest: str) -> bool:
        content = repo.read_blob(want.blob)
        return hashlib.sha1(content, usedforsecurity=False).hexdigest() == digest

    return matches
