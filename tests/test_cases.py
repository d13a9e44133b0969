"""Diff and rollback behaviour driven by the case files in ``tests/cases/``.

Each case file holds two trees, ``[a]`` and ``[b]``, mapping a path to its content:
a string is a regular file, ``{exec = "..."}`` an executable file, ``{link = "..."}``
a symlink. ``expected`` and ``expected_reverse`` list ``{path, change}`` in canonical
order for A -> B and B -> A. For each case the trees become real git commits; the
changeset is computed by libgit2 and by the pure model; then A, B and a rollback to A
are deployed into a directory by the real engine, which must then hold A exactly.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deployhq_lite import DeploymentStatus, git
from deployhq_lite.changeset import Changeset, Entry, EntryKind, diff
from deployhq_lite.engine import Engine
from deployhq_lite.marker import MARKER_PATH
from deployhq_lite.repobuilder import Content, Executable, Symlink
from deployhq_lite.snapshots import TreeSnapshot, changes_between
from deployhq_lite.testing.plugin import Site, Tree, read_tree

CASES_DIR = Path(__file__).parent / "cases"
CASE_FILES = sorted(CASES_DIR.glob("*.toml"))

# What a directory holds: path -> ("file", bytes, mode) | ("symlink", target) | ("dir",)


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    a: dict[str, Content]
    b: dict[str, Content]
    expected: list[tuple[str, str]]
    expected_reverse: list[tuple[str, str]]


def _content(path: str, value: Any) -> Content:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"exec"}:
        return Executable(value["exec"])
    if isinstance(value, dict) and set(value) == {"link"}:
        return Symlink(value["link"])
    raise ValueError(f"{path}: expected a string, {{exec = ...}} or {{link = ...}}: {value!r}")


def _changes(raw: list[dict[str, str]]) -> list[tuple[str, str]]:
    for item in raw:
        if set(item) != {"path", "change"} or item["change"] not in (
            "added",
            "deleted",
            "modified",
        ):
            raise ValueError(f"bad expected change {item!r}")
    return [(item["path"], item["change"]) for item in raw]


def load_case(path: Path) -> Case:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    unknown = set(data) - {"description", "a", "b", "expected", "expected_reverse"}
    if unknown:
        raise ValueError(f"{path.name}: unknown keys {sorted(unknown)}")
    return Case(
        name=path.stem,
        description=data["description"],
        a={p: _content(p, v) for p, v in data["a"].items()},
        b={p: _content(p, v) for p, v in data["b"].items()},
        expected=_changes(data["expected"]),
        expected_reverse=_changes(data["expected_reverse"]),
    )


# -- what a tree should look like -----------------------------------------------------------------


def _payload(content: Content) -> tuple[bytes, EntryKind]:
    if isinstance(content, Executable):
        raw = content.content
        return (raw.encode() if isinstance(raw, str) else raw), EntryKind.EXECUTABLE
    if isinstance(content, Symlink):
        return content.target.encode(), EntryKind.SYMLINK
    assert content is not None
    return (content.encode() if isinstance(content, str) else content), EntryKind.FILE


def entries_of(files: Mapping[str, Content], repo: git.Repository) -> dict[str, Entry]:
    """The pure-model snapshot of ``files``, with real blob ids."""
    out: dict[str, Entry] = {}
    for path, content in files.items():
        data, kind = _payload(content)
        out[path] = Entry(repo.write_blob(data), kind)
    return out


def expected_tree(files: Mapping[str, Content]) -> Tree:
    tree: Tree = {}
    for path, content in files.items():
        parts = path.split("/")
        for depth in range(1, len(parts)):
            tree["/".join(parts[:depth])] = ("dir",)
        data, kind = _payload(content)
        if kind is EntryKind.SYMLINK:
            tree[path] = ("symlink", data.decode())
        else:
            tree[path] = ("file", data, 0o755 if kind is EntryKind.EXECUTABLE else 0o644)
    return tree


def listed(changeset: Changeset) -> list[tuple[str, str]]:
    return [(c.path, c.kind.value) for c in changeset]


# -- the cases ------------------------------------------------------------------------------------


def test_there_are_enough_cases() -> None:
    names = {p.stem for p in CASE_FILES}
    assert len(names) >= 10
    for case in map(load_case, CASE_FILES):
        assert case.description
        assert case.expected == [] or case.a != case.b


@pytest.fixture(params=CASE_FILES, ids=[p.stem for p in CASE_FILES])
def case(request: pytest.FixtureRequest) -> Case:
    return load_case(request.param)


def test_changeset(case: Case, site: Site) -> None:
    rev_a = site.repo.commit(case.a, "A", replace=True)
    rev_b = site.repo.commit(case.b, "B", replace=True)
    repo = git.Repository(site.repo.path)
    try:
        snap_a = TreeSnapshot(repo, repo.tree_of(rev_a))
        snap_b = TreeSnapshot(repo, repo.tree_of(rev_b))
        entries_a, entries_b = entries_of(case.a, repo), entries_of(case.b, repo)
        assert dict(snap_a) == entries_a
        assert dict(snap_b) == entries_b

        forward_git = changes_between(snap_a, snap_b)
        backward_git = changes_between(snap_b, snap_a)
        forward_pure = diff(entries_a, entries_b)
        backward_pure = diff(entries_b, entries_a)
    finally:
        repo.close()

    assert listed(forward_git) == case.expected
    assert listed(backward_git) == case.expected_reverse
    assert forward_pure == forward_git
    assert backward_pure == backward_git
    assert forward_pure.reverse() == backward_pure


def test_deploy_then_rollback_restores_a(case: Case, site: Site) -> None:
    rev_a = site.repo.commit(case.a, "A", replace=True)
    rev_b = site.repo.commit(case.b, "B", replace=True)
    with Engine(site.config) as engine:
        first = engine.deploy("website", "production", revision=rev_a)
        assert read_tree(site.root) == expected_tree(case.a)

        second = engine.deploy("website", "production", revision=rev_b)
        assert read_tree(site.root) == expected_tree(case.b)
        assert [(o.path, o.change) for o in engine.file_changes(second.identifier)] == (
            case.expected
        )

        back = engine.rollback("website", first.identifier)
        assert back.status is DeploymentStatus.COMPLETED
        assert back.start_revision == rev_b and back.end_revision == rev_a
        assert [(o.path, o.change) for o in engine.file_changes(back.identifier)] == (
            case.expected_reverse
        )

    assert read_tree(site.root) == expected_tree(case.a)  # also: emptied dirs were pruned
    marker = json.loads((site.root / MARKER_PATH).read_bytes())
    assert (marker["revision"], marker["deployment"]) == (rev_a, back.identifier)
    assert not list(site.root.rglob("*.dhq-tmp"))
