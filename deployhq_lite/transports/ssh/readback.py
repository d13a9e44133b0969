"""Files read back over SFTP and hashed here as git blob ids, for ``verify`` on servers
where no command can hash them (the ``sftp-read`` method of ``digests``).

Each file goes OPEN -> FSTAT and READs -> CLOSE as requests on the ``Pipe``: up to
``_MAX_FILES`` files and ``_MAX_HELD`` bytes of READs are in flight at once, and each
reply is hashed as soon as the bytes before it are, then dropped: memory stays flat
whatever the files' sizes.

SFTP has no O_NOFOLLOW: OPEN follows a symlink. Each file was LSTATed first (``tree.
find_files``: a regular file below real directories); its FSTAT must then show the same
file (type, size, permissions, owner, time), else nothing read is used and the file is
reported ``changed``. The READs ask for one byte more than that size, so a file that
grew while read is seen too.
"""

from __future__ import annotations

import functools
import stat as st
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ...values import BlobHasher
from .pipeline import Pipe
from .tree import same_file

_MAX_FILES = 32  # files open at once
_MAX_HELD = 4 * 1024 * 1024  # bytes asked for and not hashed yet (twice the SSH window)


@dataclass(slots=True, eq=False)
class _File:
    path: str
    full: str
    attrs: Any  # what LSTAT saw
    hasher: BlobHasher
    handle: bytes = b""
    stating: bool = False  # its FSTAT was sent
    checked: bool = False  # the FSTAT showed the file LSTAT saw
    asked: int = 0  # bytes asked for from the start (the next READ's offset)
    again: list[tuple[int, int]] = field(default_factory=list)  # short READs' rest
    hashed: int = 0  # bytes hashed from the start
    pieces: dict[int, bytes] = field(default_factory=dict)  # offset -> bytes not hashed yet
    at_end: bool = False  # the end of the file was met where LSTAT said
    pending: int = 0  # replies still to come for FSTAT, READs
    held: int = 0  # bytes asked for and not hashed yet
    gone: bool = False  # not a regular file any more: None
    changed: bool = False  # changed since its LSTAT: nothing read is used
    error: Exception | None = None
    closing: bool = False  # its CLOSE was sent
    done: bool = False  # reported

    @property
    def size(self) -> int:
        return int(self.attrs.st_size or 0)

    @property
    def failed(self) -> bool:
        return self.gone or self.changed or self.error is not None

    @property
    def over(self) -> bool:
        """Nothing more to read: every byte hashed, or a reason to stop."""
        return self.failed or (self.at_end and self.hashed == self.size)


@dataclass(slots=True)
class Outcome:
    """What reading found: digests (None: gone), paths that changed while read, and the
    failures (permission denied...) with their paths."""

    digests: dict[str, str | None] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)
    failures: list[tuple[str, Exception]] = field(default_factory=list)


class ReadBatch:
    """Reply callbacks only record state and queue the file in ``_ready``; asking for more,
    hashing and closing run from ``_advance``, outside paramiko."""

    def __init__(self, pipe: Pipe, read_size: int) -> None:
        self._pipe, self._read_size = pipe, read_size
        self._ready: deque[_File] = deque()
        self._active = 0
        self._held = 0
        self.outcome = Outcome()

    def run(self, files: dict[str, tuple[str, Any]]) -> Outcome:
        """Hash ``files`` (path -> its remote path and LSTAT attributes)."""
        for path, (full, attrs) in files.items():
            while self._active >= _MAX_FILES or self._held >= _MAX_HELD:
                self._pump()
            item = _File(path, full, attrs, BlobHasher(int(attrs.st_size or 0)))
            self._active += 1
            self._pipe.open_read(full, functools.partial(self._opened, item))
        while self._active:
            self._pump()
        return self.outcome

    # reply callbacks (inside paramiko's reader): record and queue, nothing else

    def _opened(self, item: _File, handle: bytes | None, error: Exception | None) -> None:
        if handle is not None:
            item.handle = handle
        elif isinstance(error, FileNotFoundError):
            item.gone = True
        else:
            item.error = error
        self._ready.append(item)

    def _stated(self, item: _File, attrs: Any, error: Exception | None) -> None:
        item.pending -= 1
        if attrs is None:
            item.error = item.error or error
        elif not st.S_ISREG(attrs.st_mode or 0):
            item.gone = True  # a directory (or a device) put there since its LSTAT
        elif same_file(item.attrs, attrs):
            item.checked = True
        else:
            item.changed = True
        self._ready.append(item)

    def _read(
        self, item: _File, offset: int, length: int, data: bytes | None, error: Exception | None
    ) -> None:
        item.pending -= 1
        got = len(data or b"")
        if item.failed:
            pass
        elif data is None:
            item.error = error
        elif offset + got > item.size or (not got and offset < item.size):
            item.changed = True  # longer or shorter than its LSTAT said
        elif got < length and offset + got < item.size:  # a short READ: the rest again
            item.pieces[offset] = data
            item.again.append((offset + got, length - got))
        else:
            item.pieces[offset] = data
            item.at_end = item.at_end or got < length  # the byte past the end was not there
        self._ready.append(item)

    def _closed(self, item: _File, error: Exception | None) -> None:
        item.handle = b""  # a failed CLOSE of a file only read changes nothing
        self._ready.append(item)

    # next steps (outside paramiko)

    def _pump(self) -> None:
        self._pipe.pump()
        self._advance()

    def _advance(self) -> None:
        while self._ready:
            item = self._ready.popleft()
            if item.done or (item.closing and item.handle):
                continue  # reported, or its CLOSE's reply is to come
            if not item.handle:  # closed, or never opened
                self._report(item)
            else:
                self._hash(item)
                if not item.over:
                    self._ask(item)
                elif not item.pending:
                    self._close(item)

    def _ask(self, item: _File) -> None:
        """FSTAT first, then READs up to one byte past the size LSTAT saw (and the rest
        of short ones), as far as the budget allows; a file holding none may always ask
        for one."""
        if not item.stating:
            item.stating = True
            item.pending += 1
            self._pipe.fstat(item.handle, functools.partial(self._stated, item))
        while item.again:  # the rest of short READs: held already, asked at once
            self._read_at(item, *item.again.pop())
        end = item.size + 1
        while item.asked < end and (self._held < _MAX_HELD or not item.held):
            length = min(self._read_size, end - item.asked)
            item.held += length
            self._held += length
            self._read_at(item, item.asked, length)
            item.asked += length

    def _read_at(self, item: _File, offset: int, length: int) -> None:
        item.pending += 1
        then = functools.partial(self._read, item, offset, length)
        self._pipe.read(item.handle, offset, length, then)

    def _hash(self, item: _File) -> None:
        if item.changed or item.gone or item.error is not None:
            self._release(item, item.held)
            item.pieces.clear()
            return
        if not item.checked:
            return  # its FSTAT has not shown it is the file LSTAT saw yet
        while (piece := item.pieces.pop(item.hashed, None)) is not None:
            item.hasher.update(piece)
            item.hashed += len(piece)
            self._release(item, len(piece))

    def _release(self, item: _File, size: int) -> None:
        item.held -= size
        self._held -= size

    def _close(self, item: _File) -> None:
        item.closing = True
        self._pipe.close(item.handle, functools.partial(self._closed, item))

    def _report(self, item: _File) -> None:
        item.done = True
        self._active -= 1
        self._release(item, item.held)
        if item.gone:
            self.outcome.digests[item.path] = None
        elif item.error is not None:
            self.outcome.failures.append((item.path, item.error))
        elif item.changed:
            self.outcome.changed.append(item.path)
        else:
            self.outcome.digests[item.path] = item.hasher.hexdigest()
