"""(a) Changeset computation: ours in process vs ``git diff --raw -z --no-renames`` (a process).

Also times the layers under ours, in the same process, so the cost of each is visible:
pygit2's diff alone (iterating the deltas), ``git.Repository.diff_trees`` (our RawDelta
objects) and ``snapshots.changes_between`` (Entry objects, classification, ordering).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from common import BenchError, Row, fmt_times, git, log, median, time_call, timed

TARGET = 2.0


def _git_diff_paths(repo: Path, old: str, new: str) -> set[str]:
    """The paths ``git diff --raw -z --no-renames`` reports (records: meta NUL path NUL)."""
    fields = git(repo, "diff", "--raw", "-z", "--no-renames", old, new).split(b"\0")
    return {fields[i].decode() for i in range(1, len(fields), 2) if fields[i]}


def run_changeset(repo: Path, repeat: int, old: str = "v1", new: str = "v2") -> list[Row]:
    import pygit2

    from deployhq_lite.git import Repository
    from deployhq_lite.snapshots import TreeSnapshot, changes_between

    store_repo = Repository(repo)
    old_tree = store_repo.tree_of(store_repo.resolve(old))
    new_tree = store_repo.tree_of(store_repo.resolve(new))
    raw = pygit2.Repository(str(repo))
    flags = pygit2.enums.DiffOption.SKIP_BINARY_CHECK
    old_obj, new_obj = raw[old_tree].peel(pygit2.Tree), raw[new_tree].peel(pygit2.Tree)

    def ours() -> int:
        return len(
            changes_between(TreeSnapshot(store_repo, old_tree), TreeSnapshot(store_repo, new_tree))
        )

    def wrapper() -> int:
        return sum(1 for _ in store_repo.diff_trees(old_tree, new_tree))

    def libgit2() -> int:
        deltas = old_obj.diff_to_tree(new_obj, flags=flags).deltas
        return sum(1 for d in deltas if d.new_file.path)

    git_cmd = ["git", "-C", str(repo), "diff", "--raw", "-z", "--no-renames", old, new]

    # Correctness first: the same paths as git, and the layers agree on the count.
    changeset = changes_between(
        TreeSnapshot(store_repo, old_tree), TreeSnapshot(store_repo, new_tree)
    )
    expected = _git_diff_paths(repo, old, new)
    if changeset.paths() != expected or len(changeset) != len(expected):
        raise BenchError(
            f"changes_between({old}, {new}) gives {len(changeset)} changes on "
            f"{len(changeset.paths())} paths; git diff reports {len(expected)} paths"
        )
    if wrapper() != len(expected) or libgit2() != len(expected):
        raise BenchError("diff_trees / pygit2 delta counts differ from git diff")
    log(f"  {len(expected)} changes between {old} and {new} (checked against git diff)")

    samples: dict[str, list[float]] = {"ours": [], "git": [], "diff_trees": [], "pygit2": []}
    steps: list[tuple[str, Callable[[], float]]] = [
        ("ours", lambda: time_call(ours)),
        ("git", lambda: timed(git_cmd)),
        ("diff_trees", lambda: time_call(wrapper)),
        ("pygit2", lambda: time_call(libgit2)),
    ]
    for _, step in steps:  # warm-up: caches, lazy imports, page cache
        step()
    for _ in range(repeat):
        for name, step in steps:
            samples[name].append(step())
    for name, values in samples.items():
        log(f"  {name:<11} median {median(values) * 1000:8.1f} ms   runs: {fmt_times(values)}")
    store_repo.close()

    label = f"changeset {len(expected)} changes"
    return [
        Row(f"{label}: changes_between", samples["ours"], samples["git"], "git diff", TARGET),
        Row(f"{label}: diff_trees only", samples["diff_trees"], samples["git"], "git diff"),
        Row(f"{label}: pygit2 diff only", samples["pygit2"], samples["git"], "git diff"),
    ]
