"""Reading what a local server holds, for ``verify``: its tree listed and its files
hashed, without ever following a symlink (directories are opened ``O_NOFOLLOW`` one
component at a time from the root's fd, files ``O_NOFOLLOW`` in their directory)."""

from __future__ import annotations

import errno
import operator
import os
import shutil
import stat as st
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from ..values import BlobHasher
from .base import FIND_PRINTF, Prune, RemoteEntry, RemoteKind, parse_find_listing, pruned

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_HASHERS = 4  # threads hashing (hashlib lets go of the GIL on big buffers)
_CHUNK = 1024 * 1024
# Gone, or no longer a directory / a regular file (a symlink now): not followed, not read.
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENXIO)


def walk(root_fd: int, prune: Prune | None) -> Iterator[tuple[str, RemoteEntry]]:
    """Every entry below the directory ``root_fd``, parents first: listed by GNU find
    when it is there (a C walk, three times faster than ours on 50,000 files), else by
    :func:`walk_here`."""
    found = _find(root_fd)
    if found is None:
        yield from walk_here(root_fd, prune)
        return
    yield from pruned(found, prune)


def _find(root_fd: int) -> list[tuple[str, RemoteEntry]] | None:
    """The tree below ``root_fd`` as GNU find lists it, never following a symlink: it
    starts from ``/proc/self/fd/N`` (``-H`` follows that one link, to the very directory
    the transport opened). None when find or /proc is missing, or find fails."""
    find = shutil.which("find")
    start = f"/proc/self/fd/{root_fd}"
    if find is None or not os.path.isdir(start):
        return None
    done = subprocess.run(  # noqa: S603 - fixed argv: no file name is in it
        [find, "-H", start, "-mindepth", "1", "-printf", FIND_PRINTF],
        pass_fds=(root_fd,),
        capture_output=True,
        check=False,
    )
    return parse_find_listing(done.stdout) if done.returncode == 0 else None


def walk_here(root_fd: int, prune: Prune | None) -> Iterator[tuple[str, RemoteEntry]]:
    """Every entry below the directory ``root_fd``, parents first, by name (in Python:
    directories opened ``O_NOFOLLOW`` from the root's fd)."""
    cursor = _Cursor(root_fd)
    try:
        stack = [""]
        while stack:
            rel = stack.pop()
            fd = cursor.open(rel)
            if fd is None:
                continue  # replaced since it was listed
            listed = _list(fd, rel, prune)
            yield from listed
            stack.extend(reversed([path for path, entry in listed if entry.kind == "dir"]))
    finally:
        cursor.close()


def digests(root_fd: int, paths: Sequence[str]) -> dict[str, str | None]:
    """path -> git blob id of each regular file (None: not one now), a run of
    directories (in order, so they share their parents' fds) per thread."""
    by_dir: dict[str, list[str]] = {}
    for path in paths:
        parent, _, name = path.rpartition("/")
        by_dir.setdefault(parent, []).append(name)
    dirs = sorted(by_dir.items())
    share = -(-len(dirs) // _HASHERS) or 1
    runs = [dirs[i : i + share] for i in range(0, len(dirs), share)]
    found: dict[str, str | None] = {}
    with ThreadPoolExecutor(_HASHERS) as pool:
        for done in pool.map(lambda run: _hash_run(root_fd, run), runs):
            found.update(done)
    return {path: found.get(path) for path in paths}


class _Cursor:
    """The directory fds along one path from the root, kept for the next path: walked in
    order, a directory's parents are opened once, not once per child."""

    def __init__(self, root_fd: int) -> None:
        self._root = root_fd
        self._open: list[tuple[str, int]] = []

    def open(self, rel: str) -> int | None:
        """An fd for directory ``rel`` (None: missing, or not a directory all the way);
        valid until the next call."""
        parts = rel.split("/") if rel else []
        keep = 0
        while keep < min(len(parts), len(self._open)) and self._open[keep][0] == parts[keep]:
            keep += 1
        for _, fd in self._open[keep:]:
            os.close(fd)
        del self._open[keep:]
        fd = self._open[-1][1] if self._open else self._root
        for name in parts[keep:]:
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in _GONE:
                    return None
                raise
            self._open.append((name, fd))
        return fd

    def close(self) -> None:
        for _, fd in self._open:
            os.close(fd)
        self._open.clear()


def _list(fd: int, rel: str, prune: Prune | None) -> list[tuple[str, RemoteEntry]]:
    found = []
    with os.scandir(fd) as entries:
        for item in sorted(entries, key=_name):
            path = f"{rel}/{item.name}" if rel else item.name
            if prune is not None and prune(path):
                continue
            try:
                info = item.stat(follow_symlinks=False)
                found.append((path, entry_of(item.name, fd, info)))
            except FileNotFoundError:
                continue  # gone since it was listed
    return found


_name = operator.attrgetter("name")


def entry_of(name: str, dfd: int, info: os.stat_result) -> RemoteEntry:
    """What ``name`` in directory ``dfd`` is, from its lstat ``info``."""
    if st.S_ISLNK(info.st_mode):
        return RemoteEntry("symlink", info.st_size, 0o777, os.readlink(name, dir_fd=dfd))
    kind: RemoteKind = "other"
    if st.S_ISDIR(info.st_mode):
        kind = "dir"
    elif st.S_ISREG(info.st_mode):
        kind = "file"
    return RemoteEntry(kind, info.st_size, st.S_IMODE(info.st_mode))


def _hash_run(root_fd: int, run: list[tuple[str, list[str]]]) -> dict[str, str | None]:
    cursor = _Cursor(root_fd)
    found: dict[str, str | None] = {}
    try:
        for rel, names in run:
            prefix = f"{rel}/" if rel else ""
            dfd = cursor.open(rel)
            for name in names:
                found[prefix + name] = None if dfd is None else _hash_file(dfd, name)
    finally:
        cursor.close()
    return found


def _hash_file(dfd: int, name: str) -> str | None:
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dfd)
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise
    try:
        info = os.fstat(fd)
        if not st.S_ISREG(info.st_mode):
            return None  # a directory, a FIFO or a device put there: never read
        hasher = BlobHasher(info.st_size)
        read = 0
        while read < info.st_size and (chunk := os.read(fd, min(_CHUNK, info.st_size - read))):
            hasher.update(chunk)  # the size fstat gave, no read to EOF: one syscall saved
            read += len(chunk)
    finally:
        os.close(fd)
    # a file that changed size while read: its bytes cannot match a blob of that size
    return hasher.hexdigest() if read == info.st_size else ""
