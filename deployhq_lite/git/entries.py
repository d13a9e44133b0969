"""Git's file modes and the plain values trees are made of (no pygit2 needed)."""

from __future__ import annotations

from dataclasses import dataclass

MODE_FILE = 0o100644
MODE_EXECUTABLE = 0o100755
MODE_SYMLINK = 0o120000
MODE_GITLINK = 0o160000
MODE_TREE = 0o040000
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


@dataclass(frozen=True, slots=True)
class RawEntry:
    oid: str
    mode: int


# One difference: (path, old oid, old mode, new oid, new mode); an absent side is (None, 0).
RawDelta = tuple[str, str | None, int, str | None, int]
