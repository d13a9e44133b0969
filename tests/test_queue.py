"""The deployment queue: workers claim pending deployments from the history, one per
server at a time in queue order, and recover what a killed worker left (real processes)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from contextlib import suppress
from pathlib import Path

import pytest

from deployhq_lite.engine import Engine
from deployhq_lite.locking import looks_stale, owner_label
from deployhq_lite.marker import MARKER_PATH
from deployhq_lite.queue import recover
from deployhq_lite.records import Deployment, DeploymentMode, DeploymentStatus, utcnow
from deployhq_lite.store import History, LockRecord
from deployhq_lite.testing.plugin import CLI, Site, read_tree, run_cli
from tests.test_groups import group_config, local_second

WORKER = "tester@nowhere:1/aaaaaa"  # claim_next does not care whether it is alive


def queue(
    site: Site,
    revision: str,
    server: str = "production",
    mode: DeploymentMode = DeploymentMode.QUEUE,
) -> Deployment:
    with Engine(site.config) as engine:
        return engine.queue_deployment("website", server, revision=revision, mode=mode)


def history(site: Site) -> History:
    return History(site.state_dir / "history.sqlite3")


def worker(site: Site, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(CLI), "worker", "--config", str(site.config), "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finished_lines(stdout: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def marker_names(root: Path) -> str | None:
    path = root / MARKER_PATH
    if not path.exists():
        return None
    return str(json.loads(path.read_text())["deployment"])


def dead_owner() -> str:
    """An owner label naming a process of this host that has exited."""
    gone = subprocess.Popen(["sleep", "0"])
    gone.wait()
    return f"{owner_label().rpartition(':')[0]}:{gone.pid}/dead00"


def test_two_workers_run_each_deployment_once_in_queue_order_per_server(
    site: Site, tmp_path: Path
) -> None:
    group_config(site, local_second(tmp_path))
    queued: list[Deployment] = []
    for n in range(3):
        revision = site.repo.commit({"index.html": f"r{n}", f"only{n}.txt": "x"})
        queued += [queue(site, revision), queue(site, revision, "production2")]
    workers = [worker(site, "--once", "-v", "--log-format", "json") for _ in range(2)]
    try:
        outputs = [w.communicate(timeout=120) for w in workers]
    finally:
        for w in workers:
            with suppress(ProcessLookupError):
                os.killpg(w.pid, signal.SIGKILL)
            w.communicate()
    assert [w.returncode for w in workers] == [0, 0], outputs
    lines = [line for out, _ in outputs for line in finished_lines(out)]
    assert sorted(line["deployment"] for line in lines) == sorted(d.identifier for d in queued)
    assert {line["status"] for line in lines} == {"completed"}
    events = [json.loads(e) for _, err in outputs for e in err.splitlines() if e.startswith("{")]
    started = Counter(e["deployment"] for e in events if e["event"] == "deployment.started")
    assert started == Counter(d.identifier for d in queued)  # each ran once, by one worker
    db = history(site)
    try:
        for server in ("production", "production2"):
            rows = [db.find(d.identifier) for d in queued if d.server == server]
            assert all(r is not None and r.status is DeploymentStatus.COMPLETED for r in rows)
            assert all(r is not None and r.claimed_by is not None for r in rows)
            starts = [r.started_at or "" for r in rows if r is not None]
            assert starts == sorted(starts)  # queue order on each server
    finally:
        db.close()
    expected = {"index.html": b"r2", "only0.txt": b"x", "only1.txt": b"x", "only2.txt": b"x"}
    assert site.files() == expected
    assert {p for p, v in read_tree(tmp_path / "www2").items() if v[0] == "file"} == set(expected)
    assert marker_names(site.root) == queued[-2].identifier
    assert marker_names(tmp_path / "www2") == queued[-1].identifier


def test_a_later_deployment_never_overtakes_an_earlier_one_on_its_server(
    site: Site, tmp_path: Path
) -> None:
    group_config(site, local_second(tmp_path))
    revision = site.repo.commit({"index.html": "one"})
    first, second = queue(site, revision), queue(site, revision)
    preview = queue(site, revision, mode=DeploymentMode.PREVIEW)
    other = queue(site, revision, "production2")
    db = history(site)
    try:
        claimed = [db.claim_next(WORKER) for _ in range(4)]
        assert [c.identifier if c else None for c in claimed] == [
            first.identifier,
            preview.identifier,  # a preview touches no server: claimable while it is busy
            other.identifier,
            None,  # second waits for first, claimed and unfinished
        ]
        db.update(first, status=DeploymentStatus.COMPLETED, completed_at=utcnow())
        found = db.claim_next(WORKER)
        assert found is not None and found.identifier == second.identifier
        assert found.claimed_by == WORKER
    finally:
        db.close()


def test_a_locked_server_holds_back_its_queue_but_not_previews(site: Site) -> None:
    revision = site.repo.commit({"index.html": "one"})
    first, _second = queue(site, revision), queue(site, revision)
    preview = queue(site, revision, mode=DeploymentMode.PREVIEW)
    db = history(site)
    try:
        lock = LockRecord("website/production", "cli-run", "someone@elsewhere:1", utcnow())
        assert db.try_lock(lock) == (True, None)
        found = db.claim_next(WORKER)
        assert found is not None and found.identifier == preview.identifier
        assert db.claim_next(WORKER) is None
        db.unlock("website/production", "cli-run")
        found = db.claim_next(WORKER)
        assert found is not None and found.identifier == first.identifier
        assert db.claim_next(WORKER) is None
    finally:
        db.close()


def test_a_group_deployment_holds_its_members_servers(site: Site, tmp_path: Path) -> None:
    group_config(site, local_second(tmp_path))
    revision = site.repo.commit({"index.html": "one"})
    group = queue(site, revision, "web")
    later = queue(site, revision, "production")
    db = history(site)
    try:
        # production2 is locked: the group waits, and production's later one behind it
        lock = LockRecord("website/production2", "cli-run", "someone@elsewhere:1", utcnow())
        db.try_lock(lock)
        assert db.claim_next(WORKER) is None
        db.unlock("website/production2", "cli-run")
        found = db.claim_next(WORKER)
        assert found is not None and found.identifier == group.identifier and found.is_group
        assert db.claim_next(WORKER) is None  # production belongs to the group for now
        for d in [group, *db.members(group.identifier)]:
            db.update(d, status=DeploymentStatus.COMPLETED, completed_at=utcnow())
        found = db.claim_next(WORKER)
        assert found is not None and found.identifier == later.identifier
        assert db.claim_next(WORKER) is None  # members are never claimed on their own
        # a group deployment whose members are not recorded yet is not claimed
        db.add(
            dataclasses.replace(group, identifier="no-members-yet", status=DeploymentStatus.PENDING)
        )
        assert db.claim_next(WORKER) is None
    finally:
        db.close()


@pytest.mark.parametrize("order", ["parallel", "sequential"])
def test_a_worker_runs_a_queued_group_deployment_on_every_server(
    site: Site, tmp_path: Path, order: str
) -> None:
    group_config(site, local_second(tmp_path), order=order)
    group = queue(site, site.repo.commit({"index.html": "one"}), "web")
    done = run_cli("worker", "--once", "--config", site.config, "--json")
    assert done.returncode == 0, done.stderr
    assert finished_lines(done.stdout) == [
        {
            "deployment": group.identifier,
            "status": "completed",
            "project": "website",
            "server": "web",
        }
    ]
    assert site.files() == {"index.html": b"one"}
    assert read_tree(tmp_path / "www2")["index.html"][:2] == ("file", b"one")


def test_a_dead_workers_deployment_is_failed_and_its_lock_freed(site: Site) -> None:
    site.repo.commit({"index.html": "one"})
    done = run_cli("deploy", "website", "--server", "production", "--config", site.config, "--json")
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)["identifier"]
    abandoned = queue(site, site.repo.commit({"index.html": "two"}))
    owner = dead_owner()
    assert looks_stale(owner)
    db = history(site)
    try:
        claimed = db.claim_next(owner)
        assert claimed is not None and claimed.identifier == abandoned.identifier
        db.update(claimed, status=DeploymentStatus.RUNNING, started_at=utcnow())
        db.try_lock(LockRecord("website/production", claimed.identifier, owner, utcnow()))
        failed = db.recover_abandoned(looks_stale)
        assert [d.identifier for d in failed] == [abandoned.identifier]
        row = db.find(abandoned.identifier)
        assert row is not None and row.status is DeploymentStatus.FAILED
        assert row.error == f"interrupted: its worker {owner} stopped; deploy again to converge"
        assert row.completed_at is not None
        assert db.try_lock(LockRecord("website/production", "probe", "x@y:1", utcnow()))[0]
        db.unlock("website/production", "probe")
    finally:
        db.close()
    assert marker_names(site.root) == first  # the marker never moved
    latest = queue(site, site.repo.commit({"index.html": "three"}))
    done = run_cli("worker", "--once", "--config", site.config, "--json")
    assert done.returncode == 0, done.stderr
    assert finished_lines(done.stdout) == [
        {
            "deployment": latest.identifier,
            "status": "completed",
            "project": "website",
            "server": "production",
        }
    ]
    assert marker_names(site.root) == latest.identifier
    assert site.files() == {"index.html": b"three"}


def test_a_live_workers_deployment_is_never_touched(site: Site) -> None:
    revision = site.repo.commit({"index.html": "one"})
    running = queue(site, revision)
    owner = f"{owner_label()}/live00"  # this test's own process: alive
    db = history(site)
    try:
        claimed = db.claim_next(owner)
        assert claimed is not None
        db.update(claimed, status=DeploymentStatus.RUNNING, started_at=utcnow())
        db.try_lock(LockRecord("website/production", running.identifier, owner_label(), utcnow()))
        assert db.recover_abandoned(looks_stale) == []
        row = db.find(running.identifier)
        assert row is not None and row.status is DeploymentStatus.RUNNING and row.error is None
        assert db.try_lock(LockRecord("website/production", "probe", "x@y:1", utcnow()))[0] is False
    finally:
        db.close()


def test_a_killed_cli_run_is_failed_once_its_lock_owner_is_gone(site: Site) -> None:
    revision = site.repo.commit({"index.html": "one"})
    running = queue(site, revision)
    owner = dead_owner().rpartition("/")[0]  # a lock owner: user@host:pid
    db = history(site)
    try:
        db.update(running, status=DeploymentStatus.RUNNING, started_at=utcnow())
        db.try_lock(LockRecord("website/production", running.identifier, owner, utcnow()))
        assert [d.identifier for d in db.recover_abandoned(looks_stale)] == [running.identifier]
        row = db.find(running.identifier)
        assert row is not None and row.status is DeploymentStatus.FAILED
        assert row.error == f"interrupted: its process {owner} stopped; deploy again to converge"
        assert db.claim_next(WORKER) is None  # failed, not queued again
    finally:
        db.close()


def test_a_deployment_that_wrote_its_marker_before_its_worker_died_completed(
    site: Site,
) -> None:
    revision = site.repo.commit({"index.html": "one"})
    with Engine(site.config) as engine:
        done = engine.deploy("website", "production", revision=revision)
        owner = dead_owner()
        # cut off after the marker, before the history said so
        engine.history.update(
            done, status=DeploymentStatus.RUNNING, completed_at=None, claimed_by=owner
        )
        [found] = recover(engine)
    assert found.identifier == done.identifier
    assert found.status is DeploymentStatus.COMPLETED and found.error is None
    assert marker_names(site.root) == done.identifier


def test_a_worker_killed_mid_deployment_leaves_it_failed_and_the_marker_unmoved(
    site: Site, tmp_path: Path
) -> None:
    site.repo.commit({"index.html": "one"})
    done = run_cli("deploy", "website", "--server", "production", "--config", site.config, "--json")
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)["identifier"]
    pid_file = tmp_path / "sleep.pid"
    site.config.write_text(
        site.config.read_text()
        + "\n[[projects.website.servers.production.ssh_commands]]\n"
        + f'command = "echo $$ > {pid_file}; exec sleep 30"\nwhen = "before"\n'
    )
    slow = queue(site, site.repo.commit({"index.html": "two"}))
    proc = worker(site, "--interval", "0.2")
    db = history(site)
    try:
        for _ in range(600):  # up to 60 s
            row = db.find(slow.identifier)
            if (row and row.status is DeploymentStatus.RUNNING) or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert row is not None and row.status is DeploymentStatus.RUNNING, proc.communicate()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        db.close()
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for _ in range(50):  # the before command runs in a session of its own
            if pid_file.exists() and pid_file.read_text().strip():
                with suppress(ProcessLookupError):
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
                break
            time.sleep(0.1)
    site.write_config()  # no slow command from here on
    again = run_cli("worker", "--once", "--config", site.config, "--json")
    assert again.returncode == 0, again.stderr
    [line] = finished_lines(again.stdout)
    assert line["deployment"] == slow.identifier and line["status"] == "failed"
    shown = run_cli(
        "deployments", "show", "website", slow.identifier, "--config", site.config, "--json"
    )
    data = json.loads(shown.stdout)
    assert data["status"] == "failed"
    assert data["error"].startswith("interrupted: its worker ")
    assert data["error"].endswith(" stopped; deploy again to converge")
    assert marker_names(site.root) == first  # the marker never lies
    assert site.files() == {"index.html": b"one"}
    latest = queue(site, site.repo.commit({"index.html": "three"}))
    again = run_cli("worker", "--once", "--config", site.config, "--json")
    assert [line["status"] for line in finished_lines(again.stdout)] == ["completed"]
    assert marker_names(site.root) == latest.identifier


def test_a_history_made_before_the_queue_gets_its_claimed_by_column(site: Site) -> None:
    revision = site.repo.commit({"index.html": "one"})
    made = queue(site, revision)
    path = site.state_dir / "history.sqlite3"
    old = sqlite3.connect(path)
    old.execute("ALTER TABLE deployments DROP COLUMN claimed_by")  # as schema version 3 had it
    old.close()
    db = History(path)
    try:
        found = db.claim_next(WORKER)
        assert found is not None and found.identifier == made.identifier
        row = db.find(made.identifier)
        assert row is not None and row.claimed_by == WORKER
    finally:
        db.close()
