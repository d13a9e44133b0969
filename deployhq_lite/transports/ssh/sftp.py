"""The SFTP transport: a server's files over one SFTP channel of one SSH connection.

Every directory on the way to a path is checked with ``lstat`` (a symlink is refused
before anything is written); files go to a new temp name beside the target (created
0600, never one an older run left there), get their mode once written, and replace it
with ``posix-rename@openssh.com`` (remove-then-rename on servers without it).

Batches are pipelined on the channel (see ``pipeline`` and ``batches``): OPEN, WRITE,
FSETSTAT, CLOSE and RENAME requests for many files are in flight at once, and so are
REMOVEs. Single-file operations, directory checks and error reports go one request at
a time. Connecting, host keys and logging in are ``connection``'s.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
import stat as st
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import paramiko

from ...errors import ConnectError, PathOutsideRootError, RemotePathError, TransportError
from ...log import get_logger
from ...names import TEMP_SUFFIX, temp_path
from ...values import CommandOutcome
from ..base import (
    BaseTransport,
    DigestMethod,
    DoneCallback,
    FileDigests,
    Prune,
    RemoteEntry,
    RemoteKind,
    Upload,
    check_relative,
)
from . import digests, tree
from .batches import DeleteBatch, PutBatch, run_reporting
from .connection import Connector, fingerprint, run_remote, session_started
from .pipeline import (
    CHUNK,
    PathKind,
    Pipe,
    create_file,
    find_write_size,
    is_unsupported,
    open_client,
    remove_quietly,
)

if TYPE_CHECKING:
    from ...config import ServerConfig

log = get_logger(__name__)


class SFTPTransport(BaseTransport):
    def __init__(self, config: ServerConfig, *, server: str = "ssh") -> None:
        super().__init__(server)
        self.config = config
        self._connector = Connector(config, server=server)
        self._ssh: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._pipe: Pipe | None = None  # the batch's pipeline, flushed before sync calls
        self._root = ""
        self._dirs: set[str] = set()  # directories checked to be real directories
        self.auth_method = ""
        self.host_key_fingerprint = ""
        self.supports_posix_rename = True
        self.write_size = CHUNK  # raised by the server's limits@openssh.com reply
        # how file_digests may hash, in order (tests narrow it), and what the server runs
        self.digest_methods: tuple[DigestMethod, ...] = digests.METHODS
        self.remote_hashers: frozenset[DigestMethod] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def _open(self) -> None:
        self._ssh = self._connector.start()
        try:
            key = self._ssh.get_remote_server_key()
            self.host_key_fingerprint = fingerprint(key)
            self._connector.verify_host_key(key)
            self.auth_method = self._connector.authenticate(self._ssh)
            self._sftp = open_client(self._ssh)
            self.write_size = find_write_size(self._sftp)
            self._root = self._resolve_root()
            session_started(self._ssh)
        except BaseException:
            self._close()  # a refused connection leaves no socket or thread behind
            raise

    def _close(self) -> None:
        sftp, ssh = self._sftp, self._ssh
        self._sftp = self._ssh = self._pipe = None
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            if sftp is not None:  # may say the connection died: the error is already known
                sftp.close()
        if ssh is not None:
            ssh.close()

    def _resolve_root(self) -> str:
        """The root's real path, made with its parents when missing (like ``mkdir -p``).

        Symlinks above and at the root are the administrator's and are followed; below
        it, none is (see ``_ensure_dir``).
        """
        root = PurePosixPath(self.config.root)
        sftp = self._client()
        with self._map_errors(""):
            if not root.is_absolute():
                root = PurePosixPath(sftp.normalize(".")) / root
            self._root = str(root)
            missing: list[str] = []
            for directory in (root, *root.parents):
                try:
                    attrs = sftp.stat(str(directory))
                except FileNotFoundError:
                    missing.append(str(directory))
                    continue
                if not st.S_ISDIR(attrs.st_mode or 0):
                    raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(directory))
                break
            for path in reversed(missing):
                sftp.mkdir(path, 0o755)
            self._root = sftp.normalize(str(root))
            self._dirs.add(self._root)
        return self._root

    # -- primitives --------------------------------------------------------------------------

    def stat(self, path: str) -> RemoteEntry | None:
        self._require_open()
        with self._map_errors(path):
            found = self._lstat(path)
            if found is None:
                return None
            full, attrs = found
            mode = attrs.st_mode or 0
            kind: RemoteKind = "other"
            target = None
            if st.S_ISLNK(mode):
                kind, target = "symlink", _path(self._client().readlink(full))
            elif st.S_ISDIR(mode):
                kind = "dir"
            elif st.S_ISREG(mode):
                kind = "file"
            return RemoteEntry(kind, attrs.st_size or 0, st.S_IMODE(mode), target)

    def list_tree(self, prune: Prune | None = None) -> Iterator[tuple[str, RemoteEntry]]:
        """By find on the server in one command where it can, else walked over SFTP."""
        self._require_open()
        assert self._ssh is not None
        with self._map_errors(""):
            timeout = self.config.connect_timeout
            found = tree.list_remote(self._ssh, self._root, prune, open_timeout=timeout)
            yield from found if found is not None else tree.walk(self._client(), self._root, prune)

    def file_digests(self, paths: Sequence[str]) -> FileDigests:
        """Hashed on the server in one command where it runs git or sha1sum, else read
        back over SFTP; never through a symlink (see ``digests``)."""
        self._require_open()
        return digests.file_digests(self, [check_relative(path) for path in paths])

    def read_file(self, path: str) -> bytes | None:
        self._require_open()
        with self._map_errors(path):
            found = self._lstat(path)
            if found is None:
                return None
            full, attrs = found
            if not st.S_ISREG(attrs.st_mode or 0):  # never follow a symlink, never a dir
                raise IsADirectoryError(errno.EISDIR, "not a regular file", full)
            with self._client().open(full, "rb") as f:
                return bytes(f.read())

    def put_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        self._require_open()
        with self._map_errors(path):
            full = self._full(path, create=True)
            assert full is not None
            tmp = temp_path(full)
            sftp = self._client()
            try:
                with create_file(sftp, tmp) as f:
                    f.set_pipelined(True)
                    f.write(data)
                sftp.chmod(tmp, mode)
                self._replace(tmp, full)
            except BaseException:
                remove_quietly(sftp, tmp)
                raise

    def put_symlink(self, path: str, target: str) -> None:
        self._require_open()
        with self._map_errors(path):
            full = self._full(path, create=True)
            assert full is not None
            tmp = temp_path(full)
            sftp = self._client()
            remove_quietly(sftp, tmp)
            sftp.symlink(target, tmp)
            try:
                self._replace(tmp, full)
            except BaseException:
                remove_quietly(sftp, tmp)
                raise

    def delete(self, path: str) -> None:
        self._require_open()
        with self._map_errors(path):
            full = self._full(path, create=False)
            if full is None:
                return
            sftp = self._client()
            try:
                sftp.remove(full)
            except FileNotFoundError:
                return
            except OSError:
                attrs = _lstat_or_none(sftp, full)
                if attrs is not None and st.S_ISDIR(attrs.st_mode or 0):
                    raise IsADirectoryError(errno.EISDIR, "Is a directory") from None
                raise

    def make_dirs(self, path: str) -> None:
        self._require_open()
        with self._map_errors(path):
            rel = check_relative(path, allow_root=True)
            if rel != ".":
                self._full(rel + "/x", create=True)

    def prune_dirs(self, paths: Iterable[str]) -> list[str]:
        self._require_open()
        wanted = {p for p in paths if p not in ("", ".")}
        for path in wanted:
            check_relative(path)
        removed: list[str] = []
        sftp = self._client()
        for path in sorted(wanted, key=lambda p: (-p.count("/"), p)):
            with self._map_errors(path):
                full = self._full(path, create=False)
                if full is None:
                    continue
                try:
                    sftp.rmdir(full)
                except OSError:
                    continue  # not empty, missing, or not a directory: leave it
                self._dirs = {d for d in self._dirs if d != full and not d.startswith(full + "/")}
                removed.append(path)
        return removed

    def probe(self) -> dict[str, object]:
        """What ``servers check`` reports: host key, auth method, rename support, the
        bytes per WRITE the server takes, root.

        Writes and renames a probe file in the root (removed again): that both proves
        the root is writable and tells whether ``posix-rename@openssh.com`` works.
        """
        self._require_open()
        sftp = self._client()
        probe = f"{self._root}/.deployhq-lite-probe{TEMP_SUFFIX}"
        with self._map_errors(""):
            with sftp.open(probe, "wb") as f:
                f.write(b"probe\n")
            try:
                self._replace(probe, probe + ".renamed")
            finally:
                remove_quietly(sftp, probe)
                remove_quietly(sftp, probe + ".renamed")
        return {
            "host_key_fingerprint": self.host_key_fingerprint,
            "auth_method": self.auth_method,
            "posix_rename": self.supports_posix_rename,
            "write_size": self.write_size,
            "root": self._root,
            "root_writable": True,
        }

    def sync(self) -> None:
        """Nothing to do: each file was closed (and renamed) on the server before this."""
        self._require_open()

    def run_command(
        self, command: str, *, timeout: float, variables: Mapping[str, str] | None = None
    ) -> CommandOutcome:
        """Run an operator's command (from the config only) on the SSH connection of this
        deployment, in the root, with ``variables`` exported; stdout and stderr together."""
        self._require_open()
        assert self._ssh is not None
        with self._map_errors(""):
            return run_remote(
                self._ssh,
                self._root,
                command,
                variables or {},
                timeout=timeout,
                open_timeout=self.config.connect_timeout,
            )

    # -- pipelined batches -------------------------------------------------------------------

    def put_many(self, uploads: Iterable[Upload], on_done: DoneCallback) -> None:
        """Many files in flight: each one OPEN -> WRITEs, FSETSTAT, CLOSE -> RENAME."""
        self._require_open()
        uploads = list(uploads)
        with self._map_errors(""):  # a lost connection ends the whole batch
            self._check_dirs([u.path for u in uploads], create=True)
        batch = PutBatch(self, self._new_pipe(), on_done)
        with self._map_errors(""):
            for upload in uploads:
                batch.wait_for_room()
                if upload.is_symlink:  # rare: one at a time
                    run_reporting(upload.path, functools.partial(self._put_link, upload), on_done)
                else:
                    batch.start(upload)
            batch.finish()

    def _put_link(self, upload: Upload) -> None:
        self.put_symlink(upload.path, os.fsdecode(upload.read()))

    def delete_many(self, paths: Iterable[str], on_done: DoneCallback) -> None:
        """REMOVEs in flight together; a failure is retried alone for its exact error."""
        self._require_open()
        paths = list(paths)
        with self._map_errors(""):
            self._check_dirs(paths, create=False)
        DeleteBatch(self, self._new_pipe(), on_done).run(paths)

    # -- helpers -----------------------------------------------------------------------------

    def _client(self) -> paramiko.SFTPClient:
        """The SFTP client for a synchronous request; queued pipelined requests are sent
        first, whole, so the two never interleave on the channel."""
        if self._sftp is None:
            raise ConnectError(f"server {self.server}: not connected", server=self.server)
        if self._pipe is not None:
            self._pipe.flush()
        return self._sftp

    def _new_pipe(self) -> Pipe:
        self._pipe = Pipe(self._client())
        return self._pipe

    def _lstat(self, path: str) -> tuple[str, Any] | None:
        """The remote path and its lstat attributes; None if it (or a parent) is missing."""
        full = self._full(path, create=False)
        attrs = None if full is None else _lstat_or_none(self._client(), full)
        return None if full is None or attrs is None else (full, attrs)

    def _full(self, path: str, *, create: bool) -> str | None:
        """The remote path for ``path``; its parent directories checked (or made) first.

        None when a parent is missing (or is a file) and ``create`` is false.
        """
        rel = check_relative(path)
        parent = rel.rpartition("/")[0]
        full_parent = self._root if not parent else f"{self._root}/{parent}"
        if full_parent not in self._dirs:
            current = self._root
            for part in [p for p in parent.split("/") if p]:
                current = f"{current}/{part}"
                if not self._ensure_dir(current, create=create):
                    return None
        return f"{self._root}/{rel}"

    def _check_dirs(self, paths: Iterable[str], *, create: bool) -> None:
        """Check (with ``create``, make) the parent directories of a batch's ``paths``
        up front: LSTATs all in flight at once, then MKDIRs one depth at a time.

        ``_full`` would check each new directory with a synchronous LSTAT, which waits
        behind every request already in flight (2,001 files in 22 directories: 0.4 s).
        Only plain directories are remembered; a symlink, a file or a failed MKDIR is
        left for ``_full`` to meet again and report exactly, for its own paths.
        """
        wanted = self._unchecked_parents(paths)
        if not wanted:
            return
        pipe = self._new_pipe()
        kinds: dict[str, PathKind] = {}
        for rel in wanted:
            pipe.lstat(f"{self._root}/{rel}", functools.partial(_record_kind, kinds, rel))
        pipe.drain()
        self._dirs.update(f"{self._root}/{rel}" for rel, kind in kinds.items() if kind == "dir")
        if not create:
            return
        missing = sorted((r for r, k in kinds.items() if k == "missing"), key=_depth)
        for _, level in itertools.groupby(missing, key=_depth):  # parents before children
            for rel in level:
                parent = rel.rpartition("/")[0]
                if parent and f"{self._root}/{parent}" not in self._dirs:
                    continue  # its parent could not be made: _full says why
                full = f"{self._root}/{rel}"
                pipe.mkdir(full, 0o755, functools.partial(self._made_dir, full))
            pipe.drain()

    def _unchecked_parents(self, paths: Iterable[str]) -> set[str]:
        """Every parent directory (relative) of ``paths`` not known to be a directory."""
        wanted: set[str] = set()
        for path in paths:
            try:
                parent = check_relative(path).rpartition("/")[0]
            except TransportError:
                continue  # refused again, with its reason, by _full
            while parent and parent not in wanted and f"{self._root}/{parent}" not in self._dirs:
                wanted.add(parent)
                parent = parent.rpartition("/")[0]
        return wanted

    def _made_dir(self, full: str, error: Exception | None) -> None:
        if error is None:
            self._dirs.add(full)

    def _ensure_dir(self, full: str, *, create: bool) -> bool:
        if full in self._dirs:
            return True
        sftp = self._client()
        attrs = _lstat_or_none(sftp, full)
        if attrs is None:
            if not create:
                return False
            sftp.mkdir(full, 0o755)
        elif st.S_ISLNK(attrs.st_mode or 0):
            rel = full[len(self._root) + 1 :]
            raise PathOutsideRootError(
                f"server {self.server}: refusing to write through symlink {rel!r} on the "
                "server (it could lead outside the root)",
                server=self.server,
                path=rel,
            )
        elif not st.S_ISDIR(attrs.st_mode or 0):
            if not create:
                return False
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", full)
        self._dirs.add(full)
        return True

    def _replace(self, tmp: str, full: str) -> None:
        sftp = self._client()
        if self.supports_posix_rename:
            try:
                sftp.posix_rename(tmp, full)
                return
            except OSError as exc:
                if not is_unsupported(exc):
                    raise
                self._no_posix_rename()
        remove_quietly(sftp, full)
        sftp.rename(tmp, full)

    def _no_posix_rename(self) -> None:
        if self.supports_posix_rename:
            self.supports_posix_rename = False
            log.warning("sftp.no_posix_rename", server=self.server)

    def _translate(self, exc: Exception, path: str) -> TransportError | None:
        alive = self._ssh is not None and self._ssh.is_active()
        if isinstance(exc, paramiko.SSHException | EOFError) or (
            isinstance(exc, OSError) and not alive
        ):
            return ConnectError(
                f"server {self.server}: connection lost ({type(exc).__name__}: {exc})",
                server=self.server,
                path=path,
            )
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc) or type(exc).__name__
            where = f"{self._root}/{path}" if path else self._root or str(self.config.root)
            return RemotePathError(
                f"server {self.server}: {where}: {reason}", server=self.server, path=path
            )
        return None


def _path(name: str | bytes | None) -> str | None:
    """A name paramiko returns (bytes when it is not UTF-8) as we hold it."""
    return None if name is None else os.fsdecode(name)


def _record_kind(kinds: dict[str, PathKind], rel: str, kind: PathKind) -> None:
    kinds[rel] = kind


def _depth(rel: str) -> int:
    return rel.count("/")


def _lstat_or_none(sftp: paramiko.SFTPClient, full: str) -> Any:
    try:
        return sftp.lstat(full)
    except FileNotFoundError:
        return None
