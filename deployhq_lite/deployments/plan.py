"""Planning a deployment: what the server holds, what it should hold, and the changes.

A deployment's start is what the server holds: the end snapshot of the latest completed
deployment there (none: a full upload). Deployments that failed, or were cut off, since
then may have left some paths in between; those paths are *uncertain* and are settled
against the server itself before anything is written, so every run converges.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..changeset import (
    Changeset,
    Entry,
    FileChange,
    refuse_writes_under_symlinks,
)
from ..errors import DeployHQLiteError, PathOutsideRootError, StoreError, UnsafePathError
from ..records import ChangeKind, Deployment, DeploymentStatus
from ..selection import exclusion_spec
from ..snapshots import EMPTY, Snapshot, TreeSnapshot, changes_between
from ..transports import Transport
from .configfiles import server_tree

if TYPE_CHECKING:
    from .. import git
    from ..context import Context


@dataclass(frozen=True, slots=True)
class Held:
    """What a server holds by its marker, when that overrides the history: the snapshot
    of the marker's revision (EMPTY: none we know, or no marker) and who put it there."""

    snapshot: Snapshot
    revision: str | None = None
    deployment: Deployment | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    start: Deployment | None
    end: Snapshot
    changeset: Changeset
    uncertain: frozenset[str] = frozenset()  # paths unfinished deployments may have left
    prune: tuple[str, ...] = ()  # directories found where files must go, or left emptied
    held: Held | None = None  # the marker's word, taken over the history's (--override-marker)
    source: git.Repository | None = None  # where the end tree's new objects are read from

    @property
    def start_revision(self) -> str | None:
        if self.held is not None:
            return self.held.revision
        return self.start.end_revision if self.start else None


def plan(ctx: Context, deployment: Deployment, *, held: Held | None = None) -> Plan:
    """What running ``deployment`` now would change on its server.

    Paths that deployments which failed (or were cut off) since the last completed one
    may have touched are *uncertain*: the server holds the old state, the new one, or
    half of a type change. Here they are planned as rewrites to the target; at run time
    :func:`settle` looks at what the server really holds at those paths.

    With ``held`` (the server's marker overrides the history) the changes go from what
    the marker names instead, and nothing the history knows is uncertain there.
    """
    history, store = ctx.history, ctx.snapshots
    # A deployment's end tree names the source repository's objects until the snapshot is
    # kept; opening the source attaches it to the store, which reads them through it. A
    # rollback's (and a repair's) end tree is a kept snapshot already.
    snapshot_end = deployment.is_rollback or deployment.repair
    source = None if snapshot_end else ctx.source(deployment.project)
    latest = history.find_latest_completed(deployment.project, deployment.server)
    if held is not None:
        latest = held.deployment
    start = held.snapshot if held else _stored_snapshot(ctx, latest) if latest else EMPTY
    assert deployment.end_tree is not None
    end = TreeSnapshot(store.repo, deployment.end_tree)
    changeset = changes_between(start, end)
    target = ctx.settings.find_server(deployment.project, deployment.server)
    spec = exclusion_spec(target.excluded_files) if target else None
    if spec is not None:  # excluded now: neither uploaded nor deleted, whatever was stored
        config = {f.path for f in ctx.settings.config_files(deployment.project, deployment.server)}
        changeset = Changeset.of(
            [c for c in changeset if c.path in config or not spec.match_file(c.path)]
        )
    if deployment.full:  # every file written, whatever the server holds
        changed = changeset.paths()
        rewrites = [
            FileChange(ChangeKind.MODIFIED, p, e, e) for p, e in end.items() if p not in changed
        ]
        changeset = Changeset.of([*changeset, *rewrites])
    _refuse_symlinked_writes(changeset, start, end)
    unfinished = [
        d
        for d in history.unfinished_since(
            deployment.project, deployment.server, latest.seq if latest else 0
        )
        if d.identifier != deployment.identifier and held is None
    ]
    uncertain = _touched_by(ctx, unfinished)
    if uncertain:
        kept = [c for c in changeset if c.path not in uncertain]
        guessed = [_rewrite(p, start.get(p), end.get(p)) for p in uncertain]
        changeset = Changeset.of([*kept, *guessed])
    _refuse_bad_symlink_targets(ctx, changeset)
    return Plan(latest, end, changeset, uncertain, held=held, source=source)


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


def _refuse_bad_symlink_targets(ctx: Context, changeset: Changeset) -> None:
    """A symlink whose target is empty or holds a NUL byte cannot be made on any server:
    refuse it before anything is written (symlinks are few and their targets small)."""
    store = ctx.snapshots.repo
    for change in changeset.writes:
        if change.new is None or not change.new.kind.is_symlink:
            continue
        target = store.read_blob(change.new.blob)
        if not target or b"\0" in target:
            why = "holds a NUL byte" if target else "is empty"
            raise UnsafePathError(change.path, f"its symlink target {why}")


def _rewrite(path: str, old: Entry | None, new: Entry | None) -> FileChange:
    """Bring an uncertain path to ``new`` whatever is there (a delete if ``new`` is None)."""
    if new is None:
        return FileChange(ChangeKind.DELETED, path, old, None)
    return FileChange(ChangeKind.ADDED if old is None else ChangeKind.MODIFIED, path, old, new)


def _stored_snapshot(ctx: Context, deployment: Deployment) -> TreeSnapshot:
    tree = ctx.snapshots.find_tree(deployment.identifier)
    if tree is None:
        raise StoreError(
            f"the snapshot of deployment {deployment.identifier} is missing from "
            f"{ctx.snapshots.path}"
        )
    return TreeSnapshot(ctx.snapshots.repo, tree)


def _touched_by(ctx: Context, unfinished: list[Deployment]) -> frozenset[str]:
    """Every path the unfinished deployments set out to change."""
    paths: set[str] = set()
    for failed in unfinished:
        tree = ctx.snapshots.find_tree(failed.identifier)
        if tree is None:  # it stopped before touching the server
            continue
        failed_start: Snapshot = EMPTY
        if failed.start_deployment is not None:
            started_from = ctx.history.find(failed.start_deployment)
            if started_from is not None:
                failed_start = _stored_snapshot(ctx, started_from)
        failed_end = TreeSnapshot(ctx.snapshots.repo, tree)
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
        under_symlink = False
        try:
            found = transport.stat(path)
        except PathOutsideRootError:  # under a symlink, which is uncertain too
            found, under_symlink = None, True
        if found is not None and found.kind == "dir":
            prune.append(path)  # its tracked children are uncertain paths as well
            found = None
        if target is not None:
            kind = ChangeKind.ADDED if found is None else ChangeKind.MODIFIED
            settled.append(FileChange(kind, path, None, target))
        elif found is not None:
            settled.append(FileChange(ChangeKind.DELETED, path, None, None))
        elif not under_symlink:  # already gone: the failed run may have emptied its parents
            prune.extend(_parents(path))
    return replace(the_plan, changeset=Changeset.of([*kept, *settled]), prune=tuple(prune))


def prunable(the_plan: Plan) -> list[str]:
    """The directories to remove while empty once the deletes are done: those the
    changeset empties and those settled, but none the end snapshot holds (its files are
    written next: the directory stays the same one, with its mode)."""
    candidates = [*the_plan.changeset.emptied_dirs(), *the_plan.prune]
    return [d for d in dict.fromkeys(candidates) if not _holds_dir(the_plan.end, d)]


def _holds_dir(snapshot: Snapshot, directory: str) -> bool:
    """Whether ``directory`` is a directory in ``snapshot``."""
    if isinstance(snapshot, TreeSnapshot) and snapshot.tree is not None:
        return snapshot.repo.subtree(snapshot.tree, directory) is not None
    prefix = directory + "/"
    return any(path.startswith(prefix) for path in snapshot)


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[:depth]) for depth in range(len(parts), 0, -1)]


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
