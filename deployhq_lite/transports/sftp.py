"""SFTP over SSH (paramiko): the only module that imports paramiko.

Unknown or changed host keys are refused, never added. Every directory on the way to a
path is checked with ``lstat`` (a symlink is refused before anything is written); files
go to a new temp name beside the target (created 0600, never one an older run left
there), get their mode once written, and replace it with ``posix-rename@openssh.com``
(remove-then-rename on servers without it).

Batches are pipelined on one channel (see ``_Pipe``): OPEN, WRITE, FSETSTAT, CLOSE and
RENAME requests for many files are in flight at once, and so are REMOVEs. Single-file
operations, directory checks and error reports go one request at a time.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import hashlib
import itertools
import logging
import os
import re
import shlex
import socket
import stat as st
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import paramiko
from paramiko.message import Message
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_FSETSTAT,
    CMD_HANDLE,
    CMD_LSTAT,
    CMD_MKDIR,
    CMD_OPEN,
    CMD_REMOVE,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_EXCL,
    SFTP_FLAG_WRITE,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
    SFTP_OP_UNSUPPORTED,
    SFTP_PERMISSION_DENIED,
    int64,
)

from ..errors import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    HostKeyError,
    PathOutsideRootError,
    RemotePathError,
    TransportError,
    TransportStateError,
)
from ..log import get_logger
from .base import (
    OUTPUT_LIMIT,
    TEMP_SUFFIX,
    BaseTransport,
    CommandOutcome,
    DoneCallback,
    RemoteEntry,
    RemoteKind,
    Source,
    Upload,
    check_relative,
    temp_name,
)

if TYPE_CHECKING:
    from ..config import ServerConfig

log = get_logger(__name__)
# paramiko logs a lost connection at ERROR; with no handler anywhere, Python's last-resort
# handler would print it under our one-line error. Handlers the user configures still
# receive it.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
)
_MAX_REQUESTS = 128  # SFTP requests in flight on the channel
_MAX_FILES = 64  # files being written at once
_MAX_HELD = 8 * 1024 * 1024  # bytes read from git and not yet sent (4x the SSH window)
_CHUNK = 32 * 1024  # bytes per WRITE (what every SFTP server accepts)
# bytes per WRITE when the server says it takes more (``limits@openssh.com``): a quarter
# of the replies to read, and OpenSSH's sftp-server keeps up best at this size (measured:
# 128 KiB writes ~1.4x the throughput of 32 KiB ones; 255 KiB ones stall its input queue)
_BIG_CHUNK = 128 * 1024
_LIMITS = "limits@openssh.com"
_STREAM_MIN = 4 * 1024 * 1024  # bigger files are read and sent in pieces
_POSIX_RENAME = "posix-rename@openssh.com"


HostKeyStatus = Literal["trusted", "unknown", "changed"]


@dataclass(frozen=True, slots=True)
class HostKeyOffer:
    """The key a server offered, and whether we trust it (see ``servers trust``)."""

    host: str  # as known_hosts names it: host, or [host]:port
    key_type: str
    fingerprint: str
    key_base64: str
    status: HostKeyStatus
    detail: str


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class SFTPTransport(BaseTransport):
    def __init__(self, config: ServerConfig, *, server: str = "ssh") -> None:
        super().__init__(server)
        self.config = config
        self._ssh: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._pipe: _Pipe | None = None  # the batch's pipeline, flushed before sync calls
        self._root = ""
        self._dirs: set[str] = set()  # directories checked to be real directories
        self.auth_method = ""
        self.host_key_fingerprint = ""
        self.supports_posix_rename = True
        self.write_size = _CHUNK  # raised by the server's limits@openssh.com reply

    # -- lifecycle -------------------------------------------------------------------------

    def _open(self) -> None:
        self._ssh = self._start()
        try:
            self._verify_host_key(self._ssh.get_remote_server_key())
            self._authenticate(self._ssh)
            self._sftp = _Client.from_transport(self._ssh)
            self.write_size = _write_size(self._sftp)
            self._root = self._resolve_root()
            if isinstance(self._ssh.sock, _QuickAckSocket):  # the session has started
                self._ssh.sock.quick_acks = False
        except BaseException:
            self._close()  # a refused connection leaves no socket or thread behind
            raise

    def _start(self) -> paramiko.Transport:
        """Connect and run the key exchange (gcm or chacha preferred); no authentication."""
        cfg = self.config
        where = f"{cfg.host}:{cfg.port}"
        try:
            sock = socket.create_connection((cfg.host, cfg.port), timeout=cfg.connect_timeout)
        except OSError as exc:
            raise ConnectError(
                f"server {self.server}: cannot connect to {where}: {exc.strerror or exc}",
                server=self.server,
            ) from None
        # paramiko writes whole SSH packets: with Nagle on, a packet sent while an earlier
        # one is unacknowledged waits for the server's delayed ACK (40 ms, several times
        # per connection: 0.15 -> 0.10 s from connect to authenticated here)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = _QuickAckSocket.adopt(sock)
        ssh = paramiko.Transport(sock)
        options = ssh.get_security_options()
        available = tuple(options.ciphers)
        options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in available) + tuple(
            c for c in available if c not in PREFERRED_CIPHERS
        )
        try:
            ssh.start_client(timeout=cfg.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            ssh.close()
            raise ConnectError(
                f"server {self.server}: SSH handshake with {where} failed: {exc}",
                server=self.server,
            ) from None
        return ssh

    def _close(self) -> None:
        sftp, ssh = self._sftp, self._ssh
        self._sftp = self._ssh = self._pipe = None
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            if sftp is not None:  # may say the connection died: the error is already known
                sftp.close()
        if ssh is not None:
            ssh.close()

    # -- host keys -----------------------------------------------------------------------------

    def offered_host_key(self) -> HostKeyOffer:
        """The server's host key and how it compares with what we trust; nothing is sent
        beyond the key exchange (no authentication)."""
        if self._state != "new":
            raise TransportStateError(
                f"server {self.server}: check the host key before opening", server=self.server
            )
        ssh = self._start()
        try:
            key = ssh.get_remote_server_key()
        finally:
            ssh.close()
        status, detail = self._host_key_status(key)
        return HostKeyOffer(
            self._known_name(), key.get_name(), fingerprint(key), key.get_base64(), status, detail
        )

    def trust_host_key(self, offer: HostKeyOffer, *, replace: bool = False) -> Path:
        """Record ``offer`` in the known_hosts file (``replace`` drops a changed key)."""
        known = self._known_hosts_file()
        if offer.status == "changed" and not replace:
            raise HostKeyError(
                f"server {self.server}: {offer.detail}; pass --replace to drop the old key "
                "after checking the new one with the server's administrator",
                server=self.server,
            )
        try:
            self._record_host_key(known, offer)
        except OSError as exc:
            raise HostKeyError(
                f"server {self.server}: cannot write {known}: {exc.strerror or exc}",
                server=self.server,
            ) from None
        return known

    def _record_host_key(self, known: Path, offer: HostKeyOffer) -> None:
        known.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = paramiko.PKey.from_type_string(offer.key_type, base64.b64decode(offer.key_base64))
        if offer.status == "changed":
            keys = paramiko.HostKeys(str(known))
            entry = keys.lookup(offer.host)
            if entry is not None:
                for key_type in list(entry.keys()):
                    del entry[key_type]
            keys.add(offer.host, offer.key_type, key)
            keys.save(str(known))
        else:
            fd = os.open(known, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(f"{offer.host} {offer.key_type} {offer.key_base64}\n")

    def _known_name(self) -> str:
        host, port = self.config.host or "", self.config.port
        return host if port == 22 else f"[{host}]:{port}"

    def _known_hosts_file(self) -> Path:
        return self.config.known_hosts_path or Path("~/.ssh/known_hosts").expanduser()

    def _host_key_status(self, key: paramiko.PKey) -> tuple[HostKeyStatus, str]:
        name, offered = self._known_name(), f"{key.get_name()} {fingerprint(key)}"
        pinned = self.config.host_key_fingerprint
        if pinned:
            if pinned == fingerprint(key):
                return "trusted", f"{name} offers {offered}, the pinned key"
            return "changed", f"changed host key for {name}: offered {offered}, pinned {pinned}"
        known = self._known_hosts_file()
        try:
            keys = paramiko.HostKeys(str(known)) if known.exists() else paramiko.HostKeys()
        except OSError as exc:
            raise HostKeyError(
                f"server {self.server}: cannot read {known}: {exc.strerror or exc}",
                server=self.server,
            ) from None
        entry = keys.lookup(name)
        if entry is None:
            return "unknown", f"unknown host key for {name}: offered {offered} (not in {known})"
        expected = entry.get(key.get_name())
        if expected is None or expected != key:
            listed = ", ".join(f"{t} {fingerprint(k)}" for t, k in entry.items())
            return "changed", f"changed host key for {name}: offered {offered}, known {listed}"
        return "trusted", f"{name} offers {offered}, listed in {known}"

    def _verify_host_key(self, key: paramiko.PKey) -> None:
        self.host_key_fingerprint = fingerprint(key)
        status, detail = self._host_key_status(key)
        if status != "trusted":
            raise HostKeyError(
                f"server {self.server}: {detail}; check the key with the server's "
                "administrator, then run `deployhq-lite servers trust` or set "
                "host_key_fingerprint",
                server=self.server,
            )

    def _authenticate(self, ssh: paramiko.Transport) -> None:
        cfg = self.config
        tried: list[str] = []
        for method, attempt in (
            ("key", self._auth_key),
            ("agent", self._auth_agent),
            ("password", self._auth_password),
        ):
            try:
                if attempt(ssh):
                    self.auth_method = method
                    log.info("server.connected", server=self.server, auth=method)
                    return
                tried.append(method)
            except paramiko.AuthenticationException:
                tried.append(method)
            except paramiko.SSHException as exc:
                raise AuthenticationError(
                    f"server {self.server}: authentication as {cfg.user} failed: {exc}",
                    server=self.server,
                ) from None
        raise AuthenticationError(
            f"server {self.server}: authentication as {cfg.user}@{cfg.host} failed "
            f"(tried: {', '.join(tried) or 'nothing configured'})",
            server=self.server,
        )

    def _auth_key(self, ssh: paramiko.Transport) -> bool:
        cfg = self.config
        if cfg.key_path is None:
            return False
        ssh.auth_publickey(cfg.user, self._load_key(cfg.key_path))
        return bool(ssh.is_authenticated())

    def _load_key(self, path: Path) -> paramiko.PKey:
        """The private key at ``path``, decrypted with the configured passphrase if it is
        encrypted (an unencrypted key is used as it is, passphrase or not).

        paramiko hands the key to ``cryptography``, which raises TypeError for a missing
        passphrase (and for one given to an unencrypted key) and ValueError for a wrong one.
        """
        cfg, shown = self.config, self.config.key_path_shown
        if not path.exists():
            raise ConfigError(f"server {self.server}: key file {shown} does not exist")
        passphrase = _secret(cfg.key_passphrase_env, cfg.key_passphrase_file, "key passphrase")
        try:
            return paramiko.PKey.from_path(path)
        except TypeError:  # encrypted: decrypt it below
            pass
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise AuthenticationError(
                f"server {self.server}: cannot load key {shown}: {type(exc).__name__}",
                server=self.server,
            ) from None
        if passphrase is None:
            raise ConfigError(
                f"server {self.server}: key {shown} is encrypted; set key_passphrase_env "
                "or key_passphrase_file to its passphrase"
            )
        try:
            return paramiko.PKey.from_path(path, passphrase.encode())
        except (TypeError, ValueError, paramiko.SSHException):
            raise AuthenticationError(
                f"server {self.server}: cannot decrypt key {shown}: wrong passphrase",
                server=self.server,
            ) from None

    def _auth_agent(self, ssh: paramiko.Transport) -> bool:
        if not self.config.use_agent or not os.environ.get("SSH_AUTH_SOCK"):
            return False
        for key in paramiko.Agent().get_keys():
            try:
                ssh.auth_publickey(self.config.user, key)
            except paramiko.AuthenticationException:
                continue
            if ssh.is_authenticated():
                return True
        return False

    def _auth_password(self, ssh: paramiko.Transport) -> bool:
        cfg = self.config
        password = _secret(cfg.password_env, cfg.password_file, "password")
        if password is None:
            return False
        ssh.auth_password(cfg.user, password)
        return bool(ssh.is_authenticated())

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
            tmp = _temp(full)
            sftp = self._client()
            try:
                with _create(sftp, tmp) as f:
                    f.set_pipelined(True)
                    f.write(data)
                sftp.chmod(tmp, mode)
                self._replace(tmp, full)
            except BaseException:
                _remove_quietly(sftp, tmp)
                raise

    def put_symlink(self, path: str, target: str) -> None:
        self._require_open()
        with self._map_errors(path):
            full = self._full(path, create=True)
            assert full is not None
            tmp = _temp(full)
            sftp = self._client()
            _remove_quietly(sftp, tmp)
            sftp.symlink(target, tmp)
            try:
                self._replace(tmp, full)
            except BaseException:
                _remove_quietly(sftp, tmp)
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
                _remove_quietly(sftp, probe)
                _remove_quietly(sftp, probe + ".renamed")
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
        started = time.monotonic()
        with self._map_errors(""):
            channel = self._ssh.open_session(timeout=self.config.connect_timeout)
            try:
                channel.set_combine_stderr(True)
                channel.settimeout(0.2)
                channel.exec_command(remote_command(self._root, command, variables or {}))
                out = bytearray()
                while not (channel.exit_status_ready() and not channel.recv_ready()):
                    if time.monotonic() - started > timeout:
                        return None, _tail(out), time.monotonic() - started
                    try:
                        data = channel.recv(32768)
                    except TimeoutError:
                        continue
                    if not data and channel.exit_status_ready():
                        break
                    out += data
                    del out[: max(0, len(out) - OUTPUT_LIMIT)]
                return channel.recv_exit_status(), _tail(out), time.monotonic() - started
            finally:
                channel.close()

    # -- pipelined batches -------------------------------------------------------------------

    def put_many(self, uploads: Iterable[Upload], on_done: DoneCallback) -> None:
        """Many files in flight: each one OPEN -> WRITEs, FSETSTAT, CLOSE -> RENAME."""
        self._require_open()
        uploads = list(uploads)
        with self._map_errors(""):  # a lost connection ends the whole batch
            self._check_dirs([u.path for u in uploads], create=True)
        batch = _PutBatch(self, self._new_pipe(), on_done)
        with self._map_errors(""):
            for upload in uploads:
                batch.wait_for_room()
                if upload.is_symlink:  # rare: one at a time
                    batch.run_sync(upload.path, functools.partial(self._put_link, upload))
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
        pipe = self._new_pipe()
        results: deque[tuple[str, Exception | None]] = deque()

        def report() -> None:
            while results:
                path, error = results.popleft()
                if error is None or isinstance(error, FileNotFoundError):
                    on_done(path, None)
                else:  # a directory, a permission problem...: say exactly what
                    _run_reporting(path, functools.partial(self.delete, path), on_done)

        with self._map_errors(""):  # a lost connection ends the whole batch
            for path in paths:
                try:
                    with self._map_errors(path):
                        full = self._full(path, create=False)
                except TransportError as exc:
                    report()
                    on_done(path, exc)
                    continue
                if full is None:
                    results.append((path, None))
                else:
                    pipe.send(CMD_REMOVE, full, then=functools.partial(_record, results, path))
                report()
            pipe.drain()
            report()
        with self._map_errors(""):
            pipe.drain()
        report()

    # -- helpers -----------------------------------------------------------------------------

    def _client(self) -> paramiko.SFTPClient:
        """The SFTP client for a synchronous request; queued pipelined requests are sent
        first, whole, so the two never interleave on the channel."""
        if self._sftp is None:
            raise ConnectError(f"server {self.server}: not connected", server=self.server)
        if self._pipe is not None:
            self._pipe.flush()
        return self._sftp

    def _new_pipe(self) -> _Pipe:
        self._pipe = _Pipe(self._client())
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
        kinds: dict[str, str] = {}  # "dir", "missing" or "other"
        for rel in wanted:
            then = functools.partial(_record_kind, kinds, rel)
            pipe.send(CMD_LSTAT, f"{self._root}/{rel}", then=then)
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
                then = functools.partial(self._made_dir, full)
                pipe.send(CMD_MKDIR, full, _mode_attrs(0o755), then=then)
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

    def _made_dir(self, full: str, t: int, msg: Message) -> None:
        if _status(t, msg) is None:
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
                if not _unsupported(exc):
                    raise
                self._no_posix_rename()
        _remove_quietly(sftp, full)
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


# -- pipelining -------------------------------------------------------------------------------


class _QuickAckSocket(socket.socket):
    """The connection's socket; while ``quick_acks`` is on, each read asks the kernel to
    acknowledge what arrived at once.

    Until sshd starts the session it leaves Nagle on: a small reply written while its
    previous one is unacknowledged waits for our ACK, which Linux delays by 40 ms when we
    have nothing to send (opening the SFTP channel: 57 -> 14 ms here). Once the session
    has started, sshd sends at once and the reads go back to normal.
    """

    quick_acks = True

    @classmethod
    def adopt(cls, sock: socket.socket) -> socket.socket:
        """``sock`` as one of these (the same connection), where the OS has quick ACKs."""
        if not hasattr(socket, "TCP_QUICKACK"):
            return sock
        timeout = sock.gettimeout()
        adopted = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        adopted.settimeout(timeout)
        return adopted

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        data = super().recv(bufsize, flags)
        if self.quick_acks:
            with contextlib.suppress(OSError):
                self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return data


class _StatusError(OSError):
    """An SFTP status other than OK, as paramiko would raise it."""


class _Pipe:
    """Requests sent without waiting for their replies, framed and numbered as paramiko
    does (its ``_async_request``) but written to the channel many at a time.

    ``send`` queues a request with a callback; queued bytes go out when they fill an
    SSH packet or when ``pump`` would otherwise wait (so they leave in large writes).
    ``pump`` reads one reply (through paramiko's reader) and runs its callback, which
    must only record state. Synchronous paramiko
    calls may be made in between: replies to piped requests that they read reach the
    callbacks the same way.
    """

    def __init__(self, sftp: paramiko.SFTPClient) -> None:
        self._sftp = sftp
        self._channel = sftp.get_channel()
        self._packet = max(4096, int(self._channel.out_max_packet_size) - 64)  # as paramiko cuts
        self._waiting: dict[int, _Reply] = {}
        self._out = bytearray()

    def send(self, t: int, *args: object, then: Callable[[int, Message], None]) -> None:
        if len(self._waiting) >= _MAX_REQUESTS:
            while len(self._waiting) > _MAX_REQUESTS // 2:  # then send a good batch
                self.pump()
        sftp = self._sftp
        reply = _Reply(self, then)
        with sftp._lock:
            num = sftp.request_number
            sftp.request_number += 1
            sftp._expecting[num] = reply
        body = b"".join(_encode(arg) for arg in args)
        self._out += struct.pack(">IBI", len(body) + 5, t, num)
        self._out += body
        self._waiting[num] = reply
        if len(self._out) >= self._packet:
            self.flush(whole_packets=True)

    def flush(self, *, whole_packets: bool = False) -> None:
        """Send what is queued; with ``whole_packets``, only full SSH packets' worth (a
        32 KiB WRITE does not fit one packet: its tail waits for the next request)."""
        size = len(self._out)
        if whole_packets:
            size -= size % self._packet
        if size:
            out = bytes(self._out[:size])
            del self._out[:size]
            self._sftp._write_all(out)

    def pump(self) -> None:
        if not self._waiting:
            raise RuntimeError("SFTP pipeline: waiting for a reply to nothing")
        if not self._channel.recv_ready():  # about to wait: let the server have it all
            self.flush()
        self._sftp._read_response()

    def drain(self) -> None:
        while self._waiting:
            self.pump()


class _Client(paramiko.SFTPClient):  # type: ignore[misc]  # paramiko is untyped
    """paramiko's client, with paths as bytes on the wire: a name that is not UTF-8 is
    held as a str with lone surrogates (see ``names``) and sent as its own bytes, which
    paramiko's UTF-8 encoding refuses. Every path paramiko sends goes through
    ``_adjust_cwd``, but a symlink's target."""

    def _adjust_cwd(self, path: str | bytes) -> bytes:
        return bytes(super()._adjust_cwd(os.fsencode(path)))

    def symlink(self, source: str | bytes, dest: str | bytes) -> None:
        super().symlink(os.fsencode(source), dest)


def _path(name: str | bytes | None) -> str | None:
    """A name paramiko returns (bytes when it is not UTF-8) as we hold it."""
    return None if name is None else os.fsdecode(name)


def _encode(arg: object) -> bytes:
    """One request field in SFTP's wire format (as paramiko's Message would write it);
    a str is a path or an ASCII name, sent as its bytes (see ``_Client``)."""
    if isinstance(arg, bytes):
        return struct.pack(">I", len(arg)) + arg
    if isinstance(arg, str):
        data = os.fsencode(arg)
        return struct.pack(">I", len(data)) + data
    if isinstance(arg, int64):
        return struct.pack(">Q", arg)
    if isinstance(arg, int):
        return struct.pack(">I", arg)
    if isinstance(arg, paramiko.SFTPAttributes):
        msg = Message()
        arg._pack(msg)
        return bytes(msg.asbytes())
    raise TypeError(f"cannot send {type(arg).__name__} in an SFTP request")


class _Reply:
    __slots__ = ("__weakref__", "pipe", "then")  # paramiko keeps only a weak reference

    def __init__(self, pipe: _Pipe, then: Callable[[int, Message], None]) -> None:
        self.pipe, self.then = pipe, then

    def _async_response(self, t: int, msg: Message, num: int) -> None:
        del self.pipe._waiting[num]
        self.then(t, msg)


def _status(t: int, msg: Message) -> Exception | None:
    """None for an OK status; the error paramiko would raise otherwise."""
    if t != CMD_STATUS:
        return _StatusError(f"unexpected SFTP reply type {t}")
    code, text = msg.get_int(), msg.get_text()
    if code == SFTP_OK:
        return None
    if code == SFTP_NO_SUCH_FILE:
        return FileNotFoundError(errno.ENOENT, text)
    if code == SFTP_PERMISSION_DENIED:
        return PermissionError(errno.EACCES, text)
    error = _StatusError(text or f"SFTP status {code}")
    error.errno = SFTP_OP_UNSUPPORTED if code == SFTP_OP_UNSUPPORTED else None
    return error


def _record_kind(kinds: dict[str, str], rel: str, t: int, msg: Message) -> None:
    """An LSTAT reply as "dir", "missing" or "other" (a symlink is other: not followed)."""
    if t == CMD_ATTRS:
        mode = paramiko.SFTPAttributes._from_msg(msg).st_mode or 0
        kinds[rel] = "dir" if st.S_ISDIR(mode) else "other"
    else:
        missing = isinstance(_status(t, msg), FileNotFoundError)
        kinds[rel] = "missing" if missing else "other"


def _depth(rel: str) -> int:
    return rel.count("/")


def _record(results: deque[tuple[str, Exception | None]], path: str, t: int, msg: Message) -> None:
    results.append((path, _status(t, msg)))


def _run_reporting(path: str, action: Callable[[], None], on_done: DoneCallback) -> None:
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


class _PutBatch:
    """The state machine behind ``SFTPTransport.put_many``.

    Reply callbacks only record state and queue the file in ``_ready``; the next step
    (send its WRITEs, rename it, report it) runs from ``_advance``, outside paramiko.
    """

    def __init__(self, transport: SFTPTransport, pipe: _Pipe, on_done: DoneCallback) -> None:
        self._t, self._pipe, self._on_done = transport, pipe, on_done
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

    def run_sync(self, path: str, action: Callable[[], None]) -> None:
        _run_reporting(path, action, self._on_done)

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
        put = _Put(upload, full, _temp(full), source, data)
        self._active += 1
        self._held += len(data or b"")
        self._open(put)
        while data is None and not put.sent:  # a stream is read to its end before the next
            self._pump()

    def _open(self, put: _Put) -> None:
        """Create the temp file, 0600 (EXCL: a file an interrupted run left under that
        name, world-readable maybe, is removed and the OPEN sent once more)."""
        if put.retried:
            _remove_quietly(self._t._client(), put.tmp)
        flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL
        self._pipe.send(
            CMD_OPEN, put.tmp, flags, _mode_attrs(0o600), then=lambda t, m: self._opened(put, t, m)
        )

    # reply callbacks (inside paramiko's reader): record and queue, nothing else

    def _opened(self, put: _Put, t: int, msg: Message) -> None:
        if t == CMD_HANDLE:
            put.handle, put.opening = msg.get_binary(), False
        elif put.retried:
            put.error = _status(t, msg) or _StatusError("OPEN returned no handle")
        else:
            put.retried = True
        self._ready.append(put)

    def _acked(self, put: _Put, t: int, msg: Message) -> None:
        put.error = put.error or _status(t, msg)
        put.pending -= 1
        if not put.pending:
            self._ready.append(put)

    def _renamed(self, put: _Put, t: int, msg: Message) -> None:
        error = _status(t, msg)
        if error is not None and _unsupported(error):
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
            self._pipe.send(CMD_WRITE, put.handle, int64(offset), piece, then=ack)
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
            self._pipe.send(CMD_FSETSTAT, put.handle, _mode_attrs(put.upload.mode), then=ack)
        put.pending += 1
        self._pipe.send(CMD_CLOSE, put.handle, then=ack)
        put.handle = b""

    def _rename(self, put: _Put) -> None:
        if self._t.supports_posix_rename:
            self._pipe.send(
                CMD_EXTENDED,
                _POSIX_RENAME,
                put.tmp,
                put.full,
                then=lambda t, m: self._renamed(put, t, m),
            )
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
        _remove_quietly(self._t._client(), put.tmp)
        if not isinstance(error, TransportError):
            error = self._t._map_exception(error, put.upload.path)
        self._on_done(put.upload.path, error)

    def _release(self, put: _Put) -> None:
        put.sent = True
        if put.data is not None:
            self._held -= len(put.data)
            put.data = None
        put.source.close()


def _write_size(sftp: paramiko.SFTPClient) -> int:
    """Bytes per WRITE for this server: ``_BIG_CHUNK`` when its ``limits@openssh.com``
    reply allows that much (OpenSSH 8.6 and later), else the 32 KiB every server takes."""
    try:
        t, msg = sftp._request(CMD_EXTENDED, _LIMITS)
    except (OSError, EOFError, paramiko.SSHException):  # unsupported (a status), or worse:
        return _CHUNK  # the calls that follow meet a broken channel with their own error
    if t != CMD_EXTENDED_REPLY:
        return _CHUNK
    try:
        msg.get_int64()  # max-packet-length
        msg.get_int64()  # max-read-length
        max_write = msg.get_int64()
    except (struct.error, paramiko.SSHException):  # a short reply: trust nothing in it
        return _CHUNK
    return min(_BIG_CHUNK, max_write) if max_write >= _CHUNK else _CHUNK


def _mode_attrs(mode: int) -> paramiko.SFTPAttributes:
    attrs = paramiko.SFTPAttributes()
    attrs.st_mode = mode
    return attrs


def _secret(env: str | None, file: Path | None, what: str) -> str | None:
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"the {what} environment variable {env} is not set")
        return value
    if file:
        try:
            return file.read_text().rstrip("\n")
        except OSError as exc:
            raise ConfigError(f"cannot read the {what} file {file}: {exc.strerror}") from None
    return None


def _temp(full: str) -> str:
    parent, _, name = full.rpartition("/")
    return f"{parent}/{temp_name(name)}"


def _create(sftp: paramiko.SFTPClient, full: str) -> paramiko.SFTPFile:
    """A new file at ``full`` for writing, created 0600; one an interrupted run left
    under that name is removed first (EXCL: never written into as it is)."""
    flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL
    path = sftp._adjust_cwd(full)
    try:
        t, msg = sftp._request(CMD_OPEN, path, flags, _mode_attrs(0o600))
    except OSError:
        _remove_quietly(sftp, full)
        t, msg = sftp._request(CMD_OPEN, path, flags, _mode_attrs(0o600))
    if t != CMD_HANDLE:
        raise _StatusError("OPEN returned no handle")
    return paramiko.SFTPFile(sftp, msg.get_binary(), "wb")


def _lstat_or_none(sftp: paramiko.SFTPClient, full: str) -> Any:
    try:
        return sftp.lstat(full)
    except FileNotFoundError:
        return None


def _remove_quietly(sftp: paramiko.SFTPClient, full: str) -> None:
    with contextlib.suppress(OSError):
        sftp.remove(full)


def _unsupported(exc: Exception) -> bool:
    code = getattr(exc, "errno", None)
    return "unsupported" in str(exc).lower() or code == SFTP_OP_UNSUPPORTED


def remote_command(root: str, command: str, variables: Mapping[str, str]) -> str:
    """The command line the server's shell runs: ``variables`` exported (each value
    shell-quoted: a branch or project name is never read as shell text), then the
    operator's ``command`` in ``root``."""
    bad = [name for name in variables if not _VARIABLE_NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"not an environment variable name: {bad[0]!r}")
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in variables.items())
    prefix = f"export {exports}; " if exports else ""
    return f"{prefix}cd {shlex.quote(root)} && {command}"


_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _tail(out: bytearray) -> str:
    return bytes(out[-OUTPUT_LIMIT:]).decode("utf-8", "replace")
