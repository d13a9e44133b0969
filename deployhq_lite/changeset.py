"""Changesets: the ordered file changes that turn one snapshot into another.

Pure values, no I/O. Order is canonical: deletes first, deepest paths first, then
writes (added and modified) in path order. A type change (file <-> symlink,
file <-> directory) is a delete followed by an add; renames are a delete and an add.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from .errors import UnsafePathError
from .names import RESERVED_DIR, component_problem, is_reserved_dir
from .records import ChangeKind


class EntryKind(StrEnum):
    FILE = "file"
    EXECUTABLE = "executable"
    SYMLINK = "symlink"

    @property
    def is_symlink(self) -> bool:
        return self is EntryKind.SYMLINK


@dataclass(frozen=True, slots=True)
class Entry:
    """What sits at a path: a blob id (a symlink's blob is its target) and a kind."""

    blob: str
    kind: EntryKind = EntryKind.FILE


@dataclass(frozen=True, slots=True)
class FileChange:
    kind: ChangeKind
    path: str
    old: Entry | None
    new: Entry | None

    def reverse(self) -> FileChange:
        kind = {
            ChangeKind.ADDED: ChangeKind.DELETED,
            ChangeKind.DELETED: ChangeKind.ADDED,
            ChangeKind.MODIFIED: ChangeKind.MODIFIED,
        }[self.kind]
        return FileChange(kind, self.path, self.new, self.old)

    @property
    def is_delete(self) -> bool:
        return self.kind is ChangeKind.DELETED


def _order_key(change: FileChange) -> tuple[int, int, str]:
    if change.is_delete:
        return (0, -change.path.count("/"), change.path)
    return (1, 0, change.path)


@dataclass(frozen=True, slots=True)
class Changeset:
    changes: tuple[FileChange, ...] = ()

    @classmethod
    def of(cls, changes: Iterable[FileChange]) -> Changeset:
        return cls(tuple(sorted(changes, key=_order_key)))

    def reverse(self) -> Changeset:
        return Changeset.of(c.reverse() for c in self.changes)

    def __iter__(self) -> Iterator[FileChange]:
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)

    def __bool__(self) -> bool:
        return bool(self.changes)

    @property
    def deletes(self) -> tuple[FileChange, ...]:
        return tuple(c for c in self.changes if c.is_delete)

    @property
    def writes(self) -> tuple[FileChange, ...]:
        return tuple(c for c in self.changes if not c.is_delete)

    def paths(self) -> set[str]:
        return {c.path for c in self.changes}

    def counts(self) -> dict[str, int]:
        out = {kind.value: 0 for kind in ChangeKind}
        for change in self.changes:
            out[change.kind.value] += 1
        return out

    def emptied_dirs(self) -> list[str]:
        """Parent directories of deleted paths, deepest first: candidates for pruning."""
        dirs: set[str] = set()
        for change in self.deletes:
            parts = change.path.split("/")[:-1]
            for depth in range(len(parts), 0, -1):
                dirs.add("/".join(parts[:depth]))
        return sorted(dirs, key=lambda d: (-d.count("/"), d))


def classify(path: str, old: Entry | None, new: Entry | None) -> list[FileChange]:
    """The changes for one path seen on both sides; a kind change is delete + add."""
    if old == new:
        return []
    if old is None:
        return [FileChange(ChangeKind.ADDED, path, None, new)]
    if new is None:
        return [FileChange(ChangeKind.DELETED, path, old, None)]
    if old.kind.is_symlink != new.kind.is_symlink:
        return [
            FileChange(ChangeKind.DELETED, path, old, None),
            FileChange(ChangeKind.ADDED, path, None, new),
        ]
    return [FileChange(ChangeKind.MODIFIED, path, old, new)]


def build_changeset(pairs: Iterable[tuple[str, Entry | None, Entry | None]]) -> Changeset:
    """A changeset from ``(path, old, new)`` pairs; a path may come twice (halves).

    Every path is checked with :func:`check_path` before anything else happens.
    """
    merged: dict[str, tuple[Entry | None, Entry | None]] = {}
    for path, old, new in pairs:
        seen = merged.get(path)
        merged[path] = (old, new) if seen is None else (seen[0] or old, seen[1] or new)
    changes: list[FileChange] = []
    added, deleted, modified = ChangeKind.ADDED, ChangeKind.DELETED, ChangeKind.MODIFIED
    for path, (old, new) in merged.items():
        check_path(path)
        if old is None:  # the common cases inline; classify() handles the rest
            if new is not None:
                changes.append(FileChange(added, path, None, new))
        elif new is None:
            changes.append(FileChange(deleted, path, old, None))
        elif old.kind is new.kind:
            if old.blob != new.blob:
                changes.append(FileChange(modified, path, old, new))
        else:
            changes.extend(classify(path, old, new))
    links = {c.path for c in changes if c.new is not None and c.new.kind.is_symlink}
    if links:
        refuse_writes_under_symlinks(changes, links.__contains__)
    return Changeset.of(changes)


def refuse_writes_under_symlinks(
    changes: Iterable[FileChange], is_symlink: Callable[[str], bool]
) -> None:
    """A crafted tree can hold symlink ``d`` and file ``d/x``: refuse it before any write.

    ``is_symlink(directory)`` says whether a symlink sits at that path after the deletes.
    """
    checked: dict[str, bool] = {}
    for change in changes:
        if change.new is None:
            continue
        parts = change.path.split("/")
        for depth in range(1, len(parts)):
            ancestor = "/".join(parts[:depth])
            link = checked.get(ancestor)
            if link is None:
                link = checked[ancestor] = is_symlink(ancestor)
            if link:
                raise UnsafePathError(change.path, f"it lies under symlink {ancestor!r}")


def diff(old: Mapping[str, Entry], new: Mapping[str, Entry]) -> Changeset:
    """Pure changeset between two snapshots given as mappings (the reference model)."""
    pairs = [(p, old.get(p), new.get(p)) for p in old.keys() | new.keys()]
    return build_changeset(pairs)


def apply(changeset: Changeset, snapshot: Mapping[str, Entry]) -> dict[str, Entry]:
    """The mapping ``changeset`` produces from ``snapshot`` (the reference model)."""
    result = dict(snapshot)
    for change in changeset:
        if change.new is None:
            result.pop(change.path, None)
        else:
            result[change.path] = change.new
    return result


# Plain ASCII components that start with neither a dot nor a control character and hold
# no backslash: nothing here can be "..", ".git" or our reserved directory.
_PLAIN = re.compile(
    r"[^./\x00-\x1f\x7f\\~][^/\x00-\x1f\x7f\\~]*(?:/[^./\x00-\x1f\x7f\\~][^/\x00-\x1f\x7f\\~]*)*"
)


def check_path(path: str) -> None:
    """Refuse tree paths that could escape a server root or hit git's or our own files,
    on any server (the rules are in :mod:`names`)."""
    if path.isascii() and _PLAIN.fullmatch(path):
        return
    if not path or "\0" in path:
        raise UnsafePathError(path, "empty or contains NUL")
    if path.startswith("/"):
        raise UnsafePathError(path, "absolute path")
    if "\\" in path:
        raise UnsafePathError(path, "backslash in path")
    parts = path.split("/")
    for part in parts:
        problem = component_problem(part)
        if problem:
            raise UnsafePathError(path, problem)
    if is_reserved_dir(parts[0]):
        raise UnsafePathError(path, f"{RESERVED_DIR}/ is reserved for deployhq-lite")
