"""git.py: revisions, and the blob reader that inflates on another core."""

from __future__ import annotations

import pytest

from deployhq_lite import git
from deployhq_lite.errors import RevisionNotFoundError
from deployhq_lite.repobuilder import GitRepoBuilder


def test_resolve_specs(git_repo: GitRepoBuilder) -> None:
    first = git_repo.commit({"a": "1"})
    second = git_repo.commit({"a": "2"})
    git_repo.tag("v1", first)
    repo = git.Repository(git_repo.path)
    assert repo.resolve("main") == second
    assert repo.resolve("HEAD~1") == first
    assert repo.resolve("v1") == first
    assert repo.resolve(first[:8]) == first
    for bad in ("nope", "HEAD~5", "-x", ""):
        with pytest.raises(RevisionNotFoundError, match="not found in repository"):
            repo.resolve(bad)


@pytest.fixture
def blobs(git_repo: GitRepoBuilder) -> tuple[git.Repository, dict[str, bytes]]:
    files = {f"f{i:04d}": f"content {i}\n".encode() * (i % 7 + 1) for i in range(400)}
    files["same1"] = files["same2"] = b"duplicate content\n"
    files["empty"] = b""
    git_repo.commit(files)
    repo = git.Repository(git_repo.path)
    tree = repo.tree_of(repo.resolve("main"))
    by_oid = {raw.oid: files[path] for path, raw in repo.walk_tree(tree)}
    return repo, by_oid


def test_blob_reader_in_order_uses_a_batch_process(
    blobs: tuple[git.Repository, dict[str, bytes]],
) -> None:
    repo, by_oid = blobs
    oids = sorted(by_oid)
    with repo.open_blob_reader(oids) as reader:
        assert reader._proc is not None  # long enough for git cat-file --batch
        assert [reader.read(o) for o in oids] == [by_oid[o] for o in oids]


def test_blob_reader_out_of_order_repeated_and_missing(
    blobs: tuple[git.Repository, dict[str, bytes]],
) -> None:
    repo, by_oid = blobs
    oids = sorted(by_oid)
    asked = [*reversed(oids[:50]), oids[10], oids[10], *oids[50:]]
    with repo.open_blob_reader(oids + oids[:5]) as reader:
        assert [reader.read(o) for o in asked] == [by_oid[o] for o in asked]
    missing = "0" * 40
    with repo.open_blob_reader([missing, *oids]) as reader:
        assert reader.read(oids[3]) == by_oid[oids[3]]  # the batch stopped; libgit2 answers
        assert reader._proc is None


def test_short_sequences_stay_in_process(blobs: tuple[git.Repository, dict[str, bytes]]) -> None:
    repo, by_oid = blobs
    oids = sorted(by_oid)[:3]
    with repo.open_blob_reader(oids) as reader:
        assert reader._proc is None
        assert [reader.read(o) for o in oids] == [by_oid[o] for o in oids]


@pytest.mark.parametrize("batch", [True, False])
def test_big_blobs_are_streamed_in_pieces(
    blobs: tuple[git.Repository, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch, batch: bool
) -> None:
    """Blobs of STREAM_MIN bytes or more come in pieces (from the batch process in order,
    else from their own git process); a stream left half read does not upset the next."""
    repo, by_oid = blobs
    monkeypatch.setattr(git.BlobReader, "STREAM_MIN", 20)
    monkeypatch.setattr(git.BlobReader, "MIN_BATCH", 1 if batch else 10_000)
    oids = sorted(by_oid)
    big = [o for o in oids if len(by_oid[o]) >= 20]
    assert 100 < len(big) < len(oids)
    with repo.open_blob_reader(oids) as reader:
        for i, oid in enumerate(oids):
            source = reader.open(oid)
            assert source.size == len(by_oid[oid])
            if oid not in big:
                assert source.read() == by_oid[oid]
                continue
            assert type(source).__name__ == ("_PipeSource" if batch else "_ProcessSource")
            if i % 3 == 0:  # leave it half read
                assert source.read(7) == by_oid[oid][:7]
            else:
                pieces = iter(lambda s=source: s.read(9), b"")  # type: ignore[misc]
                assert b"".join(pieces) == by_oid[oid]
            source.close()
        assert (reader._proc is not None) is batch  # the batch never lost its place
        # a big blob asked out of order: its own process, and the batch gives way to it
        assert reader.read(big[0]) == by_oid[big[0]]


def test_a_big_blob_read_ahead_is_never_buffered(
    blobs: tuple[git.Repository, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, by_oid = blobs
    monkeypatch.setattr(git.BlobReader, "STREAM_MIN", 20)
    oids = sorted(by_oid)
    first_big = next(i for i, o in enumerate(oids) if len(by_oid[o]) >= 20)
    later = oids[first_big + 1]
    with repo.open_blob_reader(oids) as reader:
        assert reader.read(later) == by_oid[later]  # skips past a big one: batch stops
        assert reader._proc is None
        assert reader._ahead < 20 * first_big + 20
        assert [reader.read(o) for o in oids] == [by_oid[o] for o in oids]
