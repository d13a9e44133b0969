"""Reading what a local server holds, for ``verify``: its tree listed and its files
hashed, without ever following a symlink (directories are opened ``O_NOFOLLOW`` one
component at a time from the root's fd, files ``O_NOFOLLOW`` in their directory)."""

from __future__ import annotations

import errno
import os
import stat as st
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from ..values import BlobHasher
from .base import Prune, RemoteEntry, RemoteKind

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_HASHERS = 4  # threads hashing (hashlib lets go of the GIL on big buffers)
_CHUNK = 1024 * 1024
# Gone, or no longer a directory / a regular file (a symlink now): not followed, not read.
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENXIO)


def walk(root_fd: int, prune: Prune | None) -> Iterator[tuple[str, RemoteEntry]]:
    """Every entry below the directory ``root_fd``, parents first, by name."""
    stack = [""]
    while stack:
        rel = stack.pop()
        fd = open_dir(root_fd, rel)
        if fd is None:
            continue  # replaced since it was listed
        try:
            listed = _list(fd, rel, prune)
        finally:
            os.close(fd)
        yield from listed
        stack.extend(reversed([path for path, entry in listed if entry.kind == "dir"]))


def digests(root_fd: int, paths: Sequence[str]) -> dict[str, str | None]:
    """path -> git blob id of each regular file (None: not one now), directory by
    directory on a few threads."""
    by_dir: dict[str, list[str]] = {}
    for path in paths:
        parent, _, name = path.rpartition("/")
        by_dir.setdefault(parent, []).append(name)
    found: dict[str, str | None] = {}
    with ThreadPoolExecutor(_HASHERS) as pool:
        for done in pool.map(lambda item: _hash_dir(root_fd, *item), by_dir.items()):
            found.update(done)
    return {path: found.get(path) for path in paths}


def open_dir(root_fd: int, rel: str) -> int | None:
    """An fd for directory ``rel`` (None: missing, or not a directory all the way)."""
    fd = os.dup(root_fd)
    for name in rel.split("/") if rel else []:
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _GONE:
                return None
            raise
        os.close(fd)
        fd = child
    return fd


def _list(fd: int, rel: str, prune: Prune | None) -> list[tuple[str, RemoteEntry]]:
    found = []
    with os.scandir(fd) as entries:
        for item in sorted(entries, key=lambda e: e.name):
            path = f"{rel}/{item.name}" if rel else item.name
            if prune is not None and prune(path):
                continue
            try:
                info = item.stat(follow_symlinks=False)
                found.append((path, _entry(item.name, fd, info)))
            except FileNotFoundError:
                continue  # gone since it was listed
    return found


def _entry(name: str, dfd: int, info: os.stat_result) -> RemoteEntry:
    if st.S_ISLNK(info.st_mode):
        return RemoteEntry("symlink", info.st_size, 0o777, os.readlink(name, dir_fd=dfd))
    kind: RemoteKind = "other"
    if st.S_ISDIR(info.st_mode):
        kind = "dir"
    elif st.S_ISREG(info.st_mode):
        kind = "file"
    return RemoteEntry(kind, info.st_size, st.S_IMODE(info.st_mode))


def _hash_dir(root_fd: int, rel: str, names: list[str]) -> dict[str, str | None]:
    prefix = f"{rel}/" if rel else ""
    dfd = open_dir(root_fd, rel)
    if dfd is None:
        return dict.fromkeys((prefix + n for n in names), None)
    try:
        return {prefix + name: _hash_file(dfd, name) for name in names}
    finally:
        os.close(dfd)


def _hash_file(dfd: int, name: str) -> str | None:
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dfd)
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise
    info = os.fstat(fd)
    if not st.S_ISREG(info.st_mode):
        os.close(fd)
        return None  # a directory, a FIFO or a device put there: never read
    with os.fdopen(fd, "rb", buffering=0) as f:
        hasher = BlobHasher(info.st_size)
        read = 0
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
            read += len(chunk)
        # a file that changed size while read: its bytes cannot match a blob of that size
        return hasher.hexdigest() if read == info.st_size else ""
