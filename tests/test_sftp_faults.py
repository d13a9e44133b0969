"""SFTP under faults: a server without posix-rename (paramiko's, in process), a connection
cut mid-deploy by a TCP proxy in front of the real sshd, and a root that cannot exist."""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from pathlib import Path
from types import TracebackType
from typing import Self

import paramiko
import pygit2
import pytest
from pygit2.enums import FileMode

from deployhq_lite.records import DeploymentStatus
from deployhq_lite.repobuilder import Content, Executable, Symlink
from deployhq_lite.store import History
from deployhq_lite.testing.plugin import CLI, Site, SSHEndpoint, Tree, read_tree
from deployhq_lite.testing.sshd import SSHServer

from .sftp_server import SFTPTestServer, start_sftp_server

CLI_TIMEOUT = 60  # seconds; every run here takes a few
PORT_ENV = "DEPLOYHQ_LITE_PROJECTS__WEBSITE__SERVERS__PRODUCTION__PORT"
MARKER = Path(".deployhq-lite/revision")
TEMP_SUFFIX = ".dhq-tmp"
EXECUTABLE = FileMode.BLOB_EXECUTABLE
LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a TCP reset


@pytest.fixture
def paramiko_server(tmp_path: Path) -> Iterator[SFTPTestServer]:
    with start_sftp_server(tmp_path / "srv") as server:
        yield server
        assert server.errors == []  # no request handler crashed


# -- helpers --------------------------------------------------------------------------------


def sftp_config(site: Site, server: SSHEndpoint, known_hosts: Path | None = None) -> Path:
    """Point the site's server ``production`` at ``server`` over SFTP (root: ``site.root``)."""
    path = known_hosts or server.known_hosts
    return site.write_ssh_config(server, known_hosts_path=f'"{path}"')


def cli(
    site: Site, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``run_cli``, but a run that hangs fails the test after CLI_TIMEOUT seconds."""
    command = [str(CLI), *args, "--config", str(site.config)]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=CLI_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        done = None
    if done is None:
        pytest.fail(f"deployhq-lite hung for {CLI_TIMEOUT} s: {' '.join(args)}")
    assert "Traceback" not in done.stderr, done.stderr
    return done


def deploy(
    site: Site, revision: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return cli(site, "deploy", "website", "--server", "production", "-r", revision, *extra, env=env)


def log_events(stderr: str, event: str) -> int:
    """How many JSON log lines on ``stderr`` are ``event``."""
    count = 0
    for line in stderr.splitlines():
        with suppress(ValueError):
            count += json.loads(line).get("event") == event
    return count


def revision_tree(repo: Path, revision: str) -> Tree:
    """What a server root must hold for ``revision``, in ``read_tree``'s terms."""
    git = pygit2.Repository(str(repo))
    out: Tree = {}

    def walk(tree: pygit2.Tree, prefix: str) -> None:
        for item in tree:
            path, obj = prefix + str(item.name), git[item.id]
            if isinstance(obj, pygit2.Tree):
                out[path] = ("dir",)
                walk(obj, path + "/")
            elif not isinstance(obj, pygit2.Blob):
                raise AssertionError(f"unexpected {obj.type_str} at {path}")
            elif item.filemode == FileMode.LINK:
                out[path] = ("symlink", os.fsdecode(obj.data))
            else:
                out[path] = ("file", obj.data, 0o755 if item.filemode == EXECUTABLE else 0o644)

    walk(git.revparse_single(revision).peel(pygit2.Tree), "")
    return out


def temp_files(root: Path) -> list[Path]:
    return list(root.rglob(f"*{TEMP_SUFFIX}")) if root.exists() else []


def marker_deployment(site: Site) -> str | None:
    path = site.root / MARKER
    return json.loads(path.read_text())["deployment"] if path.exists() else None


def latest_deployment(site: Site) -> tuple[str, DeploymentStatus]:
    """The identifier and status of the site's latest deployment, from the history."""
    with closing(History(site.state_dir / "history.sqlite3")) as history:
        latest = history.query("website", "production", limit=1)[0]
        return latest.identifier, latest.status


def blob(i: int, size: int) -> bytes:
    """Incompressible, reproducible content."""
    return hashlib.shake_256(b"file %d" % i).digest(size)


# -- a server without posix-rename ------------------------------------------------------------


def test_paramiko_server_has_plain_rename_only(paramiko_server: SFTPTestServer) -> None:
    """The helper itself: no posix-rename, rename never overwrites, paths stay inside."""
    server = paramiko_server
    with closing(paramiko.Transport((server.host, server.port))) as ssh:
        ssh.start_client(timeout=10)
        known = paramiko.HostKeys(str(server.known_hosts))
        key = ssh.get_remote_server_key()
        assert known.lookup(f"[{server.host}]:{server.port}")[key.get_name()] == key
        ssh.auth_publickey(server.user, paramiko.PKey.from_path(server.user_key))
        with closing(paramiko.SFTPClient.from_transport(ssh)) as sftp:
            assert sftp.normalize(".") == str(server.directory)
            for name in ("a", "b"):
                with sftp.open(name, "wb") as f:
                    f.write(name.encode())
            with pytest.raises(OSError, match="unsupported"):
                sftp.posix_rename("a", "b")
            with pytest.raises(OSError, match="Failure"):
                sftp.rename("a", "b")
            sftp.rename("a", "c")
            with pytest.raises(PermissionError):
                sftp.stat("/etc/passwd")
            sftp.symlink("/etc", "escape")
            with pytest.raises(PermissionError):
                sftp.listdir("escape/")
    assert (server.directory / "b").read_bytes() == b"b"
    assert (server.directory / "c").read_bytes() == b"a"


def test_three_revisions_and_a_rollback_without_posix_rename(
    site: Site, paramiko_server: SFTPTestServer
) -> None:
    site.root = paramiko_server.directory / "www"
    sftp_config(site, paramiko_server)
    revisions = [
        site.repo.commit(
            {
                "index.html": "one",
                "bin/run": Executable("#!/bin/sh\necho one\n"),
                "link": Symlink("index.html"),
                "docs/old/deep/readme.txt": "old docs",
                "assets/app.js": blob(1, 5000),
            }
        ),
        site.repo.commit(
            {
                "index.html": "two",
                "bin/run": Executable("#!/bin/sh\necho two\n"),
                "link": Symlink("bin/run"),
                "docs/old/deep/readme.txt": None,  # docs/ is emptied: pruned
                "new dir/é.txt": "é",
                "assets/app.js": Executable(blob(2, 7000)),
            }
        ),
        site.repo.commit(
            {"bin/run": None, "index.html": "three", "link": "a file now", "x/y/z.txt": "z"}
        ),
    ]
    identifiers = []
    for revision in revisions:
        done = deploy(site, revision, "--json", "-vv", "--log-format", "json")
        assert done.returncode == 0, done.stderr
        assert log_events(done.stderr, "sftp.no_posix_rename") == 1
        identifiers.append(json.loads(done.stdout)["identifier"])
        assert read_tree(site.root) == revision_tree(site.repo.path, revision)
        assert marker_deployment(site) == identifiers[-1]
        assert temp_files(site.root) == []
    assert not (site.root / "docs").exists()

    back = cli(site, "rollback", "website", identifiers[0], "--json", "-vv", "--log-format", "json")
    assert back.returncode == 0, back.stderr
    assert log_events(back.stderr, "sftp.no_posix_rename") == 1
    assert read_tree(site.root) == revision_tree(site.repo.path, revisions[0])
    assert not (site.root / "x").exists()
    assert temp_files(site.root) == []

    check = cli(site, "servers", "check", "website", "production", "--json")
    assert check.returncode == 0, check.stderr
    report = json.loads(check.stdout)
    assert report["posix_rename"] is False
    assert report["write_size"] == 32 * 1024  # no limits@openssh.com: what every server takes
    assert report["root_writable"] is True
    assert temp_files(site.root) == []


# -- a connection cut mid-deploy ---------------------------------------------------------------


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 to ``target`` that, once ``cut_after`` bytes went from
    client to server (None: never), forwards nothing more and shuts both sockets down
    (``reset``: the client's is closed with a TCP reset instead)."""

    def __init__(
        self, target: tuple[str, int], cut_after: int | None, *, reset: bool = False
    ) -> None:
        self.target = target
        self.cut_after = cut_after
        self.reset = reset
        self.sent = 0  # client -> server bytes forwarded
        self.cut = threading.Event()
        self._deadline = time.monotonic() + 120  # every loop here ends by then
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._clients: list[socket.socket] = []
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])

    def __enter__(self) -> Self:
        self._start(self._accept)
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._shutdown(*self._sockets)
        for thread in self._threads:
            thread.join(5)
        self._listener.close()
        for sock in self._sockets:
            sock.close()
        assert not [t.name for t in self._threads if t.is_alive()]

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=f"proxy-{len(self._threads)}")
        self._threads.append(thread)
        thread.start()

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def _accept(self) -> None:
        while self._running():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
            with self._lock:
                self._clients.append(client)
                self._sockets += [client, upstream]
            self._start(self._pump, client, upstream, True)
            self._start(self._pump, upstream, client, False)

    def _pump(self, src: socket.socket, dst: socket.socket, to_server: bool) -> None:
        while self._running():
            try:  # a socket closed by the other direction's thread ends this one too
                if not select.select([src], [], [], 0.1)[0]:
                    continue
                data = src.recv(65536)
                if to_server and data:
                    data = self._count(data)
                if data:
                    dst.sendall(data)
            except (OSError, ValueError):
                data = b""
            if self.cut.is_set():
                self._cut()
                return
            if not data:
                self._shutdown(src, dst)
                return

    def _count(self, data: bytes) -> bytes:
        with self._lock:
            if self.cut_after is not None:
                data = data[: self.cut_after - self.sent]
                if self.sent + len(data) >= self.cut_after:
                    self.cut.set()
            self.sent += len(data)
        return data

    def _cut(self) -> None:
        if self.reset:
            with self._lock:
                for sock in self._clients:
                    with suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                        sock.close()
        self._shutdown(*self._sockets)

    def _shutdown(self, *socks: socket.socket) -> None:
        with self._lock:
            for sock in socks:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def proxied_config(site: Site, sshd: SSHServer, tmp_path: Path) -> Path:
    """The site on ``sshd``, with a known_hosts file that :func:`trust` can add ports to."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts.read_text())
    sftp_config(site, sshd, known_hosts)
    return known_hosts


def trust(known_hosts: Path, sshd: SSHServer, proxy: CuttingProxy) -> dict[str, str]:
    """Accept sshd's host key on the proxy's port; the environment that deploys through it."""
    with known_hosts.open("a") as f:
        f.write(f"[127.0.0.1]:{proxy.port} {sshd.host_key_public}\n")
    return {PORT_ENV: str(proxy.port)}


def many_files(count: int, *, small: bool = False) -> dict[str, Content]:
    """``count`` files in directories of 30: 4 to 16 KiB each (``small``: 32 bytes)."""
    return {
        f"data/{i // 30:02d}/f{i:04d}.bin": blob(i, 32 if small else 4096 + (i * 4099) % 12289)
        for i in range(count)
    }


def assert_cut_failure(done: subprocess.CompletedProcess[str], proxy: CuttingProxy) -> None:
    assert proxy.cut.is_set(), f"the proxy forwarded only {proxy.sent} bytes, no cut"
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert "website/production" in lines[0]
    assert "connect" in lines[0], lines[0]  # "connection lost", "cannot connect"


def data_files(root: Path) -> int:
    return len(list((root / "data").rglob("f*.bin"))) if (root / "data").exists() else 0


@pytest.mark.parametrize("reset", [False, True], ids=["shutdown", "reset"])
def test_connection_cut_mid_upload_keeps_the_marker_and_a_rerun_converges(
    site: Site, sshd: SSHServer, tmp_path: Path, reset: bool
) -> None:
    known_hosts = proxied_config(site, sshd, tmp_path)
    first = site.repo.commit({"index.html": "one", "keep/a.txt": "a", "old/gone.txt": "gone"})
    assert deploy(site, first).returncode == 0
    previous = marker_deployment(site)
    files = many_files(300)
    second = site.repo.commit({**files, "index.html": "two", "old/gone.txt": None})
    # The handshake and login cost a few KiB: a third of the file bytes is mid-upload.
    cut_after = sum(len(c) for c in files.values() if isinstance(c, bytes)) // 3

    with CuttingProxy((sshd.host, sshd.port), cut_after, reset=reset) as proxy:
        done = deploy(site, second, env=trust(known_hosts, sshd, proxy))
    assert_cut_failure(done, proxy)
    identifier, status = latest_deployment(site)
    assert status is DeploymentStatus.FAILED
    assert 0 < data_files(site.root) < len(files)  # some files went, not all
    assert marker_deployment(site) == previous
    assert identifier in done.stderr  # "deployment <id> failed at '<path>': ... connection"
    shown = cli(site, "deployments", "show", "website", identifier, "--json")
    outcomes = json.loads(shown.stdout)["changes"]
    statuses = {o["status"] for o in outcomes}
    assert {"done", "pending"} <= statuses, statuses  # what went, and what did not

    again = deploy(site, second)
    assert again.returncode == 0, again.stderr
    assert read_tree(site.root) == revision_tree(site.repo.path, second)
    assert temp_files(site.root) == []
    assert marker_deployment(site) == latest_deployment(site)[0] != identifier


def test_connection_cut_on_a_fresh_server_leaves_no_marker(
    site: Site, sshd: SSHServer, tmp_path: Path
) -> None:
    known_hosts = proxied_config(site, sshd, tmp_path)
    files = many_files(300)
    revision = site.repo.commit(files)
    with CuttingProxy((sshd.host, sshd.port), cut_after=200 * 1024) as proxy:
        done = deploy(site, revision, env=trust(known_hosts, sshd, proxy))
    assert_cut_failure(done, proxy)
    assert latest_deployment(site)[1] is DeploymentStatus.FAILED
    assert marker_deployment(site) is None

    again = deploy(site, revision)
    assert again.returncode == 0, again.stderr
    assert read_tree(site.root) == revision_tree(site.repo.path, revision)
    assert temp_files(site.root) == []


def test_connection_cut_mid_deletes_keeps_the_marker_and_a_rerun_converges(
    site: Site, sshd: SSHServer, tmp_path: Path
) -> None:
    known_hosts = proxied_config(site, sshd, tmp_path)
    files = many_files(600, small=True)
    first = site.repo.commit({**files, "index.html": "one"})
    assert deploy(site, first).returncode == 0
    previous = marker_deployment(site)
    second = site.repo.commit({**dict.fromkeys(files), "index.html": "two"})
    # What connecting, logging in and probing the root cost, client to server; the
    # 600 deletes cost about 70 KiB more (each an SSH packet of over 100 bytes).
    with CuttingProxy((sshd.host, sshd.port), cut_after=None) as measure:
        env = trust(known_hosts, sshd, measure)
        check = cli(site, "servers", "check", "website", "production", env=env)
    assert check.returncode == 0, check.stderr

    with CuttingProxy((sshd.host, sshd.port), cut_after=measure.sent + 24 * 1024) as proxy:
        done = deploy(site, second, env=trust(known_hosts, sshd, proxy))
    assert_cut_failure(done, proxy)
    assert latest_deployment(site)[1] is DeploymentStatus.FAILED
    assert 0 < data_files(site.root) < len(files)  # cut among the deletes
    assert (site.root / "index.html").read_text() == "one"  # writes come after deletes
    assert marker_deployment(site) == previous

    again = deploy(site, second)
    assert again.returncode == 0, again.stderr
    assert read_tree(site.root) == revision_tree(site.repo.path, second)
    assert not (site.root / "data").exists()
    assert temp_files(site.root) == []


# -- a root that cannot exist -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["openssh", "paramiko"])
def test_root_under_a_regular_file_fails_in_one_line(
    site: Site, tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    fixture = "sshd" if kind == "openssh" else "paramiko_server"
    server: SSHEndpoint = request.getfixturevalue(fixture)
    plain = tmp_path / "srv" / "plain-file"
    plain.parent.mkdir(exist_ok=True)
    plain.write_text("not a directory")
    site.root = plain / "www"
    sftp_config(site, server)
    revision = site.repo.commit({"index.html": "x"})
    for args in (
        ("deploy", "website", "--server", "production", "-r", revision),
        ("servers", "check", "website", "production"),
    ):
        done = cli(site, *args)
        assert done.returncode == 1, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("error: ")
        assert "website/production" in lines[0]
        assert str(site.root) in lines[0]
    assert plain.read_text() == "not a directory"
    assert latest_deployment(site)[1] is DeploymentStatus.FAILED


def test_a_repair_cut_mid_upload_converges_on_a_rerun(
    site: Site, sshd: SSHServer, tmp_path: Path
) -> None:
    known_hosts = proxied_config(site, sshd, tmp_path)
    files = many_files(300)
    revision = site.repo.commit({**files, "index.html": "one"})
    assert deploy(site, revision).returncode == 0
    deployed = marker_deployment(site)
    shutil.rmtree(site.root / "data")  # drift: every data file gone from the server
    cut_after = sum(len(c) for c in files.values() if isinstance(c, bytes)) // 3

    with CuttingProxy((sshd.host, sshd.port), cut_after) as proxy:
        done = cli(
            site,
            "deploy",
            "website",
            "-s",
            "production",
            "--repair",
            env=trust(known_hosts, sshd, proxy),
        )
    assert_cut_failure(done, proxy)
    assert 0 < data_files(site.root) < len(files)
    assert marker_deployment(site) == deployed  # the marker was not moved

    again = cli(site, "deploy", "website", "-s", "production", "--repair")
    assert again.returncode == 0, again.stderr
    assert read_tree(site.root) == revision_tree(site.repo.path, revision)
    assert temp_files(site.root) == []
    verified = cli(site, "verify", "website", "-s", "production", "--json")
    assert verified.returncode == 0, verified.stdout
