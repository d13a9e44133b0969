"""Reading what an SSH server holds, for ``verify``: its tree listed over SFTP (a
symlink is listed with its target, never followed), and which of some paths are regular
files below real directories now (``find_files``, before they are hashed)."""

from __future__ import annotations

import errno
import functools
import shlex
import stat as st
from collections.abc import Iterator, Sequence
from typing import Any

import paramiko

from ..base import FIND_PRINTF, Prune, RemoteEntry, RemoteKind, parse_find_listing, pruned
from .pipeline import Pipe
from .remotehash import run_feeding

_GONE = (errno.ENOENT, errno.ENOTDIR)


def list_remote(
    ssh: paramiko.Transport, root: str, prune: Prune | None, *, open_timeout: float
) -> list[tuple[str, RemoteEntry]] | None:
    """Every entry below ``root`` as GNU find on the server lists it, in one command
    (one round trip where the SFTP walk makes four per directory); None when the server
    runs no commands or has no GNU find (then :func:`walk`). The command is fixed text
    and the shell-quoted root; find never follows a symlink below its start (``-P``)."""
    command = f"cd -- {shlex.quote(root)} && find -P . -mindepth 1 -printf '{FIND_PRINTF}'"
    ran = run_feeding(ssh, command, iter(()), open_timeout=open_timeout)
    if ran is None or ran.status != 0:
        return None
    return list(pruned(parse_find_listing(ran.out), prune))


def walk(
    sftp: paramiko.SFTPClient, root: str, prune: Prune | None
) -> Iterator[tuple[str, RemoteEntry]]:
    """Every entry below ``root``, parents first, by name (over SFTP)."""
    stack = [""]
    while stack:
        rel = stack.pop()
        where = f"{root}/{rel}" if rel else root
        try:
            items = sftp.listdir_attr(where)
        except OSError as exc:
            if exc.errno in _GONE:
                continue  # replaced since it was listed
            raise
        listed: list[tuple[str, RemoteEntry]] = []
        for item in sorted(items, key=lambda a: str(a.filename)):
            path = f"{rel}/{item.filename}" if rel else str(item.filename)
            if prune is not None and prune(path):
                continue
            listed.append((path, _entry(sftp, f"{where}/{item.filename}", item)))
        yield from listed
        stack.extend(reversed([path for path, entry in listed if entry.kind == "dir"]))


def _entry(sftp: paramiko.SFTPClient, full: str, attrs: Any) -> RemoteEntry:
    mode = attrs.st_mode or 0
    size = attrs.st_size or 0
    if st.S_ISLNK(mode):
        target = sftp.readlink(full)
        return RemoteEntry("symlink", size, 0o777, str(target) if target is not None else "")
    kind: RemoteKind = "other"
    if st.S_ISDIR(mode):
        kind = "dir"
    elif st.S_ISREG(mode):
        kind = "file"
    return RemoteEntry(kind, size, st.S_IMODE(mode))


# What LSTAT found for each path asked about, and the failures that were not "missing".
Found = tuple[dict[str, Any], list[tuple[str, Exception]]]


def find_files(pipe: Pipe, root: str, paths: Sequence[str]) -> Found:
    """The LSTAT attributes of each of ``paths`` that is a regular file now, below
    directories that are real ones (not symlinks) all the way from ``root``; the others
    are left out. Every LSTAT is in flight at once.

    A path that is missing is left out; any other failure (permission denied) is
    returned with its path, for the caller to raise.
    """
    parents = {p.rpartition("/")[0] for p in paths} - {""}
    for parent in list(parents):
        while "/" in parent:
            parent = parent.rpartition("/")[0]
            parents.add(parent)
    seen: dict[str, Any] = {}
    failures: list[tuple[str, Exception]] = []
    for rel in sorted(parents | set(paths)):
        pipe.lstat_attrs(f"{root}/{rel}", functools.partial(_record, seen, failures, rel))
    pipe.drain()
    dirs = {rel for rel in parents if st.S_ISDIR(_mode(seen.get(rel)))}
    found = {
        path: seen[path]
        for path in paths
        if st.S_ISREG(_mode(seen.get(path))) and _below(path, dirs)
    }
    return found, failures


def same_file(before: Any, after: Any) -> bool:
    """Whether two LSTAT (or FSTAT) results look like the same, unchanged file: type,
    permissions, size, owner and modification time (SFTP v3 has no inode number)."""
    return all(
        getattr(before, name) == getattr(after, name)
        for name in ("st_mode", "st_size", "st_uid", "st_gid", "st_mtime")
    )


def _record(
    seen: dict[str, Any],
    failures: list[tuple[str, Exception]],
    rel: str,
    attrs: Any,
    error: Exception | None,
) -> None:
    if attrs is not None:
        seen[rel] = attrs
    elif not isinstance(error, FileNotFoundError):  # missing (or ENOTDIR, ELOOP): left out
        failures.append((rel, error or OSError("LSTAT failed")))


def _mode(attrs: Any) -> int:
    return 0 if attrs is None else int(attrs.st_mode or 0)


def _below(path: str, dirs: set[str]) -> bool:
    parent = path.rpartition("/")[0]
    while parent:
        if parent not in dirs:
            return False
        parent = parent.rpartition("/")[0]
    return True
