"""git.py: revisions, and the blob reader that inflates on another core."""

from __future__ import annotations

import pytest

from deployhq_lite import git
from deployhq_lite.errors import RevisionNotFoundError
from deployhq_lite.testing.gitrepo import GitRepoBuilder


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
