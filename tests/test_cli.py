"""End-to-end tests of the ``deployhq-lite`` console script: deploy, preview, rollback,
``deployments list/show/preview``, the DeployHQ JSON shapes, the four rollback refusals
and the exit codes. Every command runs as a real process from the virtualenv."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import deployhq_lite as dhq
from deployhq_lite.records import DeploymentStatus
from deployhq_lite.repobuilder import Executable, Symlink, git
from deployhq_lite.store import History
from deployhq_lite.testing.plugin import CLI, Site
from deployhq_lite.testing.plugin import run_cli as run

DEPLOYHQ_KEYS = {
    "identifier",
    "status",
    "start_revision",
    "end_revision",
    "branch",
    "configuration",
    "timestamps",
    "servers",
    "project",
}
# Documented extras of Deployment.to_json() ("DeployHQ's response shape plus ...").
EXTRA_KEYS = {"rollback_of", "error"}
API_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
MARKER = Path(".deployhq-lite/revision")

ROLLBACK_LATEST = "Cannot rollback the latest deployment"
ROLLBACK_IMPOSSIBLE = "Deployment cannot be rolled back"
ROLLBACK_NO_SERVER = "Deployment has no parent server"
ROLLBACK_CONFIG_FILES = "Cannot rollback a config files deployment"

FIRST = {"index.html": "<h1>one</h1>", "bin/run.sh": Executable("echo one"), "old.txt": "old"}
SECOND = {"index.html": "<h1>two</h1>", "old.txt": None, "new/page.html": "new", "ln": Symlink("x")}


def run_json(site: Site, *args: str, code: int = 0) -> Any:
    done = run(*args, "--config", site.config, "--json")
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout)


def deploy(site: Site, revision: str | None = None) -> dict[str, Any]:
    """Set-up deploys run in process (the CLI costs ~0.4 s a start); the result as JSON."""
    done = dhq.deploy("website", "production", revision=revision, config=site.config)
    assert done.status is DeploymentStatus.COMPLETED
    return done.to_json()


def server_state(root: Path) -> dict[str, bytes]:
    """Every file and symlink under the root (marker included), byte for byte."""
    out: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*filenames, *dirnames]:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = b"-> " + os.readlink(path).encode()
            elif path.is_dir():
                out[rel + "/"] = b""
            else:
                out[rel] = path.read_bytes() + b" mode=%o" % (path.stat().st_mode & 0o777)
    return out


def identifiers(site: Site) -> list[str]:
    history = History(site.state_dir / "history.sqlite3")
    try:
        return [d.identifier for d in history.query("website", limit=1000)]
    finally:
        history.close()


@pytest.fixture
def two(site: Site) -> tuple[Site, dict[str, Any], dict[str, Any], dict[str, bytes | str]]:
    """FIRST deployed, then SECOND deployed: (site, first, second, files after FIRST)."""
    a = site.repo.commit(FIRST)
    b = site.repo.commit(SECOND)
    first = deploy(site, a)
    after_first = site.files()
    second = deploy(site, b)
    return site, first, second, after_first


# -- JSON shapes ---------------------------------------------------------------------------


def check_shape(data: dict[str, Any], *, extra: tuple[str, ...] = ()) -> None:
    assert data.keys() == DEPLOYHQ_KEYS | EXTRA_KEYS | set(extra)
    assert str(uuid.UUID(data["identifier"])) == data["identifier"]
    assert set(data["configuration"]) == {"copy_config_files", "run_build_commands"}
    assert all(isinstance(v, bool) for v in data["configuration"].values())
    assert set(data["timestamps"]) == {"queued_at", "started_at", "completed_at"}
    for value in data["timestamps"].values():
        assert value is None or API_TIME.match(value), value
    assert len(data["servers"]) == 1
    assert set(data["servers"][0]) == {"name", "identifier", "protocol_type"}
    assert data["project"] == {"name": "Website", "permalink": "website"}


def test_deploy_json_has_deployhq_shape(site: Site) -> None:
    a = site.repo.commit(FIRST)
    b = site.repo.commit(SECOND)
    first = run_json(site, "deploy", "website", "--server", "production", "--revision", a)
    check_shape(first, extra=("changes",))
    assert first["status"] == "completed"
    assert first["start_revision"] is None
    assert first["end_revision"] == a
    assert first["branch"] == "main"
    assert first["configuration"] == {"copy_config_files": True, "run_build_commands": True}
    assert all(first["timestamps"].values())
    server = first["servers"][0]
    assert server["name"] == "Production Server"
    assert server["protocol_type"] == "local"
    assert str(uuid.UUID(server["identifier"])) == server["identifier"]
    assert sorted((c["path"], c["change"]) for c in first["changes"]) == [
        ("bin/run.sh", "added"),
        ("index.html", "added"),
        ("old.txt", "added"),
    ]

    second = run_json(site, "deploy", "website", "--server", "production")  # branch head
    check_shape(second, extra=("changes",))
    assert second["start_revision"] == a
    assert second["end_revision"] == b
    assert second["identifier"] != first["identifier"]
    assert second["servers"] == first["servers"]  # a server's identifier is stable
    assert sorted((c["path"], c["change"]) for c in second["changes"]) == [
        ("index.html", "modified"),
        ("ln", "added"),
        ("new/page.html", "added"),
        ("old.txt", "deleted"),
    ]
    assert site.files() == {
        "index.html": b"<h1>two</h1>",
        "bin/run.sh*": b"echo one",
        "new/page.html": b"new",
        "ln": "-> x",
    }


def test_deploy_human_output_mentions_status_and_changes(site: Site) -> None:
    site.repo.commit(FIRST)
    done = run("deploy", "website", "--server", "production", "--config", site.config)
    assert done.returncode == 0, done.stderr
    assert "completed" in done.stdout
    for path in FIRST:
        assert path in done.stdout
    assert "3 added" in done.stdout
    site.repo.commit(SECOND)
    done = run("deploy", "website", "-s", "production", "--config", site.config)
    assert done.returncode == 0, done.stderr
    for path in ("index.html", "old.txt", "new/page.html", "ln"):
        assert path in done.stdout
    assert "modified" in done.stdout
    assert "deleted" in done.stdout
    assert done.stderr == ""


def test_deploy_preview_writes_nothing_and_lists_changes(site: Site) -> None:
    a = site.repo.commit(FIRST)
    deploy(site, a)
    site.repo.commit(SECOND)
    before = server_state(site.root)
    data = run_json(site, "deploy", "website", "--server", "production", "--preview")
    check_shape(data, extra=("changes",))
    assert data["status"] == "previewed"
    assert data["start_revision"] == a
    assert all(set(c) == {"path", "change"} for c in data["changes"])
    assert {c["path"]: c["change"] for c in data["changes"]} == {
        "index.html": "modified",
        "ln": "added",
        "new/page.html": "added",
        "old.txt": "deleted",
    }
    assert server_state(site.root) == before
    again = run_json(site, "deployments", "preview", "website", data["identifier"])
    assert again["changes"] == data["changes"]
    # A preview is never what the server holds: the next deploy still starts from A.
    assert deploy(site)["start_revision"] == a


def test_rollback_queue_restores_files_and_records_the_rollback(two: Any) -> None:
    site, first, second, after_first = two
    data = run_json(
        site,
        "rollback",
        "website",
        first["identifier"],
        "--no-copy-config-files",
        "--no-run-build-commands",
    )
    check_shape(data, extra=("changes",))
    assert data["status"] == "completed"
    assert data["start_revision"] == second["end_revision"]
    assert data["end_revision"] == first["end_revision"]
    assert data["rollback_of"] == first["identifier"]
    assert data["configuration"] == {"copy_config_files": False, "run_build_commands": False}
    assert {c["path"]: c["change"] for c in data["changes"]} == {
        "index.html": "modified",
        "ln": "deleted",
        "new/page.html": "deleted",
        "old.txt": "added",
    }
    assert site.files() == after_first
    assert not (site.root / "new").exists()  # emptied directory pruned
    shown = run_json(site, "deployments", "show", "website", data["identifier"])
    assert shown["configuration"] == data["configuration"]
    assert shown["rollback_of"] == first["identifier"]


def test_rollback_defaults_record_both_flags_true(two: Any) -> None:
    site, first, _second, _ = two
    data = run_json(site, "rollback", "website", first["identifier"])
    assert data["configuration"] == {"copy_config_files": True, "run_build_commands": True}


def test_rollback_preview_then_deployments_preview(two: Any) -> None:
    site, first, second, _ = two
    before = server_state(site.root)
    created = run_json(site, "rollback", "website", first["identifier"], "--mode", "preview")
    assert created == {"identifier": created["identifier"], "status": "preview_pending"}
    assert str(uuid.UUID(created["identifier"])) == created["identifier"]
    assert server_state(site.root) == before

    shown = run_json(site, "deployments", "preview", "website", created["identifier"])
    check_shape(shown, extra=("changes",))
    assert shown["identifier"] == created["identifier"]
    assert shown["status"] == "previewed"
    assert shown["start_revision"] == second["end_revision"]
    assert shown["end_revision"] == first["end_revision"]
    assert all(set(c) == {"path", "change"} for c in shown["changes"])
    assert sorted((c["path"], c["change"]) for c in shown["changes"]) == [
        ("index.html", "modified"),
        ("ln", "deleted"),
        ("new/page.html", "deleted"),
        ("old.txt", "added"),
    ]
    # The preview changed nothing, so the rollback itself can still run.
    done = dhq.rollback("website", first["identifier"], config=site.config)
    assert done.status is DeploymentStatus.COMPLETED
    assert server_state(site.root) != before


def test_rollback_preview_human_output(two: Any) -> None:
    site, first, _second, _ = two
    done = run(
        "rollback", "website", first["identifier"], "--mode", "preview", "--config", site.config
    )
    assert done.returncode == 0, done.stderr
    assert "previewed" in done.stdout
    assert "old.txt" in done.stdout
    assert "new/page.html" in done.stdout


def test_deployments_list_and_show(two: Any) -> None:
    site, first, second, _ = two
    listing = run_json(site, "deployments", "list", "website")
    assert set(listing) == {"pagination", "records"}
    assert [d["identifier"] for d in listing["records"]] == [
        second["identifier"],
        first["identifier"],
    ]
    for record in listing["records"]:
        check_shape(record)
    only = run_json(site, "deployments", "list", "website", "--server", "production")
    assert only["records"] == listing["records"]

    shown = run_json(site, "deployments", "show", "website", first["identifier"])
    check_shape(shown, extra=("changes",))
    assert {k: v for k, v in shown.items() if k != "changes"} == {
        k: v for k, v in first.items() if k != "changes"
    }
    assert {(c["path"], c["change"], c["status"]) for c in shown["changes"]} == {
        ("bin/run.sh", "added", "done"),
        ("index.html", "added", "done"),
        ("old.txt", "added", "done"),
    }
    by_prefix = run_json(site, "deployments", "show", "website", first["identifier"][:8])
    assert by_prefix["identifier"] == first["identifier"]

    human = run("deployments", "list", "website", "--config", site.config)
    assert human.returncode == 0
    assert first["identifier"] in human.stdout
    assert "completed" in human.stdout


def test_deployments_list_by_status(two: Any) -> None:
    site, first, second, _ = two
    preview = dhq.rollback("website", first["identifier"], mode="preview", config=site.config)
    assert preview.status is DeploymentStatus.PREVIEWED
    everything = run_json(site, "deployments", "list", "website")["records"]
    assert len(everything) == 3

    completed = run_json(site, "deployments", "list", "website", "--status", "completed")
    assert [d["identifier"] for d in completed["records"]] == [
        second["identifier"],
        first["identifier"],
    ]
    previewed = run_json(
        site, "deployments", "list", "website", "-s", "production", "--status", "previewed"
    )
    assert [d["identifier"] for d in previewed["records"]] == [preview.identifier]

    human = run("deployments", "list", "website", "--status", "failed", "--config", site.config)
    assert human.returncode == 0, human.stderr
    assert human.stdout.strip() == "no failed deployments of website"

    bad = run("deployments", "list", "website", "--status", "done", "--config", site.config)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert "'done'" in bad.stderr
    for status in DeploymentStatus:
        assert f"'{status.value}'" in bad.stderr


def table(text: str, header: list[str]) -> list[dict[str, str]]:
    """A printed table's rows, each cut where the header's columns start; every cell must
    start exactly there (a misaligned row cuts a value in two)."""
    lines = text.rstrip("\n").split("\n")
    starts = [lines[0].index(name) for name in header]
    assert lines[0].split() == header
    rows = []
    for line in lines[1:]:
        cells = [line[a:b] for a, b in zip(starts, [*starts[1:], None], strict=True)]
        for a in starts[1:]:
            assert line[a - 2 : a] == "  " and line[a] != " ", (line, a)
        rows.append({name: cell.strip() for name, cell in zip(header, cells, strict=True)})
    return rows


def test_deployments_list_is_a_table_with_a_header(two: Any, tmp_path: Path) -> None:
    site, first, second, _ = two
    long_name = "production-eu-west-1-with-a-long-name"
    site.write_config(f'\n[projects.website.servers.{long_name}]\nroot = "{tmp_path / "eu"}"\n')
    dhq.deploy("website", long_name, config=site.config)
    back = dhq.rollback("website", first["identifier"], config=site.config)
    done = run("deployments", "list", "website", "--config", site.config)
    assert done.returncode == 0, done.stderr
    header = ["DEPLOYMENT", "STATUS", "SERVER", "REVISIONS", "QUEUED", "KIND"]
    rows = table(done.stdout, header)
    assert [(r["DEPLOYMENT"], r["SERVER"], r["KIND"]) for r in rows] == [
        (back.identifier, "production", "rollback"),
        (rows[1]["DEPLOYMENT"], long_name, "deploy"),
        (second["identifier"], "production", "deploy"),
        (first["identifier"], "production", "deploy"),
    ]
    assert {r["STATUS"] for r in rows} == {"completed"}
    assert rows[-1]["REVISIONS"] == f"(nothing) -> {first['end_revision'][:12]}"
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["QUEUED"]) for r in rows)


def test_unknown_deployment_is_named_and_no_identifier_is_listed(two: Any) -> None:
    site, first, second, _ = two
    done = run("deployments", "show", "website", "no-such-deployment", "--config", site.config)
    assert done.returncode == 2
    assert done.stderr == "error: deployment no-such-deployment not found in project website\n"
    as_json = run("rollback", "website", first["identifier"][:5], "--json", "--config", site.config)
    assert json.loads(as_json.stdout) == {
        "error": f"deployment {first['identifier'][:5]} not found in project website"
    }
    for output in (done.stdout + done.stderr, as_json.stdout + as_json.stderr):
        assert first["identifier"] not in output and second["identifier"] not in output


def test_deployments_list_json_has_deployhqs_pagination(two: Any) -> None:
    site, first, second, _ = two
    page = run_json(site, "deployments", "list", "website", "--limit", "1", "--page", "2")
    assert page["pagination"] == {
        "current_page": 2,
        "total_pages": 2,
        "total_records": 2,
        "offset": 1,
        "per_page": 1,
    }
    assert [d["identifier"] for d in page["records"]] == [first["identifier"]]
    one = run_json(site, "deployments", "list", "website", "--server", "production")
    assert one["pagination"] == {
        "current_page": 1,
        "total_pages": 1,
        "total_records": 2,
        "offset": 0,
        "per_page": 50,
    }
    assert [d["identifier"] for d in one["records"]] == [second["identifier"], first["identifier"]]


# -- the four refusals ----------------------------------------------------------------------


def make_failed_deployment(site: Site) -> str:
    """A deployment that started and failed: a directory sits where a file must go."""
    site.repo.commit({"blocked.txt": "cannot land"})
    (site.root / "blocked.txt").mkdir()
    (site.root / "blocked.txt" / "occupant").write_text("not ours")
    with pytest.raises(dhq.DeploymentError) as failure:
        dhq.deploy("website", "production", config=site.config)
    return failure.value.identifier


def make_preview(site: Site) -> str:
    site.repo.commit({"previewed.txt": "p"})
    return dhq.preview("website", "production", config=site.config).deployment.identifier


def remove_server(site: Site) -> None:
    text = site.config.read_text().replace(
        "[projects.website.servers.production]", "[projects.website.servers.staging]"
    )
    site.config.write_text(text)


def make_config_files_deployment(site: Site, like: str) -> str:
    """A completed config-files-only deployment with the same real end tree as ``like``.

    No CLI makes one yet, so it goes into the history directly; its snapshot ref points
    at the same stored commit as ``like``, so that without the flag it could be rolled back.
    """
    history = History(site.state_dir / "history.sqlite3")
    try:
        original = history.find(like)
        assert original is not None
        assert original.status is DeploymentStatus.COMPLETED
        copy = dataclasses.replace(
            original, identifier=str(uuid.uuid4()), config_files_only=True, seq=0
        )
        history.add(copy)
    finally:
        history.close()
    store = site.state_dir / "snapshots.git"
    git(
        "update-ref",
        f"refs/deployments/{copy.identifier}",
        f"refs/deployments/{like}",
        cwd=store,
    )
    return copy.identifier


@pytest.mark.parametrize(
    ("case", "message", "reason"),
    [
        ("latest", ROLLBACK_LATEST, "it is the latest completed deployment on server 'production'"),
        ("failed", ROLLBACK_IMPOSSIBLE, "it failed at 'blocked.txt': "),
        ("preview", ROLLBACK_IMPOSSIBLE, "it is a preview: it deployed nothing"),
        ("no-server", ROLLBACK_NO_SERVER, "its server 'production' is no longer in the config"),
        ("config-files", ROLLBACK_CONFIG_FILES, "it deployed only config files"),
    ],
)
def test_rollback_refusals(two: Any, case: str, message: str, reason: str) -> None:
    site, first, second, _ = two
    target = {
        "latest": lambda: second["identifier"],
        "failed": lambda: make_failed_deployment(site),
        "preview": lambda: make_preview(site),
        "no-server": lambda: first["identifier"],
        "config-files": lambda: make_config_files_deployment(site, first["identifier"]),
    }[case]()
    known = identifiers(site)
    before = server_state(site.root)
    if case == "no-server":
        remove_server(site)

    as_json = run("rollback", "website", target, "--config", site.config, "--json")
    human = run("rollback", "website", target, "--config", site.config)

    assert as_json.returncode == human.returncode == 3, (as_json.stdout, human.stderr)
    refused = json.loads(as_json.stdout)
    assert refused == {"error": message, "reason": refused["reason"]}
    assert refused["reason"].startswith(reason)
    assert target not in refused["reason"] and "marker" not in refused["reason"]
    assert human.stdout == ""
    assert human.stderr.strip() == f"error: {message} ({refused['reason']})"
    assert "Traceback" not in as_json.stderr + human.stderr
    assert server_state(site.root) == before
    assert identifiers(site) == known  # not even a failed record of the attempt
    # The control: with the cause gone, the first deployment can be rolled back.
    shutil.rmtree(site.root / "blocked.txt", ignore_errors=True)
    site.write_config()
    back = dhq.rollback("website", first["identifier"], config=site.config)
    assert back.status is DeploymentStatus.COMPLETED


def test_refusal_applies_to_preview_mode_too(two: Any) -> None:
    site, _first, second, _ = two
    data = run_json(site, "rollback", "website", second["identifier"], "--mode", "preview", code=3)
    assert data["error"] == ROLLBACK_LATEST


def test_inserted_config_files_deployment_is_not_the_latest(two: Any) -> None:
    """Guards the setup of the config-files refusal: the copy is not the latest one."""
    site, first, second, _ = two
    copy = make_config_files_deployment(site, first["identifier"])
    assert identifiers(site)[0] == copy  # newest by insertion order...
    history = History(site.state_dir / "history.sqlite3")
    try:
        latest = history.find_latest_completed("website", "production")
    finally:
        history.close()
    assert latest is not None
    assert latest.identifier == second["identifier"]  # ...but not what the server holds


# -- config discovery, exit codes, entry points ---------------------------------------------


def test_config_from_environment_variable(site: Site, tmp_path: Path) -> None:
    site.repo.commit(FIRST)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run(
        "deploy",
        "website",
        "-s",
        "production",
        "--json",
        cwd=elsewhere,
        env={"DEPLOYHQ_LITE_CONFIG": str(site.config)},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "completed"
    assert (site.root / "index.html").read_text() == "<h1>one</h1>"


def test_explicit_config_wins_over_environment(site: Site, tmp_path: Path) -> None:
    site.repo.commit(FIRST)
    done = run(
        "deployments",
        "list",
        "website",
        "--config",
        site.config,
        "--json",
        env={"DEPLOYHQ_LITE_CONFIG": str(tmp_path / "missing.toml")},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["records"] == []


def test_default_config_in_current_directory(site: Site, tmp_path: Path) -> None:
    assert site.config == tmp_path / "deployhq-lite.toml"
    site.repo.commit(FIRST)
    done = run("deploy", "website", "-s", "production", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (site.root / "index.html").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    missing = run("deployments", "list", "website", cwd=elsewhere)
    assert missing.returncode == 2
    assert "deployhq-lite.toml" in missing.stderr


def test_group_level_options(site: Site) -> None:
    site.repo.commit(FIRST)
    done = run("--config", site.config, "--json", "deploy", "website", "-s", "production")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "completed"


@pytest.mark.parametrize(
    "args",
    [
        ["deploy", "website"],  # --server is required
        ["rollback", "website", "x", "--mode", "later"],
        ["deployments", "list"],
        ["no-such-command"],
    ],
)
def test_usage_errors_exit_2(site: Site, args: list[str]) -> None:
    done = run(*args, "--config", site.config)
    assert done.returncode == 2
    assert "Usage" in done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_project_and_server_exit_2_json(site: Site) -> None:
    site.repo.commit(FIRST)
    data = run_json(site, "deploy", "blog", "-s", "production", code=2)
    assert set(data) == {"error"}
    assert "blog" in data["error"]
    assert "website" in data["error"]
    data = run_json(site, "deploy", "website", "-s", "staging", code=2)
    assert "staging" in data["error"]
    assert "production" in data["error"]


def test_unknown_revision_is_an_error_naming_it(site: Site) -> None:
    site.repo.commit(FIRST)
    done = run("deploy", "website", "-s", "production", "-r", "nope~3", "--config", site.config)
    assert done.returncode != 0
    assert "nope~3" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (site.root / "index.html").exists()


def test_deploy_failure_exit_1_with_json_error(site: Site) -> None:
    site.repo.commit(FIRST)
    deploy(site)
    failed_id = make_failed_deployment(site)
    done = run("deploy", "website", "-s", "production", "--config", site.config, "--json")
    assert done.returncode == 1
    data = json.loads(done.stdout)
    assert set(data) == {"error"}
    assert "blocked.txt" in data["error"]
    shown = run_json(site, "deployments", "show", "website", failed_id)
    assert shown["status"] == "failed"
    assert "blocked.txt" in shown["error"]
    assert ("blocked.txt", "failed") in {(c["path"], c["status"]) for c in shown["changes"]}


def test_python_dash_m_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "deployhq_lite", "--help"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for command in ("deploy", "rollback", "deployments"):
        assert command in done.stdout
    sub = run("deployments", "--help")
    assert sub.returncode == 0
    for command in ("list", "show", "preview"):
        assert command in sub.stdout


def test_marker_written_by_cli_deploy(site: Site) -> None:
    a = site.repo.commit(FIRST)
    data = deploy(site, a)
    marker = json.loads((site.root / MARKER).read_text())
    assert marker["deployment"] == data["identifier"]
    assert marker["revision"] == a


def test_latest_is_per_server(site: Site, tmp_path: Path) -> None:
    staging_root = tmp_path / "staging-www"
    site.write_config(
        f'\n[projects.website.servers.staging]\nname = "Staging"\nroot = "{staging_root}"\n'
    )
    a = site.repo.commit(FIRST)
    b = site.repo.commit(SECOND)
    prod_first = dhq.deploy("website", "production", revision=a, config=site.config)
    staging_only = dhq.deploy("website", "staging", revision=a, config=site.config)
    dhq.deploy("website", "production", revision=b, config=site.config)

    # Newer deployments on production do not make staging's only one rollback-able...
    refused = run_json(site, "rollback", "website", staging_only.identifier, code=3)
    assert refused == {
        "error": ROLLBACK_LATEST,
        "reason": "it is the latest completed deployment on server 'staging'",
    }
    # ...and a rollback runs on the rolled-back deployment's own server.
    done = run_json(site, "rollback", "website", prod_first.identifier)
    assert done["servers"][0]["name"] == "Production Server"
    assert (site.root / "index.html").read_text() == "<h1>one</h1>"
    assert (staging_root / "index.html").read_text() == "<h1>one</h1>"
    staging = run_json(site, "deployments", "list", "website", "--server", "staging")
    assert [d["identifier"] for d in staging["records"]] == [staging_only.identifier]


def test_human_output_lists_the_first_200_paths_and_counts_all(site: Site) -> None:
    site.repo.commit({f"pages/p{i:03d}.html": str(i) for i in range(205)})
    done = run("deploy", "website", "--server", "production", "--config", site.config)
    assert done.returncode == 0, done.stderr
    assert "changes  205 added, 0 modified, 0 deleted" in done.stdout
    listed = [line for line in done.stdout.splitlines() if line.startswith("    + ")]
    assert len(listed) == 200
    assert "... and 5 more (use --json for all)" in done.stdout


# -- output ---------------------------------------------------------------------------------


def run_into_closed_pipe(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The console script with its stdout a real pipe whose reader has already left (as
    ``deployhq-lite ... | head -1`` once head has its line)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [str(CLI), *(str(a) for a in args)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            timeout=120,
        )
    finally:
        os.close(write)


def test_stdout_closed_early_is_not_an_error(site: Site) -> None:
    site.repo.commit(FIRST)
    done = run_into_closed_pipe("deploy", "website", "-s", "production", "--config", site.config)
    assert (done.returncode, done.stderr) == (0, "")  # no traceback, no "Exception ignored"
    assert site.files()["index.html"] == b"<h1>one</h1>"
    latest = dhq.Engine(site.config)
    with latest as engine:
        assert engine.list_deployments("website")[0].status is DeploymentStatus.COMPLETED


@pytest.mark.parametrize("outcome", ["failed", "refused"])
def test_stdout_closed_early_keeps_the_exit_status(site: Site, outcome: str) -> None:
    site.repo.commit(FIRST)
    latest = deploy(site)["identifier"]
    if outcome == "failed":  # a directory sits where a file must go
        site.repo.commit({"blocked.txt": "cannot land"})
        (site.root / "blocked.txt" / "occupant").parent.mkdir()
        (site.root / "blocked.txt" / "occupant").write_text("not ours")
        args: tuple[str, ...] = ("deploy", "website", "-s", "production")
    else:
        args = ("rollback", "website", latest)
    done = run_into_closed_pipe(*args, "--config", site.config, "--json")
    assert (done.returncode, done.stderr) == ({"failed": 1, "refused": 3}[outcome], "")


def test_servers_check_on_a_local_server_reports_its_root(site: Site) -> None:
    site.write_config()
    report = run_json(site, "servers", "check", "website", "production")
    assert report == {"server": "website/production", "ok": True, "root": str(site.root)}
    done = run("servers", "check", "website", "production", "--config", site.config)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{'server':<22}website/production",
        f"{'ok':<22}True",
        f"{'root':<22}{site.root}",
    ]
