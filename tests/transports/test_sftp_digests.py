"""``SFTPTransport.file_digests`` against real OpenSSH servers on 127.0.0.1: hashed on
the server by git or sha1sum in one command, or read back over SFTP (the only way on a
server that runs no commands). The root is written here directly (the same machine)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
import structlog

from deployhq_lite import log
from deployhq_lite.errors import PathOutsideRootError, TransportError
from deployhq_lite.testing.sshd import SSHServer
from deployhq_lite.transports.base import DigestMethod
from deployhq_lite.transports.ssh import remotehash, tree
from deployhq_lite.transports.ssh.sftp import SFTPTransport
from deployhq_lite.values import BlobHasher, git_blob_id

METHODS: tuple[DigestMethod, ...] = ("git-hash-object", "sha1sum", "sftp-read")

HOSTILE = [
    "plain.txt",
    "with space.txt",
    "new\nline",
    "tab\there",
    "quote'single",
    'quote"double',
    "$(touch pwned)",
    "`touch pwned`",
    "semi;colon && touch pwned",
    "-",
    "-n",
    "--help",
    "star*",
    "ünïcödé ☃.txt",
    os.fsdecode(b"not-utf8-\xff\xfe"),
    "dir with space/-x",
    "dir with space/nested/\nnewline first",
]


def expected(method: DigestMethod, data: bytes) -> str:
    return (
        hashlib.sha1(data, usedforsecurity=False).hexdigest()
        if method == "sha1sum"
        else git_blob_id(data)
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "server root (with space)"
    path.mkdir()
    return path


@pytest.fixture
def connect(root: Path) -> Iterator[Callable[..., SFTPTransport]]:
    opened: list[SFTPTransport] = []

    def connect(sshd: SSHServer, *methods: DigestMethod) -> SFTPTransport:
        t = SFTPTransport(sshd.server_config(root), server="digests")
        if methods:
            t.digest_methods = methods
        t.open()
        opened.append(t)
        return t

    yield connect
    for t in opened:
        t.close()


def write(root: Path, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


@contextlib.contextmanager
def watch_fifo(path: Path) -> Iterator[list[bool]]:
    """A FIFO at ``path``; the list says whether anything opened it to read (a reader
    blocks in open until a writer comes: this thread looks for one, and lets it go)."""
    os.mkfifo(path)
    opened: list[bool] = []
    stop = threading.Event()

    def look() -> None:
        while not stop.wait(0.005):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader
                continue
            opened.append(True)
            os.close(fd)

    watcher = threading.Thread(target=look, daemon=True)
    watcher.start()
    try:
        yield opened
    finally:
        stop.set()
        watcher.join()


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every command line sent to a server (paramiko's exec request, called through)."""
    sent: list[str] = []
    real = paramiko.Channel.exec_command

    def exec_command(channel: paramiko.Channel, command: str) -> None:
        sent.append(command)
        real(channel, command)

    monkeypatch.setattr(paramiko.Channel, "exec_command", exec_command)
    return sent


# -- each method -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_each_method_hashes_hostile_names_in_a_root_with_a_space(
    method: DigestMethod, sshd: SSHServer, root: Path, connect: Callable[..., SFTPTransport]
) -> None:
    files = {
        path: f"{i}: {path}\n".encode("utf-8", "surrogateescape") for i, path in enumerate(HOSTILE)
    }
    files["empty"] = b""
    write(root, files)
    t = connect(sshd, method)
    found = t.file_digests([*files, "missing", "dir with space"])
    assert found.method == method
    assert found.digests == {
        **{path: expected(method, data) for path, data in files.items()},
        "missing": None,
        "dir with space": None,
    }
    assert not list(root.parent.rglob("pwned")) and not (Path.home() / "pwned").exists()


def test_git_is_preferred_and_found_once_per_connection(
    sshd: SSHServer, root: Path, connect: Callable[..., SFTPTransport], execs: list[str]
) -> None:
    write(root, {"a": b"a", "b/c": b"c"})
    t = connect(sshd)
    assert t.file_digests(["a"]).method == "git-hash-object"
    assert t.file_digests(["b/c"]).digests == {"b/c": git_blob_id(b"c")}
    assert t.remote_hashers == {"git-hash-object", "sha1sum"}
    assert len(execs) == 3  # the look for hashers, then one command per call
    assert [c for c in execs if "hash-object" in c] == execs[1:]


def test_five_thousand_files_are_hashed_in_one_command(
    sshd: SSHServer, root: Path, connect: Callable[..., SFTPTransport], execs: list[str]
) -> None:
    files = {f"d{i % 50}/file {i}.txt": b"%d\n" % i for i in range(5000)}
    write(root, files)
    t = connect(sshd)
    found = t.file_digests(list(files))
    assert found.method == "git-hash-object"
    assert found.digests == {path: git_blob_id(data) for path, data in files.items()}
    # the look for hashers, then one command: fixed text and the quoted root, no file name
    assert execs[1:] == [
        f"cd -- {shlex.quote(str(root))} && "
        "GIT_DIR=/nonexistent xargs -0 -r git hash-object --no-filters --"
    ]


def test_a_server_that_runs_no_commands_is_read_back_over_sftp(
    sshd_sftp_only: SSHServer, root: Path, connect: Callable[..., SFTPTransport]
) -> None:
    files = {"a.txt": b"hello\n", "sub/-b": bytes(range(256)) * 1000, "empty": b""}
    write(root, files)
    (root / "link").symlink_to("a.txt")
    t = connect(sshd_sftp_only)
    found = t.file_digests([*files, "link", "sub", "missing"])
    assert t.remote_hashers == frozenset()
    assert found.method == "sftp-read"
    assert found.digests == {
        **{path: git_blob_id(data) for path, data in files.items()},
        "link": None,
        "sub": None,
        "missing": None,
    }


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Every event logged, at any level, whatever an earlier in-process CLI run set up
    (it turns logging "off", in ``log`` and in structlog's configuration)."""
    monkeypatch.setattr(log, "_threshold", None)
    configured, saved = structlog.is_configured(), structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0))
    try:
        with structlog.testing.capture_logs() as entries:
            yield entries
    finally:
        if configured:
            structlog.configure(**saved)
        else:
            structlog.reset_defaults()


def test_a_failed_command_falls_back_to_reading_over_sftp(
    sshd_sftp_only: SSHServer,
    root: Path,
    connect: Callable[..., SFTPTransport],
    logs: list[dict[str, Any]],
) -> None:
    """Told the server has git and sha1sum, each command is refused (``This service
    allows sftp connections only.``, exit status 1): both fail, reading works."""
    write(root, {"a": b"a", "b": b"b"})
    t = connect(sshd_sftp_only)
    t.remote_hashers = frozenset({"git-hash-object", "sha1sum"})
    found = t.file_digests(["a", "b"])
    assert found.method == "sftp-read"
    assert found.digests == {"a": git_blob_id(b"a"), "b": git_blob_id(b"b")}
    failed = [e for e in logs if e["event"] == "remote_hashing.failed"]
    assert [(e["method"], e["server"], e["files"]) for e in failed] == [
        ("git-hash-object", "digests", 2),
        ("sha1sum", "digests", 2),
    ]


def test_no_method_that_works_is_an_error_naming_the_server(
    sshd_sftp_only: SSHServer, root: Path, connect: Callable[..., SFTPTransport]
) -> None:
    write(root, {"a": b"a"})
    t = connect(sshd_sftp_only, "git-hash-object")
    with pytest.raises(TransportError, match=r"^server digests: no way to hash its files"):
        t.file_digests(["a"])


# -- never through a symlink, never a directory -----------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_symlinks_out_of_the_root_are_none_and_never_opened(
    method: DigestMethod,
    sshd: SSHServer,
    root: Path,
    tmp_path: Path,
    connect: Callable[..., SFTPTransport],
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    write(root, {"ok": b"ok"})
    (root / "link").symlink_to(outside / "secret")
    (root / "linked dir").symlink_to(outside)
    (root / "inside").mkdir()
    (root / "inside" / "up").symlink_to("../../outside")
    t = connect(sshd, method)
    with watch_fifo(outside / "secret") as opened:
        found = t.file_digests(["ok", "link", "linked dir/secret", "inside/up/secret"])
    assert found.digests == {
        "ok": expected(method, b"ok"),
        "link": None,
        "linked dir/secret": None,
        "inside/up/secret": None,
    }
    assert opened == []


@pytest.mark.parametrize("method", METHODS)
def test_a_file_replaced_by_a_directory_is_none(
    method: DigestMethod, sshd: SSHServer, root: Path, connect: Callable[..., SFTPTransport]
) -> None:
    write(root, {"f": b"f", "g/h": b"h"})
    t = connect(sshd, method)
    assert t.file_digests(["f", "g/h"]).digests == {
        "f": expected(method, b"f"),
        "g/h": expected(method, b"h"),
    }
    (root / "f").unlink()
    (root / "f").mkdir()
    (root / "g" / "h").unlink()
    (root / "g").rmdir()
    (root / "g").write_bytes(b"now a file")
    assert t.file_digests(["f", "g/h"]).digests == {"f": None, "g/h": None}


@pytest.fixture
def after_first_look(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], None]], None]:
    """Run a change on the server right after the first LSTATs (``tree.find_files``, called
    through): what a server changed by someone else meanwhile looks like."""

    def arrange(change: Callable[[], None]) -> None:
        real = tree.find_files
        calls: list[int] = []

        def find_files(*args: Any) -> tree.Found:
            found = real(*args)
            if not calls:
                change()
            calls.append(1)
            return found

        monkeypatch.setattr(tree, "find_files", find_files)

    return arrange


@pytest.mark.parametrize("method", METHODS)
def test_a_file_changed_while_hashed_matches_no_blob(
    method: DigestMethod,
    sshd: SSHServer,
    root: Path,
    connect: Callable[..., SFTPTransport],
    after_first_look: Callable[[Callable[[], None]], None],
) -> None:
    write(root, {"a": b"before", "b": b"still"})
    after_first_look(lambda: (root / "a").write_bytes(b"after, longer"))
    found = connect(sshd, method).file_digests(["a", "b"])
    assert found.method == method
    assert found.digests == {"a": "", "b": expected(method, b"still")}


def test_a_file_replaced_by_a_directory_while_read_is_none(
    sshd: SSHServer,
    root: Path,
    connect: Callable[..., SFTPTransport],
    after_first_look: Callable[[Callable[[], None]], None],
) -> None:
    write(root, {"a": b"a", "b": b"b"})

    def replace() -> None:
        (root / "a").unlink()
        (root / "a").mkdir()

    after_first_look(replace)
    found = connect(sshd, "sftp-read").file_digests(["a", "b"])
    assert found.digests == {"a": None, "b": git_blob_id(b"b")}


# -- memory, errors ----------------------------------------------------------------------------


def test_reading_back_a_big_file_keeps_memory_flat(
    sshd: SSHServer, root: Path, connect: Callable[..., SFTPTransport]
) -> None:
    size, piece = 64 * 1024 * 1024, os.urandom(1024 * 1024)
    hasher = BlobHasher(size)
    with (root / "big.bin").open("wb") as f:
        for i in range(64):
            block = bytes([i]) + piece[1:]
            f.write(block)
            hasher.update(block)
    t = connect(sshd, "sftp-read")
    tracemalloc.start()
    try:
        found = t.file_digests(["big.bin"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found.digests == {"big.bin": hasher.hexdigest()}
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


def test_short_reads_are_asked_for_again(
    sshd: SSHServer, root: Path, connect: Callable[..., SFTPTransport]
) -> None:
    """OpenSSH sends at most 255 KiB per READ: asked for 1 MiB, it sends less, the rest
    is asked for again and hashed in order."""
    data = os.urandom(3 * 1024 * 1024 + 5)
    write(root, {"big": data, "small": b"small"})
    t = connect(sshd, "sftp-read")
    t.write_size = 1024 * 1024
    assert t.file_digests(["big", "small"]).digests == {
        "big": git_blob_id(data),
        "small": git_blob_id(b"small"),
    }


def test_paths_outside_the_root_are_refused_before_anything_is_sent(
    sshd: SSHServer, connect: Callable[..., SFTPTransport], execs: list[str]
) -> None:
    t = connect(sshd)
    for bad in ("../x", "/etc/passwd", "a/../../x", "a\0b"):
        with pytest.raises(PathOutsideRootError):
            t.file_digests(["ok", bad])
    assert execs == []


def test_a_lost_connection_is_one_line_naming_the_server(
    sshd: SSHServer, root: Path, connect: Callable[..., SFTPTransport]
) -> None:
    write(root, {"a": b"a"})
    t = connect(sshd, "sftp-read")
    assert t._ssh is not None
    t._ssh.close()
    with pytest.raises(TransportError, match=r"^server digests: connection lost") as raised:
        t.file_digests(["a"])
    assert "\n" not in str(raised.value)


# -- what the commands print -------------------------------------------------------------------


def test_output_that_is_not_one_digest_per_file_is_refused() -> None:
    a, b = "a" * 40, "b" * 40
    git = remotehash._git_digests
    assert git(f"{a}\n{b}\n".encode(), ["x", "y"]) == {"x": a, "y": b}
    assert git(f"{a}\n".encode(), ["x", "y"]) is None
    assert git(f"{a}\n{b}\nnoise\n".encode(), ["x", "y"]) is None
    assert git(f"{a}\n{'c' * 64}\n".encode(), ["x", "y"]) is None  # SHA-256 ids
    assert git(f"{a}\n{b}".encode(), ["x", "y"]) is None
    sha1sum = remotehash._sha1sum_digests
    assert sha1sum(f"{a}  ./x\0{b}  ./new\nline\0".encode(), ["new\nline", "x"]) == {
        "new\nline": b,
        "x": a,
    }
    assert sha1sum(f"{a}  ./x\0".encode(), ["x", "y"]) is None
    assert sha1sum(f"{a}  ./x".encode(), ["x"]) is None
