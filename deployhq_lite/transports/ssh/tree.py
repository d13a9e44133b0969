"""Reading what an SSH server holds, for ``verify``: its tree listed over SFTP (a
symlink is listed with its target, never followed)."""

from __future__ import annotations

import errno
import stat as st
from collections.abc import Iterator
from typing import Any

import paramiko

from ..base import Prune, RemoteEntry, RemoteKind

_GONE = (errno.ENOENT, errno.ENOTDIR)


def walk(
    sftp: paramiko.SFTPClient, root: str, prune: Prune | None
) -> Iterator[tuple[str, RemoteEntry]]:
    """Every entry below ``root``, parents first, by name."""
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
