"""Reaching an SSH server: the socket, the ciphers, host keys and their trust, logging in.

Unknown or changed host keys are refused, never added; ``servers trust`` records one
only when the operator confirms it. Secrets (passwords, key passphrases) are read from
the environment or a file named in the config, never logged. Commands the operator
configured run on a session channel of the same connection (``run_remote``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import shlex
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import paramiko

from ...errors import AuthenticationError, ConfigError, ConnectError, HostKeyError
from ...log import get_logger
from ...values import OUTPUT_LIMIT, CommandOutcome

if TYPE_CHECKING:
    from ...config import ServerConfig

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


class Connector:
    """How to reach one configured server: connect and run the key exchange, check the
    host key it offers (or record it), and log in."""

    def __init__(self, config: ServerConfig, *, server: str) -> None:
        self.config = config
        self.server = server

    # -- connecting --------------------------------------------------------------------------

    def start(self) -> paramiko.Transport:
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

    # -- host keys -----------------------------------------------------------------------------

    def offered_host_key(self) -> HostKeyOffer:
        """The server's host key and how it compares with what we trust; nothing is sent
        beyond the key exchange (no authentication)."""
        ssh = self.start()
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
            _record_host_key(known, offer)
        except OSError as exc:
            raise HostKeyError(
                f"server {self.server}: cannot write {known}: {exc.strerror or exc}",
                server=self.server,
            ) from None
        return known

    def verify_host_key(self, key: paramiko.PKey) -> None:
        """Refuse a key that is not pinned or listed in known_hosts (never added here)."""
        status, detail = self._host_key_status(key)
        if status != "trusted":
            raise HostKeyError(
                f"server {self.server}: {detail}; check the key with the server's "
                "administrator, then run `deployhq-lite servers trust` or set "
                "host_key_fingerprint",
                server=self.server,
            )

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

    # -- logging in ----------------------------------------------------------------------------

    def authenticate(self, ssh: paramiko.Transport) -> str:
        """Log in with the key, then the agent, then the password; the method that worked."""
        cfg = self.config
        tried: list[str] = []
        for method, attempt in (
            ("key", self._auth_key),
            ("agent", self._auth_agent),
            ("password", self._auth_password),
        ):
            try:
                if attempt(ssh):
                    log.info("server.connected", server=self.server, auth=method)
                    return method
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


def session_started(ssh: paramiko.Transport) -> None:
    """The session is up: reads stop asking for quick ACKs (see ``_QuickAckSocket``)."""
    if isinstance(ssh.sock, _QuickAckSocket):
        ssh.sock.quick_acks = False


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


def _record_host_key(known: Path, offer: HostKeyOffer) -> None:
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


# -- remote commands ---------------------------------------------------------------------------


def run_remote(
    ssh: paramiko.Transport,
    root: str,
    command: str,
    variables: Mapping[str, str],
    *,
    timeout: float,
    open_timeout: float,
) -> CommandOutcome:
    """Run ``command`` in ``root`` on a session channel of ``ssh``, ``variables``
    exported; stdout and stderr together, the last ``OUTPUT_LIMIT`` bytes kept."""
    started = time.monotonic()
    channel = ssh.open_session(timeout=open_timeout)
    try:
        channel.set_combine_stderr(True)
        channel.settimeout(0.2)
        channel.exec_command(remote_command(root, command, variables))
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
