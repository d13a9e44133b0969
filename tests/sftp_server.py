"""An in-process SFTP server (paramiko's server side) for tests, on a loopback port.

>>> with start_sftp_server(tmp_path / "srv") as server:         # doctest: +SKIP
...     server.port, server.user, server.user_key, server.known_hosts

Unlike OpenSSH it implements only plain SFTP v3: ``rename`` fails when the target
exists (as the draft says) and ``posix-rename@openssh.com`` is answered with
``SSH_FX_OP_UNSUPPORTED`` (paramiko's default for ``posix_rename``). Paths are the
real local paths, confined to ``directory`` (also the login directory): anything
resolving outside it, through ``..`` or a symlink, is refused with permission denied.

Modelled on paramiko's ``tests/_stub_sftp.py``; written for this project.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import paramiko

from deployhq_lite.testing.sshd import keygen

P = ParamSpec("P")
R = TypeVar("R")

USER = "deploy"
JOIN_TIMEOUT = 5.0  # seconds per thread at shutdown
_PERMISSIONS = paramiko.SFTPAttributes.FLAG_PERMISSIONS
_SIZE = paramiko.SFTPAttributes.FLAG_SIZE
_AMTIME = paramiko.SFTPAttributes.FLAG_AMTIME


@dataclass(frozen=True, slots=True)
class SFTPTestServer:
    host: str
    port: int
    user: str
    directory: Path
    user_key: Path  # private key (ed25519, no passphrase)
    host_key_public: str  # "ssh-ed25519 AAAA..."
    known_hosts: Path  # OpenSSH known_hosts naming [127.0.0.1]:port
    errors: list[str] = field(default_factory=list)  # unexpected exceptions in handlers


class _Outside(PermissionError):
    """A path that resolves outside the served directory."""


def _sftp_op(method: Callable[P, R]) -> Callable[P, R | int]:
    """OSError -> an SFTP status code; anything else is a bug, recorded then re-raised."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | int:
        try:
            return method(*args, **kwargs)
        except OSError as exc:
            return int(paramiko.SFTPServer.convert_errno(exc.errno))
        except Exception as exc:
            owner: Any = args[0]
            owner.errors.append(f"{method.__name__}: {type(exc).__name__}: {exc}")
            raise

    return wrapper


class _SSHServer(paramiko.ServerInterface):  # type: ignore[misc]  # paramiko is untyped
    """Public-key login of one user with one key; session channels only."""

    def __init__(self, user: str, key: paramiko.PKey) -> None:
        self._user = user
        self._key = key

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == self._user and key.asbytes() == self._key.asbytes():
            return int(paramiko.AUTH_SUCCESSFUL)
        return int(paramiko.AUTH_FAILED)

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return int(paramiko.OPEN_SUCCEEDED)
        return int(paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED)


def _apply_attrs(target: int | str, attr: paramiko.SFTPAttributes) -> None:
    """SETSTAT / FSETSTAT: permissions, size and times (ownership is left alone)."""
    flags = attr._flags
    if flags & _PERMISSIONS:
        os.chmod(target, attr.st_mode & 0o7777)
    if flags & _SIZE:
        os.truncate(target, attr.st_size)
    if flags & _AMTIME:
        os.utime(target, (attr.st_atime, attr.st_mtime))


class _Handle(paramiko.SFTPHandle):  # type: ignore[misc]  # paramiko is untyped
    """An open file; ``read``/``write``/``close`` are paramiko's (on ``readfile``)."""

    def __init__(self, flags: int, file: Any, errors: list[str]) -> None:
        super().__init__(flags)
        self.readfile = file
        self.writefile = file
        self.errors = errors

    @_sftp_op
    def stat(self) -> paramiko.SFTPAttributes:
        return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))

    @_sftp_op
    def chattr(self, attr: paramiko.SFTPAttributes) -> int:
        self.writefile.flush()
        _apply_attrs(self.writefile.fileno(), attr)
        return int(paramiko.SFTP_OK)


class _FileSystem(paramiko.SFTPServerInterface):  # type: ignore[misc]  # paramiko is untyped
    """SFTP requests on the real directory ``root``; one instance per SFTP session."""

    def __init__(self, server: _SSHServer, *, root: str, errors: list[str]) -> None:
        super().__init__(server)
        self.root = root
        self.errors = errors

    # -- paths ---------------------------------------------------------------------------------

    def canonicalize(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.root, path))

    def _local(self, path: str, *, follow: bool) -> str:
        """The local path; its directory (and itself if ``follow``) resolved and confined."""
        full = self.canonicalize(path)
        if follow:
            real = os.path.realpath(full)
        else:
            head, name = os.path.split(full)
            real = os.path.join(os.path.realpath(head), name)
        if real != self.root and not real.startswith(self.root + "/"):
            raise _Outside(errno.EACCES, "outside the served directory", path)
        return real

    # -- files ---------------------------------------------------------------------------------

    @_sftp_op
    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> _Handle:
        local = self._local(path, follow=True)
        mode = 0o666
        if attr is not None and attr._flags & _PERMISSIONS:
            mode = attr.st_mode & 0o7777
        fd = os.open(local, flags | os.O_CLOEXEC, mode)
        if flags & os.O_WRONLY:
            fmode = "ab" if flags & os.O_APPEND else "wb"
        elif flags & os.O_RDWR:
            fmode = "a+b" if flags & os.O_APPEND else "r+b"
        else:
            fmode = "rb"
        try:
            file = os.fdopen(fd, fmode)
        except BaseException:
            os.close(fd)
            raise
        return _Handle(flags, file, self.errors)

    @_sftp_op
    def stat(self, path: str) -> paramiko.SFTPAttributes:
        return paramiko.SFTPAttributes.from_stat(os.stat(self._local(path, follow=True)))

    @_sftp_op
    def lstat(self, path: str) -> paramiko.SFTPAttributes:
        return paramiko.SFTPAttributes.from_stat(os.lstat(self._local(path, follow=False)))

    @_sftp_op
    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        _apply_attrs(self._local(path, follow=True), attr)
        return int(paramiko.SFTP_OK)

    @_sftp_op
    def remove(self, path: str) -> int:
        os.remove(self._local(path, follow=False))
        return int(paramiko.SFTP_OK)

    @_sftp_op
    def rename(self, oldpath: str, newpath: str) -> int:
        old = self._local(oldpath, follow=False)
        new = self._local(newpath, follow=False)
        if os.path.lexists(new):  # SFTP v3: never overwrite (posix-rename would)
            return int(paramiko.SFTP_FAILURE)
        os.rename(old, new)
        return int(paramiko.SFTP_OK)

    # posix_rename is deliberately not overridden: paramiko answers OP_UNSUPPORTED.

    # -- directories and links -----------------------------------------------------------------

    @_sftp_op
    def mkdir(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        mode = 0o777
        if attr is not None and attr._flags & _PERMISSIONS:
            mode = attr.st_mode & 0o7777
        os.mkdir(self._local(path, follow=False), mode)
        return int(paramiko.SFTP_OK)

    @_sftp_op
    def rmdir(self, path: str) -> int:
        os.rmdir(self._local(path, follow=False))
        return int(paramiko.SFTP_OK)

    @_sftp_op
    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes]:
        local = self._local(path, follow=True)
        out = []
        for name in sorted(os.listdir(local)):
            attr = paramiko.SFTPAttributes.from_stat(os.lstat(os.path.join(local, name)))
            attr.filename = name
            out.append(attr)
        return out

    @_sftp_op
    def symlink(self, target_path: str, path: str) -> int:
        os.symlink(target_path, self._local(path, follow=False))  # the target verbatim
        return int(paramiko.SFTP_OK)

    @_sftp_op
    def readlink(self, path: str) -> str:
        return os.readlink(self._local(path, follow=False))


class _Subsystem(paramiko.SFTPServer):  # type: ignore[misc]  # paramiko is untyped
    """paramiko's SFTP subsystem thread, remembered so that shutdown can join it."""

    def __init__(
        self, channel: Any, name: str, server: Any, sftp_si: Any, *args: Any, **kwargs: Any
    ) -> None:
        threads: list[threading.Thread] = kwargs.pop("threads")
        super().__init__(channel, name, server, sftp_si, *args, **kwargs)
        threads.append(self)


class _Listener:
    """Accepts connections in a thread; each gets a paramiko server Transport."""

    def __init__(
        self, directory: Path, host_key: paramiko.PKey, user_key: paramiko.PKey, errors: list[str]
    ) -> None:
        self.root = os.path.realpath(directory)
        self.host_key = host_key
        self.user_key = user_key
        self.errors = errors
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.stopping = threading.Event()
        self.transports: list[paramiko.Transport] = []
        self.subsystems: list[threading.Thread] = []
        self.thread = threading.Thread(target=self._accept, name="sftp-test-accept")

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listening socket was closed
            conn.settimeout(None)
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.host_key)
            transport.set_subsystem_handler(
                "sftp",
                _Subsystem,
                _FileSystem,
                threads=self.subsystems,
                root=self.root,
                errors=self.errors,
            )
            self.transports.append(transport)
            # With an event, start_server returns at once; negotiation runs in its thread.
            transport.start_server(event=threading.Event(), server=_SSHServer(USER, self.user_key))

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(JOIN_TIMEOUT)
        self.sock.close()
        for transport in self.transports:
            transport.close()
        for transport in self.transports:  # their threads start the subsystem threads
            with suppress(RuntimeError):  # a transport whose thread never started
                transport.join(JOIN_TIMEOUT)
        for thread in self.subsystems:
            thread.join(JOIN_TIMEOUT)
        alive = [t.name for t in [self.thread, *self.transports, *self.subsystems] if t.is_alive()]
        if alive:
            raise RuntimeError(f"SFTP test server threads still running: {alive}")


@contextmanager
def start_sftp_server(directory: Path) -> Iterator[SFTPTestServer]:
    """Serve ``directory`` (created if missing) on 127.0.0.1; keys live beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = directory.parent / f"{directory.name}-keys"
    keys.mkdir(exist_ok=True)
    host_public = keygen(keys / "host_key")
    keygen(keys / "user_key")
    errors: list[str] = []
    listener = _Listener(
        directory,
        paramiko.Ed25519Key.from_private_key_file(str(keys / "host_key")),
        paramiko.Ed25519Key.from_private_key_file(str(keys / "user_key")),
        errors,
    )
    known_hosts = keys / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{listener.port} {host_public}\n")
    listener.thread.start()
    try:
        yield SFTPTestServer(
            host="127.0.0.1",
            port=listener.port,
            user=USER,
            directory=Path(listener.root),
            user_key=keys / "user_key",
            host_key_public=host_public,
            known_hosts=known_hosts,
            errors=errors,
        )
    finally:
        listener.stop()
