"""Properties over generated trees: the pure model, libgit2 against it, and the engine.

Trees are generated from a small alphabet of path components (with a space and
non-ASCII letters), up to three deep, holding files, executables and symlinks; no
path is both a file and a directory within one tree.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from deployhq_lite import DeploymentError, DeploymentStatus, git
from deployhq_lite.changeset import Entry, EntryKind, apply, diff
from deployhq_lite.config import Destination, build_settings
from deployhq_lite.context import TransportFactory
from deployhq_lite.engine import Engine
from deployhq_lite.marker import MARKER_PATH
from deployhq_lite.repobuilder import Content, Symlink
from deployhq_lite.snapshots import EMPTY, TreeSnapshot, changes_between
from deployhq_lite.testing.plugin import Site, Tree, read_tree
from deployhq_lite.transports.memory import MemoryFile, MemoryTransport, Node

# path -> (kind, data); data is a file's content or a symlink's target
Spec = dict[str, tuple[EntryKind, str]]

COMPONENTS = ["a", "b", "A", "a b", "ü", "é.txt"]
CONTENTS = ["", "x", "y", "x\n", "ü"]
TARGETS = ["a", "b/a", "ü", "../outside", "/abs/elsewhere"]
MODES = {
    EntryKind.FILE: git.MODE_FILE,
    EntryKind.EXECUTABLE: git.MODE_EXECUTABLE,
    EntryKind.SYMLINK: git.MODE_SYMLINK,
}

paths = st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=3).map("/".join)
items = st.one_of(
    st.tuples(paths, st.just(EntryKind.FILE), st.sampled_from(CONTENTS)),
    st.tuples(paths, st.just(EntryKind.EXECUTABLE), st.sampled_from(CONTENTS)),
    st.tuples(paths, st.just(EntryKind.SYMLINK), st.sampled_from(TARGETS)),
)


def _conflicts(path: str, tree: Spec) -> bool:
    return any(p.startswith(path + "/") or path.startswith(p + "/") for p in tree)


@st.composite
def trees(draw: st.DrawFn, max_size: int = 10) -> Spec:
    tree: Spec = {}
    for path, kind, data in draw(st.lists(items, max_size=max_size)):
        if path not in tree and not _conflicts(path, tree):
            tree[path] = (kind, data)
    return tree


def _data(kind: EntryKind) -> st.SearchStrategy[str]:
    return st.sampled_from(TARGETS if kind is EntryKind.SYMLINK else CONTENTS)


def _put(tree: Spec, path: str, value: tuple[EntryKind, str]) -> None:
    if path not in tree and not _conflicts(path, tree):
        tree[path] = value


@st.composite
def tree_pairs(draw: st.DrawFn) -> tuple[Spec, Spec]:
    """A tree and a changed copy of it: kept, rewritten, retyped, deleted and new paths,
    files turned into directories (and, swapped, directories into files)."""
    a = draw(trees())
    b: Spec = {}
    kinds = list(EntryKind)
    for path, (kind, data) in a.items():
        action = draw(st.sampled_from(["keep", "data", "kind", "delete", "to-dir"]))
        if action == "keep":
            _put(b, path, (kind, data))
        elif action == "data":
            _put(b, path, (kind, draw(_data(kind))))
        elif action == "kind":
            new_kind = draw(st.sampled_from([k for k in kinds if k is not kind]))
            _put(b, path, (new_kind, draw(_data(new_kind))))
        elif action == "to-dir" and path.count("/") < 2:
            child = f"{path}/{draw(st.sampled_from(COMPONENTS))}"
            new_kind = draw(st.sampled_from(kinds))
            _put(b, child, (new_kind, draw(_data(new_kind))))
    for path, kind, data in draw(st.lists(items, max_size=3)):
        _put(b, path, (kind, data))
    return (b, a) if draw(st.booleans()) else (a, b)


def fake_entries(spec: Spec) -> dict[str, Entry]:
    """Pure-model entries; blob ids only need to be equal for equal data."""
    return {
        path: Entry(hashlib.sha1(data.encode()).hexdigest(), kind)  # noqa: S324
        for path, (kind, data) in spec.items()
    }


# -- the pure model -------------------------------------------------------------------------------


@given(tree_pairs())
def test_apply_diff_gives_the_new_tree(pair: tuple[Spec, Spec]) -> None:
    a, b = pair
    old, new = fake_entries(a), fake_entries(b)
    assert apply(diff(old, new), old) == new


@given(tree_pairs())
def test_reverse_of_diff_is_diff_the_other_way(pair: tuple[Spec, Spec]) -> None:
    a, b = pair
    old, new = fake_entries(a), fake_entries(b)
    assert diff(old, new).reverse() == diff(new, old)


@given(tree_pairs())
def test_diff_order_is_canonical(pair: tuple[Spec, Spec]) -> None:
    a, b = pair
    changes = list(diff(fake_entries(a), fake_entries(b)))
    deletes = [c.path for c in changes if c.new is None]
    writes = [c.path for c in changes if c.new is not None]
    assert [c.new is None for c in changes] == [True] * len(deletes) + [False] * len(writes)
    assert deletes == sorted(deletes, key=lambda p: (-p.count("/"), p))
    assert writes == sorted(writes)


# -- libgit2 against the pure model ---------------------------------------------------------------


class TreeWriter:
    """Writes specs as real git trees: blobs with pygit2, trees with ``git.Repository``."""

    def __init__(self, path: Path) -> None:
        self.pygit2_repo = pygit2.init_repository(str(path), bare=True)
        self.repo = git.Repository(path)

    def entries(self, spec: Spec) -> dict[str, Entry]:
        return {
            path: Entry(str(self.pygit2_repo.create_blob(data.encode())), kind)
            for path, (kind, data) in spec.items()
        }

    def tree(self, spec: Spec) -> str:
        return self.repo.build_tree(
            (path, git.RawEntry(entry.blob, MODES[entry.kind]))
            for path, entry in self.entries(spec).items()
        )


@pytest.fixture(scope="module")
def writer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TreeWriter]:
    w = TreeWriter(tmp_path_factory.mktemp("trees") / "repo.git")
    yield w
    w.repo.close()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(pair=tree_pairs())
def test_git_diff_equals_pure_diff(writer: TreeWriter, pair: tuple[Spec, Spec]) -> None:
    a, b = pair
    old, new = writer.entries(a), writer.entries(b)
    snap_a = TreeSnapshot(writer.repo, writer.tree(a))
    snap_b = TreeSnapshot(writer.repo, writer.tree(b))
    assert dict(snap_a) == old
    assert dict(snap_b) == new
    assert changes_between(snap_a, snap_b) == diff(old, new)
    assert changes_between(snap_b, snap_a) == diff(new, old)
    assert changes_between(EMPTY, snap_b) == diff({}, new)
    assert changes_between(snap_a, EMPTY) == diff(old, {})


# -- the engine -----------------------------------------------------------------------------------


def expected_tree(spec: Spec) -> Tree:
    tree: Tree = {}
    for path, (kind, data) in spec.items():
        parts = path.split("/")
        for depth in range(1, len(parts)):
            tree["/".join(parts[:depth])] = ("dir",)
        if kind is EntryKind.SYMLINK:
            tree[path] = ("symlink", data)
        else:
            mode = 0o755 if kind is EntryKind.EXECUTABLE else 0o644
            tree[path] = ("file", data.encode(), mode)
    return tree


def commit(repo: pygit2.Repository, spec: Spec, message: str) -> str:
    writer_repo = git.Repository(repo.path)
    try:
        tree = writer_repo.build_tree(
            (path, git.RawEntry(str(repo.create_blob(data.encode())), MODES[kind]))
            for path, (kind, data) in spec.items()
        )
    finally:
        writer_repo.close()
    sig = pygit2.Signature("Test", "test@example.com", 1_700_000_000, 0)
    parents = [] if repo.head_is_unborn else [repo.head.target]
    return str(repo.create_commit("HEAD", sig, sig, message, pygit2.Oid(hex=tree), parents))


def make_site(
    base: Path, *specs: Spec, transport: TransportFactory | None = None
) -> tuple[Engine, Path, list[str]]:
    """A repository with one commit per spec and an engine deploying it to ``base/www``."""
    repo = pygit2.init_repository(str(base / "repo"), initial_head="main")
    revisions = [commit(repo, spec, f"commit {i}") for i, spec in enumerate(specs)]
    repo.free()
    root = base / "www"
    config = build_settings(
        {
            "state_dir": str(base / "state"),
            "projects": {
                "site": {
                    "repository": str(base / "repo"),
                    "servers": {"prod": {"root": str(root)}},
                }
            },
        }
    )
    return Engine(config, transport=transport), root, revisions


ENGINE_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@ENGINE_SETTINGS
@given(pair=tree_pairs())
def test_deploy_then_rollback_restores_a(pair: tuple[Spec, Spec]) -> None:
    a, b = pair
    with tempfile.TemporaryDirectory(prefix="dhq-prop-") as tmp:
        engine, root, (rev_a, rev_b) = make_site(Path(tmp), a, b)
        with engine:
            first = engine.deploy("site", "prod", revision=rev_a)
            assert read_tree(root) == expected_tree(a)
            engine.deploy("site", "prod", revision=rev_b)
            assert read_tree(root) == expected_tree(b)
            back = engine.rollback("site", first.identifier)
        assert back.status is DeploymentStatus.COMPLETED
        assert read_tree(root) == expected_tree(a)


class MemoryServer:
    """One in-memory server that outlives the transports the engine opens on it."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.dirs: set[str] = set()
        self.fail_on: set[str] = set()

    def transport(self, destination: Destination) -> MemoryTransport:
        transport = MemoryTransport(server=destination.key, fail_on=self.fail_on)
        transport.nodes, transport.dirs = self.nodes, self.dirs
        return transport

    def tree(self) -> Tree:
        tree: Tree = {d: ("dir",) for d in self.dirs if not d.startswith(".deployhq-lite")}
        for path, node in self.nodes.items():
            if path.startswith(".deployhq-lite/"):
                continue
            if isinstance(node, MemoryFile):
                tree[path] = ("file", node.data, node.mode)
            else:
                tree[path] = ("symlink", node.target)
        return tree

    def marker_deployment(self) -> str:
        node = self.nodes[MARKER_PATH]
        assert isinstance(node, MemoryFile)
        return str(json.loads(node.data)["deployment"])


@ENGINE_SETTINGS
@given(pair=tree_pairs(), data=st.data())
def test_a_failed_deployment_converges_on_the_next_run(
    pair: tuple[Spec, Spec], data: st.DataObject
) -> None:
    """Deploying B fails at one write; deploying B again, or A again, gives exactly that."""
    a, b = pair
    changeset = diff(fake_entries(a), fake_entries(b))
    writes = [c.path for c in changeset.writes]
    assume(writes)
    failing = data.draw(st.sampled_from(writes), label="failing write")
    again = data.draw(st.sampled_from(["A", "B"]), label="then deploy")
    server = MemoryServer()
    with tempfile.TemporaryDirectory(prefix="dhq-prop-") as tmp:
        engine, _, (rev_a, rev_b) = make_site(Path(tmp), a, b, transport=server.transport)
        with engine:
            first = engine.deploy("site", "prod", revision=rev_a)
            assert server.tree() == expected_tree(a)

            server.fail_on = {failing}
            with pytest.raises(DeploymentError) as excinfo:
                engine.deploy("site", "prod", revision=rev_b)
            assert excinfo.value.failed_path == failing
            assert server.marker_deployment() == first.identifier

            server.fail_on = set()
            done = engine.deploy("site", "prod", revision=rev_a if again == "A" else rev_b)
        assert done.status is DeploymentStatus.COMPLETED
        assert server.tree() == expected_tree(a if again == "A" else b)
        assert server.marker_deployment() == done.identifier


@ENGINE_SETTINGS
@given(pair=tree_pairs(), data=st.data())
def test_a_failed_rollback_converges_when_retried(
    pair: tuple[Spec, Spec], data: st.DataObject
) -> None:
    """A, then B, then a rollback to A that fails at one write; the retried rollback gives A."""
    a, b = pair
    changeset = diff(fake_entries(b), fake_entries(a))
    writes = [c.path for c in changeset.writes]
    assume(writes)
    failing = data.draw(st.sampled_from(writes), label="failing write")
    server = MemoryServer()
    with tempfile.TemporaryDirectory(prefix="dhq-prop-") as tmp:
        engine, _, (rev_a, rev_b) = make_site(Path(tmp), a, b, transport=server.transport)
        with engine:
            first = engine.deploy("site", "prod", revision=rev_a)
            second = engine.deploy("site", "prod", revision=rev_b)
            assert server.tree() == expected_tree(b)

            server.fail_on = {failing}
            with pytest.raises(DeploymentError):
                engine.rollback("site", first.identifier)
            assert server.marker_deployment() == second.identifier

            server.fail_on = set()
            done = engine.rollback("site", first.identifier)
        assert done.status is DeploymentStatus.COMPLETED
        assert server.tree() == expected_tree(a)
        assert server.marker_deployment() == done.identifier


# -- examples the properties found: retries after a half-done type change, on local disk ---


def _block(root: Path, path: str) -> None:
    """Make writing ``path`` fail: a non-empty directory sits where the file goes."""
    target = root / path
    target.unlink()
    target.mkdir()
    (target / "blocker").write_bytes(b"x")


def _retry_deploy(site: Site, a: dict[str, Content], b: dict[str, Content]) -> None:
    rev_a = site.repo.commit(a, "A", replace=True)
    rev_b = site.repo.commit(b, "B", replace=True)
    with Engine(site.config) as engine:
        engine.deploy("website", "production", revision=rev_a)
        _block(site.root, "zz")
        with pytest.raises(DeploymentError) as excinfo:
            engine.deploy("website", "production", revision=rev_b)
        assert excinfo.value.failed_path == "zz"
        shutil.rmtree(site.root / "zz")  # the cause is fixed: deploy again
        engine.deploy("website", "production", revision=rev_b)
    assert read_tree(site.root) == expected_tree(spec_of(b))


def spec_of(files: dict[str, Content]) -> Spec:
    spec: Spec = {}
    for path, content in files.items():
        assert isinstance(content, str | Symlink)
        if isinstance(content, Symlink):
            spec[path] = (EntryKind.SYMLINK, content.target)
        else:
            spec[path] = (EntryKind.FILE, content)
    return spec


def test_retry_after_a_failed_run_made_a_file_a_directory(site: Site) -> None:
    _retry_deploy(site, {"x": "file", "zz": "a"}, {"x/y": "y", "zz": "b"})


def test_retry_after_a_failed_run_made_a_directory_a_symlink(site: Site) -> None:
    _retry_deploy(
        site, {"d/f": "f", "t/f": "f", "zz": "a"}, {"d": Symlink("t"), "t/f": "f", "zz": "b"}
    )


def test_retry_after_a_failed_run_made_a_directory_a_file(site: Site) -> None:
    _retry_deploy(site, {"w/q": "q", "zz": "a"}, {"w": "file", "zz": "b"})


def test_retried_rollback_after_a_failed_one_made_a_directory_a_symlink(site: Site) -> None:
    rev_a = site.repo.commit({"d": Symlink("t"), "t/f": "f", "zz": "a"}, "A", replace=True)
    rev_b = site.repo.commit({"d/f": "f", "t/f": "f", "zz": "b"}, "B", replace=True)
    with Engine(site.config) as engine:
        first = engine.deploy("website", "production", revision=rev_a)
        engine.deploy("website", "production", revision=rev_b)
        _block(site.root, "zz")
        with pytest.raises(DeploymentError):
            engine.rollback("website", first.identifier)
        shutil.rmtree(site.root / "zz")
        engine.rollback("website", first.identifier)
    assert read_tree(site.root)["d"] == ("symlink", "t")


def test_retry_after_a_failure_without_type_changes_converges(site: Site) -> None:
    """The same steps as the tests above, where no path changes type: it converges."""
    _retry_deploy(site, {"x": "file", "n/m": "m", "zz": "a"}, {"x": "new", "o/p": "p", "zz": "b"})
