"""The SFTP request pipeline: the only code that touches paramiko's internals.

paramiko's client sends one request and waits for its reply. ``Pipe`` frames and numbers
requests as paramiko does (its ``_async_request``) but writes many at a time to the
channel, and hands each reply, decoded, to a callback: an OK status becomes None, any
other status the ``OSError`` paramiko would raise. Callers (``sftp``, ``batches``) see
only typed requests (``lstat``, ``mkdir``, ``create``, ``write``...) and never an SFTP
message or packet type.

Also here, for the same reason: the client that sends paths as bytes (``open_client``),
the ``limits@openssh.com`` question (``find_write_size``) and the synchronous OPEN that
never reuses a file left behind (``create_file``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as st
import struct
from collections.abc import Callable
from typing import Literal

import paramiko
from paramiko.message import Message
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_FSETSTAT,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_LSTAT,
    CMD_MKDIR,
    CMD_OPEN,
    CMD_READ,
    CMD_REMOVE,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_EOF,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_EXCL,
    SFTP_FLAG_READ,
    SFTP_FLAG_WRITE,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
    SFTP_OP_UNSUPPORTED,
    SFTP_PERMISSION_DENIED,
    int64,
)

_MAX_REQUESTS = 128  # SFTP requests in flight on the channel
CHUNK = 32 * 1024  # bytes per WRITE (what every SFTP server accepts)
# bytes per WRITE when the server says it takes more (``limits@openssh.com``): a quarter
# of the replies to read, and OpenSSH's sftp-server keeps up best at this size (measured:
# 128 KiB writes ~1.4x the throughput of 32 KiB ones; 255 KiB ones stall its input queue)
_BIG_CHUNK = 128 * 1024
_LIMITS = "limits@openssh.com"
_POSIX_RENAME = "posix-rename@openssh.com"
_NEW_FILE = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL

# A request's outcome: None for an OK status, else the error paramiko would raise.
Done = Callable[[Exception | None], None]
# An OPEN's outcome: the handle, or None and the error.
Opened = Callable[[bytes | None, Exception | None], None]
# What an LSTAT found (a symlink is "other": never followed).
PathKind = Literal["dir", "missing", "other"]
# An LSTAT's or FSTAT's outcome: the attributes, or None and the error.
Attrs = Callable[[paramiko.SFTPAttributes | None, Exception | None], None]
# A READ's outcome: the bytes (empty at the end of the file), or None and the error.
Data = Callable[[bytes | None, Exception | None], None]


class StatusError(OSError):
    """An SFTP status other than OK, as paramiko would raise it."""


class Pipe:
    """Requests sent without waiting for their replies, many at a time on the channel.

    Each request method queues a request with a callback; queued bytes go out when they
    fill an SSH packet or when ``pump`` would otherwise wait (so they leave in large
    writes). ``pump`` reads one reply (through paramiko's reader) and runs its callback,
    which must only record state. Synchronous paramiko calls may be made in between, once
    ``flush`` has sent what is queued: replies to piped requests that they read reach the
    callbacks the same way.
    """

    def __init__(self, sftp: paramiko.SFTPClient) -> None:
        self._sftp = sftp
        self._channel = sftp.get_channel()
        self._packet = max(4096, int(self._channel.out_max_packet_size) - 64)  # as paramiko cuts
        self._waiting: dict[int, _Reply] = {}
        self._out = bytearray()

    # -- requests ------------------------------------------------------------------------------

    def lstat(self, full: str, then: Callable[[PathKind], None]) -> None:
        self._send(CMD_LSTAT, full, then=lambda t, msg: then(_kind(t, msg)))

    def lstat_attrs(self, full: str, then: Attrs) -> None:
        """LSTAT ``full``: its attributes (a symlink's own: never followed)."""
        self._send(CMD_LSTAT, full, then=_attrs(then))

    def mkdir(self, full: str, mode: int, then: Done) -> None:
        self._send(CMD_MKDIR, full, _mode_attrs(mode), then=_checked(then))

    def remove(self, full: str, then: Done) -> None:
        self._send(CMD_REMOVE, full, then=_checked(then))

    def create(self, full: str, then: Opened) -> None:
        """OPEN a new file for writing, 0600; EXCL: fails when the name is taken."""
        self._send(CMD_OPEN, full, _NEW_FILE, _mode_attrs(0o600), then=_handle(then))

    def open_read(self, full: str, then: Opened) -> None:
        """OPEN an existing file for reading (SFTP has no O_NOFOLLOW: LSTAT it first)."""
        self._send(CMD_OPEN, full, SFTP_FLAG_READ, paramiko.SFTPAttributes(), then=_handle(then))

    def fstat(self, handle: bytes, then: Attrs) -> None:
        self._send(CMD_FSTAT, handle, then=_attrs(then))

    def read(self, handle: bytes, offset: int, length: int, then: Data) -> None:
        """READ up to ``length`` bytes at ``offset`` (a server may send fewer)."""
        self._send(CMD_READ, handle, int64(offset), length, then=_data(then))

    def write(self, handle: bytes, offset: int, data: bytes, then: Done) -> None:
        self._send(CMD_WRITE, handle, int64(offset), data, then=_checked(then))

    def set_mode(self, handle: bytes, mode: int, then: Done) -> None:
        self._send(CMD_FSETSTAT, handle, _mode_attrs(mode), then=_checked(then))

    def close(self, handle: bytes, then: Done) -> None:
        self._send(CMD_CLOSE, handle, then=_checked(then))

    def posix_rename(self, old: str, new: str, then: Done) -> None:
        self._send(CMD_EXTENDED, _POSIX_RENAME, old, new, then=_checked(then))

    # -- the channel ---------------------------------------------------------------------------

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
        """Read one reply and run its callback."""
        if not self._waiting:
            raise RuntimeError("SFTP pipeline: waiting for a reply to nothing")
        if not self._channel.recv_ready():  # about to wait: let the server have it all
            self.flush()
        self._sftp._read_response()

    def drain(self) -> None:
        """Read every reply still to come."""
        while self._waiting:
            self.pump()

    def _send(self, t: int, *args: object, then: Callable[[int, Message], None]) -> None:
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


class _Reply:
    __slots__ = ("__weakref__", "pipe", "then")  # paramiko keeps only a weak reference

    def __init__(self, pipe: Pipe, then: Callable[[int, Message], None]) -> None:
        self.pipe, self.then = pipe, then

    def _async_response(self, t: int, msg: Message, num: int) -> None:
        del self.pipe._waiting[num]
        self.then(t, msg)


class _Client(paramiko.SFTPClient):  # type: ignore[misc]  # paramiko is untyped
    """paramiko's client, with paths as bytes on the wire: a name that is not UTF-8 is
    held as a str with lone surrogates (see ``names``) and sent as its own bytes, which
    paramiko's UTF-8 encoding refuses. Every path paramiko sends goes through
    ``_adjust_cwd``, but a symlink's target."""

    def _adjust_cwd(self, path: str | bytes) -> bytes:
        return bytes(super()._adjust_cwd(os.fsencode(path)))

    def symlink(self, source: str | bytes, dest: str | bytes) -> None:
        super().symlink(os.fsencode(source), dest)


def open_client(ssh: paramiko.Transport) -> paramiko.SFTPClient:
    """The SFTP channel on ``ssh``, its paths sent as bytes (see ``_Client``)."""
    return _Client.from_transport(ssh)


def find_write_size(sftp: paramiko.SFTPClient) -> int:
    """Bytes per WRITE for this server: ``_BIG_CHUNK`` when its ``limits@openssh.com``
    reply allows that much (OpenSSH 8.6 and later), else the 32 KiB every server takes."""
    try:
        t, msg = sftp._request(CMD_EXTENDED, _LIMITS)
    except (OSError, EOFError, paramiko.SSHException):  # unsupported (a status), or worse:
        return CHUNK  # the calls that follow meet a broken channel with their own error
    if t != CMD_EXTENDED_REPLY:
        return CHUNK
    try:
        msg.get_int64()  # max-packet-length
        msg.get_int64()  # max-read-length
        max_write = msg.get_int64()
    except (struct.error, paramiko.SSHException):  # a short reply: trust nothing in it
        return CHUNK
    return min(_BIG_CHUNK, max_write) if max_write >= CHUNK else CHUNK


def create_file(sftp: paramiko.SFTPClient, full: str) -> paramiko.SFTPFile:
    """A new file at ``full`` for writing, created 0600; one an interrupted run left
    under that name is removed first (EXCL: never written into as it is)."""
    path = sftp._adjust_cwd(full)
    try:
        t, msg = sftp._request(CMD_OPEN, path, _NEW_FILE, _mode_attrs(0o600))
    except OSError:
        remove_quietly(sftp, full)
        t, msg = sftp._request(CMD_OPEN, path, _NEW_FILE, _mode_attrs(0o600))
    if t != CMD_HANDLE:
        raise StatusError("OPEN returned no handle")
    return paramiko.SFTPFile(sftp, msg.get_binary(), "wb")


def remove_quietly(sftp: paramiko.SFTPClient, full: str) -> None:
    with contextlib.suppress(OSError):
        sftp.remove(full)


def is_unsupported(exc: Exception) -> bool:
    """Whether ``exc`` says the server does not support the request."""
    code = getattr(exc, "errno", None)
    return "unsupported" in str(exc).lower() or code == SFTP_OP_UNSUPPORTED


# -- replies and requests on the wire ----------------------------------------------------------


def _status(t: int, msg: Message) -> Exception | None:
    """None for an OK status; the error paramiko would raise otherwise."""
    if t != CMD_STATUS:
        return StatusError(f"unexpected SFTP reply type {t}")
    return _error(msg.get_int(), msg.get_text())


def _error(code: int, text: str) -> Exception | None:
    if code == SFTP_OK:
        return None
    if code == SFTP_NO_SUCH_FILE:
        return FileNotFoundError(errno.ENOENT, text)
    if code == SFTP_PERMISSION_DENIED:
        return PermissionError(errno.EACCES, text)
    error = StatusError(text or f"SFTP status {code}")
    error.errno = SFTP_OP_UNSUPPORTED if code == SFTP_OP_UNSUPPORTED else None
    return error


def _checked(then: Done) -> Callable[[int, Message], None]:
    return lambda t, msg: then(_status(t, msg))


def _handle(then: Opened) -> Callable[[int, Message], None]:
    def opened(t: int, msg: Message) -> None:
        if t == CMD_HANDLE:
            then(msg.get_binary(), None)
        else:
            then(None, _status(t, msg) or StatusError("OPEN returned no handle"))

    return opened


def _attrs(then: Attrs) -> Callable[[int, Message], None]:
    def stated(t: int, msg: Message) -> None:
        if t == CMD_ATTRS:
            then(paramiko.SFTPAttributes._from_msg(msg), None)
        else:
            then(None, _status(t, msg) or StatusError("no attributes in the reply"))

    return stated


def _data(then: Data) -> Callable[[int, Message], None]:
    def read(t: int, msg: Message) -> None:
        if t == CMD_DATA:
            then(msg.get_binary(), None)
        elif t != CMD_STATUS:
            then(None, StatusError(f"unexpected SFTP reply type {t}"))
        else:
            code, text = msg.get_int(), msg.get_text()
            if code == SFTP_EOF:
                then(b"", None)
            else:
                then(None, _error(code, text) or StatusError("READ returned no data"))

    return read


def _kind(t: int, msg: Message) -> PathKind:
    """An LSTAT reply as "dir", "missing" or "other" (a symlink is other: not followed)."""
    if t == CMD_ATTRS:
        mode = paramiko.SFTPAttributes._from_msg(msg).st_mode or 0
        return "dir" if st.S_ISDIR(mode) else "other"
    return "missing" if isinstance(_status(t, msg), FileNotFoundError) else "other"


def _mode_attrs(mode: int) -> paramiko.SFTPAttributes:
    attrs = paramiko.SFTPAttributes()
    attrs.st_mode = mode
    return attrs


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
