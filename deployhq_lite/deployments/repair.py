"""Repair: write back what a server holds differently from the snapshot of its latest
deployment (``deploy --repair``), found the way ``verify`` finds it, on the open
connection, under the server's lock.

Missing, modified and mode differences are written (a mode one by rewriting the file
with the right mode); a type difference is undone: a directory where a file belongs is
emptied and removed first, a file where a directory belongs deleted. Extra files stay
unless the repair was asked to delete them (``delete_extra``); those inside a directory
that must become a file go in any case, as nothing else can put the file there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..changeset import Changeset, Entry, EntryKind, FileChange
from ..drift import Expected, compare, content_differences, merge
from ..records import ChangeKind, Difference, DifferenceKind
from ..snapshots import TreeSnapshot
from ..transports import RemoteEntry, Transport
from .plan import Plan
from .verify import blob_matcher, expected_entries, server_prune

if TYPE_CHECKING:
    from ..context import Context
    from ..records import Deployment

_KINDS = {
    "file": EntryKind.FILE,
    "executable": EntryKind.EXECUTABLE,
    "symlink": EntryKind.SYMLINK,
}


def repair_plan(ctx: Context, deployment: Deployment, transport: Transport) -> Plan:
    """The changes that bring the server back to ``deployment``'s end snapshot (the
    latest completed deployment's), from what the server holds now."""
    assert deployment.end_tree is not None
    latest = ctx.history.find_latest_completed(deployment.project, deployment.server)
    expected = expected_entries(ctx, deployment.end_tree)
    listed = dict(transport.list_tree(server_prune(ctx, latest or deployment)))
    comparison = compare(expected, listed)
    digests = transport.file_digests(comparison.to_hash)
    matches, label = blob_matcher(ctx, digests.method)
    differences = merge(
        comparison.differences,
        content_differences(expected, digests.digests, matches=matches, label=label),
    )  # as verify finds them, with the listing kept: the repair needs it
    changes, prune = _changes(differences, expected, listed, delete_extra=deployment.delete_extra)
    end = TreeSnapshot(ctx.snapshots.repo, deployment.end_tree)
    return Plan(latest, end, Changeset.of(changes), prune=tuple(prune))


def _changes(
    differences: list[Difference],
    expected: dict[str, Expected],
    listed: dict[str, RemoteEntry],
    *,
    delete_extra: bool,
) -> tuple[list[FileChange], list[str]]:
    writes: dict[str, FileChange] = {}
    deletes: dict[str, FileChange] = {}
    prune: list[str] = []
    for difference in differences:
        path, kind = difference.path, difference.kind
        want = expected.get(path)
        if kind is DifferenceKind.EXTRA:
            if delete_extra:
                deletes[path] = _delete(path)
            continue
        if kind is DifferenceKind.TYPE:
            found = listed.get(path)
            if found is not None and found.kind == "dir":  # a directory where a file goes
                below = [p for p, e in listed.items() if p.startswith(path + "/")]
                deletes.update({p: _delete(p) for p in below if listed[p].kind != "dir"})
                prune += sorted(
                    [p for p in below if listed[p].kind == "dir"] + [path],
                    key=lambda d: (-d.count("/"), d),
                )
            elif found is not None and want is None:  # a file where a directory goes
                deletes[path] = _delete(path)
                continue
        if want is not None:
            change = ChangeKind.ADDED if kind is DifferenceKind.MISSING else ChangeKind.MODIFIED
            entry = Entry(want.blob, _KINDS[want.kind])
            writes[path] = FileChange(change, path, None, entry)
    return [*deletes.values(), *writes.values()], prune


def _delete(path: str) -> FileChange:
    return FileChange(ChangeKind.DELETED, path, None, None)
