"""Trees to and from directories on disk: a build's checkout and its output.

A mixin of :class:`~.repository.Repository` (which gives it the pygit2 repository and
the tree lookups), kept apart from the object plumbing.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

import pygit2

from .. import names
from ..errors import RepositoryError
from ..values import Source
from .blobs import BlobReader
from .entries import (
    EMPTY_TREE,
    MODE_EXECUTABLE,
    MODE_FILE,
    MODE_GITLINK,
    MODE_SYMLINK,
    MODE_TREE,
    RawEntry,
)


class DirectoryTrees:
    """``export_tree`` and ``tree_from_directory`` for a repository."""

    path: str
    _repo: pygit2.Repository

    def _tree(self, oid: str) -> pygit2.Tree:
        raise NotImplementedError  # the repository's

    def _subtree(self, oid: str, where: str) -> pygit2.Tree:
        raise NotImplementedError  # the repository's

    def open_blob_reader(self, oids: Sequence[str]) -> BlobReader:
        raise NotImplementedError  # the repository's

    def export_tree(self, tree: str, dest: Path) -> None:
        """Write ``tree``'s files into the existing empty directory ``dest``.

        Files get mode 0o644 or 0o755, symlinks are made as symlinks, gitlinks are
        skipped. Every directory is made before any file or symlink, and nothing is
        overwritten, so no write can go through a symlink the tree itself made. Entry
        names ``.``, ``..``, ``.git`` (as any file system may read it, see :mod:`names`)
        or holding ``/`` are refused (RepositoryError).
        """
        blobs: list[tuple[Path, RawEntry]] = []
        stack: list[tuple[Path, pygit2.Tree]] = [(dest, self._tree(tree))]
        while stack:
            directory, node = stack.pop()
            for item in node:
                name = _checked_name(str(item.name), self.path)
                if item.filemode == MODE_TREE:
                    (directory / name).mkdir()
                    where = directory.relative_to(dest) / name
                    stack.append((directory / name, self._subtree(str(item.id), f"{where}/")))
                elif item.filemode != MODE_GITLINK:
                    blobs.append((directory / name, RawEntry(str(item.id), item.filemode)))
        with self.open_blob_reader([e.oid for _, e in blobs]) as reader:
            for target, entry in blobs:
                source = reader.open(entry.oid)
                try:
                    _write_entry(target, entry.mode, source)
                except FileExistsError:
                    raise RepositoryError(f"tree {tree} names {target} twice") from None
                finally:
                    source.close()

    def tree_from_directory(self, path: Path) -> str:
        """Write the directory ``path`` into this repository as a tree; return its id.

        Files are blobs (100755 when the owner may execute them, else 100644), symlinks
        are 120000 blobs of their target and are never followed, empty directories are
        left out as git does. A ``.git`` entry is refused rather than skipped (the output
        of a build must not hold one), and so are sockets, FIFOs and devices.
        """
        items: list[tuple[bytes, pygit2.Oid, int]] = []
        with os.scandir(path) as entries:
            for entry in entries:
                oid_mode = self._disk_entry(Path(entry.path), entry.stat(follow_symlinks=False))
                if oid_mode is not None:
                    items.append((os.fsencode(entry.name), *oid_mode))
        return self._write_tree(items)

    def _write_tree(self, items: list[tuple[bytes, pygit2.Oid, int]]) -> str:
        """A tree object of ``(name, id, mode)`` entries, written as git does; names are
        bytes (pygit2's TreeBuilder takes only names that are UTF-8)."""

        def key(item: tuple[bytes, pygit2.Oid, int]) -> bytes:  # git's order
            return item[0] + (b"/" if item[2] == MODE_TREE else b"")

        body = b"".join(
            b"%o %s\0" % (mode, name) + oid.raw for name, oid, mode in sorted(items, key=key)
        )
        return str(self._repo.odb.write(pygit2.enums.ObjectType.TREE, body))

    def _disk_entry(self, path: Path, st: os.stat_result) -> tuple[pygit2.Oid, int] | None:
        if names.is_git_name(path.name):
            raise RepositoryError(f"refusing to store {path}: a .git directory or file")
        if stat.S_ISLNK(st.st_mode):
            return self._repo.create_blob(os.fsencode(os.readlink(path))), MODE_SYMLINK
        if stat.S_ISREG(st.st_mode):
            mode = MODE_EXECUTABLE if st.st_mode & stat.S_IXUSR else MODE_FILE
            return self._repo.create_blob_fromdisk(str(path)), mode
        if stat.S_ISDIR(st.st_mode):
            subtree = self.tree_from_directory(path)
            return None if subtree == EMPTY_TREE else (pygit2.Oid(hex=subtree), MODE_TREE)
        raise RepositoryError(f"refusing to store {path}: not a file, symlink or directory")


def _checked_name(name: str, repository: str) -> str:
    """A tree entry name that is safe to create in a directory (of any file system)."""
    if name in ("", ".", "..") or "/" in name or "\0" in name or names.is_git_name(name):
        raise RepositoryError(f"refusing tree entry {name!r} in {repository}")
    return name


def _write_entry(target: Path, mode: int, source: Source) -> None:
    """Create the file or symlink ``target`` (never over anything) from ``source``."""
    if mode == MODE_SYMLINK:
        link = source.read()
        if not link or b"\0" in link:
            raise RepositoryError(f"refusing symlink {target}: its target is empty or holds NUL")
        os.symlink(os.fsdecode(link), target)
        return
    perms = 0o755 if mode == MODE_EXECUTABLE else 0o644
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, perms)
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(1024 * 1024):
            out.write(chunk)
        os.fchmod(out.fileno(), perms)  # not narrowed by the umask
