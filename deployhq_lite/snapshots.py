"""Snapshots: immutable ``path -> Entry`` mappings, usually backed by a git tree.

A :class:`TreeSnapshot` reads its tree lazily from a repository (the snapshot store,
which also sees the source repository's objects); :func:`changes_between` diffs two
of them with libgit2 in process and falls back to the pure model otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType

from . import git
from .changeset import Changeset, Entry, EntryKind, build_changeset, diff
from .errors import RepositoryError

_KINDS = {
    git.MODE_FILE: EntryKind.FILE,
    git.MODE_EXECUTABLE: EntryKind.EXECUTABLE,
    git.MODE_SYMLINK: EntryKind.SYMLINK,
    0o100664: EntryKind.FILE,  # old git wrote group-writable files; same thing
}


def entry_from_raw(path: str, raw: git.RawEntry) -> Entry:
    return _entry(path, raw.oid, raw.mode)


def _entry(path: str, oid: str, mode: int) -> Entry:
    kind = _KINDS.get(mode)
    if kind is None:
        if mode == git.MODE_GITLINK:
            raise RepositoryError(
                f"submodule at {path!r} is not supported yet: deploy its files from a "
                "build step or vendor them into the repository"
            )
        raise RepositoryError(f"unsupported git file mode {mode:o} at {path!r}")
    return Entry(oid, kind)


class Snapshot(Mapping[str, Entry]):
    """An immutable mapping; ``tree`` is its git tree id when it has one."""

    tree: str | None = None

    def __init__(self, entries: Mapping[str, Entry] | None = None) -> None:
        self._entries = MappingProxyType(dict(entries or {}))

    def __getitem__(self, path: str) -> Entry:
        return self._entries[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class TreeSnapshot(Snapshot):
    """A snapshot that is a git tree in ``repo``; entries are read on first use."""

    def __init__(self, repo: git.Repository, tree: str) -> None:
        self.repo = repo
        self.tree = self._tree = tree
        self._loaded: dict[str, Entry] | None = None

    def _all(self) -> dict[str, Entry]:
        if self._loaded is None:
            self._loaded = {
                path: entry_from_raw(path, raw) for path, raw in self.repo.walk_tree(self._tree)
            }
        return self._loaded

    def __getitem__(self, path: str) -> Entry:
        if self._loaded is None:
            raw = self.repo.tree_entry(self._tree, path)
            if raw is None:
                raise KeyError(path)
            return entry_from_raw(path, raw)
        return self._loaded[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


EMPTY = Snapshot()


def _tree_of(snapshot: Mapping[str, Entry]) -> str | None:
    """The tree id, ``""`` for an empty plain snapshot, ``None`` if it has no tree."""
    if isinstance(snapshot, TreeSnapshot):
        return snapshot.tree
    return "" if isinstance(snapshot, Snapshot) and len(snapshot) == 0 else None


def changes_between(old: Mapping[str, Entry], new: Mapping[str, Entry]) -> Changeset:
    """The changeset from ``old`` to ``new``; libgit2 does it when both are trees."""
    old_tree, new_tree = _tree_of(old), _tree_of(new)
    repo = next((s.repo for s in (new, old) if isinstance(s, TreeSnapshot)), None)
    if repo is None or old_tree is None or new_tree is None:
        return diff(old, new)
    return build_changeset(
        (
            path,
            None if old_oid is None else _entry(path, old_oid, old_mode),
            None if new_oid is None else _entry(path, new_oid, new_mode),
        )
        for path, old_oid, old_mode, new_oid, new_mode in repo.diff_trees(
            old_tree or None, new_tree or None
        )
    )
