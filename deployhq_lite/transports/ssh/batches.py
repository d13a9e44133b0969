"""Pipelined batches on one SFTP channel: the state behind ``put_many`` and ``delete_many``.

``PutBatch`` keeps many files in flight. Each file goes OPEN (a new temp name, 0600) ->
WRITEs -> FSETSTAT (its mode) -> CLOSE -> RENAME over the target, as requests on the
``Pipe``; up to ``_MAX_FILES`` files and ``_MAX_HELD`` bytes read from git are in flight
at once. Small files are read before their OPEN is sent; a big one is streamed to its end
before the next file starts.

``DeleteBatch`` sends REMOVEs together; one that fails is retried alone, for its exact
error (a directory, a permission problem...).
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import paramiko

from ...errors import TransportError
from ...names import temp_path
from ...values import Source
from ..base import DoneCallback, Upload
from .pipeline import Pipe, is_unsupported, remove_quietly

_MAX_FILES = 64  # files being written at once
_MAX_HELD = 8 * 1024 * 1024  # bytes read from git and not yet sent (4x the SSH window)
_STREAM_MIN = 4 * 1024 * 1024  # bigger files are read and sent in pieces


class Target(Protocol):
    """What a batch needs from its transport (``SFTPTransport``)."""

    write_size: int  # bytes per WRITE
    supports_posix_rename: bool

    def _map_errors(self, path: str) -> AbstractContextManager[None]: ...
    def _map_exception(self, exc: Exception, path: str) -> TransportError: ...
    def _full(self, path: str, *, create: bool) -> str | None: ...
    def _client(self) -> paramiko.SFTPClient: ...
    def _replace(self, tmp: str, full: str) -> None: ...
    def _no_posix_rename(self) -> None: ...
    def delete(self, path: str) -> None: ...


def run_reporting(path: str, action: Callable[[], None], on_done: DoneCallback) -> None:
    """Run ``action`` for ``path`` and report its outcome to ``on_done``."""
    try:
        action()
    except TransportError as exc:
        on_done(path, exc)
    else:
        on_done(path, None)


@dataclass(slots=True, eq=False)
class _Put:
    """One file on its way: opening, writing, renaming."""

    upload: Upload
    full: str
    tmp: str
    source: Source
    data: bytes | None  # the contents when small (read before the OPEN is sent)
    handle: bytes = b""
    pending: int = 0  # replies still to come for WRITE/FSETSTAT/CLOSE
    error: Exception | None = None
    opening: bool = True  # no handle yet
    retried: bool = False  # the first OPEN failed: the temp name was cleared, opened again
    written: bool = False  # every WRITE sent
    renamed: bool = False
    sent: bool = False  # every WRITE sent (or given up on): the source is closed


class PutBatch:
    """Reply callbacks only record state and queue the file in ``_ready``; the next step
    (send its WRITEs, rename it, report it) runs from ``_advance``, outside paramiko."""

    def __init__(self, target: Target, pipe: Pipe, on_done: DoneCallback) -> None:
        self._t, self._pipe, self._on_done = target, pipe, on_done
        self._ready: deque[_Put] = deque()
        self._active = 0
        self._held = 0

    def wait_for_room(self) -> None:
        self._advance()
        while self._active >= _MAX_FILES or self._held >= _MAX_HELD:
            self._pump()

    def finish(self) -> None:
        self._advance()
        while self._active:
            self._pump()

    def start(self, upload: Upload) -> None:
        try:
            with self._t._map_errors(upload.path):
                full = self._t._full(upload.path, create=True)
        except TransportError as exc:
            self._on_done(upload.path, exc)
            return
        assert full is not None
        source = upload.source()
        data = source.read() if source.size < _STREAM_MIN else None
        put = _Put(upload, full, temp_path(full), source, data)
        self._active += 1
        self._held += len(data or b"")
        self._open(put)
        while data is None and not put.sent:  # a stream is read to its end before the next
            self._pump()

    def _open(self, put: _Put) -> None:
        """Create the temp file, 0600 (EXCL: a file an interrupted run left under that
        name, world-readable maybe, is removed and the OPEN sent once more)."""
        if put.retried:
            remove_quietly(self._t._client(), put.tmp)
        self._pipe.create(put.tmp, functools.partial(self._opened, put))

    # reply callbacks (inside paramiko's reader): record and queue, nothing else

    def _opened(self, put: _Put, handle: bytes | None, error: Exception | None) -> None:
        if handle is not None:
            put.handle, put.opening = handle, False
        elif put.retried:
            put.error = error
        else:
            put.retried = True
        self._ready.append(put)

    def _acked(self, put: _Put, error: Exception | None) -> None:
        put.error = put.error or error
        put.pending -= 1
        if not put.pending:
            self._ready.append(put)

    def _renamed(self, put: _Put, error: Exception | None) -> None:
        if error is not None and is_unsupported(error):
            self._t._no_posix_rename()
        else:
            put.error, put.renamed = error, error is None
        self._ready.append(put)

    # next steps (outside paramiko)

    def _pump(self) -> None:
        self._pipe.pump()
        self._advance()

    def _advance(self) -> None:
        while self._ready:
            put = self._ready.popleft()
            if put.renamed or (put.error is not None and not put.handle):
                self._report(put)
            elif put.opening:
                self._open(put)
            elif not put.handle:
                self._rename(put)
            elif put.written or put.error is not None:
                self._close(put)
            else:
                self._write(put)

    def _write(self, put: _Put) -> None:
        ack = functools.partial(self._acked, put)
        size = self._t.write_size
        pieces: Iterator[bytes]
        if put.data is not None:
            data = put.data
            pieces = (data[i : i + size] for i in range(0, len(data), size))
        else:
            pieces = iter(lambda: put.source.read(size), b"")
        put.pending += 1  # held while sending: acks the pipe reads meanwhile cannot end it
        offset = 0
        for piece in pieces:
            put.pending += 1
            self._pipe.write(put.handle, offset, piece, ack)
            offset += len(piece)
        put.written = True
        put.pending -= 1
        self._release(put)
        if not put.pending:  # every WRITE acknowledged already (or none to send)
            self._close(put)

    def _close(self, put: _Put) -> None:
        """Once every WRITE is acknowledged: the final mode (just before the rename, so
        a run cut off before leaves a 0600 temp file), then CLOSE; only CLOSE after an
        error."""
        ack = functools.partial(self._acked, put)
        if put.error is None:
            put.pending += 1
            self._pipe.set_mode(put.handle, put.upload.mode, ack)
        put.pending += 1
        self._pipe.close(put.handle, ack)
        put.handle = b""

    def _rename(self, put: _Put) -> None:
        if self._t.supports_posix_rename:
            self._pipe.posix_rename(put.tmp, put.full, functools.partial(self._renamed, put))
            return
        try:
            with self._t._map_errors(put.upload.path):
                self._t._replace(put.tmp, put.full)  # remove, then rename: one at a time
        except TransportError as exc:
            put.error = exc
        put.renamed = put.error is None
        self._ready.append(put)

    def _report(self, put: _Put) -> None:
        self._release(put)
        self._active -= 1
        error = put.error
        if error is None:
            self._on_done(put.upload.path, None)
            return
        remove_quietly(self._t._client(), put.tmp)
        if not isinstance(error, TransportError):
            error = self._t._map_exception(error, put.upload.path)
        self._on_done(put.upload.path, error)

    def _release(self, put: _Put) -> None:
        put.sent = True
        if put.data is not None:
            self._held -= len(put.data)
            put.data = None
        put.source.close()


class DeleteBatch:
    """REMOVEs in flight together; reply callbacks only record the outcome, which is
    reported (or retried alone with ``delete``, for its exact error) outside paramiko."""

    def __init__(self, target: Target, pipe: Pipe, on_done: DoneCallback) -> None:
        self._t, self._pipe, self._on_done = target, pipe, on_done
        self._results: deque[tuple[str, Exception | None]] = deque()

    def run(self, paths: Iterable[str]) -> None:
        with self._t._map_errors(""):  # a lost connection ends the whole batch
            for path in paths:
                self._remove(path)
                self._report()
            self._pipe.drain()
            self._report()
        with self._t._map_errors(""):
            self._pipe.drain()
        self._report()

    def _remove(self, path: str) -> None:
        try:
            with self._t._map_errors(path):
                full = self._t._full(path, create=False)
        except TransportError as exc:
            self._report()
            self._on_done(path, exc)
            return
        if full is None:
            self._results.append((path, None))
        else:
            self._pipe.remove(full, functools.partial(self._removed, path))

    def _removed(self, path: str, error: Exception | None) -> None:
        self._results.append((path, error))

    def _report(self) -> None:
        while self._results:
            path, error = self._results.popleft()
            if error is None or isinstance(error, FileNotFoundError):
                self._on_done(path, None)
            else:  # a directory, a permission problem...: say exactly what
                run_reporting(path, functools.partial(self._t.delete, path), self._on_done)
