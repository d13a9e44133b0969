"""An in-memory server: the transport contract without a disk, for tests and demos.

The server is two structures: ``nodes`` maps a path to a file (bytes and mode) or a
symlink (its target), and ``dirs`` is the set of directories (the root is implicit).
It keeps the same rules as the local transport: parents are created on put, nothing
is written through a symlink, deleting a directory is an error. ``fail_on`` names
paths whose put raises ``RemotePathError``, to inject failures.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import PathOutsideRootError, RemotePathError, TransportError
from .base import BaseTransport, Prune, RemoteEntry, check_relative


@dataclass(frozen=True, slots=True)
class MemoryFile:
    data: bytes
    mode: int


@dataclass(frozen=True, slots=True)
class MemorySymlink:
    target: str


Node = MemoryFile | MemorySymlink


class MemoryTransport(BaseTransport):
    def __init__(self, *, server: str = "memory", fail_on: set[str] | None = None) -> None:
        super().__init__(server)
        self.nodes: dict[str, Node] = {}
        self.dirs: set[str] = set()
        self.fail_on: set[str] = set(fail_on or ())
        self.syncs = 0

    # -- lifecycle -----------------------------------------------------------------------

    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass

    # -- primitives --------------------------------------------------------------------------

    def stat(self, path: str) -> RemoteEntry | None:
        self._require_open()
        parent = _parent(path)
        if not self._walk(parent, create=False):
            return None
        node = self.nodes.get(path)
        if isinstance(node, MemoryFile):
            return RemoteEntry("file", len(node.data), node.mode)
        if isinstance(node, MemorySymlink):
            return RemoteEntry("symlink", len(os.fsencode(node.target)), 0o777, node.target)
        return RemoteEntry("dir", 0, 0o755) if path in self.dirs else None

    def read_file(self, path: str) -> bytes | None:
        self._require_open()
        parent = _parent(path)
        if not self._walk(parent, create=False):
            return None
        node = self.nodes.get(path)
        if isinstance(node, MemoryFile):
            return node.data
        if node is None and path not in self.dirs:
            return None
        raise self._error(path, "not a regular file")

    def put_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        self._before_put(path)
        self.nodes[path] = MemoryFile(bytes(data), mode & 0o7777)

    def put_symlink(self, path: str, target: str) -> None:
        self._before_put(path)
        self.nodes[path] = MemorySymlink(target)

    def delete(self, path: str) -> None:
        self._require_open()
        parent = _parent(path)
        if not self._walk(parent, create=False):
            return
        if path in self.dirs:
            raise self._error(path, "is a directory")
        self.nodes.pop(path, None)

    def make_dirs(self, path: str) -> None:
        self._require_open()
        rel = str(check_relative(path, allow_root=True))
        if rel != ".":
            self._walk(rel, create=True)

    def prune_dirs(self, paths: Iterable[str]) -> list[str]:
        """Remove each directory while it is empty, deepest first; never the root."""
        self._require_open()
        todo = {p: _parent(p) for p in set(paths) if p not in ("", ".")}  # guard them all first
        removed: list[str] = []
        for path in sorted(todo, key=lambda p: (-p.count("/"), p)):
            if not self._walk(todo[path], create=False) or path not in self.dirs:
                continue
            prefix = path + "/"
            if any(p.startswith(prefix) for p in (*self.nodes, *self.dirs)):
                continue
            self.dirs.discard(path)
            removed.append(path)
        return removed

    def list_tree(self, prune: Prune | None = None) -> Iterator[tuple[str, RemoteEntry]]:
        self._require_open()
        pruned: list[str] = []
        for path in sorted({*self.nodes, *self.dirs}, key=lambda p: p.split("/")):
            if any(path.startswith(p + "/") for p in pruned):
                continue
            if prune is not None and prune(path):
                pruned.append(path)
                continue
            entry = self.stat(path)
            if entry is not None:
                yield path, entry

    def sync(self) -> None:
        self._require_open()
        self.syncs += 1

    def probe(self) -> dict[str, object]:
        self._require_open()
        return {"root": "(in memory)"}

    # -- helpers ---------------------------------------------------------------------------------

    def _before_put(self, path: str) -> None:
        self._require_open()
        parent = _parent(path)
        if path in self.fail_on:
            raise self._error(path, "injected failure")
        self._walk(parent, create=True)
        if path in self.dirs:
            raise self._error(path, "is a directory")

    def _walk(self, rel: str, *, create: bool) -> bool:
        """Whether directory ``rel`` exists (made when ``create``); refuse symlinks on the way.

        A path below a file is absent for reads and an error for writes. Every component
        is checked before anything is created, so a refusal writes nothing.
        """
        if rel in ("", "."):
            return True
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        for prefix in prefixes:
            node = self.nodes.get(prefix)
            if isinstance(node, MemorySymlink):
                raise PathOutsideRootError(
                    f"server {self.server}: refusing to write through symlink {prefix!r} "
                    "on the server (it could lead outside the root)",
                    server=self.server,
                    path=prefix,
                )
            if node is not None:  # a file: nothing can be below it
                if create:
                    raise self._error(prefix, "not a directory")
                return False
            if prefix not in self.dirs and not create:
                return False
        self.dirs.update(prefixes)
        return True

    def _error(self, path: str, reason: str) -> RemotePathError:
        return RemotePathError(
            f"server {self.server}: memory:/{path}: {reason}", server=self.server, path=path
        )

    def _translate(self, exc: Exception, path: str) -> TransportError | None:
        return None  # nothing here raises backend exceptions


def _parent(path: str) -> str:
    """The parent directory of ``path`` after the path guard (``""`` for the root)."""
    check_relative(path)
    return path.rpartition("/")[0]
