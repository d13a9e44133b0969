"""SFTP over SSH (paramiko): the only module that imports paramiko.

Unknown or changed host keys are refused, never added. Every directory on the way to a
path is checked with ``lstat`` (a symlink is refused before anything is written); files
go to a temp name beside the target, get their mode, and replace it with
``posix-rename@openssh.com`` (remove-then-rename on servers without it).

This first version sends requests one at a time; pipelining comes next (issue 4).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import os
import socket
import stat as st
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import paramiko

from ..errors import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    HostKeyError,
    PathOutsideRootError,
    RemotePathError,
    TransportError,
)
from ..log import get_logger
from .base import TEMP_SUFFIX, BaseTransport, RemoteEntry, RemoteKind, check_relative

if TYPE_CHECKING:
    from ..config import ServerConfig

log = get_logger(__name__)

PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
)
_SFTP_OP_UNSUPPORTED = 8


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
        self._root = ""
        self._dirs: set[str] = set()  # directories checked to be real directories
        self.auth_method = ""
        self.host_key_fingerprint = ""
        self.supports_posix_rename = True

    # -- lifecycle -------------------------------------------------------------------------

    def _open(self) -> None:
        cfg = self.config
        where = f"{cfg.host}:{cfg.port}"
        try:
            sock = socket.create_connection((cfg.host, cfg.port), timeout=cfg.connect_timeout)
        except OSError as exc:
            raise ConnectError(
                f"server {self.server}: cannot connect to {where}: {exc.strerror or exc}",
                server=self.server,
            ) from None
        self._ssh = paramiko.Transport(sock)
        try:
            self._handshake(self._ssh, where)
        except BaseException:
            self._close()  # a refused connection leaves no socket or thread behind
            raise

    def _handshake(self, ssh: paramiko.Transport, where: str) -> None:
        cfg = self.config
        options = ssh.get_security_options()
        available = tuple(options.ciphers)
        options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in available) + tuple(
            c for c in available if c not in PREFERRED_CIPHERS
        )
        try:
            ssh.start_client(timeout=cfg.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectError(
                f"server {self.server}: SSH handshake with {where} failed: {exc}",
                server=self.server,
            ) from None
        self._verify_host_key(ssh.get_remote_server_key())
        self._authenticate(ssh)
        self._sftp = paramiko.SFTPClient.from_transport(ssh)
        self._root = self._resolve_root()

    def _close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        if self._ssh is not None:
            self._ssh.close()
        self._sftp = self._ssh = None

    def _verify_host_key(self, key: paramiko.PKey) -> None:
        cfg = self.config
        offered = f"{key.get_name()} {fingerprint(key)}"
        self.host_key_fingerprint = fingerprint(key)
        name = cfg.host if cfg.port == 22 else f"[{cfg.host}]:{cfg.port}"
        pinned = cfg.host_key_fingerprint
        if pinned:
            if pinned == fingerprint(key):
                return
            self._refuse_key(f"changed host key for {name}: offered {offered}, pinned {pinned}")
        known = cfg.known_hosts_path or Path("~/.ssh/known_hosts").expanduser()
        keys = paramiko.HostKeys(str(known)) if known.exists() else paramiko.HostKeys()
        entry = keys.lookup(name)
        if entry is None:
            self._refuse_key(f"unknown host key for {name}: offered {offered} (not in {known})")
        expected = entry.get(key.get_name())
        if expected is None or expected != key:
            listed = ", ".join(f"{t} {fingerprint(k)}" for t, k in entry.items())
            self._refuse_key(f"changed host key for {name}: offered {offered}, known {listed}")

    def _refuse_key(self, problem: str) -> None:
        raise HostKeyError(
            f"server {self.server}: {problem}; check the key with the server's administrator, "
            "then add it to known_hosts_path or set host_key_fingerprint",
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
        passphrase = _secret(cfg.key_passphrase_env, cfg.key_passphrase_file, "key passphrase")
        try:
            key = paramiko.PKey.from_path(cfg.key_path, passphrase)
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise AuthenticationError(
                f"server {self.server}: cannot load key {cfg.key_path}: {type(exc).__name__}",
                server=self.server,
            ) from None
        ssh.auth_publickey(cfg.user, key)
        return bool(ssh.is_authenticated())

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
        root = str(PurePosixPath(self.config.root))
        sftp = self._client()
        with self._map_errors(""):
            if not root.startswith("/"):
                root = str(PurePosixPath(sftp.normalize(".")) / root)
            self._root = root
            self._ensure_dir(root, create=True)
        return root

    # -- primitives --------------------------------------------------------------------------

    def stat(self, path: str) -> RemoteEntry | None:
        self._require_open()
        with self._map_errors(path):
            full = self._full(path, create=False)
            if full is None:
                return None
            attrs = _lstat_or_none(self._client(), full)
            if attrs is None:
                return None
            mode = attrs.st_mode or 0
            kind: RemoteKind = "other"
            target = None
            if st.S_ISLNK(mode):
                kind, target = "symlink", self._client().readlink(full)
            elif st.S_ISDIR(mode):
                kind = "dir"
            elif st.S_ISREG(mode):
                kind = "file"
            return RemoteEntry(kind, attrs.st_size or 0, st.S_IMODE(mode), target)

    def read_file(self, path: str) -> bytes | None:
        self._require_open()
        with self._map_errors(path):
            full = self._full(path, create=False)
            if full is None:
                return None
            attrs = _lstat_or_none(self._client(), full)
            if attrs is None:
                return None
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
                with sftp.open(tmp, "wb") as f:
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
        """What ``servers check`` reports: host key, auth method, rename support, root.

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
            "root": self._root,
            "root_writable": True,
        }

    def sync(self) -> None:
        """Nothing to do: each file was closed (and renamed) on the server before this."""
        self._require_open()

    # -- helpers -----------------------------------------------------------------------------

    def _client(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            raise ConnectError(f"server {self.server}: not connected", server=self.server)
        return self._sftp

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
                self.supports_posix_rename = False
                log.warning("sftp.no_posix_rename", server=self.server)
        _remove_quietly(sftp, full)
        sftp.rename(tmp, full)

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
    tmp = f".{name}{TEMP_SUFFIX}"
    if len(tmp.encode()) > 255:
        tmp = f".{hashlib.sha256(name.encode()).hexdigest()[:32]}{TEMP_SUFFIX}"
    return f"{parent}/{tmp}"


def _lstat_or_none(sftp: paramiko.SFTPClient, full: str) -> Any:
    try:
        return sftp.lstat(full)
    except FileNotFoundError:
        return None


def _remove_quietly(sftp: paramiko.SFTPClient, full: str) -> None:
    with contextlib.suppress(OSError):
        sftp.remove(full)


def _unsupported(exc: OSError) -> bool:
    return "unsupported" in str(exc).lower() or exc.errno == _SFTP_OP_UNSUPPORTED
