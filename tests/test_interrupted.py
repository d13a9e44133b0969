"""A deployment SIGKILLed in the middle of writing a big file, then a deployment of another
revision: the temp files the killed one left are removed and the directories it made are
pruned, on a local directory and over SFTP to the real sshd; temp files are 0600 until
they get their final mode just before the rename.

The kill is made deterministic without timing: the child process (the library, as a git
hook would run it) holds still inside the big file's write once it has handed over
``GATE`` bytes (a gate around the blob's stream), and says so with a file; the test
waits, bounded, for that file and for the temp file to have grown, then kills it.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

import deployhq_lite as dhq
from deployhq_lite.repobuilder import Executable
from deployhq_lite.store import History
from deployhq_lite.testing.plugin import Site, Tree, read_tree, run_cli
from deployhq_lite.testing.sshd import SSHServer

BIG = 12 * 1024 * 1024  # streamed in pieces by both transports (over 4 MiB)
GATE = 2 * 1024 * 1024  # bytes of it handed to the transport before the child holds
TEMP = "new/.big.bin.dhq-tmp"
WAIT = 120.0  # seconds at most for the child to reach the gate (a bound, not a timing)

# The child: deploys the project's branch head with the library; the big blob's stream
# holds (forever) on the first read after GATE bytes, having touched the signal file.
CHILD = """
import sys, time
from pathlib import Path
import deployhq_lite as dhq
from deployhq_lite import git

config, signal_file, gate, big = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
real_open = git.BlobReader.open


class Gated:
    def __init__(self, inner):
        self._inner, self.size, self._given = inner, inner.size, 0

    def read(self, n=-1, /):
        if self._given >= gate:
            signal_file.touch()
            while True:
                time.sleep(3600)
        piece = self._inner.read(n)
        self._given += len(piece)
        return piece

    def close(self):
        self._inner.close()


def gated_open(self, oid):
    source = real_open(self, oid)
    return Gated(source) if source.size >= big else source


git.BlobReader.open = gated_open
dhq.deploy("website", "production", config=config)
"""


def big_content() -> bytes:
    block = bytes(range(256)) * 4096  # 1 MiB, not all one byte
    return b"".join(bytes([i]) + block[1:] for i in range(BIG // len(block)))


def commit_v1_v2(site: Site) -> tuple[str, str]:
    v1 = site.repo.commit({"index.html": "one", "bin/run": Executable("#!/bin/sh\necho 1\n")})
    v2 = site.repo.commit(
        {"index.html": "two", "new/a/small.txt": "small", "new/big.bin": big_content()}
    )
    return v1, v2


V1_TREE: Tree = {
    "index.html": ("file", b"one", 0o644),
    "bin": ("dir",),
    "bin/run": ("file", b"#!/bin/sh\necho 1\n", 0o755),
}


def ssh_config(site: Site, sshd: SSHServer) -> None:
    site.write_ssh_config(sshd)


def wait_for(check: Callable[[], bool], what: str, child: subprocess.Popen[bytes]) -> None:
    """Poll ``check`` until it holds; fail (never hang) if the child dies or after WAIT s."""
    deadline = time.monotonic() + WAIT
    while not check():
        if child.poll() is not None:
            _, err = child.communicate()
            pytest.fail(f"the deploy ended ({child.returncode}) before {what}: {err.decode()}")
        if time.monotonic() > deadline:
            child.kill()
            child.wait()
            pytest.fail(f"the deploy did not reach {what} within {WAIT:g} s")
        time.sleep(0.02)


def kill_mid_write(site: Site, tmp_path: Path) -> int:
    """Start deploying the branch head in a child, kill -9 it while it writes new/big.bin;
    the temp file's permission bits at that moment."""
    signal_file = tmp_path / "holding"
    temp = site.root / TEMP
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(site.config), str(signal_file), str(GATE), str(BIG)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(signal_file.exists, "the gate", child)
        wait_for(lambda: temp.exists() and temp.stat().st_size > 0, "a growing temp file", child)
        mode = stat.S_IMODE(temp.stat().st_mode)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    return mode


def temp_files(root: Path) -> list[str]:
    return [
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.name.casefold().endswith(".dhq-tmp")
    ]


def latest(site: Site) -> dhq.Deployment:
    with closing(History(site.state_dir / "history.sqlite3")) as h:
        return h.query("website", limit=1)[0]


def deploy_cli(site: Site, revision: str) -> None:
    done = run_cli(
        "deploy", "website", "--server", "production", "--config", site.config,
        "--revision", revision, "--break-lock",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


def interrupted_then_v1(site: Site, tmp_path: Path) -> None:
    v1, v2 = commit_v1_v2(site)
    dhq.deploy("website", "production", revision=v1, config=site.config)

    mode = kill_mid_write(site, tmp_path)

    assert mode == 0o600  # a temp file is nobody else's to read while it is written
    assert TEMP in temp_files(site.root)  # what the issue found left behind
    assert latest(site).end_revision == v2 and latest(site).status is not (
        dhq.DeploymentStatus.COMPLETED
    )

    deploy_cli(site, v1)  # the OTHER revision: nothing of v2 is in its plan

    assert temp_files(site.root) == []
    assert not (site.root / "new").exists()
    assert read_tree(site.root) == V1_TREE  # byte for byte, modes too, nothing else
    done = latest(site)
    assert done.end_revision == v1 and done.status is dhq.DeploymentStatus.COMPLETED


def test_killed_local_deploy_then_other_revision_leaves_no_temp_files(
    site: Site, tmp_path: Path
) -> None:
    interrupted_then_v1(site, tmp_path)


def test_killed_sftp_deploy_then_other_revision_leaves_no_temp_files(
    site: Site, sshd: SSHServer, tmp_path: Path
) -> None:
    ssh_config(site, sshd)
    interrupted_then_v1(site, tmp_path)


@pytest.mark.parametrize("transport", ["local", "sftp"])
def test_temp_files_are_0600_until_renamed_with_the_mode_from_git(
    site: Site, sshd: SSHServer, tmp_path: Path, transport: str
) -> None:
    """A temp file left by an older run (world-readable) is not written into as it is:
    the new one is created 0600; the files in place have git's modes (0644, 0755)."""
    if transport == "sftp":
        ssh_config(site, sshd)
    v1, v2 = commit_v1_v2(site)
    dhq.deploy("website", "production", revision=v1, config=site.config)
    leftover = site.root / TEMP
    leftover.parent.mkdir()
    leftover.write_bytes(b"an older run's partial file")
    leftover.chmod(0o644)

    assert kill_mid_write(site, tmp_path) == 0o600

    deploy_cli(site, v2)
    tree = read_tree(site.root)
    assert temp_files(site.root) == []
    assert tree["new/big.bin"] == ("file", big_content(), 0o644)
    assert tree["new/a/small.txt"] == ("file", b"small", 0o644)
    assert tree["bin/run"] == ("file", b"#!/bin/sh\necho 1\n", 0o755)
    assert os.stat(site.root / "index.html").st_mode & 0o777 == 0o644


def test_a_directory_the_next_revision_holds_is_not_pruned_and_made_again(
    site: Site, tmp_path: Path
) -> None:
    """The killed run's temp file and small file go; ``new/`` stays the same directory
    (its mode kept), since the revision deployed next has a file in it: only directories
    the target does not hold are pruned."""
    v1, _ = commit_v1_v2(site)
    dhq.deploy("website", "production", revision=v1, config=site.config)
    kill_mid_write(site, tmp_path)
    (site.root / "new").chmod(0o750)  # a directory made again would be 0755
    v3 = site.repo.commit({"new/big.bin": None, "new/a/small.txt": None, "new/other.txt": "3"})

    deploy_cli(site, v3)

    assert temp_files(site.root) == []
    assert stat.S_IMODE((site.root / "new").stat().st_mode) == 0o750
    assert read_tree(site.root) == {
        "index.html": ("file", b"two", 0o644),
        "bin": ("dir",),
        "bin/run": ("file", b"#!/bin/sh\necho 1\n", 0o755),
        "new": ("dir",),
        "new/other.txt": ("file", b"3", 0o644),
    }
