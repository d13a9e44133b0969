"""Big files are streamed from git to the server in pieces, on both transports."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

import deployhq_lite as dhq
from deployhq_lite import git, gitobjects
from deployhq_lite.repobuilder import Executable
from deployhq_lite.testing.plugin import Site
from deployhq_lite.testing.sshd import SSHServer
from deployhq_lite.transports import local
from deployhq_lite.transports.ssh import batches
from tests.test_sftp_e2e import ssh_config


@pytest.mark.parametrize("reader", ["git", "here"])
@pytest.mark.parametrize("protocol", ["local", "ssh"])
def test_big_files_stream_and_roll_back_exactly(
    site: Site, sshd: SSHServer, monkeypatch: pytest.MonkeyPatch, protocol: str, reader: str
) -> None:
    # Streaming starts at 4 MiB; lower it so every path is cheap to exercise, with blobs
    # read by git or (loose ones) inflated here.
    monkeypatch.setattr(git.BlobReader, "HERE_MIN", 1 << 62 if reader == "git" else 1000)
    monkeypatch.setattr(git.BlobReader, "STREAM_MIN", 1000)
    monkeypatch.setattr(git.BlobReader, "MIN_BATCH", 2)
    monkeypatch.setattr(local, "_STREAM_MIN", 1000)
    monkeypatch.setattr(batches, "_STREAM_MIN", 1000)
    if protocol == "ssh":
        ssh_config(site, sshd)
    else:
        site.write_config()
    tool = os.urandom(70_000).hex()
    v1 = {
        "empty": b"",
        "small": os.urandom(999),
        "edge": os.urandom(1000),
        "big.bin": os.urandom(200_000),  # two 128 KiB WRITEs over ssh, the last one short
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
def test_git_streams_a_big_blob_from_loose_and_packed_objects(
    site: Site, monkeypatch: pytest.MonkeyPatch, packed: bool
) -> None:
    """When git reads it (gitobjects would not: a delta, say), git streams it in pieces
    either way (a packed one through small pack windows, not inflated whole); the bytes
    are exactly the blob's."""
    import subprocess

    monkeypatch.setattr(git.BlobReader, "HERE_MIN", 1 << 62)

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


def _stored_blob(site: Site, body: bytes, *, packed: bool) -> tuple[git.Repository, str]:
    """A repository holding ``body`` as a loose blob, or packed whole."""
    import subprocess

    head = site.repo.commit({"big.bin": body})
    if packed:
        subprocess.run(["git", "-C", str(site.repo.path), "repack", "-adq"], check=True)
    repo = git.Repository(site.repo.path)
    blob = repo.tree_entry(repo.tree_of(head), "big.bin")
    assert blob is not None
    objects = os.path.join(repo._repo.path, "objects")
    assert gitobjects.is_loose(objects, blob.oid) is not packed
    return repo, blob.oid


@pytest.mark.parametrize("inflater", ["zlib-ng", "zlib"])
@pytest.mark.parametrize("packed", [False, True], ids=["loose", "packed"])
def test_a_big_blob_is_inflated_here_in_any_piece_sizes(
    site: Site, monkeypatch: pytest.MonkeyPatch, packed: bool, inflater: str
) -> None:
    """No git process (it would map a loose object whole, and pipe every byte); pieces
    of any size, exact; with zlib-ng, and with the standard zlib it falls back to."""
    if inflater == "zlib":
        monkeypatch.setattr(gitobjects, "zlib", zlib)
        monkeypatch.setattr(gitobjects, "_ZLIB_ERROR", zlib.error)
    else:
        assert gitobjects.zlib.__name__ == "zlib_ng.zlib_ng"
    body = os.urandom(700_000)
    repo, oid = _stored_blob(site, body, packed=packed)
    for sizes in ([1, 7, 300_000, 131_072], [-1], [700_000], [65_536] * 11):
        with repo.open_blob_reader([oid]) as reader:
            source = reader.open(oid)
            assert reader._proc is None and source.size == len(body)
            got = [source.read(n) for n in sizes]
            while piece := source.read(99_999):
                got.append(piece)
        assert b"".join(got) == body
    repo.close()


def test_a_blob_repacked_after_the_reader_started_is_still_read(site: Site) -> None:
    """Loose when the reader sorted the ids, packed by the time it is asked for: read
    another way, exactly."""
    import subprocess

    body = os.urandom(700_000)
    repo, oid = _stored_blob(site, body, packed=False)
    with repo.open_blob_reader([oid]) as reader:
        assert reader._here == {oid}
        run = ["git", "-C", str(site.repo.path)]
        subprocess.run([*run, "repack", "-adq"], check=True)
        subprocess.run([*run, "prune-packed"], check=True)
        objects = os.path.join(repo._repo.path, "objects")
        assert not gitobjects.is_loose(objects, oid)
        assert reader.read(oid) == body
    repo.close()


def test_a_delta_in_a_pack_is_left_to_git(site: Site) -> None:
    """Two versions of a big file packed together: one is stored as a delta of the
    other, which gitobjects does not read; both come out exact, through git."""
    import subprocess

    first = os.urandom(600_000)
    second = first[:300_000] + b"changed" + first[300_000:]
    heads = [site.repo.commit({"big.bin": first}), site.repo.commit({"big.bin": second})]
    run = ["git", "-C", str(site.repo.path)]
    subprocess.run([*run, "repack", "-adfq", "--window=10", "--depth=10"], check=True)
    repo = git.Repository(site.repo.path)
    oids = []
    for head in heads:
        entry = repo.tree_entry(repo.tree_of(head), "big.bin")
        assert entry is not None
        oids.append(entry.oid)
    packs = gitobjects.Packs(os.path.join(repo._repo.path, "objects"))
    kinds = [packs.whole_blob(oid) is not None for oid in oids]
    packs.close()
    assert sorted(kinds) == [False, True]  # one whole, one a delta
    with repo.open_blob_reader(oids) as reader:
        assert reader._here == {oid for oid, whole in zip(oids, kinds, strict=True) if whole}
        for oid, body in zip(oids, [first, second], strict=True):
            source = reader.open(oid)
            assert source.read() == body
    repo.close()


@pytest.mark.parametrize("damage", ["truncated", "flipped", "longer"])
def test_a_damaged_loose_blob_is_an_error_not_wrong_bytes(site: Site, damage: str) -> None:
    body = os.urandom(300_000)
    repo, oid = _stored_blob(site, body, packed=False)
    path = Path(repo._repo.path, "objects", oid[:2], oid[2:])
    data = zlib.decompress(path.read_bytes())
    path.chmod(0o644)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-5000])
        expected = "ends in the middle"
    elif damage == "flipped":  # the same length, one byte changed: zlib's checksum fails
        changed = bytearray(data)
        changed[-10] ^= 0xFF
        path.write_bytes(zlib.compress(bytes(changed))[:-4] + zlib.compress(data)[-4:])
        expected = "does not inflate"
    else:
        path.write_bytes(zlib.compress(data + b"extra"))
        expected = "longer than its header says"
    with repo.open_blob_reader([oid]) as reader:
        source = reader.open(oid)
        with pytest.raises(dhq.RepositoryError, match=expected):
            while source.read(65_536):
                pass
    repo.close()


def test_a_damaged_pack_entry_is_an_error_not_wrong_bytes(site: Site) -> None:
    body = os.urandom(300_000)
    repo, oid = _stored_blob(site, body, packed=True)
    packs = gitobjects.Packs(os.path.join(repo._repo.path, "objects"))
    where = packs.whole_blob(oid)
    packs.close()
    assert where is not None
    pack, offset, size = where
    assert size == len(body)
    Path(pack).chmod(0o644)
    with open(pack, "r+b") as f:  # one byte of the stored data, then zlib's checksum fails
        f.seek(offset + 1000)
        byte = f.read(1)
        f.seek(offset + 1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with repo.open_blob_reader([oid]) as reader:
        source = reader.open(oid)
        with pytest.raises(dhq.RepositoryError, match="does not inflate"):
            while source.read(65_536):
                pass
    repo.close()
