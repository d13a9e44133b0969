"""``deployhq-lite gc``: the snapshot store repacked from its own refs, what no ref
reaches dropped, every deployment's snapshot kept (a rollback works after the source
was rewritten and collected); the store lock and the worker's size threshold. Real git
repositories, real processes."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import deployhq_lite as dhq
from deployhq_lite.config import build_settings
from deployhq_lite.engine import Engine
from deployhq_lite.errors import ConfigError
from deployhq_lite.locking import owner_label
from deployhq_lite.records import DeploymentStatus, utcnow
from deployhq_lite.repobuilder import GIT_ENV, git
from deployhq_lite.store import History, LockRecord
from deployhq_lite.store.gc import LOOSE_GRACE, measure, store_lock
from deployhq_lite.testing.plugin import CLI, Site, run_cli

MiB = 1024 * 1024


def store(site: Site) -> Path:
    return site.state_dir / "snapshots.git"


def noise(size: int) -> bytes:
    """Bytes that do not compress (so sizes mean something)."""
    return os.urandom(size)


def deploy(site: Site) -> str:
    done = dhq.deploy("website", "production", config=site.config)
    assert done.status is DeploymentStatus.COMPLETED
    return done.identifier


def rewrite_source(site: Site, files: dict[str, str | bytes]) -> None:
    """Force-push a branch with no history in common, and collect the source: the old
    commits and what only they held are gone from it."""
    git("update-ref", "-d", f"refs/heads/{site.repo.branch}", cwd=site.repo.path)
    site.repo.commit(files)
    git("reflog", "expire", "--expire=now", "--all", cwd=site.repo.path)
    git("gc", "--prune=now", "-q", cwd=site.repo.path)


def repack_source(site: Site) -> None:
    """What a busy source does now and then: a new pack of everything."""
    git("repack", "-a", "-d", "-q", cwd=site.repo.path)


def run_json(site: Site, *args: str, code: int = 0, env: dict[str, str] | None = None) -> Any:
    done = run_cli(*args, "--config", site.config, "--json", env=env)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout)


def store_git(
    site: Site, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", "--git-dir", str(store(site)), *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, **GIT_ENV},
        check=False,
    )


def objects_listing(site: Site) -> dict[str, tuple[int, int]]:
    """Every file of the store's objects directory: path -> (inode, size)."""
    out = {}
    for path in (store(site) / "objects").rglob("*"):
        if path.is_file():
            out[str(path.relative_to(store(site)))] = (path.stat().st_ino, path.stat().st_size)
    return out


def three_deployments(site: Site) -> list[tuple[str, dict[str, bytes | str]]]:
    """Three deployments of 1 MiB more each, the source repacked after every commit (its
    packs hard-linked into the store each time); each with what the server held."""
    done = []
    for n in range(3):
        site.repo.commit({f"data/{n}.bin": noise(MiB), "index.html": f"<h1>{n}</h1>"})
        repack_source(site)
        done.append((deploy(site), site.files()))
    return done


def test_gc_keeps_every_snapshot_when_the_source_is_rewritten_and_collected(site: Site) -> None:
    deployed = three_deployments(site)
    with Engine(site.config) as engine:
        first = engine.get_deployment("website", deployed[0][0])
    linked = [p for p in (store(site) / "objects" / "pack").iterdir() if p.stat().st_nlink > 1]
    assert linked  # the store shares the source's newest pack

    report = run_json(site, "gc")
    assert report["dry_run"] is False
    assert report["refs"] == 3
    assert report["shared_before"] > 0
    # 1 + 2 + 3 MiB of packs (every source repack linked again), then the 3 MiB kept
    assert report["bytes_before"] > 5 * MiB
    assert 3 * MiB < report["bytes_after"] < 3.2 * MiB
    assert report["reclaimed"] == report["bytes_before"] - report["bytes_after"]
    assert report["bytes_after"] == measure(store(site)).total
    packs = list((store(site) / "objects" / "pack").iterdir())
    assert len([p for p in packs if p.suffix == ".pack"]) == 1
    assert all(p.stat().st_nlink == 1 for p in packs)  # owned by the store alone
    # the source's commits were only ever in its packs: no ref of the store reaches them
    assert store_git(site, "cat-file", "-e", first.end_revision).returncode != 0

    # force-push a rewritten branch and collect the source: the old history is gone there
    rewrite_source(site, {"index.html": "<h1>rewritten</h1>"})
    with pytest.raises(RuntimeError):
        git("cat-file", "-e", first.end_revision, cwd=site.repo.path)
    deploy(site)
    again = run_json(site, "gc")
    assert again["refs"] == 4

    rollback = run_json(site, "rollback", "website", deployed[0][0], "--no-run-build-commands")
    assert rollback["status"] == "completed"
    assert site.files() == deployed[0][1]  # byte for byte, with modes


def test_gc_prints_one_line_and_a_second_gc_is_a_no_op(site: Site) -> None:
    three_deployments(site)
    done = run_cli("gc", "--config", site.config)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    before = measure(store(site)).total
    assert f"-> {before} bytes" in lines[0]
    assert "reclaimed" in lines[0] and "3 refs kept" in lines[0]

    listing = objects_listing(site)
    second = run_json(site, "gc")
    after = measure(store(site)).total
    assert second["bytes_before"] == second["bytes_after"] == before == after
    assert second["reclaimed"] == 0
    assert objects_listing(site) == listing  # not even rewritten


def test_dry_run_changes_nothing_and_says_what_gc_would_reclaim(site: Site) -> None:
    three_deployments(site)
    listing = objects_listing(site)
    done = run_cli("gc", "--dry-run", "--config", site.config)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1 and "dry run, nothing changed" in done.stdout
    estimate = run_json(site, "gc", "--dry-run")
    assert estimate["dry_run"] is True
    assert objects_listing(site) == listing
    real = run_json(site, "gc")
    assert estimate["bytes_before"] == real["bytes_before"]
    assert abs(estimate["bytes_after"] - real["bytes_after"]) < real["bytes_after"] / 100
    assert run_json(site, "gc", "--dry-run")["reclaimed"] == 0


def test_gc_prunes_loose_objects_no_ref_reaches_once_they_are_old(site: Site) -> None:
    site.repo.commit({"a.txt": "a"})
    deploy(site)
    oids = {}
    for name in ("old", "young"):
        written = store_git(site, "hash-object", "-w", "--stdin", stdin=noise(100_000))
        oids[name] = written.stdout.decode().strip()
    old = store(site) / "objects" / oids["old"][:2] / oids["old"][2:]
    an_hour_more = time.time() - LOOSE_GRACE - 60
    os.utime(old, (an_hour_more, an_hour_more))
    dry = run_json(site, "gc", "--dry-run")
    assert dry["reclaimed"] > 0 and old.exists()

    run_json(site, "gc")
    assert store_git(site, "cat-file", "-e", oids["old"]).returncode != 0
    # written moments ago, maybe by a deployment being created right now: kept
    assert store_git(site, "cat-file", "-e", oids["young"]).returncode == 0
    assert store_git(site, "fsck", "--connectivity-only").returncode == 0


def test_gc_makes_the_store_independent_of_an_alternates_file(site: Site) -> None:
    site.repo.commit({"a.txt": noise(1000)})
    deploy(site)
    source_objects = site.repo.path / ".git" / "objects"
    alternates = store(site) / "objects" / "info" / "alternates"
    alternates.parent.mkdir(exist_ok=True)
    alternates.write_text(f"{source_objects}\n")
    head = site.repo.head()
    assert head is not None
    assert store_git(site, "update-ref", "refs/borrowed", head).returncode == 0  # source only

    run_json(site, "gc")
    assert not alternates.exists()
    rewrite_source(site, {"b.txt": "b"})
    assert store_git(site, "cat-file", "-e", head).returncode == 0
    assert store_git(site, "fsck", "--connectivity-only").returncode == 0


def test_gc_refuses_while_a_deployment_is_queued(site: Site) -> None:
    site.repo.commit({"a.txt": "a"})
    deploy(site)
    site.repo.commit({"a.txt": "b"})
    with Engine(site.config) as engine:
        queued = engine.queue_deployment("website", "production")
    listing = objects_listing(site)
    error = run_json(site, "gc", code=3)["error"]
    assert error == (
        "cannot gc the snapshot store while deployments are queued or running "
        f"(1: {queued.identifier}); try again when they have finished"
    )
    done = run_cli("gc", "--config", site.config)
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr == f"error: {error}\n"
    assert objects_listing(site) == listing
    history = History(site.state_dir / "history.sqlite3")
    history.update(queued, status=DeploymentStatus.FAILED)
    history.close()
    assert run_json(site, "gc")["refs"] == 1


def test_gc_refuses_while_a_deployment_keeps_its_snapshot(site: Site) -> None:
    site.repo.commit({"a.txt": "a"})
    deploy(site)
    with store_lock(store(site), exclusive=False):  # as SnapshotStore.keep holds it
        error = run_json(site, "gc", code=3)["error"]
    assert error.startswith(f"snapshot store {store(site)} is in use")
    run_json(site, "gc")


def test_keep_waits_for_a_running_gc(site: Site) -> None:
    """A deployment never copies objects into the store while a gc prunes it."""
    site.repo.commit({"a.txt": "a"})
    deploy(site)  # makes the store and the history
    site.repo.commit({"a.txt": "b"})
    argv = [str(CLI), "deploy", "website", "-s", "production", "--config", str(site.config)]
    with store_lock(store(site), exclusive=True):  # as a gc holds it
        proc = subprocess.Popen(
            [*argv, "--log-format", "json"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        events = []
        for line in proc.stderr:  # ends at exit if keep() did not wait
            events.append(json.loads(line)["event"])
            if events[-1] == "snapshots.waiting":
                break
        still_running = proc.poll() is None
        files, refs = site.files(), store_git(site, "for-each-ref").stdout.splitlines()
    proc.communicate(timeout=60)
    assert events[-1] == "snapshots.waiting" and "deployment.started" in events
    assert still_running and files["a.txt"] == b"a" and len(refs) == 1
    assert proc.returncode == 0
    assert site.files()["a.txt"] == b"b"
    assert len(store_git(site, "for-each-ref").stdout.splitlines()) == 2


def worker_collects(site: Site, env: dict[str, str] | None = None) -> bool:
    """Run ``worker --once`` with info logs; whether it collected the store."""
    done = run_cli("worker", "--once", "--log-format", "json", "--config", site.config, env=env)
    assert done.returncode == 0, done.stderr
    events = [
        json.loads(line)["event"] for line in done.stderr.splitlines() if line.startswith("{")
    ]
    assert "worker.stopped" in events
    return "snapshots.collected" in events


def test_the_worker_collects_the_store_past_its_size_and_not_below(site: Site) -> None:
    three_deployments(site)
    owned = measure(store(site)).owned  # the source's newest pack is shared: not counted
    assert owned > 2 * MiB
    listing = objects_listing(site)

    config = site.config.read_text()
    site.config.write_text(f"snapshot_store_gc_size = {owned + 1}\n" + config)
    assert not worker_collects(site)
    assert objects_listing(site) == listing

    site.config.write_text(f"snapshot_store_gc_size = {owned}\n" + config)
    assert worker_collects(site)
    assert len(list((store(site) / "objects" / "pack").glob("*.pack"))) == 1
    # next time: once it has grown that much again since
    assert not worker_collects(site)
    small = {"DEPLOYHQ_LITE_SNAPSHOT_STORE_GC_SIZE": "1 KiB"}
    assert not worker_collects(site, env=small)
    site.repo.commit({"data/more.bin": noise(MiB)})
    deploy(site)
    repack_source(site)  # the packs that deploy linked are now the store's alone
    assert worker_collects(site, env=small)


def test_the_worker_does_not_collect_while_a_deployment_waits(site: Site) -> None:
    three_deployments(site)
    site.repo.commit({"index.html": "next"})
    with Engine(site.config) as engine:  # queued behind a server lock a live process holds
        waiting = engine.queue_deployment("website", "production")
        lock = LockRecord("website/production", "elsewhere", owner_label(), utcnow())
        assert engine.history.try_lock(lock)[0]
    listing = objects_listing(site)
    site.config.write_text("snapshot_store_gc_size = 1\n" + site.config.read_text())
    done = run_cli("worker", "--once", "--log-format", "json", "--config", site.config)
    assert done.returncode == 0, done.stderr
    assert f"deployments are queued or running (1: {waiting.identifier})" in done.stderr
    assert "snapshots.collection_deferred" in done.stderr
    assert objects_listing(site) == listing


@pytest.mark.parametrize(
    ("value", "size"),
    [("2 GiB", 2 * 1024**3), ("500 MB", 500 * 10**6), ("1.5KiB", 1536), (4096, 4096), ("0", 0)],
)
def test_snapshot_store_gc_size_takes_bytes_or_a_unit(value: object, size: int) -> None:
    assert build_settings({"snapshot_store_gc_size": value}).snapshot_store_gc_size == size


def test_snapshot_store_gc_size_default_and_refusals() -> None:
    assert build_settings({}).snapshot_store_gc_size == 2 * 1024**3
    with pytest.raises(ConfigError, match="'2 GB of disk' is not a size"):
        build_settings({"snapshot_store_gc_size": "2 GB of disk"})
    with pytest.raises(ConfigError, match="greater than or equal to 0"):
        build_settings({"snapshot_store_gc_size": -1})
