"""Big blobs read straight from a repository's object files and inflated here in pieces.

``git cat-file`` maps a loose object whole (its pages count as the process's memory:
516 MiB for a 512 MiB blob) and copies every blob through a pipe, and on a machine whose
cores are busy sending, our process waits for it. Reading the file in 128 KiB pieces
keeps memory flat and costs less CPU in all (a 512 MiB loose blob: 0.24 s against 0.52 s
for git and our reads of its pipe). Two layouts are read here: a loose object, and a
pack entry stored whole (a blob that is not a delta) found through a version 2 pack
index. Anything else (a delta, an index we do not know, a file gone since) is None, and
git reads it as before.

Like ``git cat-file``, the contents are not hashed again, but zlib's checksum is checked
at the end of each stream: a file that ends early, does not inflate or runs past the
size it states is a ``RepositoryError``. ``git.BlobReader`` is the only user.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import IO, cast

from .errors import RepositoryError

try:  # zlib-ng: SIMD inflate and adler32 (a 512 MiB blob: 0.10 s of CPU, zlib 0.25 s)
    from zlib_ng import zlib_ng as zlib
except ImportError:  # a platform without its wheel: the same API, slower
    import zlib  # type: ignore[no-redef]

_ZLIB_ERROR = cast(type[Exception], zlib.error)  # zlib-ng's stub calls it an instance

PIECE = 128 * 1024  # compressed bytes read at a time
_BLOB = 3  # a pack entry's type for a whole blob (6 and 7 are deltas)
_IDX_MAGIC = b"\xfftOc"


class InflatingSource:
    """A ``Source`` over one zlib stream in ``file``, from its current position.

    ``size`` is the blob's size from a pack entry's header; None for a loose object,
    whose stream starts with ``blob <size>\\0``.
    """

    def __init__(self, file: IO[bytes], oid: str, size: int | None = None) -> None:
        self._file, self._oid = file, oid
        self._zlib = zlib.decompressobj()
        self._pending = b""  # inflated and not yet returned
        if size is None:
            header = b""
            while b"\0" not in header and len(header) < 64:
                header += self._inflate(64 - len(header))
            kind, _, digits = header.partition(b"\0")[0].partition(b" ")
            if kind != b"blob" or not digits.isdigit() or b"\0" not in header:
                raise RepositoryError(f"object {oid} is not a loose blob")
            self._pending, size = header.partition(b"\0")[2], int(digits)
        self.size = self._left = size

    def _inflate(self, limit: int) -> bytes:
        z = self._zlib
        data = z.unconsumed_tail or (b"" if z.eof else self._file.read(PIECE))
        if not data:
            raise RepositoryError(f"object {self._oid} ends in the middle (a truncated file)")
        try:
            return z.decompress(data, limit)
        except _ZLIB_ERROR as exc:
            raise RepositoryError(f"object {self._oid} does not inflate: {exc}") from None

    def read(self, n: int = -1, /) -> bytes:
        want = self._left if n < 0 else min(n, self._left)
        parts, got = [], 0
        if self._pending:
            parts.append(self._pending[:want])
            got, self._pending = len(parts[0]), self._pending[want:]
        while got < want:
            piece = self._inflate(want - got)
            parts.append(piece)
            got += len(piece)
        self._left -= got
        if not self._left and want:
            self._check_end()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _check_end(self) -> None:
        """Inflate to the end of the stream: zlib checks its checksum there, and nothing
        may follow the size the header gave."""
        while not self._zlib.eof:
            if self._pending or self._inflate(1):
                raise RepositoryError(f"object {self._oid} is longer than its header says")

    def close(self) -> None:
        self._file.close()


def open_loose(objects: str, oid: str) -> InflatingSource | None:
    """``oid`` as a loose object of the ``objects`` directory; None when it is not one."""
    try:
        file = open(f"{objects}/{oid[:2]}/{oid[2:]}", "rb", buffering=0)  # noqa: SIM115
    except OSError:
        return None
    try:
        return InflatingSource(file, oid)
    except BaseException:
        file.close()
        raise


def is_loose(objects: str, oid: str) -> bool:
    return os.path.isfile(f"{objects}/{oid[:2]}/{oid[2:]}")


class Packs:
    """The version 2 pack indexes of one ``objects`` directory, read on first use."""

    def __init__(self, objects: str) -> None:
        self._objects = objects
        self._indexes: list[_Index] | None = None

    def whole_blob(self, oid: str) -> tuple[str, int, int] | None:
        """(pack file, offset of the data, size) when ``oid`` is a blob stored whole."""
        if self._indexes is None:
            self._indexes = _read_indexes(Path(self._objects, "pack"))
        try:
            key = bytes.fromhex(oid)
        except ValueError:
            return None
        for index in self._indexes:
            offset = index.find(key)
            if offset is not None:
                return index.entry(offset)
        return None

    def open(self, oid: str) -> InflatingSource | None:
        where = self.whole_blob(oid)
        if where is None:
            return None
        pack, data_offset, size = where
        try:
            file = open(pack, "rb", buffering=0)  # noqa: SIM115 - the source owns it
        except OSError:
            return None
        file.seek(data_offset)
        return InflatingSource(file, oid, size)

    def close(self) -> None:
        for index in self._indexes or []:
            index.close()
        self._indexes = None


class _Index:
    """One ``pack-*.idx`` (version 2), mapped: a fan-out table, then sorted names, CRCs,
    4-byte offsets and 8-byte ones for packs over 2 GiB; and its pack, open for reading
    entry headers. Nothing here goes through libgit2, whose header reads keep memory
    (about 4 KiB an object) for the life of the process."""

    def __init__(self, path: Path, hash_size: int) -> None:
        self.pack = str(path.with_suffix(".pack"))
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        m = self._map
        try:
            if m[:8] != _IDX_MAGIC + struct.pack(">I", 2) or len(m) < 8 + 1024:
                raise ValueError("not a version 2 pack index")
            self._fanout = struct.unpack_from(">256I", m, 8)
            self._count, self._hash = self._fanout[255], hash_size
            self._names = 8 + 1024
            self._small = self._names + self._count * (hash_size + 4)
            self._large = self._small + self._count * 4
            if len(m) < self._large:
                raise ValueError("pack index is shorter than its fan-out table says")
            self._fd = os.open(self.pack, os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            m.close()
            raise

    def find(self, key: bytes) -> int | None:
        """The pack offset of the object named ``key``, or None."""
        size = self._hash
        if len(key) != size:
            return None
        lo = self._fanout[key[0] - 1] if key[0] else 0
        start, end = self._names + lo * size, self._names + self._fanout[key[0]] * size
        at = self._map.find(key, start, end)  # names are sorted; a match must be aligned
        while at != -1 and (at - self._names) % size:
            at = self._map.find(key, at + 1, end)
        if at == -1:
            return None
        i = (at - self._names) // size
        (offset,) = struct.unpack_from(">I", self._map, self._small + i * 4)
        if offset & 0x80000000:
            at = self._large + (offset & 0x7FFFFFFF) * 8
            (offset,) = struct.unpack_from(">Q", self._map, at)
        return int(offset)

    def entry(self, offset: int) -> tuple[str, int, int] | None:
        """(pack, offset of the zlib data, size) of a whole blob's entry; None otherwise
        (a delta, a tree, a short read)."""
        try:
            head = os.pread(self._fd, 16, offset)
        except OSError:
            return None
        if not head:
            return None
        byte = head[0]
        kind, size, shift, used = (byte >> 4) & 7, byte & 15, 4, 1
        while byte & 0x80:
            if used >= len(head):
                return None
            byte = head[used]
            size |= (byte & 0x7F) << shift
            shift, used = shift + 7, used + 1
        return (self.pack, offset + used, size) if kind == _BLOB else None

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


def _read_indexes(directory: Path) -> list[_Index]:
    indexes = []
    for path in sorted(directory.glob("pack-*.idx")):
        hash_size = 32 if len(path.stem) == len("pack-") + 64 else 20
        try:
            indexes.append(_Index(path, hash_size))
        except (OSError, ValueError):
            continue  # git reads what is in it
    return indexes
