"""Failures and refusals end to end: a deploy that breaks half-way, repairs on the next
run, hostile repository trees, the server lock, the server marker, and rollback after the
source history was rewritten and garbage-collected."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path

import pygit2
import pytest
from pygit2.enums import ObjectType

import deployhq_lite as dhq
from deployhq_lite.records import utcnow
from deployhq_lite.repobuilder import Executable, Symlink, git
from deployhq_lite.store import History, LockRecord
from deployhq_lite.testing.plugin import CLI, Site
from deployhq_lite.testing.plugin import run_cli as run
from deployhq_lite.testing.sshd import SSHServer

MARKER = Path(".deployhq-lite/revision")
LOCK_KEY = "website/production"


def cli_deploy(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    done = run("deploy", "website", "--server", "production", "--config", site.config, *args)
    assert "Traceback" not in done.stderr
    return done


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


# -- exact views of a revision and of a server ----------------------------------------------


def _describe(mode: int, data: bytes) -> bytes | str:
    if stat.S_ISLNK(mode):
        return "-> " + data.decode()
    perms = stat.S_IMODE(mode)
    assert perms in (0o644, 0o755), oct(perms)
    return data if perms == 0o644 else b"[x]" + data


def revision_listing(repo_path: Path, revision: str) -> dict[str, bytes | str]:
    """Every directory, file (content, exec bit) and symlink of a revision, read with pygit2."""
    repo = pygit2.Repository(str(repo_path))
    out: dict[str, bytes | str] = {}

    def walk(tree: pygit2.Tree, prefix: str) -> None:
        for item in tree:
            path = prefix + str(item.name)
            if item.filemode == 0o040000:
                out[path + "/"] = "dir"
                walk(repo[item.id], path + "/")
            elif item.filemode == 0o120000:
                out[path] = _describe(stat.S_IFLNK, repo[item.id].data)
            else:
                perms = 0o755 if item.filemode == 0o100755 else 0o644
                out[path] = _describe(stat.S_IFREG | perms, repo[item.id].data)

    walk(repo.revparse_single(revision).peel(pygit2.Tree), "")
    return out


def server_listing(root: Path) -> dict[str, bytes | str]:
    """The same view of a server root, leaving out only our marker directory."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d != ".deployhq-lite"]
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            rel = str(rel_dir / name) if rel_dir != Path(".") else name
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode):
                out[rel + "/"] = "dir"
            elif stat.S_ISLNK(info.st_mode):
                out[rel] = _describe(info.st_mode, os.readlink(path).encode())
            else:
                out[rel] = _describe(info.st_mode, path.read_bytes())
    return out


def temp_files(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        found += [os.path.join(dirpath, n) for n in dirnames + filenames if "dhq-tmp" in n]
    return found


def marker(site: Site) -> bytes:
    return (site.root / MARKER).read_bytes()


def lib_deploy(site: Site, revision: str | None = None, **kw: bool) -> dhq.Deployment:
    done = dhq.deploy("website", "production", revision=revision, config=site.config, **kw)
    assert done.status is dhq.DeploymentStatus.COMPLETED
    return done


def block(site: Site, path: str) -> Path:
    """Put a non-empty directory where a file has to land: writing it must fail."""
    obstacle = site.root / path
    obstacle.mkdir(parents=True)
    (obstacle / "someone-elses.txt").write_text("not from git")
    return obstacle


def remove(obstacle: Path) -> None:
    for child in obstacle.iterdir():
        child.unlink()
    obstacle.rmdir()


def history(site: Site) -> History:
    return History(site.state_dir / "history.sqlite3")


# -- (a) a failure in the middle of a deploy -------------------------------------------------

A = {"a.txt": "a1", "keep/k.txt": "k", "run.sh": Executable("one")}
B = {"a.txt": "a2", "b.txt": "b", "c.txt": Executable("c"), "d/e.txt": "e", "ln": Symlink("a.txt")}


def test_failure_mid_deploy_keeps_marker_and_rerun_converges(site: Site) -> None:
    site.repo.commit(A)
    lib_deploy(site)
    before = marker(site)
    b = site.repo.commit(B)
    obstacle = block(site, "b.txt")

    failed = cli_deploy(site, "--json")

    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    error = json.loads(failed.stdout)["error"]
    assert "b.txt" in error
    assert marker(site) == before
    assert temp_files(site.root) == []
    assert (site.root / "a.txt").read_text() == "a2"  # it really stopped half-way
    with closing(history(site)) as h:
        record = h.query("website", limit=1)[0]
        outcomes = {o.path: o.status.value for o in h.outcomes(record.identifier)}
    assert record.status is dhq.DeploymentStatus.FAILED
    assert record.error is not None and "b.txt" in record.error
    assert outcomes["a.txt"] == "done"
    assert outcomes["b.txt"] == "failed"
    shown = run("deployments", "show", "website", record.identifier, "--config", site.config)
    assert shown.returncode == 0
    assert "failed" in shown.stdout

    remove(obstacle)
    again = cli_deploy(site, "--json")

    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert data["status"] == "completed"
    assert server_listing(site.root) == revision_listing(site.repo.path, b)
    assert temp_files(site.root) == []
    assert json.loads(marker(site))["deployment"] == data["identifier"]


def test_redeploying_the_current_revision_undoes_a_failed_deploy(site: Site) -> None:
    a = site.repo.commit(A)
    lib_deploy(site)
    site.repo.commit(B)
    obstacle = block(site, "b.txt")
    with pytest.raises(dhq.DeploymentError):
        dhq.deploy("website", "production", config=site.config)
    remove(obstacle)
    assert server_listing(site.root) != revision_listing(site.repo.path, a)

    lib_deploy(site, a)

    assert server_listing(site.root) == revision_listing(site.repo.path, a)


def test_interrupted_deploy_is_recorded_failed_and_rerun_converges(site: Site) -> None:
    site.repo.commit(A)
    lib_deploy(site)
    before = marker(site)
    b = site.repo.commit(B)

    def interrupt(event: dhq.HookEvent) -> None:
        raise KeyboardInterrupt  # what Ctrl-C does in the middle of a deploy

    with pytest.raises(KeyboardInterrupt):
        dhq.deploy("website", "production", config=site.config, hooks={"file.uploaded": interrupt})

    assert marker(site) == before
    assert temp_files(site.root) == []
    with closing(history(site)) as h:
        record = h.query("website", limit=1)[0]
        taken, holder = h.try_lock(LockRecord(LOCK_KEY, "probe", "test", utcnow()))
        h.unlock(LOCK_KEY, "probe")
    assert record.status is dhq.DeploymentStatus.FAILED  # never left "running"
    assert taken and holder is None  # the lock was released
    lib_deploy(site)
    assert server_listing(site.root) == revision_listing(site.repo.path, b)


# -- (b) rollback after a failed deployment --------------------------------------------------


def test_rollback_after_failed_deploy_converges(site: Site) -> None:
    a = site.repo.commit({"keep.txt": "k", "b.txt": "A", "dir/x.txt": "x"})
    first = lib_deploy(site)
    site.repo.commit({"b.txt": "B", "only_b.txt": "ob"})
    lib_deploy(site)
    # C touches paths B -> A does not: keep.txt (modified) and a/new.txt (added) are
    # written before z.txt fails, so only the repairs of the failed run can undo them.
    site.repo.commit({"a/new.txt": "n", "keep.txt": "kC", "z.txt": "z", "dir/x.txt": None})
    obstacle = block(site, "z.txt")
    with pytest.raises(dhq.DeploymentError):
        dhq.deploy("website", "production", config=site.config)
    assert (site.root / "keep.txt").read_text() == "kC"
    assert not (site.root / "dir").exists()
    remove(obstacle)

    done = run("rollback", "website", first.identifier, "--config", site.config, "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "completed"
    assert server_listing(site.root) == revision_listing(site.repo.path, a)
    assert temp_files(site.root) == []


def test_rollback_preview_after_failed_deploy_lists_the_repairs(site: Site) -> None:
    site.repo.commit({"keep.txt": "k"})
    first = lib_deploy(site)
    site.repo.commit({"b.txt": "B"})
    lib_deploy(site)
    site.repo.commit({"a.txt": "written", "z.txt": "z"})
    block(site, "z.txt")
    with pytest.raises(dhq.DeploymentError):
        dhq.deploy("website", "production", config=site.config)
    preview = dhq.rollback("website", first.identifier, mode="preview", config=site.config)
    with closing(history(site)) as h:
        changes = {o.path: o.change for o in h.outcomes(preview.identifier)}
    assert changes["b.txt"] == "deleted"
    assert changes["a.txt"] == "deleted"  # left behind by the failed run


# -- (c) hostile trees -------------------------------------------------------------------------


def _raw_tree(repo: pygit2.Repository, entries: list[tuple[int, bytes, pygit2.Oid]]) -> pygit2.Oid:
    """Write a tree object byte by byte: TreeBuilder refuses the names we need here."""

    def key(entry: tuple[int, bytes, pygit2.Oid]) -> bytes:
        return entry[1] + (b"/" if entry[0] == 0o040000 else b"")

    body = b"".join(
        b"%o %s\0" % (mode, name) + oid.raw for mode, name, oid in sorted(entries, key=key)
    )
    return repo.odb.write(ObjectType.TREE, body)


def hostile_commit(site: Site, kind: str) -> str:
    """A commit on a branch named ``kind`` whose tree holds one hostile entry."""
    repo = pygit2.Repository(str(site.repo.path))
    evil = repo.create_blob(b"evil")
    good = repo.create_blob(b"<h1>fine</h1>")
    inner = _raw_tree(repo, [(0o100644, b"x", evil)])
    parent = repo.references.get("refs/heads/main")
    parents = [parent.target] if parent is not None else []
    hostile: list[tuple[int, bytes, pygit2.Oid]] = {
        "dotdot-dir": [(0o040000, b"..", inner)],
        "dotdot-file": [(0o100644, b"..", evil)],
        "dot-git": [(0o040000, b".git", inner)],
        "dot-GIT-file": [(0o100644, b".GIT", evil)],
        "nested-dot-git": [(0o040000, b"sub", _raw_tree(repo, [(0o040000, b".git", inner)]))],
        "marker": [(0o040000, b".deployhq-lite", _raw_tree(repo, [(0o100644, b"revision", evil)]))],
        # what a case-insensitive (macOS, Windows) server takes for the marker or .git
        "marker-upper": [
            (0o040000, b".DEPLOYHQ-LITE", _raw_tree(repo, [(0o100644, b"revision", evil)]))
        ],
        "marker-dot": [
            (0o040000, b".deployhq-lite.", _raw_tree(repo, [(0o100644, b"revision", evil)]))
        ],
        "marker-leader": [
            (
                0o040000,
                ".deployhq-lite\u2024".encode(),
                _raw_tree(repo, [(0o100644, b"revision", evil)]),
            )
        ],
        "marker-zwnj": [
            (
                0o040000,
                ".deployhq\u200c-lite".encode(),
                _raw_tree(repo, [(0o100644, b"revision", evil)]),
            )
        ],
        "git-stream": [(0o040000, b".git::$INDEX_ALLOCATION", inner)],
        "temp-upper": [(0o100644, b".index.html.DHQ-TMP", evil)],
        "empty-name": [(0o100644, b"", evil)],
        "nested-empty-name": [(0o040000, b"sub", _raw_tree(repo, [(0o100644, b"", evil)]))],
        "symlink-nul": [(0o120000, b"link", repo.create_blob(b"index.html\0/../../x"))],
        "symlink-empty": [(0o120000, b"link", repo.create_blob(b""))],
        "gitlink": [(0o160000, b"vendor", parents[0] if parents else evil)],
    }[kind]
    tree = _raw_tree(repo, [(0o100644, b"index.html", good), *hostile])
    # git commit-tree, not libgit2, which refuses to commit a tree it cannot parse
    on_top = [arg for parent in parents for arg in ("-p", str(parent))]
    commit = git("commit-tree", str(tree), "-m", kind, *on_top, cwd=site.repo.path).strip()
    git("update-ref", f"refs/heads/{kind}", commit, cwd=site.repo.path)
    return commit


HOSTILE = [
    "dotdot-dir",
    "dotdot-file",
    "dot-git",
    "dot-GIT-file",
    "nested-dot-git",
    "marker",
    "marker-upper",
    "marker-dot",
    "marker-leader",
    "marker-zwnj",
    "git-stream",
    "temp-upper",
    "empty-name",
    "nested-empty-name",
    "symlink-nul",
    "symlink-empty",
]


@pytest.mark.parametrize("kind", [*HOSTILE, "gitlink"])
def test_hostile_tree_on_a_fresh_server_writes_nothing(site: Site, kind: str) -> None:
    site.repo.commit({"README": "base"})
    revision = hostile_commit(site, kind)

    done = cli_deploy(site, "--revision", revision)

    assert done.returncode == 1, (done.stdout, done.stderr)
    [line] = error_lines(done)
    assert ("submodule" if kind == "gitlink" else "unsafe path") in line
    assert not site.root.exists() or list(site.root.iterdir()) == []
    assert not (site.root.parent / "x").exists()


@pytest.mark.parametrize("kind", [*HOSTILE, "gitlink"])
def test_hostile_tree_after_a_deploy_moves_nothing(site: Site, kind: str) -> None:
    good = site.repo.commit({"index.html": "v1", "docs/a.txt": "a"})
    lib_deploy(site)
    before, listing = marker(site), server_listing(site.root)
    revision = hostile_commit(site, kind)

    with pytest.raises(dhq.RepositoryError) as raised:
        dhq.deploy("website", "production", revision=revision, config=site.config)
    assert ("submodule" if kind == "gitlink" else "unsafe path") in str(raised.value)
    with pytest.raises(dhq.RepositoryError):
        dhq.preview("website", "production", revision=revision, config=site.config)

    assert marker(site) == before
    assert server_listing(site.root) == listing == revision_listing(site.repo.path, good)
    # The refused attempt does not poison later deployments.
    site.repo.commit({"index.html": "v2"})
    lib_deploy(site)
    assert (site.root / "index.html").read_text() == "v2"


@pytest.mark.parametrize("kind", ["empty-name", "nested-empty-name"])
def test_tree_entry_with_an_empty_name_is_refused_naming_the_tree(site: Site, kind: str) -> None:
    site.repo.commit({"README": "base"})
    revision = hostile_commit(site, kind)
    repo = pygit2.Repository(str(site.repo.path))
    top = repo[revision].peel(pygit2.Commit).tree_id
    tree = str(top if kind == "empty-name" else repo[top]["sub"].id)

    for args in ([], ["--preview"]):
        done = cli_deploy(site, "--revision", revision, *args)
        assert done.returncode == 1, (done.stdout, done.stderr)
        [line] = error_lines(done)
        assert "not found" not in line
        assert f"tree {tree}" in line
        assert "empty name" in line
    assert not site.root.exists() or list(site.root.iterdir()) == []


def symlink_parent_commit(site: Site) -> str:
    """A tree with two entries named ``d``: a symlink out of the root and a directory
    holding ``x``; the path ``d/x`` would be written through the symlink."""
    repo = pygit2.Repository(str(site.repo.path))
    inner = _raw_tree(repo, [(0o100644, b"x", repo.create_blob(b"evil"))])
    tree = _raw_tree(
        repo,
        [
            (0o100644, b"a.txt", repo.create_blob(b"fine")),
            (0o120000, b"d", repo.create_blob(b"../outside")),
            (0o040000, b"d", inner),
        ],
    )
    sig = pygit2.Signature("Test Author", "author@example.com", 1_700_000_000, 0)
    return str(repo.create_commit("refs/heads/twin", sig, sig, "twin", tree, []))


def test_tree_writing_through_its_own_symlink_never_leaves_the_root(site: Site) -> None:
    outside = site.root.parent / "outside"
    outside.mkdir()
    revision = symlink_parent_commit(site)

    done = cli_deploy(site, "--revision", revision)

    assert done.returncode == 1
    [line] = error_lines(done)
    assert "unsafe path" in line
    assert "symlink" in line
    assert list(outside.iterdir()) == []
    assert not site.root.exists() or list(site.root.iterdir()) == []


def test_tree_writing_through_its_own_symlink_is_refused_before_any_upload(site: Site) -> None:
    site.repo.commit({"index.html": "v1"})
    lib_deploy(site)
    before, listing = marker(site), server_listing(site.root)
    revision = symlink_parent_commit(site)
    with pytest.raises(dhq.UnsafePathError) as raised:
        dhq.deploy("website", "production", revision=revision, config=site.config)
    assert raised.value.path == "d/x"
    assert (marker(site), server_listing(site.root)) == (before, listing)


def test_failed_deploy_prints_one_line_on_stderr(site: Site) -> None:
    site.repo.commit({"README": "base"})
    revision = hostile_commit(site, "dot-git")
    done = cli_deploy(site, "--revision", revision)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == error_lines(done)


# -- (d) the server lock ---------------------------------------------------------------------


def hold_lock(site: Site, owner: str) -> None:
    with closing(history(site)) as h:
        taken, holder = h.try_lock(
            LockRecord(LOCK_KEY, "deployment-elsewhere", owner, "2026-01-01T00:00:00.000000Z")
        )
    assert taken and holder is None


def test_locked_server_refuses_then_break_lock_succeeds(site: Site) -> None:
    first = site.repo.commit({"index.html": "v1"})
    lib_deploy(site)
    before = server_listing(site.root), marker(site)
    second = site.repo.commit({"index.html": "v2", "new.txt": "n"})
    hold_lock(site, "alice@build-box:4242")

    refused = cli_deploy(site)

    assert refused.returncode == 3
    [line] = error_lines(refused)
    assert "locked by" in line
    assert "--break-lock" in line
    assert "alice@build-box:4242" in line
    assert "deployment-elsewhere" in line
    assert (server_listing(site.root), marker(site)) == before
    assert before[0] == revision_listing(site.repo.path, first)
    as_json = cli_deploy(site, "--json")
    assert as_json.returncode == 3
    assert "locked by" in json.loads(as_json.stdout)["error"]

    broken = cli_deploy(site, "--break-lock", "--json")

    assert broken.returncode == 0, broken.stderr
    assert server_listing(site.root) == revision_listing(site.repo.path, second)
    with closing(history(site)) as h:  # released after the run
        taken, holder = h.try_lock(LockRecord(LOCK_KEY, "probe", "test", utcnow()))
        h.unlock(LOCK_KEY, "probe")
    assert taken and holder is None


def test_lock_refuses_rollback_too(site: Site) -> None:
    site.repo.commit({"index.html": "v1"})
    first = lib_deploy(site)
    site.repo.commit({"index.html": "v2"})
    lib_deploy(site)
    hold_lock(site, "bob@ci:1")
    with pytest.raises(dhq.DeploymentLockedError):
        dhq.rollback("website", first.identifier, config=site.config)
    assert (site.root / "index.html").read_text() == "v2"
    back = dhq.rollback("website", first.identifier, config=site.config, break_lock=True)
    assert back.status is dhq.DeploymentStatus.COMPLETED
    assert (site.root / "index.html").read_text() == "v1"


def test_lock_of_a_dead_local_process_is_called_stale(site: Site) -> None:
    import getpass
    import socket

    site.repo.commit({"index.html": "v1"})
    pid = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    hold_lock(site, f"{getpass.getuser()}@{socket.gethostname()}:{pid}")
    with pytest.raises(dhq.DeploymentLockedError) as raised:
        dhq.deploy("website", "production", config=site.config)
    assert "stale" in str(raised.value)
    assert "--break-lock" in str(raised.value)


def hanging_ssh(name: str, sshd: SSHServer, port: int, root: Path) -> str:
    """A server table whose SSH connect hangs: ``port`` listens and never answers."""
    return (
        f"\n[projects.website.servers.{name}]\n"
        f'name = "{name}"\nprotocol_type = "ssh"\nroot = "{root}"\nhost = "127.0.0.1"\n'
        f'port = {port}\nuser = "{sshd.user}"\nkey_path = "{sshd.user_key}"\n'
        f'known_hosts_path = "{sshd.known_hosts}"\nuse_agent = false\n'
        "connect_timeout = 600\n"
    )


def hanging_production(site: Site, sshd: SSHServer) -> None:
    """The site's server ``production`` over SSH to a port that will never answer."""
    text = site.write_config().read_text()
    head = text[: text.index("[projects.website.servers.production]")]
    hanging = hanging_ssh("production", sshd, 0, site.root)
    site.config.write_text(head + hanging.replace("port = 0", "port = HANGING_PORT"))


def kill_while_connecting(site: Site, *args: str) -> None:
    """Run ``deploy`` in a child process and SIGKILL it once it connects to a socket that
    never answers: after it took the server's lock, before its deployment was running."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        site.config.write_text(site.config.read_text().replace("HANGING_PORT", str(port)))
        child = subprocess.Popen(
            [str(CLI), "deploy", "website", *args, "--config", str(site.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            listener.settimeout(120)
            connection, _ = listener.accept()  # the child holds the lock now
            with connection:
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL


def test_break_lock_finishes_a_deployment_killed_while_pending(site: Site, sshd: SSHServer) -> None:
    revision = site.repo.commit({"index.html": "v1"})
    hanging_production(site, sshd)
    kill_while_connecting(site, "--server", "production")
    with closing(history(site)) as h:
        [killed] = h.query("website", "production")
    assert killed.status is dhq.DeploymentStatus.PENDING  # what the kill left
    site.write_config()  # the server answers again

    refused = cli_deploy(site)
    assert refused.returncode == 3
    assert "stale" in error_lines(refused)[0]

    done = cli_deploy(site, "--break-lock", "--json")

    assert done.returncode == 0, done.stderr
    with closing(history(site)) as h:
        old = h.find(killed.identifier)
    assert old is not None
    assert old.status is dhq.DeploymentStatus.FAILED
    assert old.completed_at is not None
    assert old.error is not None
    assert "interrupted: its lock was broken by deployment" in old.error
    assert json.loads(done.stdout)["identifier"] in old.error
    assert server_listing(site.root) == revision_listing(site.repo.path, revision)


def test_worker_finishes_a_deployment_killed_while_pending(site: Site, sshd: SSHServer) -> None:
    site.repo.commit({"index.html": "v1"})
    hanging_production(site, sshd)
    kill_while_connecting(site, "--server", "production")
    with closing(history(site)) as h:
        [killed] = h.query("website", "production")
    assert killed.status is dhq.DeploymentStatus.PENDING

    done = run("worker", "--once", "--config", site.config)

    assert done.returncode == 0, done.stderr
    with closing(history(site)) as h:
        old = h.find(killed.identifier)
        taken, holder = h.try_lock(LockRecord(LOCK_KEY, "probe", "test", utcnow()))
    assert old is not None and old.status is dhq.DeploymentStatus.FAILED
    assert old.error is not None and old.error.startswith("interrupted: its ")
    assert taken and holder is None  # its lock was freed


def test_break_lock_finishes_a_group_deployment_killed_while_pending(
    site: Site, sshd: SSHServer, tmp_path: Path
) -> None:
    site.repo.commit({"index.html": "v1"})
    group = (
        "\n[projects.website.server_groups.web]\n"
        'name = "Web"\nservers = ["production", "second"]\ntransfer_order = "sequential"\n'
    )
    hanging = hanging_ssh("second", sshd, 0, tmp_path / "www2")
    site.write_config(hanging.replace("port = 0", "port = HANGING_PORT") + group)
    kill_while_connecting(site, "--server", "web")
    with closing(history(site)) as h:
        [parent] = h.query("website", "web")
        members = {m.server: m for m in h.members(parent.identifier)}
    assert parent.status is dhq.DeploymentStatus.RUNNING
    assert members["production"].status is dhq.DeploymentStatus.COMPLETED
    assert members["second"].status is dhq.DeploymentStatus.PENDING
    local = f'\n[projects.website.servers.second]\nroot = "{tmp_path / "www2"}"\n'
    site.write_config(local + 'protocol_type = "local"\nname = "second"\n' + group)

    done = run("deploy", "website", "--server", "second", "--break-lock", "--config", site.config)

    assert done.returncode == 0, done.stderr
    with closing(history(site)) as h:
        parent_now = h.find(parent.identifier)
        second_now = h.find(members["second"].identifier)
        first_now = h.find(members["production"].identifier)
    for finished in (parent_now, second_now):
        assert finished is not None
        assert finished.status is dhq.DeploymentStatus.FAILED
        assert finished.error is not None
        assert "interrupted: its lock was broken by deployment" in finished.error
    assert first_now is not None and first_now.status is dhq.DeploymentStatus.COMPLETED


def deployment_count(site: Site) -> int:
    with closing(history(site)) as h:
        return h.count("website") + h.count("website", "production")


def test_a_deploy_refused_by_the_lock_records_no_deployment(site: Site, tmp_path: Path) -> None:
    site.repo.commit({"index.html": "v1"})
    first = lib_deploy(site)
    site.repo.commit({"index.html": "v2"})
    lib_deploy(site)
    site.write_config(
        f'\n[projects.website.servers.second]\nname = "Second"\nprotocol_type = "local"\n'
        f'root = "{tmp_path / "www2"}"\n'
        '\n[projects.website.server_groups.web]\nservers = ["second", "production"]\n'
    )
    before = deployment_count(site)
    hold_lock(site, "alice@build-box:4242")

    refusals = [
        cli_deploy(site),
        cli_deploy(site, "--json"),
        run("deploy", "website", "--server", "web", "--config", site.config),
        run("rollback", "website", first.identifier, "--config", site.config),
    ]

    for refused in refusals:
        assert refused.returncode == 3, refused.stderr
        assert "locked by deployment deployment-elsewhere" in refused.stdout + refused.stderr
        assert "Traceback" not in refused.stderr
    assert deployment_count(site) == before
    assert not (tmp_path / "www2").exists()  # the group's other server was not touched


def test_a_queued_deployment_waits_for_the_lock_and_is_recorded(site: Site) -> None:
    from deployhq_lite.engine import Engine

    revision = site.repo.commit({"index.html": "v1"})
    hold_lock(site, "alice@build-box:4242")
    with Engine(site.config) as engine:
        queued = engine.queue_deployment("website", "production")

    held_back = run("worker", "--once", "--config", site.config)

    assert held_back.returncode == 0, held_back.stderr
    with closing(history(site)) as h:
        still = h.find(queued.identifier)
        h.unlock(LOCK_KEY, "deployment-elsewhere")
    assert still is not None and still.status is dhq.DeploymentStatus.PENDING
    assert run("worker", "--once", "--config", site.config).returncode == 0
    with closing(history(site)) as h:
        done = h.find(queued.identifier)
    assert done is not None and done.status is dhq.DeploymentStatus.COMPLETED
    assert server_listing(site.root) == revision_listing(site.repo.path, revision)


# -- (e) the server marker -------------------------------------------------------------------


def tamper_marker(site: Site, how: str) -> bytes | None:
    path = site.root / MARKER
    if how == "other-deployment":
        body = json.loads(path.read_text())
        body["deployment"] = str(uuid.uuid4())
        path.write_text(json.dumps(body))
    elif how == "removed":
        path.unlink()
    else:
        path.write_bytes(b"\x00not json")
    return path.read_bytes() if path.exists() else None


def test_marker_mismatch_refuses_then_override_succeeds(site: Site) -> None:
    site.repo.commit({"index.html": "v1", "old.txt": "o"})
    lib_deploy(site)
    tampered = tamper_marker(site, "other-deployment")
    listing = server_listing(site.root)
    second = site.repo.commit({"index.html": "v2", "old.txt": None})

    refused = cli_deploy(site)

    assert refused.returncode == 3, refused.stderr
    [line] = error_lines(refused)
    assert "--override-marker" in line
    assert server_listing(site.root) == listing
    assert marker(site) == tampered

    done = cli_deploy(site, "--override-marker", "--json")

    assert done.returncode == 0, done.stderr
    assert server_listing(site.root) == revision_listing(site.repo.path, second)
    assert json.loads(marker(site))["deployment"] == json.loads(done.stdout)["identifier"]


@pytest.mark.parametrize("how", ["removed", "garbage"])
def test_missing_or_garbled_marker_is_refused_too(site: Site, how: str) -> None:
    site.repo.commit({"index.html": "v1"})
    lib_deploy(site)
    tampered = tamper_marker(site, how)
    second = site.repo.commit({"index.html": "v2"})
    with pytest.raises(dhq.MarkerMismatchError) as raised:
        dhq.deploy("website", "production", config=site.config)
    assert "--override-marker" in str(raised.value)
    assert (site.root / "index.html").read_text() == "v1"
    path = site.root / MARKER
    assert (path.read_bytes() if path.exists() else None) == tampered
    lib_deploy(site, override_marker=True)
    assert server_listing(site.root) == revision_listing(site.repo.path, second)


def test_marker_from_a_history_we_do_not_know_is_refused(site: Site, tmp_path: Path) -> None:
    site.repo.commit({"index.html": "v1"})
    lib_deploy(site)
    theirs = marker(site)
    site.state_dir = tmp_path / "fresh-state"
    site.write_config()

    refused = cli_deploy(site, "--json")

    assert refused.returncode == 3
    error = json.loads(refused.stdout)["error"]
    assert "--override-marker" in error
    assert json.loads(theirs)["deployment"] in error
    assert marker(site) == theirs
    assert cli_deploy(site, "--override-marker").returncode == 0
    assert marker(site) != theirs


def sftp_site(site: Site, sshd: SSHServer) -> None:
    """Point the site's server at the real sshd over SFTP (the same root on this host)."""
    site.write_ssh_config(sshd)


WIPED = {"index.html": "v1", "css/site.css": "body{}", "bin/run": Executable("#!/bin/sh\n")}


@pytest.mark.parametrize("over", ["local", "sftp"])
def test_override_on_a_wiped_root_writes_every_file(
    site: Site, over: str, request: pytest.FixtureRequest
) -> None:
    if over == "sftp":
        sftp_site(site, request.getfixturevalue("sshd"))
    site.repo.commit(WIPED)
    lib_deploy(site)
    second = site.repo.commit({**WIPED, "index.html": "v2", "new.txt": "n"})
    shutil.rmtree(site.root)

    refused = cli_deploy(site)

    assert refused.returncode == 3, refused.stderr
    [line] = error_lines(refused)
    assert "has no deployhq-lite marker" in line
    assert (
        f"re-run with --override-marker to write every file of revision {second[:12]} "
        "(the server is treated as empty)"
    ) in line
    assert not site.root.exists() or server_listing(site.root) == {}

    done = cli_deploy(site, "--override-marker", "--json")

    assert done.returncode == 0, done.stderr
    assert server_listing(site.root) == revision_listing(site.repo.path, second)
    deployed = json.loads(done.stdout)
    assert deployed["status"] == "completed"
    assert deployed["start_revision"] is None
    assert json.loads(marker(site))["deployment"] == deployed["identifier"]
    with closing(history(site)) as h:
        outcomes = h.outcomes(deployed["identifier"])
    assert sorted(o.path for o in outcomes) == ["bin/run", "css/site.css", "index.html", "new.txt"]
    assert {o.change for o in outcomes} == {"added"}


def test_override_from_a_marker_naming_a_known_revision_applies_only_the_diff(
    site: Site,
) -> None:
    first_revision = site.repo.commit({"index.html": "v1", "keep.txt": "k", "old.txt": "o"})
    first = lib_deploy(site)
    v1_marker = marker(site)
    site.repo.commit({"index.html": "v2", "keep.txt": "k2", "old.txt": "o"})
    lib_deploy(site)
    # someone put v1 back (keeping a local edit of keep.txt, which v1 -> v3 does not change)
    (site.root / "index.html").write_text("v1")
    (site.root / "keep.txt").write_text("edited here")
    (site.root / MARKER).write_bytes(v1_marker)
    third = site.repo.commit({"index.html": "v3", "keep.txt": "k", "old.txt": None, "new.txt": "n"})

    refused = cli_deploy(site)

    assert refused.returncode == 3, refused.stderr
    [line] = error_lines(refused)
    assert (
        f"re-run with --override-marker to deploy the changes from revision "
        f"{first_revision[:12]} to revision {third[:12]}"
    ) in line

    done = cli_deploy(site, "--override-marker", "--json")

    assert done.returncode == 0, done.stderr
    deployed = json.loads(done.stdout)
    assert deployed["start_revision"] == first_revision
    assert site.files() == {"index.html": b"v3", "keep.txt": b"edited here", "new.txt": b"n"}
    with closing(history(site)) as h:
        changes = {(o.path, o.change) for o in h.outcomes(deployed["identifier"])}
        recorded = h.find(deployed["identifier"])
    assert changes == {("index.html", "modified"), ("new.txt", "added"), ("old.txt", "deleted")}
    assert recorded is not None and recorded.start_deployment == first.identifier


def test_override_from_a_marker_naming_an_unknown_revision_deletes_nothing(site: Site) -> None:
    site.repo.commit({"index.html": "v1"})
    lib_deploy(site)
    body = json.loads(marker(site))
    body.update(revision="f" * 40, deployment=str(uuid.uuid4()))
    (site.root / MARKER).write_text(json.dumps(body))
    (site.root / "theirs.txt").write_text("not ours")
    second = site.repo.commit({"index.html": "v2", "more.txt": "m"})

    refused = cli_deploy(site)

    assert refused.returncode == 3, refused.stderr
    [line] = error_lines(refused)
    assert f"to write every file of revision {second[:12]}" in line
    assert "nothing on it is deleted" in line

    done = cli_deploy(site, "--override-marker", "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["start_revision"] is None
    assert site.files() == {"index.html": b"v2", "more.txt": b"m", "theirs.txt": b"not ours"}


# -- (f) rollback after the source history was rewritten and collected ----------------------

OLD = {
    "index.html": "<h1>first</h1>",
    "bin/tool": Executable("#!/bin/sh\necho first\n"),
    "assets/logo.svg": "<svg>first</svg>",
    "link": Symlink("index.html"),
    "deep/a/b/c.txt": "deep",
}


def commit_with_git_cli(site: Site, files: Mapping[str, str | Executable | Symlink | None]) -> str:
    """Commit through a work tree with ``git add``/``git commit``: loose objects."""
    work = site.repo.path
    for path, content in files.items():
        target = work / path
        if content is None:
            target.unlink()
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Symlink):
            os.symlink(content.target, target)
        elif isinstance(content, Executable):
            target.write_text(str(content.content))
            target.chmod(0o755)
        else:
            target.write_text(content)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "change", cwd=work)
    return git("rev-parse", "HEAD", cwd=work).strip()


def rewrite_and_collect(site: Site, via: str) -> str:
    """Replace the branch with an unrelated history, then expire reflogs and gc --prune=now."""
    work = site.repo.path
    if via == "fast-import":
        git("update-ref", "-d", "refs/heads/main", cwd=work)
        new = site.repo.commit({"unrelated.txt": "new world"})
    else:
        git("checkout", "-q", "--orphan", "rewritten", cwd=work)
        git("rm", "-rq", "--cached", ".", cwd=work)
        git("clean", "-fdxq", cwd=work)
        new = commit_with_git_cli(site, {"unrelated.txt": "new world"})
        git("branch", "-M", "rewritten", "main", cwd=work)
    git("reflog", "expire", "--expire=now", "--all", cwd=work)
    git("gc", "-q", "--prune=now", cwd=work)
    return new


@pytest.mark.parametrize("via", ["fast-import", "git-commit"])
def test_rollback_after_force_push_and_gc(site: Site, via: str) -> None:
    commit = site.repo.commit if via == "fast-import" else lambda f: commit_with_git_cli(site, f)
    old = commit(OLD)
    expected_old = revision_listing(site.repo.path, old)
    first = lib_deploy(site)
    mid = commit({"index.html": "<h1>second</h1>", "assets/logo.svg": None, "added.txt": "+"})
    expected_mid = revision_listing(site.repo.path, mid)
    second = lib_deploy(site)

    new = rewrite_and_collect(site, via)

    for gone in (old, mid):
        with pytest.raises(RuntimeError):
            git("cat-file", "-e", gone, cwd=site.repo.path)
    with pytest.raises(RuntimeError):  # the old blobs are gone too
        git("cat-file", "-e", str(pygit2.hash(b"<svg>first</svg>")), cwd=site.repo.path)

    done = run("rollback", "website", first.identifier, "--config", site.config, "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["end_revision"] == old
    assert server_listing(site.root) == expected_old
    # The rewritten branch deploys, and the server still rolls back to the middle state.
    assert lib_deploy(site).end_revision == new
    assert server_listing(site.root) == revision_listing(site.repo.path, new)
    dhq.rollback("website", second.identifier, config=site.config)
    assert server_listing(site.root) == expected_mid


def crafted_under_deployed_symlink(site: Site) -> str:
    """Deploy a legitimate symlink ``d`` out of the root, then craft a revision that keeps
    it and adds a tree ``d`` holding ``x`` beside it: the symlink is not in the changeset."""
    site.repo.commit({"a.txt": "a1", "d": Symlink("../outside")})
    lib_deploy(site)
    repo = pygit2.Repository(str(site.repo.path))
    head = repo.references["refs/heads/main"].target
    link = repo[head].peel(pygit2.Tree)["d"].id
    inner = _raw_tree(repo, [(0o100644, b"x", repo.create_blob(b"evil"))])
    tree = _raw_tree(
        repo,
        [
            (0o100644, b"a.txt", repo.create_blob(b"a2")),
            (0o120000, b"d", link),
            (0o040000, b"d", inner),
        ],
    )
    sig = pygit2.Signature("Test Author", "author@example.com", 1_700_000_000, 0)
    return str(repo.create_commit("refs/heads/main", sig, sig, "twin", tree, [head]))


def test_tree_writing_under_an_already_deployed_symlink_never_leaves_the_root(
    site: Site,
) -> None:
    outside = site.root.parent / "outside"
    outside.mkdir()
    crafted = crafted_under_deployed_symlink(site)
    before = marker(site)

    with pytest.raises(dhq.DeployHQLiteError):
        dhq.deploy("website", "production", revision=crafted, config=site.config)

    assert list(outside.iterdir()) == []
    assert marker(site) == before


def test_tree_writing_under_an_already_deployed_symlink_is_refused_before_any_upload(
    site: Site,
) -> None:
    crafted = crafted_under_deployed_symlink(site)
    with pytest.raises(dhq.DeployHQLiteError):
        dhq.deploy("website", "production", revision=crafted, config=site.config)
    assert (site.root / "a.txt").read_text() == "a1"  # nothing uploaded


def test_a_deployment_cut_off_after_its_marker_is_recovered_as_completed(site: Site) -> None:
    """The marker is the commit point: if the process died between writing it and
    recording completion, the next run records the completion instead of refusing."""
    from deployhq_lite.records import DeploymentStatus
    from deployhq_lite.store import History

    site.repo.commit({"a.txt": "one"})
    first = dhq.deploy("website", "production", config=site.config)
    site.repo.commit({"c.txt": "three"})
    second = dhq.deploy("website", "production", config=site.config)
    assert second.end_revision != first.end_revision
    with closing(History(site.state_dir / "history.sqlite3")) as h:
        h.update(second, status=DeploymentStatus.RUNNING, completed_at=None)
    site.repo.commit({"b.txt": "two"})
    third = dhq.deploy("website", "production", config=site.config)
    assert third.start_revision == second.end_revision
    with closing(History(site.state_dir / "history.sqlite3")) as h:
        recovered = h.find(second.identifier)
    assert recovered is not None and recovered.status is DeploymentStatus.COMPLETED
    assert site.files() == {"a.txt": b"one", "b.txt": b"two", "c.txt": b"three"}


# -- (g) one clear line for a root that is a file and a branch with no commits ---------------


@pytest.mark.parametrize("where", ["root", "parent"])
def test_a_root_that_is_a_file_is_one_line_and_nothing_is_written(
    site: Site, tmp_path: Path, where: str
) -> None:
    site.repo.commit({"index.html": "v1"})
    afile = tmp_path / "www-file"
    afile.write_bytes(b"someone's file")
    site.root = afile if where == "root" else afile / "site"
    site.write_config()

    done = cli_deploy(site)

    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: server website/production: root {site.root} is not a directory")
    if where == "parent":
        assert line.endswith(f"(cannot be made: {afile} is a file)")
    assert afile.read_bytes() == b"someone's file"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("www")) == ["www-file"]


@pytest.mark.parametrize("repository", ["empty", "other-branch"])
def test_a_branch_with_no_commits_is_one_line(site: Site, repository: str) -> None:
    if repository == "empty":
        repo_path = site.repo.path.with_name("empty-repo")
        git("init", "-q", "-b", "main", str(repo_path), cwd=repo_path.parent)
    else:  # commits, but on another branch only
        site.repo.commit({"index.html": "v1"})
        git("branch", "-m", "main", "trunk", cwd=site.repo.path)
        repo_path = site.repo.path
    site.config.write_text(site.config.read_text().replace(f'"{site.repo.path}"', f'"{repo_path}"'))

    done = cli_deploy(site)

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: repository {repo_path} has no commits on branch 'main'"
    ]
    assert not site.root.exists()
    with closing(history(site)) as h:
        assert h.count("website") == 0
