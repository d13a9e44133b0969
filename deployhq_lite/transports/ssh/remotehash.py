"""Files hashed on the SSH server itself, in one command, for ``verify``: ``git
hash-object`` (git blob ids) or ``sha1sum`` (SHA-1 of the bytes), run by ``xargs`` in
the root.

The command lines are fixed text; the only thing put into them is the root, shell-quoted.
File names never reach a shell: they go to ``xargs -0`` on standard input, NUL after
each, written by a thread while this one reads the digests back (neither side waits for
the other, whatever the number of paths), each as ``./PATH`` (a name starting with ``-``,
or ``-`` itself, is never an option or standard input). Whatever goes wrong (no such
program, a file that could not be read, output that is not one digest per path) raises
``HashingFailed``, never a digest it is not sure of.
"""

from __future__ import annotations

import os
import re
import shlex
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import paramiko

from ..base import DigestMethod

# Which hashing programs the server has (and xargs to run them); exit 0 whatever it finds.
# A server that runs no commands (``ForceCommand internal-sftp``) prints no such line.
_FIND = (
    "command -v xargs >/dev/null 2>&1 || exit 0; "
    "for name in git sha1sum; do "
    'command -v "$name" >/dev/null 2>&1 && echo "deployhq-lite-hasher:$name"; '
    "done; exit 0"
)
_FOUND = re.compile(rb"^deployhq-lite-hasher:(\S+)$", re.MULTILINE)
_PROGRAMS: dict[DigestMethod, str] = {"git-hash-object": "git", "sha1sum": "sha1sum"}
# GIT_DIR names no repository: one around the root (maybe in SHA-256) plays no part.
_COMMANDS: dict[DigestMethod, str] = {
    "git-hash-object": "GIT_DIR=/nonexistent xargs -0 -r git hash-object --no-filters --",
    "sha1sum": "xargs -0 -r sha1sum -z --",
}
_GIT_LINE = re.compile(rb"[0-9a-f]{40}")
_SHA1SUM_RECORD = re.compile(rb"([0-9a-f]{40}) [ *](.*)", re.DOTALL)
_STDIN_PIECE = 64 * 1024
_POLL = 0.2  # seconds between looks at standard error while standard output is quiet
_ERROR_TAIL = 2000  # bytes of standard error kept for the log


class HashingFailed(Exception):
    """The server did not hash the files (``str()`` says why)."""


@dataclass(frozen=True, slots=True)
class Ran:
    status: int  # -1: the channel closed without an exit status
    out: bytes
    err: bytes


def find_hashers(ssh: paramiko.Transport, *, open_timeout: float) -> frozenset[DigestMethod]:
    """The methods the server can hash with (none when it runs no commands)."""
    ran = run_feeding(ssh, _FIND, iter(()), open_timeout=open_timeout)
    if ran is None:
        return frozenset()
    found = {word.decode() for word in _FOUND.findall(ran.out)}  # a banner is no program
    return frozenset(method for method, name in _PROGRAMS.items() if name in found)


def hash_files(
    ssh: paramiko.Transport,
    root: str,
    method: DigestMethod,
    paths: Sequence[str],
    *,
    open_timeout: float,
) -> dict[str, str]:
    """path -> digest of each of ``paths`` (relative to ``root``) by ``method``, in one
    command; ``HashingFailed`` unless it gave exactly one for each."""
    command = f"cd -- {shlex.quote(root)} && {_COMMANDS[method]}"
    ran = run_feeding(ssh, command, _nul_separated(paths), open_timeout=open_timeout)
    if ran is None:
        raise HashingFailed("the server refused to run a command")
    if ran.status != 0:
        raise HashingFailed(f"exit status {ran.status}: {_last_line(ran.err)}")
    parse = _git_digests if method == "git-hash-object" else _sha1sum_digests
    found = parse(ran.out, paths)
    if found is None:
        raise HashingFailed("its output was not one digest per file")
    return found


def run_feeding(
    ssh: paramiko.Transport, command: str, stdin: Iterator[bytes], *, open_timeout: float
) -> Ran | None:
    """Run ``command`` on a session channel of ``ssh``, ``stdin`` written to it (then
    end of file) by a thread while its output is read here; None if the server refuses
    to run it. No time limit: hashing many big files takes long (a lost connection
    ends the channel)."""
    try:
        channel = ssh.open_session(timeout=open_timeout)
    except paramiko.ChannelException:  # refused (sessions not allowed, too many open)
        return None
    writer = threading.Thread(target=_feed, args=(channel, stdin), daemon=True)
    try:
        try:
            channel.exec_command(command)
        except paramiko.SSHException:  # the exec request was refused
            return None
        writer.start()
        channel.settimeout(_POLL)
        out, err = bytearray(), bytearray()
        while True:
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(32768)
                del err[:-_ERROR_TAIL]
            try:
                data = channel.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            out += data
        status = channel.recv_exit_status()
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(32768)
        return Ran(status, bytes(out), bytes(err[-_ERROR_TAIL:]))
    finally:
        channel.close()  # releases the writer if the command stopped reading
        if writer.is_alive():
            writer.join()


def _feed(channel: paramiko.Channel, stdin: Iterator[bytes]) -> None:
    try:
        for piece in stdin:
            channel.sendall(piece)
        channel.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):  # the command ended first: its exit
        return  # status and output say what happened (fewer digests than paths at least)


def _nul_separated(paths: Sequence[str]) -> Iterator[bytes]:
    piece = bytearray()
    for path in paths:
        piece += b"./" + os.fsencode(path) + b"\0"
        if len(piece) >= _STDIN_PIECE:
            yield bytes(piece)
            piece.clear()
    if piece:
        yield bytes(piece)


def _git_digests(out: bytes, paths: Sequence[str]) -> dict[str, str] | None:
    """``git hash-object`` prints one id a line, in the order of the paths."""
    lines = out.split(b"\n")
    if lines[-1:] != [b""] or len(lines) - 1 != len(paths):
        return None
    if not all(_GIT_LINE.fullmatch(line) for line in lines[:-1]):
        return None
    return {path: line.decode() for path, line in zip(paths, lines[:-1], strict=True)}


def _sha1sum_digests(out: bytes, paths: Sequence[str]) -> dict[str, str] | None:
    """``sha1sum -z`` prints ``DIGEST  NAME`` and a NUL for each file, names as given
    (``./PATH``, not escaped)."""
    by_name: dict[bytes, str] = {}
    records = out.split(b"\0")
    if records[-1:] != [b""]:
        return None
    for record in records[:-1]:
        match = _SHA1SUM_RECORD.fullmatch(record)
        if match is None:
            return None
        by_name[match[2]] = match[1].decode()
    found = {path: by_name.get(b"./" + os.fsencode(path)) for path in paths}
    if any(digest is None for digest in found.values()):
        return None
    return {path: digest for path, digest in found.items() if digest is not None}


def _last_line(err: bytes) -> str:
    lines = err.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no message"
