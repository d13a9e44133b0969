"""The library surface: frozen results, hooks, structlog events, and a real git
``post-receive`` hook that deploys on push."""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
from pathlib import Path

import pytest
import structlog

import deployhq_lite as dhq
from deployhq_lite.engine import Engine
from deployhq_lite.repobuilder import GitRepoBuilder, git
from deployhq_lite.store import History
from deployhq_lite.testing.plugin import Site

FILES = {"index.html": "<h1>hi</h1>", "b/one.txt": "1", "a.txt": "a"}


# -- frozen results ---------------------------------------------------------------------------


def test_library_results_are_frozen_dataclasses(site: Site) -> None:
    first = site.repo.commit(FILES)
    deployed = dhq.deploy("website", "production", revision=first, config=site.config)
    site.repo.commit({"a.txt": "changed"})
    dhq.deploy("website", "production", config=site.config)
    site.repo.commit({"index.html": "<h1>two</h1>"})
    previewed = dhq.preview("website", "production", config=site.config)
    rolled = dhq.rollback("website", deployed.identifier, mode="preview", config=site.config)

    for result in (deployed, previewed, previewed.deployment, rolled, *previewed.changes):
        assert dataclasses.is_dataclass(result)
        field = dataclasses.fields(result)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(result, field, None)
    assert isinstance(previewed.changes, tuple)
    assert [c.path for c in previewed.changes] == ["index.html"]
    assert deployed.status is dhq.DeploymentStatus.COMPLETED
    assert rolled.status is dhq.DeploymentStatus.PREVIEWED
    assert rolled.rollback_of == deployed.identifier


def test_engine_runs_several_calls_and_returns_frozen_results(site: Site) -> None:
    first = site.repo.commit(FILES)
    second = site.repo.commit({"a.txt": None, "c.txt": "c"})
    with Engine(site.config) as engine:
        d1 = engine.deploy("website", "production", revision=first)
        d2 = engine.deploy("website", "production", revision=second)
        back = engine.rollback("website", d1.identifier)
        listed = engine.list_deployments("website")
        changes = engine.file_changes(back.identifier)
    assert [d.identifier for d in listed] == [back.identifier, d2.identifier, d1.identifier]
    assert back.start_revision == second
    assert back.end_revision == first
    assert {(c.path, c.change) for c in changes} == {("a.txt", "added"), ("c.txt", "deleted")}
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.status = dhq.DeploymentStatus.FAILED  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        changes[0].path = "elsewhere"  # type: ignore[misc]
    assert (site.root / "a.txt").read_text() == "a"
    assert not (site.root / "c.txt").exists()


def test_library_refusal_raises_with_exact_message(site: Site) -> None:
    site.repo.commit(FILES)
    only = dhq.deploy("website", "production", config=site.config)
    with pytest.raises(dhq.RollbackNotAllowedError) as raised:
        dhq.rollback("website", only.identifier, config=site.config)
    assert str(raised.value) == "Cannot rollback the latest deployment"
    assert raised.value.reason == "it is the latest completed deployment on server 'production'"
    assert isinstance(raised.value, dhq.RefusedError)


# -- hooks ---------------------------------------------------------------------------------


def test_hooks_are_called_in_order_with_hook_events(site: Site) -> None:
    site.repo.commit(FILES)
    seen: list[dhq.HookEvent] = []
    hooks = {
        "deployment.started": [seen.append],
        "deployment.finished": seen.append,
        "file.uploaded": [seen.append],
    }
    done = dhq.deploy("website", "production", config=site.config, hooks=hooks)

    assert all(isinstance(e, dhq.HookEvent) for e in seen)
    assert [e.name for e in seen] == [
        "deployment.started",
        "file.uploaded",
        "file.uploaded",
        "file.uploaded",
        "deployment.finished",
    ]
    assert {e.deployment.identifier for e in seen} == {done.identifier}
    assert [e.path for e in seen[1:-1]] == ["a.txt", "b/one.txt", "index.html"]
    assert seen[0].path is None
    assert seen[0].deployment.status is dhq.DeploymentStatus.RUNNING
    assert seen[-1].deployment.status is dhq.DeploymentStatus.COMPLETED
    assert seen[-1].deployment == done


def test_hooks_for_deletes_and_failures(site: Site) -> None:
    site.repo.commit(FILES)
    dhq.deploy("website", "production", config=site.config)
    site.repo.commit({"a.txt": None, "z.txt": "z"})
    (site.root / "z.txt").mkdir()
    (site.root / "z.txt" / "occupant").write_text("x")
    seen: list[tuple[str, str | None, str | None]] = []

    def record(event: dhq.HookEvent) -> None:
        seen.append((event.name, event.path, event.deployment.status.value))

    hooks = {
        name: record
        for name in ("file.deleted", "file.failed", "deployment.failed", "deployment.finished")
    }
    with pytest.raises(dhq.DeploymentError):
        dhq.deploy("website", "production", config=site.config, hooks=hooks)
    assert seen == [
        ("file.deleted", "a.txt", "running"),
        ("file.failed", "z.txt", "running"),
        ("deployment.failed", None, "failed"),
        ("deployment.finished", None, "failed"),
    ]


def test_a_raising_hook_does_not_break_the_deployment(site: Site) -> None:
    site.repo.commit(FILES)
    calls: list[str] = []

    def explode(event: dhq.HookEvent) -> None:
        calls.append(event.name)
        raise RuntimeError("hook is broken")

    hooks = {
        "deployment.started": [explode, lambda e: calls.append("second hook still runs")],
        "file.uploaded": explode,
        "deployment.finished": [explode],
    }
    with structlog.testing.capture_logs() as logs:
        done = dhq.deploy("website", "production", config=site.config, hooks=hooks)

    assert done.status is dhq.DeploymentStatus.COMPLETED
    assert site.files() == {"index.html": b"<h1>hi</h1>", "b/one.txt": b"1", "a.txt": b"a"}
    assert calls[:2] == ["deployment.started", "second hook still runs"]
    assert calls.count("file.uploaded") == 3
    assert calls[-1] == "deployment.finished"
    failures = [e for e in logs if e["event"] == "hook.failed"]
    assert len(failures) == 5
    assert all("hook is broken" in e["error"] for e in failures)


# -- structlog events ---------------------------------------------------------------------------


def test_structlog_events_carry_the_deployment_identifier(site: Site) -> None:
    site.repo.commit(FILES)
    with structlog.testing.capture_logs() as logs:
        done = dhq.deploy("website", "production", config=site.config)
    names = [e["event"] for e in logs]
    assert names.index("deployment.started") < names.index("deployment.completed")
    for name in ("deployment.created", "deployment.started", "deployment.completed"):
        [event] = [e for e in logs if e["event"] == name]
        assert event["deployment"] == done.identifier
    uploaded = [e for e in logs if e["event"] == "file.uploaded"]
    assert sorted(e["path"] for e in uploaded) == sorted(FILES)
    assert all(e["deployment"] == done.identifier for e in uploaded)


def test_structlog_failure_event(site: Site) -> None:
    site.repo.commit(FILES)
    (site.root / "a.txt").mkdir(parents=True)
    (site.root / "a.txt" / "occupant").write_text("x")
    with structlog.testing.capture_logs() as logs, pytest.raises(dhq.DeploymentError) as raised:
        dhq.deploy("website", "production", config=site.config)
    [failed] = [e for e in logs if e["event"] == "deployment.failed"]
    assert failed["deployment"] == raised.value.identifier
    assert failed["log_level"] == "error"
    assert "a.txt" in failed["error"]
    assert "deployment.completed" not in [e["event"] for e in logs]


# -- a real git post-receive hook --------------------------------------------------------------

POST_RECEIVE = """#!{python}
import sys

import deployhq_lite

for line in sys.stdin:
    old, new, ref = line.split()
    if ref == "refs/heads/main":
        done = deployhq_lite.deploy(
            "website", "production", revision=new, config={config!r}
        )
        print("deployed", done.identifier, done.status.value)
"""


@pytest.fixture
def pushed_site(tmp_path: Path, site: Site) -> tuple[Site, Path]:
    """A bare repository with a post-receive hook deploying ``main``; a clone to push from."""
    bare = GitRepoBuilder.create(tmp_path / "origin.git", bare=True)
    site.repo = bare
    site.write_config()
    hook = bare.path / "hooks" / "post-receive"
    hook.write_text(POST_RECEIVE.format(python=sys.executable, config=str(site.config)))
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    work = tmp_path / "clone"
    git("clone", "-q", str(bare.path), str(work), cwd=tmp_path)
    git("checkout", "-q", "-b", "main", cwd=work)
    return site, work


def commit_and_push(work: Path, files: dict[str, str]) -> tuple[str, str]:
    for path, content in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(content)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "push me", cwd=work)
    sha = git("rev-parse", "HEAD", cwd=work).strip()
    # git prints hook output as "remote: ..." on stderr; --porcelain keeps stdout terse.
    out = git("push", "--porcelain", "origin", "main", cwd=work)
    return sha, out


def test_post_receive_hook_deploys_the_pushed_revision(pushed_site: tuple[Site, Path]) -> None:
    site, work = pushed_site
    sha, _ = commit_and_push(work, {"index.html": "<h1>pushed</h1>", "css/site.css": "body{}"})

    assert site.files() == {"index.html": b"<h1>pushed</h1>", "css/site.css": b"body{}"}
    history = History(site.state_dir / "history.sqlite3")
    try:
        [done] = history.query("website")
    finally:
        history.close()
    assert done.status is dhq.DeploymentStatus.COMPLETED
    assert done.end_revision == sha
    assert done.start_revision is None

    second, _ = commit_and_push(work, {"index.html": "<h1>again</h1>"})

    assert (site.root / "index.html").read_text() == "<h1>again</h1>"
    history = History(site.state_dir / "history.sqlite3")
    try:
        latest = history.find_latest_completed("website", "production")
    finally:
        history.close()
    assert latest is not None
    assert latest.end_revision == second
    assert latest.start_revision == sha
    assert os.environ.get("GIT_DIR") is None  # the hook ran in git's process, not ours
