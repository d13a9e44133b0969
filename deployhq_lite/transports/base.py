"""The transport contract: the only code that touches a server.

Paths are relative to the server root, POSIX style. ``BaseTransport`` gives the
lifecycle, the path guard and the default (sequential) batch operations; backends
implement the single-file primitives and may override the batches to pipeline them.
Ordering, the revision marker, locking and progress belong to the engine.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, Self

from ..errors import (
    DeployHQLiteError,
    PathOutsideRootError,
    TransportError,
    TransportStateError,
)
from ..names import temp_path
from ..values import BytesSource, CommandOutcome, Source, git_blob_id

RemoteKind = Literal["file", "dir", "symlink", "other"]


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    kind: RemoteKind
    size: int
    mode: int  # permission bits
    target: str | None = None  # for symlinks


@dataclass(frozen=True, slots=True)
class Upload:
    """A file or symlink to write; ``read()`` returns its bytes (a symlink's target).

    ``open``, when given, returns the same contents as a ``Source`` to be read in pieces:
    big files are streamed through it so memory does not grow with file size.
    """

    path: str
    read: Callable[[], bytes]
    mode: int = 0o644
    is_symlink: bool = False
    open: Callable[[], Source] | None = None

    def source(self) -> Source:
        return self.open() if self.open is not None else BytesSource(self.read())


# Called once per item of a batch with the path and the error (None on success).
DoneCallback = Callable[[str, TransportError | None], None]

# Whether a listed path (a directory: with all below it) is left out of a listing.
Prune = Callable[[str], bool]

DigestMethod = Literal["git-hash-object", "sha1sum", "sftp-read"]


# GNU find's listing of a tree, as ``parse_find_listing`` reads it: type, size, permission
# bits, a symlink's target and the path, each ended by NUL (a name holds no NUL).
FIND_PRINTF = r"%y\0%s\0%m\0%l\0%P\0"
_FIND_KINDS: dict[bytes, RemoteKind] = {b"f": "file", b"d": "dir"}


def parse_find_listing(data: bytes) -> list[tuple[str, RemoteEntry]]:
    """The entries of ``find -printf FIND_PRINTF`` output, in its order."""
    fields = data.split(b"\0")
    listed = []
    for i in range(0, len(fields) - 4, 5):
        kind, size, mode, target, path = fields[i : i + 5]
        name = os.fsdecode(path)
        if kind == b"l":
            listed.append((name, RemoteEntry("symlink", int(size), 0o777, os.fsdecode(target))))
        else:
            found = _FIND_KINDS.get(kind, "other")
            listed.append((name, RemoteEntry(found, int(size), int(mode, 8))))
    return listed


def pruned(
    listed: Iterable[tuple[str, RemoteEntry]], prune: Prune | None
) -> Iterator[tuple[str, RemoteEntry]]:
    """A depth-first, parents-first listing without what ``prune`` leaves out (and all
    below a pruned directory)."""
    skipping = ""
    for path, entry in listed:
        if skipping and path.startswith(skipping):
            continue
        if prune is not None and prune(path):
            skipping = path + "/"
            continue
        yield path, entry


@dataclass(frozen=True, slots=True)
class FileDigests:
    """Digests of regular files' contents on a server, by ``method``: git blob ids
    (``git-hash-object``, computed by git or the same way in-process; ``sftp-read``, the
    bytes read back over SFTP and hashed here) or the SHA-1 of the bytes (``sha1sum``).
    None for a file that could not be read as a regular file (gone, or replaced by a
    symlink or a directory since it was listed): never followed, never guessed."""

    method: DigestMethod
    digests: dict[str, str | None]


class Transport(Protocol):
    server: str

    def open(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    def stat(self, path: str) -> RemoteEntry | None: ...
    def read_file(self, path: str) -> bytes | None: ...
    def put_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None: ...
    def put_symlink(self, path: str, target: str) -> None: ...
    def delete(self, path: str) -> None: ...
    def make_dirs(self, path: str) -> None: ...
    def prune_dirs(self, paths: Iterable[str]) -> list[str]: ...
    def put_many(self, uploads: Iterable[Upload], on_done: DoneCallback) -> None: ...
    def delete_many(self, paths: Iterable[str], on_done: DoneCallback) -> None: ...
    def delete_temps(self, paths: Iterable[str]) -> None: ...
    def sync(self) -> None: ...
    def probe(self) -> dict[str, object]: ...
    def list_tree(self, prune: Prune | None = None) -> Iterator[tuple[str, RemoteEntry]]: ...
    def file_digests(self, paths: Sequence[str]) -> FileDigests: ...
    def run_command(
        self, command: str, *, timeout: float, variables: Mapping[str, str] | None = None
    ) -> CommandOutcome: ...


def check_relative(path: str, *, allow_root: bool = False) -> str:
    """Refuse absolute paths, ``..``, NUL and empty components before any backend call.

    Returns the path itself (``"."`` for the root when ``allow_root``).
    """
    if path in ("", ".") and allow_root:
        return "."
    if (
        not path
        or "\0" in path
        or path[0] == "/"
        or "\\" in path
        or "//" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise PathOutsideRootError(f"path {path!r} is not inside the server root", path=path)
    return path


class BaseTransport(abc.ABC):
    """Lifecycle (``open`` / ``close`` idempotent, no reopening), guard and batch defaults."""

    def __init__(self, server: str) -> None:
        self.server = server
        self._state: Literal["new", "open", "closed"] = "new"

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        if self._state == "open":
            return
        if self._state == "closed":
            raise TransportStateError(
                f"server {self.server}: transport was closed; open a new one", server=self.server
            )
        with self._map_errors(""):
            self._open()
        self._state = "open"

    def close(self) -> None:
        if self._state == "open":
            self._close()
        self._state = "closed"

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _require_open(self) -> None:
        if self._state != "open":
            raise TransportStateError(
                f"server {self.server}: transport is not open", server=self.server
            )

    # -- batches (backends may pipeline these) ----------------------------------------------

    def put_many(self, uploads: Iterable[Upload], on_done: DoneCallback) -> None:
        for upload in uploads:
            try:
                if upload.is_symlink:
                    self.put_symlink(upload.path, os.fsdecode(upload.read()))
                else:
                    self.put_file(upload.path, upload.read(), mode=upload.mode)
            except TransportError as exc:
                on_done(upload.path, exc)
            else:
                on_done(upload.path, None)

    def delete_many(self, paths: Iterable[str], on_done: DoneCallback) -> None:
        for path in paths:
            try:
                self.delete(path)
            except TransportError as exc:
                on_done(path, exc)
            else:
                on_done(path, None)

    def delete_temps(self, paths: Iterable[str]) -> None:
        """Remove the temp files an interrupted run may have left for ``paths`` (missing
        is success; a path under a symlink has none of ours); raise the first failure."""
        failures: list[TransportError] = []

        def on_done(path: str, error: TransportError | None) -> None:
            if error is not None and not isinstance(error, PathOutsideRootError):
                failures.append(error)

        self.delete_many((temp_path(p) for p in paths), on_done)
        if failures:
            raise failures[0]

    # -- what the server holds (verify) -----------------------------------------------------

    @abc.abstractmethod
    def list_tree(self, prune: Prune | None = None) -> Iterator[tuple[str, RemoteEntry]]:
        """Every file, symlink, directory (and other thing) below the root with what it
        is, parents before children; a symlink is listed, never followed; a directory
        ``prune`` says yes to is neither listed nor entered (a file: not listed)."""

    def file_digests(self, paths: Sequence[str]) -> FileDigests:
        """The git blob ids of regular files, read one by one (backends do better)."""
        digests: dict[str, str | None] = {}
        for path in paths:
            entry = self.stat(path)
            data = self.read_file(path) if entry is not None and entry.kind == "file" else None
            digests[path] = None if data is None else git_blob_id(data)
        return FileDigests("git-hash-object", digests)

    def run_command(
        self, command: str, *, timeout: float, variables: Mapping[str, str] | None = None
    ) -> CommandOutcome:
        """Run an operator's command (from the config only) in the root, with
        ``variables`` (``DEPLOYHQ_*``) in its environment."""
        raise TransportError(
            f"server {self.server}: this transport cannot run commands", server=self.server
        )

    # -- for backends -------------------------------------------------------------------

    @contextmanager
    def _map_errors(self, path: str) -> Iterator[None]:
        """Translate backend exceptions into ``TransportError`` subclasses; our own errors
        pass as they are. One the backend does not know (a bug here or in a library) is
        still one line naming the server, never a traceback (chained for debugging)."""
        try:
            yield
        except DeployHQLiteError:
            raise
        except Exception as exc:
            raise self._map_exception(exc, path) from exc

    def _map_exception(self, exc: Exception, path: str) -> TransportError:
        return self._translate(exc, path) or self._unexpected(exc, path)

    def _unexpected(self, exc: Exception, path: str) -> TransportError:
        detail = " ".join(str(exc).split())
        what = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        where = f" on {path}" if path else ""
        return TransportError(
            f"server {self.server}: unexpected error{where} ({what})",
            server=self.server,
            path=path or None,
        )

    @abc.abstractmethod
    def stat(self, path: str) -> RemoteEntry | None: ...

    @abc.abstractmethod
    def read_file(self, path: str) -> bytes | None: ...

    @abc.abstractmethod
    def put_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None: ...

    @abc.abstractmethod
    def put_symlink(self, path: str, target: str) -> None: ...

    @abc.abstractmethod
    def delete(self, path: str) -> None: ...

    @abc.abstractmethod
    def probe(self) -> dict[str, object]:
        """What ``servers check`` reports about the open server (at least its ``root``);
        anything written to find out is removed again."""

    @abc.abstractmethod
    def _translate(self, exc: Exception, path: str) -> TransportError | None:
        """The ``TransportError`` for a backend exception, or None when it is not one the
        backend expects (``_map_errors`` then reports it as an unexpected error)."""

    @abc.abstractmethod
    def _open(self) -> None: ...

    @abc.abstractmethod
    def _close(self) -> None: ...
