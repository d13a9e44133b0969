"""Big files are streamed from git to the server in pieces, on both transports."""

from __future__ import annotations

import os

import pytest

import deployhq_lite as dhq
from deployhq_lite import git
from deployhq_lite.testing.gitrepo import Executable
from deployhq_lite.testing.plugin import Site
from deployhq_lite.testing.sshd import SSHServer
from deployhq_lite.transports import local, sftp
from tests.test_sftp_e2e import ssh_config


@pytest.mark.parametrize("protocol", ["local", "ssh"])
def test_big_files_stream_and_roll_back_exactly(
    site: Site, sshd: SSHServer, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    # Streaming starts at 4 MiB; lower it so every path is cheap to exercise.
    monkeypatch.setattr(git.BlobReader, "STREAM_MIN", 1000)
    monkeypatch.setattr(git.BlobReader, "MIN_BATCH", 2)
    monkeypatch.setattr(local, "_STREAM_MIN", 1000)
    monkeypatch.setattr(sftp, "_STREAM_MIN", 1000)
    if protocol == "ssh":
        ssh_config(site, sshd)
    else:
        site.write_config()
    tool = os.urandom(70_000).hex()
    v1 = {
        "empty": b"",
        "small": os.urandom(999),
        "edge": os.urandom(1000),
        "big.bin": os.urandom(200_000),  # seven WRITEs, the last one short
    }
    first = site.repo.commit({**v1, "bin/tool": Executable(tool)})
    d1 = dhq.deploy("website", "production", revision=first, config=site.config)
    expected = {**v1, "bin/tool*": tool.encode()}
    assert site.files() == expected
    v2 = {"big.bin": os.urandom(150_000), "new": os.urandom(5000)}
    site.repo.commit({**v2, "edge": None})
    dhq.deploy("website", "production", config=site.config)
    after = {k: v for k, v in expected.items() if k != "edge"}
    assert site.files() == {**after, **v2}
    back = dhq.rollback("website", d1.identifier, config=site.config)
    assert back.status is dhq.DeploymentStatus.COMPLETED
    assert site.files() == expected
    assert not list(site.root.rglob("*.dhq-tmp"))


@pytest.mark.parametrize("packed", [False, True])
def test_a_big_blob_streams_from_loose_and_packed_objects(site: Site, packed: bool) -> None:
    """git streams it in pieces either way (a packed one through small pack windows,
    not inflated whole); the bytes are exactly the blob's."""
    import subprocess

    body = os.urandom(5 * 1024 * 1024)  # over STREAM_MIN: streamed
    head = site.repo.commit({"big.bin": body, "small.txt": "s"})
    if packed:
        subprocess.run(["git", "-C", str(site.repo.path), "repack", "-adq"], check=True)
    repo = git.Repository(site.repo.path)
    blob = repo.tree_entry(repo.tree_of(head), "big.bin")
    assert blob is not None
    with repo.open_blob_reader([blob.oid]) as reader:
        source = reader.open(blob.oid)
        assert source.size == len(body)
        pieces = list(iter(lambda: source.read(300_000), b""))
    assert len(pieces) > 1 and b"".join(pieces) == body
    repo.close()
