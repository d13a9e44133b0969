"""Value types shared across the layers: file contents read in pieces, a command's
outcome, git blob ids. The bottom of the package: it imports nothing of ours, so the
core (``git``, ``shell``) and the transports can both use them without importing each
other.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

# (exit status or None when it timed out, the last of its output, seconds it took)
CommandOutcome = tuple[int | None, str, float]
OUTPUT_LIMIT = 64 * 1024  # bytes of a command's output kept (the end of it)


class Source(Protocol):
    """File contents read in pieces: ``read(n)`` returns at most n bytes, b"" at the end."""

    size: int

    def read(self, n: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


class BytesSource:
    """A ``Source`` over bytes already in memory."""

    __slots__ = ("_data", "_pos", "size")

    def __init__(self, data: bytes) -> None:
        self._data, self._pos, self.size = data, 0, len(data)

    def read(self, n: int = -1, /) -> bytes:
        if self._pos == 0 and (n < 0 or n >= self.size):
            self._pos = self.size
            return self._data
        end = self.size if n < 0 else min(self.size, self._pos + n)
        piece, self._pos = self._data[self._pos : end], end
        return piece

    def close(self) -> None:
        self._data = b""


class BlobHasher:
    """A git blob id computed from a file's bytes as they come (``size`` known first)."""

    def __init__(self, size: int) -> None:
        self._sha = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)

    def update(self, data: bytes) -> None:
        self._sha.update(data)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def git_blob_id(data: bytes) -> str:
    """The id git gives a blob of ``data`` (``git hash-object``)."""
    hasher = BlobHasher(len(data))
    hasher.update(data)
    return hasher.hexdigest()
