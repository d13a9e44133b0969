"""Blob contents read for a deployment: inflated here from the object files, or streamed
by a ``git cat-file`` process on another core."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from typing import IO, Protocol

from .. import gitobjects
from ..errors import RepositoryError
from ..values import BytesSource, Source


class ObjectReader(Protocol):
    """What a blob reader needs of a repository (:class:`~.repository.Repository` is one)."""

    path: str

    @property
    def git_dir(self) -> str: ...

    def object_size(self, oid: str) -> int: ...

    def read_blob(self, oid: str) -> bytes: ...


class BlobReader:
    """Blob contents for a known sequence of ids, inflated on another core.

    libgit2 inflates under the GIL (about 50 us a blob here), which serialises a deploy
    of many small files. For long sequences a ``git cat-file --batch`` process reads
    ahead in order instead; ``read(oid)`` takes from what it has read, and any id asked
    out of order, or a missing git, falls back to libgit2.

    Blobs of ``HERE_MIN`` bytes or more stored loose or packed whole never go to git:
    ``gitobjects`` inflates them here from the object files, in pieces (less CPU than
    git plus its pipe, and no mapping of a whole loose object).

    ``open(oid)`` returns a ``Source``: blobs of ``STREAM_MIN`` bytes or more are streamed
    (by ``gitobjects``, else from the batch process when in order, else from ``git
    cat-file blob``), so memory stays flat whatever the file size. A stream must be read
    or closed before the next blob is asked for. Use as a context manager.
    """

    MIN_BATCH = 256  # fewer blobs (and fewer bytes): not worth a process
    MIN_BATCH_BYTES = 4 * 1024 * 1024
    MAX_AHEAD = 64 * 1024 * 1024  # bytes read ahead and not yet asked for
    STREAM_MIN = 4 * 1024 * 1024  # bigger blobs are streamed, never held whole
    HERE_MIN = 256 * 1024  # blobs this big are inflated here when gitobjects can

    def __init__(self, repo: ObjectReader, oids: Sequence[str]) -> None:
        oids = list(dict.fromkeys(oids))  # a repeated id is read again through libgit2
        self._repo = repo
        self._objects = os.path.join(repo.git_dir, "objects")
        self._packs = gitobjects.Packs(self._objects)
        self._here = {oid for oid in oids if self._readable_here(oid)}
        oids = [oid for oid in oids if oid not in self._here]  # those never go to git
        self._buffered: dict[str, bytes] = {}
        self._ahead = 0
        self._expected = iter(oids)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stream: _PipeSource | None = None  # the batch blob being streamed
        self._inflating: gitobjects.InflatingSource | None = None  # the blob read here
        self._git = shutil.which("git")
        if self._git and (len(oids) >= self.MIN_BATCH or self._big(oids)):
            self._start(oids)

    def _readable_here(self, oid: str) -> bool:
        """A blob of ``HERE_MIN`` bytes or more that ``gitobjects`` can inflate (loose, or
        packed whole): reading it here costs less than through ``git cat-file``.

        A few microseconds an id: a lookup in the pack indexes (libgit2's header reads
        would keep pack memory), else a stat and libgit2's header read of a loose object.
        """
        where = self._packs.whole_blob(oid)
        if where is not None:
            return where[2] >= self.HERE_MIN
        if not gitobjects.is_loose(self._objects, oid):
            return False  # a delta (or not stored here at all): git reads it
        try:
            return self._repo.object_size(oid) >= self.HERE_MIN
        except (KeyError, ValueError):
            return False

    def _big(self, oids: Sequence[str]) -> bool:
        """Few blobs, but enough bytes to be worth inflating on another core."""
        total = 0
        for oid in oids:
            try:
                total += self._repo.object_size(oid)
            except (KeyError, ValueError):
                return False
            if total >= self.MIN_BATCH_BYTES:
                return True
        return False

    def _start(self, oids: Sequence[str]) -> None:
        assert self._git is not None
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, hex ids on stdin
            [
                self._git,
                *_CAT_FILE_CONFIG,
                "--git-dir",
                self._repo.git_dir,
                "cat-file",
                "--batch",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=git_env(),
        )
        stdin = self._proc.stdin
        assert stdin is not None

        def feed() -> None:
            with contextlib.suppress(OSError):
                for oid in oids:
                    stdin.write(oid.encode() + b"\n")
            with contextlib.suppress(OSError):
                stdin.close()

        threading.Thread(target=feed, name="dhq-cat-file", daemon=True).start()

    def read(self, oid: str) -> bytes:
        source = self.open(oid)
        try:
            return source.read()
        finally:
            source.close()

    def open(self, oid: str) -> Source:
        self._end_stream()
        if oid in self._here:  # never given to the batch process
            return self._open_here(oid) or self._open_alone(oid)
        data = self._buffered.pop(oid, None)
        if data is not None:
            self._ahead -= len(data)
            return BytesSource(data)
        while self._proc is not None and self._ahead < self.MAX_AHEAD:
            header = self._next_header()
            if header is None:
                break
            got_oid, size = header
            if size >= self.STREAM_MIN:
                if got_oid != oid:  # never buffer a big blob: leave the rest to libgit2
                    self.close()
                    break
                assert self._proc.stdout is not None
                self._stream = _PipeSource(self._proc.stdout, size)
                return self._stream
            got_data = self._read_body(size)
            if got_data is None:
                break
            if got_oid == oid:
                return BytesSource(got_data)
            self._buffered[got_oid] = got_data
            self._ahead += len(got_data)
        return self._open_alone(oid)

    def _open_alone(self, oid: str) -> Source:
        """One blob outside the batch: streamed by its own git process when big."""
        try:
            size = self._repo.object_size(oid)
        except (KeyError, ValueError):
            raise RepositoryError(f"object {oid} missing from {self._repo.path}") from None
        here = self._open_here(oid) if size >= self.HERE_MIN else None
        if here is not None:
            return here
        if size < self.STREAM_MIN or self._git is None:
            return BytesSource(self._repo.read_blob(oid))
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, a hex id
            [
                self._git,
                *_CAT_FILE_CONFIG,
                "--git-dir",
                self._repo.git_dir,
                "cat-file",
                "blob",
                oid,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=git_env(),
        )
        return _ProcessSource(proc, size)

    def _next_header(self) -> tuple[str, int] | None:
        assert self._proc is not None and self._proc.stdout is not None
        expected = next(self._expected, None)
        header = self._proc.stdout.readline().split()
        if (
            expected is None
            or len(header) != 3
            or header[1] != b"blob"
            or header[0].decode() != expected
        ):
            self.close()  # missing object or a surprise: libgit2 takes over
            return None
        return expected, int(header[2])

    def _read_body(self, size: int) -> bytes | None:
        assert self._proc is not None and self._proc.stdout is not None
        data = self._proc.stdout.read(size)
        self._proc.stdout.read(1)  # the newline after each object
        if len(data) != size:
            self.close()
            return None
        return data

    def _end_stream(self) -> None:
        """Skip what is left of a streamed blob, so the batch output lines up again."""
        self._close_inflating()
        stream, self._stream = self._stream, None
        if stream is None or self._proc is None:
            return
        if not stream.finish():
            self.close()

    def _open_here(self, oid: str) -> Source | None:
        """``oid`` inflated by ``gitobjects``; None when it is no longer loose or packed
        whole (a repack since): git reads it then."""
        self._inflating = gitobjects.open_loose(self._objects, oid) or self._packs.open(oid)
        return self._inflating

    def _close_inflating(self) -> None:
        inflating, self._inflating = self._inflating, None
        if inflating is not None:
            inflating.close()

    def close(self) -> None:
        self._close_inflating()
        self._packs.close()
        self._stream = None
        if self._proc is not None:
            proc, self._proc = self._proc, None
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _PipeSource:
    """One blob inside ``git cat-file --batch`` output, read in pieces."""

    def __init__(self, out: IO[bytes], size: int) -> None:
        self._out, self.size, self._left = out, size, size

    def read(self, n: int = -1, /) -> bytes:
        want = self._left if n < 0 else min(n, self._left)
        data = self._out.read(want) if want else b""
        self._left -= len(data)
        if len(data) < want:
            raise RepositoryError("git cat-file stopped in the middle of a blob")
        return data

    def finish(self) -> bool:
        """Skip the unread rest and the newline after it; False if the pipe broke."""
        while self._left:
            data = self._out.read(min(self._left, 1024 * 1024))
            if not data:
                return False
            self._left -= len(data)
        return self._out.read(1) == b"\n"

    def close(self) -> None:
        """Nothing: the reader skips the rest when the next blob is asked for."""


class _ProcessSource:
    """A ``git cat-file blob`` process's output, read in pieces."""

    def __init__(self, proc: subprocess.Popen[bytes], size: int) -> None:
        self._proc, self.size, self._left = proc, size, size

    def read(self, n: int = -1, /) -> bytes:
        assert self._proc.stdout is not None
        want = self._left if n < 0 else min(n, self._left)
        data = self._proc.stdout.read(want) if want else b""
        self._left -= len(data)
        if len(data) < want:
            self.close()
            raise RepositoryError("git cat-file stopped in the middle of a blob")
        return data

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


# git streams a packed blob of bigFileThreshold or more through small pack windows
# instead of inflating it whole (a 512 MiB blob: 70 MiB RSS instead of 1 GiB). A loose
# object is still mapped whole, but those pages are the file's, not memory of its own.
_CAT_FILE_CONFIG = (
    *("-c", f"core.bigFileThreshold={BlobReader.STREAM_MIN}"),
    *("-c", "core.packedGitWindowSize=16m", "-c", "core.packedGitLimit=64m"),
)


def git_env() -> dict[str, str]:
    return {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
