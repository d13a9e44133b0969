"""A local directory as a server.

Every operation walks from the root with directory file descriptors opened
``O_NOFOLLOW``, so nothing is ever written through a symlink, even one that already
sits inside the root and points out of it. Files go to a temp name in their own
directory and are renamed over the target; durability is one ``syncfs()`` of the
root's filesystem before the engine writes the marker, not one fsync per file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import stat as st
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..errors import PathOutsideRootError, RemotePathError, TransportError
from ..names import temp_name
from ..shell import run_shell
from ..values import CommandOutcome, Source
from . import localtree
from .base import (
    BaseTransport,
    DoneCallback,
    FileDigests,
    Prune,
    RemoteEntry,
    Upload,
    check_relative,
)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_CACHED_DIRS = 256
_WRITERS = 4  # threads creating files in put_many
_BATCH = 32  # files handed to a writer thread at once
_BATCH_BYTES = 1024 * 1024
_MAX_BATCHES = 16  # batches in flight
_MAX_BYTES = 32 * 1024 * 1024  # bytes read from git and not yet written
_STREAM_MIN = 4 * 1024 * 1024  # bigger files are written in pieces, in order
_PIECE = 1024 * 1024

Outcome = tuple[str, TransportError | None]


class LocalTransport(BaseTransport):
    def __init__(self, root: str | os.PathLike[str], *, server: str = "local") -> None:
        super().__init__(server)
        self.root = Path(root)
        self._root_fd = -1
        self._dirs: dict[str, int] = {}
        self._before_evict: Callable[[], None] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def _open(self) -> None:
        blocked = _not_a_directory(self.root)
        if blocked is not None:
            why = "" if blocked == self.root else f" (cannot be made: {blocked} is a file)"
            raise RemotePathError(
                f"server {self.server}: root {self.root} is not a directory{why}",
                server=self.server,
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _close(self) -> None:
        self._forget_dirs("")
        os.close(self._root_fd)
        self._root_fd = -1

    # -- primitives ------------------------------------------------------------------------

    def stat(self, path: str) -> RemoteEntry | None:
        self._require_open()
        parent, name = _split(path)
        with self._map_errors(path):
            dfd = self._dir_fd(parent, create=False)
            if dfd is None:
                return None
            try:
                info = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                return None
            return localtree.entry_of(name, dfd, info)

    def read_file(self, path: str) -> bytes | None:
        self._require_open()
        parent, name = _split(path)
        with self._map_errors(path):
            dfd = self._dir_fd(parent, create=False)
            if dfd is None:
                return None
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            except FileNotFoundError:
                return None
            with os.fdopen(fd, "rb") as f:
                return f.read()

    def put_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        self._require_open()
        parent, name = _split(path)
        with self._map_errors(path):
            dfd = self._dir_fd(parent, create=True)
            assert dfd is not None
            _write_at(dfd, name, (data,), mode)

    def put_symlink(self, path: str, target: str) -> None:
        self._require_open()
        parent, name = _split(path)
        with self._map_errors(path):
            dfd = self._dir_fd(parent, create=True)
            assert dfd is not None
            _symlink_at(dfd, name, target)

    def put_many(self, uploads: Iterable[Upload], on_done: DoneCallback) -> None:
        """Writes run on a few threads (file creation is kernel-bound and releases the GIL),
        in batches; blobs are read and directories resolved here, bytes in flight bounded."""
        self._require_open()
        with ThreadPoolExecutor(_WRITERS, thread_name_prefix="dhq-local") as pool:
            writer = _BatchWriter(pool, self._run_batch, on_done)
            self._before_evict = writer.drain  # no writer may use an fd being closed
            try:
                for upload in uploads:
                    try:
                        parent, name = _split(upload.path)
                        with self._map_errors(upload.path):
                            dfd = self._dir_fd(parent, create=True)
                    except TransportError as exc:
                        writer.drain()
                        on_done(upload.path, exc)
                        continue
                    assert dfd is not None
                    source = upload.source()
                    if source.size >= _STREAM_MIN and not upload.is_symlink:
                        writer.drain()  # a big file: streamed here, in order
                        on_done(upload.path, self._stream_to(dfd, name, source, upload))
                        continue
                    data = source.read()
                    writer.add(upload.path, _job(dfd, name, data, upload), len(data))
                writer.drain()
            finally:
                self._before_evict = None
                writer.cancel()

    def _stream_to(
        self, dfd: int, name: str, source: Source, upload: Upload
    ) -> TransportError | None:
        pieces = iter(functools.partial(source.read, _PIECE), b"")
        try:
            with self._map_errors(upload.path):
                _write_at(dfd, name, pieces, upload.mode)
        except TransportError as exc:
            return exc
        finally:
            source.close()
        return None

    def _run_batch(self, batch: list[tuple[str, Callable[[], None]]]) -> list[Outcome]:
        """Run writes in a worker; a transport error is an outcome, anything else a bug."""
        done: list[Outcome] = []
        for path, job in batch:
            try:
                with self._map_errors(path):
                    job()
            except TransportError as exc:
                done.append((path, exc))
            else:
                done.append((path, None))
        return done

    def delete(self, path: str) -> None:
        self._require_open()
        parent, name = _split(path)
        with self._map_errors(path):
            dfd = self._dir_fd(parent, create=False)
            if dfd is not None:
                _unlink_quietly(name, dfd)

    def make_dirs(self, path: str) -> None:
        self._require_open()
        with self._map_errors(path):
            self._dir_fd(str(check_relative(path, allow_root=True)), create=True)

    def prune_dirs(self, paths: Iterable[str]) -> list[str]:
        """Remove each directory while it is empty, deepest first; never the root."""
        self._require_open()
        removed: list[str] = []
        wanted = {p for p in paths if p not in ("", ".")}
        for path in wanted:
            check_relative(path)  # all of them before removing anything
        for path in sorted(wanted, key=lambda p: (-p.count("/"), p)):
            parent, name = _split(path)
            with self._map_errors(path):
                dfd = self._dir_fd(parent, create=False)
                if dfd is None:
                    continue
                self._forget_dirs(path)
                try:
                    os.rmdir(name, dir_fd=dfd)
                except OSError as exc:
                    if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.ENOTDIR):
                        continue
                    raise
                removed.append(path)
        return removed

    def run_command(
        self, command: str, *, timeout: float, variables: Mapping[str, str] | None = None
    ) -> CommandOutcome:
        """Run an operator's command (from the config only) with the root as its cwd, in
        the scrubbed environment build commands get (none of our secrets) plus
        ``variables``."""
        self._require_open()
        return run_shell(command, cwd=self.root, timeout=timeout, variables=variables or {})

    def probe(self) -> dict[str, object]:
        """The root: opening it (made when missing) was the check."""
        self._require_open()
        return {"root": str(self.root)}

    def sync(self) -> None:
        """Make everything written so far durable: one ``syncfs`` for the root's filesystem."""
        self._require_open()
        with self._map_errors(""):
            _syncfs(self._root_fd)

    # -- what the server holds (verify) ---------------------------------------------------

    def list_tree(self, prune: Prune | None = None) -> Iterator[tuple[str, RemoteEntry]]:
        self._require_open()
        with self._map_errors(""):
            yield from localtree.walk(self._root_fd, prune)

    def file_digests(self, paths: Sequence[str]) -> FileDigests:
        """Git blob ids, hashed here on a few threads (files opened ``O_NOFOLLOW``)."""
        self._require_open()
        with self._map_errors(""):
            return FileDigests("git-hash-object", localtree.digests(self._root_fd, paths))

    # -- directory walking ---------------------------------------------------------------------

    def _dir_fd(self, rel: str, *, create: bool) -> int | None:
        """An fd for directory ``rel`` under the root, walked without following symlinks."""
        if rel in ("", "."):
            return self._root_fd
        cached = self._dirs.get(rel)
        if cached is not None:
            return cached
        parent, name = rel.rpartition("/")[::2]
        pfd = self._dir_fd(parent, create=create)
        if pfd is None:
            return None
        fd = self._open_child(pfd, name, rel, create=create)
        if fd is None:
            return None
        if len(self._dirs) >= _MAX_CACHED_DIRS:
            if self._before_evict is not None:
                self._before_evict()  # no writer may still use a cached fd
            self._forget_dirs("")
        self._dirs[rel] = fd
        return fd

    def _open_child(self, pfd: int, name: str, rel: str, *, create: bool) -> int | None:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=pfd)
        except FileNotFoundError:
            if not create:
                return None
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=pfd)
            return os.open(name, _DIR_FLAGS, dir_fd=pfd)
        except OSError as exc:
            symlink = exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_symlink(name, pfd)
            if symlink:
                raise PathOutsideRootError(
                    f"server {self.server}: refusing to write through symlink {rel!r} "
                    "on the server (it could lead outside the root)",
                    server=self.server,
                    path=rel,
                ) from exc
            if exc.errno == errno.ENOTDIR and not create:
                return None  # a file where a directory would be: nothing under it
            raise

    def _forget_dirs(self, prefix: str) -> None:
        for rel in [
            r for r in self._dirs if not prefix or r == prefix or r.startswith(prefix + "/")
        ]:
            os.close(self._dirs.pop(rel))

    def _translate(self, exc: Exception, path: str) -> TransportError | None:
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
            where = f"{self.root}/{path}" if path else str(self.root)
            return RemotePathError(
                f"server {self.server}: {where}: {reason}", server=self.server, path=path
            )
        return None


def _split(path: str) -> tuple[str, str]:
    check_relative(path)
    parent, _, name = path.rpartition("/")
    return parent, name


class _BatchWriter:
    """Groups writes into batches for a thread pool and reports outcomes in order."""

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        run: Callable[[list[tuple[str, Callable[[], None]]]], list[Outcome]],
        on_done: DoneCallback,
    ) -> None:
        self._pool, self._run, self._on_done = pool, run, on_done
        self._pending: deque[tuple[Future[list[Outcome]], int]] = deque()
        self._batch: list[tuple[str, Callable[[], None]]] = []
        self._batch_bytes = self._in_flight = 0

    def add(self, path: str, job: Callable[[], None], size: int) -> None:
        self._batch.append((path, job))
        self._batch_bytes += size
        if len(self._batch) >= _BATCH or self._batch_bytes >= _BATCH_BYTES:
            self._submit()
        while self._pending and (
            len(self._pending) >= _MAX_BATCHES or self._in_flight > _MAX_BYTES
        ):
            self._report_oldest()

    def drain(self) -> None:
        self._submit()
        while self._pending:
            self._report_oldest()

    def cancel(self) -> None:
        for future, _ in self._pending:
            future.cancel()

    def _submit(self) -> None:
        if self._batch:
            future = self._pool.submit(self._run, self._batch)
            self._pending.append((future, self._batch_bytes))
            self._in_flight += self._batch_bytes
            self._batch, self._batch_bytes = [], 0

    def _report_oldest(self) -> None:
        future, size = self._pending.popleft()
        self._in_flight -= size
        for path, error in future.result():
            self._on_done(path, error)


def _job(dfd: int, name: str, data: bytes, upload: Upload) -> Callable[[], None]:
    if upload.is_symlink:
        return functools.partial(_symlink_at, dfd, name, os.fsdecode(data))
    return functools.partial(_write_at, dfd, name, (data,), upload.mode)


def _write_at(dfd: int, name: str, pieces: Iterable[bytes], mode: int) -> None:
    """Write the pieces to a temp name in directory ``dfd``, set ``mode``, rename over
    ``name``."""
    tmp = temp_name(name)
    try:
        fd = os.open(tmp, _NEW_FILE, 0o600, dir_fd=dfd)
    except FileExistsError:  # left by an interrupted run
        _unlink_quietly(tmp, dfd)
        fd = os.open(tmp, _NEW_FILE, 0o600, dir_fd=dfd)
    try:
        try:
            for data in pieces:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        _unlink_quietly(tmp, dfd)
        raise


def _symlink_at(dfd: int, name: str, target: str) -> None:
    tmp = temp_name(name)
    try:
        os.symlink(target, tmp, dir_fd=dfd)
    except FileExistsError:
        _unlink_quietly(tmp, dfd)
        os.symlink(target, tmp, dir_fd=dfd)
    try:
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        _unlink_quietly(tmp, dfd)
        raise


def _unlink_quietly(name: str, dfd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dfd)


def _is_symlink(name: str, dfd: int) -> bool:
    try:
        return st.S_ISLNK(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode)
    except OSError:
        return False


_libc: ctypes.CDLL | None = None


def _syncfs(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    syncfs = getattr(_libc, "syncfs", None)
    if syncfs is None:  # not Linux
        os.sync()
        return
    if syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _not_a_directory(root: Path) -> Path | None:
    """The root, or the first of its parents, where something other than a directory
    (or a symlink to one) stands."""
    for path in [*reversed(root.parents), root]:
        if path.exists() and not path.is_dir():
            return path
    return None
