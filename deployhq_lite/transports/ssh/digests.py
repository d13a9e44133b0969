"""Digests of the files an SSH server holds, for ``verify``: hashed on the server in one
command where it can run ``git`` or ``sha1sum`` (``remotehash``), else read back over
SFTP and hashed here (``readback``).

The methods are tried in the transport's ``digest_methods`` order; what the server can
run is found once per connection. A method that fails (the server runs no commands, a
file could not be read, the output is not one digest per file) is logged and the next
one hashes the whole request: no digest comes back that its method is not sure of.

Only regular files are hashed. Each path (and each directory on its way from the root)
is LSTATed first, every LSTAT in flight at once: a path that is missing, a symlink, a
directory, or below a symlink is None and never opened. Races with a server that
changes meanwhile:

- ``git``/``sha1sum`` open a path as it is when they reach it, following a symlink: so
  each hashed path is LSTATed again afterwards; one that is no regular file then is
  None, one whose type, size, permissions, owner or modification time changed is ``""``
  (changed while hashed: it matches no blob). What remains: a symlink swapped in for a
  file and back again between the two looks is followed (the server's own user reads
  it there; a digest is all that comes back), and a change within the same second
  that keeps the size is not seen (SFTP v3 times are whole seconds).
- SFTP's OPEN follows a symlink too (v3 has no O_NOFOLLOW): ``readback`` compares the
  opened file's FSTAT with the LSTAT before, so a file put in its place is ``""``, one
  that is no regular file None. What remains: a different file with the same size,
  permissions, owner and time is not told apart (v3 has no inode number), and a FIFO
  swapped in between LSTAT and OPEN would hold the OPEN (v3 has no O_NONBLOCK).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

import paramiko

from ...errors import TransportError
from ...log import get_logger
from ..base import DigestMethod, FileDigests
from . import tree
from .pipeline import Pipe
from .readback import ReadBatch
from .remotehash import HashingFailed, find_hashers, hash_files

if TYPE_CHECKING:
    from ...config import ServerConfig

log = get_logger(__name__)

METHODS: tuple[DigestMethod, ...] = ("git-hash-object", "sha1sum", "sftp-read")


class Target(Protocol):
    """What hashing needs from its transport (``SFTPTransport``)."""

    server: str
    config: ServerConfig
    write_size: int  # bytes per READ too (OpenSSH reads as much as it writes)
    digest_methods: tuple[DigestMethod, ...]
    remote_hashers: frozenset[DigestMethod] | None  # found on the server at first use
    _ssh: paramiko.Transport | None
    _root: str

    def _map_errors(self, path: str) -> AbstractContextManager[None]: ...
    def _map_exception(self, exc: Exception, path: str) -> TransportError: ...
    def _new_pipe(self) -> Pipe: ...


def file_digests(t: Target, paths: Sequence[str]) -> FileDigests:
    """The digests of ``paths`` (checked relative paths) by the first method that works."""
    with t._map_errors(""):
        files = _regular_files(t, list(dict.fromkeys(paths)))
        for method in t.digest_methods:
            found = _hash(t, method, files)
            if found is not None:
                return FileDigests(method, {path: found.get(path) for path in paths})
    raise TransportError(
        f"server {t.server}: no way to hash its files worked "
        f"(tried: {', '.join(t.digest_methods) or 'nothing'})",
        server=t.server,
    )


def _hash(t: Target, method: DigestMethod, files: dict[str, Any]) -> dict[str, str | None] | None:
    if method == "sftp-read":
        return _read_back(t, files)
    if method not in _remote_hashers(t):
        return None
    if not files:
        return {}
    assert t._ssh is not None
    try:
        found = hash_files(
            t._ssh, t._root, method, list(files), open_timeout=t.config.connect_timeout
        )
    except HashingFailed as exc:
        log.warning(
            "remote_hashing.failed",
            server=t.server,
            method=method,
            files=len(files),
            reason=str(exc),
        )
        return None
    now = _regular_files(t, list(files))  # the second look (see the module's notes)
    return {path: _settled(found[path], files[path], now.get(path)) for path in files}


def _settled(digest: str, before: Any, after: Any) -> str | None:
    """A digest by what the two looks saw: None if no regular file now, ``""`` if it
    changed between them (it matches no blob)."""
    if after is None:
        return None
    return digest if tree.same_file(before, after) else ""


def _remote_hashers(t: Target) -> frozenset[DigestMethod]:
    if t.remote_hashers is None:
        assert t._ssh is not None
        t.remote_hashers = find_hashers(t._ssh, open_timeout=t.config.connect_timeout)
    return t.remote_hashers


def _read_back(t: Target, files: dict[str, Any]) -> dict[str, str | None]:
    """Read back over SFTP; a file that changed or failed is looked at once more: no
    regular file now is None, a changed one ``""``, a failure on one that still is
    (permission denied...) raised."""
    batch = ReadBatch(t._new_pipe(), t.write_size)
    outcome = batch.run({path: (f"{t._root}/{path}", attrs) for path, attrs in files.items()})
    found = dict(outcome.digests)
    again = outcome.changed + [path for path, _ in outcome.failures]
    if again:
        now = _regular_files(t, again)
        _raise_first(t, [(path, exc) for path, exc in outcome.failures if path in now])
        found.update({path: "" if path in now else None for path in again})
    return found


def _regular_files(t: Target, paths: list[str]) -> dict[str, Any]:
    """path -> LSTAT attributes of those of ``paths`` that are regular files now."""
    found, failures = tree.find_files(t._new_pipe(), t._root, paths)
    _raise_first(t, failures)
    return found


def _raise_first(t: Target, failures: list[tuple[str, Exception]]) -> None:
    if failures:
        path, exc = failures[0]
        raise t._map_exception(exc, path) from exc
