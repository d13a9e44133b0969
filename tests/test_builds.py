"""builds.py: build commands in a clean checkout, their output as a tree (no mocks)."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deployhq_lite import git as gitlib
from deployhq_lite.config import ProjectConfig
from deployhq_lite.deployments.builds import BuildError, BuildResult, run_build
from deployhq_lite.errors import RepositoryError
from deployhq_lite.records import CommandResult
from deployhq_lite.repobuilder import Executable, GitRepoBuilder, Symlink, git
from deployhq_lite.values import OUTPUT_LIMIT


@dataclass
class Builder:
    repo: GitRepoBuilder
    source: gitlib.Repository
    store: gitlib.Repository
    work_root: Path
    cache_root: Path

    def build(self, revision: str, *commands: str | dict[str, Any], **project: Any) -> BuildResult:
        listed = [{"command": c} if isinstance(c, str) else c for c in commands]
        variables = project.pop("variables", {"DEPLOYHQ_END_REVISION": revision})
        config = ProjectConfig.model_validate(
            {"repository": self.repo.path, "build_commands": listed, **project}
        )
        return run_build(
            source=self.source,
            store=self.store,
            revision=revision,
            project=config,
            work_root=self.work_root,
            cache_root=self.cache_root,
            variables=variables,
            on_output=self.lines.append,
            on_command=self.results.append,
        )

    def __post_init__(self) -> None:
        self.lines: list[str] = []
        self.results: list[CommandResult] = []

    def files(self, tree: str) -> dict[str, bytes]:
        return {path: self.store.read_blob(e.oid) for path, e in self.store.walk_tree(tree)}

    def leftovers(self) -> list[str]:
        return sorted(os.listdir(self.work_root))


@pytest.fixture
def builder(tmp_path: Path, git_repo: GitRepoBuilder) -> Builder:
    source = gitlib.Repository(git_repo.path)
    store = gitlib.Repository.init_bare(tmp_path / "store.git")
    store.add_alternate(source)
    return Builder(
        git_repo, source, store, tmp_path / "state" / "builds", tmp_path / "cache" / "site"
    )


def test_export_and_read_back_give_the_same_tree(git_repo: GitRepoBuilder, tmp_path: Path) -> None:
    revision = git_repo.commit(
        {
            "index.html": "<h1>hi</h1>",
            "assets/css/site.css": "body {}",
            "bin/run.sh": Executable("#!/bin/sh\necho hi\n"),
            "latest": Symlink("assets/css/site.css"),
            "big.bin": os.urandom(5 * 1024 * 1024),  # streamed by git cat-file
        }
    )
    repo = gitlib.Repository(git_repo.path)
    tree = repo.tree_of(revision)
    dest = tmp_path / "out"
    dest.mkdir()
    repo.export_tree(tree, dest)
    assert (dest / "assets/css/site.css").read_text() == "body {}"
    assert os.readlink(dest / "latest") == "assets/css/site.css"
    assert (dest / "bin/run.sh").stat().st_mode & 0o777 == 0o755
    assert (dest / "index.html").stat().st_mode & 0o777 == 0o644
    (dest / "empty" / "dir").mkdir(parents=True)  # left out, as git does
    assert repo.tree_from_directory(dest) == tree


@pytest.mark.parametrize("name", [".git", "..", ".", ".GIT", ".git.", ".g\u200cit", ".git::$DATA"])
def test_export_refuses_a_dangerous_entry_name(
    git_repo: GitRepoBuilder, tmp_path: Path, name: str
) -> None:
    blob = git("hash-object", "-w", "--stdin", cwd=git_repo.path, stdin=b"x").strip()
    raw = b"100644 " + name.encode() + b"\0" + bytes.fromhex(blob)
    tree = git(
        "hash-object", "-t", "tree", "-w", "--literally", "--stdin", cwd=git_repo.path, stdin=raw
    ).strip()
    (tmp_path / "out").mkdir()
    with pytest.raises(RepositoryError, match=f"refusing tree entry {re.escape(repr(name))}"):
        gitlib.Repository(git_repo.path).export_tree(tree, tmp_path / "out")
    assert os.listdir(tmp_path / "out") == []


def test_tree_from_directory_refuses_a_fifo_and_a_git_directory(
    git_repo: GitRepoBuilder, tmp_path: Path
) -> None:
    repo = gitlib.Repository(git_repo.path)
    (tmp_path / "out").mkdir()
    os.mkfifo(tmp_path / "out" / "pipe")
    with pytest.raises(RepositoryError, match="pipe: not a file, symlink or directory"):
        repo.tree_from_directory(tmp_path / "out")
    for name in (".git", ".Git", ".git\u200d"):
        (tmp_path / name / name).mkdir(parents=True)
        with pytest.raises(RepositoryError, match=r"a \.git directory"):
            repo.tree_from_directory(tmp_path / name)


def test_build_output_is_a_tree_and_the_same_each_time(builder: Builder) -> None:
    revision = builder.repo.commit({"src/app.src": "let x = 1;\n", "README": "docs"})
    command = "mkdir -p dist && tr a-z A-Z < src/app.src > dist/app.js"
    first = builder.build(revision, command, build_output="dist")
    assert builder.files(first.tree) == {"app.js": b"LET X = 1;\n"}
    assert [r.ok for r in first.commands] == [True]
    assert first.commands[0].when == "build"
    second = builder.build(revision, command, build_output="dist")
    assert second.tree == first.tree
    assert builder.leftovers() == []


def test_whole_checkout_is_the_output_without_build_output(builder: Builder) -> None:
    revision = builder.repo.commit({"index.html": "hi"})
    result = builder.build(revision, "echo built > stamp")
    assert builder.files(result.tree) == {"index.html": b"hi", "stamp": b"built\n"}


def test_commands_see_variables_and_build_environment_but_no_secrets(
    builder: Builder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOYHQ_TEST_SECRET", "hunter2")
    revision = builder.repo.commit({"index.html": "hi"})
    result = builder.build(
        revision,
        'mkdir dist && printf %s "$DEPLOYHQ_END_REVISION" > dist/rev',
        'printf %s "$NODE_ENV" > dist/node_env && env > dist/env',
        build_output="dist",
        build_environment={"NODE_ENV": "production", "DEPLOYHQ_END_REVISION": "lost"},
    )
    files = builder.files(result.tree)
    assert files["rev"] == revision.encode()  # the deployment's variables win
    assert files["node_env"] == b"production"
    assert b"hunter2" not in files["env"]
    assert b"PATH=" in files["env"]


def test_output_lines_come_in_order_and_the_record_keeps_the_tail(builder: Builder) -> None:
    revision = builder.repo.commit({"index.html": "hi"})
    long_line = "x" * 1000
    result = builder.build(
        revision,
        f"echo first; i=0; while [ $i -lt 100 ]; do echo {long_line}; i=$((i+1)); done;"
        " echo last >&2",
    )
    assert builder.lines[0] == "first"
    assert builder.lines[1:-1] == [long_line] * 100
    assert builder.lines[-1] == "last"
    output = result.commands[0].output
    assert len(output.encode()) == OUTPUT_LIMIT
    assert output.endswith(long_line + "\nlast\n")
    assert builder.results == list(result.commands)


def test_a_failing_command_stops_the_build(builder: Builder, tmp_path: Path) -> None:
    revision = builder.repo.commit({"index.html": "hi"})
    marker = tmp_path / "marker"
    with pytest.raises(BuildError) as caught:
        builder.build(revision, "echo ok", "echo broken; exit 3", f"touch {marker}")
    assert str(caught.value) == (
        "build command 'echo broken; exit 3' exited with status 3; nothing was deployed"
    )
    assert [(r.exit_status, r.output) for r in caught.value.commands] == [
        (0, "ok\n"),
        (3, "broken\n"),
    ]
    assert builder.results == list(caught.value.commands)
    assert not marker.exists()
    assert builder.leftovers() == []


def test_a_command_past_its_timeout_is_killed(builder: Builder, tmp_path: Path) -> None:
    revision = builder.repo.commit({"index.html": "hi"})
    pids = tmp_path / "pids"
    started = time.monotonic()
    with pytest.raises(BuildError) as caught:
        builder.build(
            revision,
            {"command": f"sleep 30 & echo $! > {pids}; echo $$ >> {pids}; wait", "timeout": 0.5},
        )
    assert time.monotonic() - started < 10
    assert str(caught.value) == (
        f"build command 'sleep 30 & echo $! > {pids}; echo $$ >> {pids}; wait' timed out after"
        " 0.5 s; nothing was deployed"
    )
    (result,) = caught.value.commands
    assert result.timed_out and result.exit_status is None
    for pid in pids.read_text().split():
        assert not _running(int(pid))
    assert builder.leftovers() == []


def _running(pid: int) -> bool:
    """Whether ``pid`` is alive (a zombie nobody reaped yet counts as dead)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.05)
    return True


def test_cached_directories_survive_between_builds(builder: Builder) -> None:
    revision = builder.repo.commit({"index.html": "hi"})
    count = (
        "n=$(cat node_modules/count 2>/dev/null || echo 0); mkdir -p node_modules;"
        " echo $((n+1)) > node_modules/count; mkdir -p dist; cp node_modules/count dist/"
    )
    first = builder.build(revision, count, build_output="dist", build_cache=["node_modules"])
    assert builder.files(first.tree) == {"count": b"1\n"}
    assert (builder.cache_root / "node_modules" / "count").read_text() == "1\n"
    second = builder.build(revision, count, build_output="dist", build_cache=["node_modules"])
    assert builder.files(second.tree) == {"count": b"2\n"}
    # kept after a failed build too
    with pytest.raises(BuildError):
        builder.build(revision, count, "false", build_cache=["node_modules"])
    assert (builder.cache_root / "node_modules" / "count").read_text() == "3\n"
    assert builder.leftovers() == []


def test_missing_build_output_is_an_error(builder: Builder) -> None:
    revision = builder.repo.commit({"index.html": "hi", "dist": Symlink("/etc")})
    with pytest.raises(BuildError) as caught:
        builder.build(revision, "true", build_output="dist")
    assert str(caught.value) == (
        "build_output 'dist' was not produced by the build commands; nothing was deployed"
    )
    with pytest.raises(BuildError, match="'public' was not produced"):
        builder.build(revision, "true", build_output="public")
    assert builder.leftovers() == []
