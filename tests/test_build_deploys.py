"""Build commands in deployments: the output is the snapshot, diffed against the last one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import deployhq_lite as dhq
from deployhq_lite.marker import MARKER_PATH
from deployhq_lite.testing.plugin import Site, run_cli
from deployhq_lite.testing.sshd import SSHServer
from tests.test_groups import group_config, ssh_second

BUILD = """\
build_output = "dist"
build_cache = ["node_modules"]
build_environment = {{ STAMP = "{stamp}" }}
build_commands = [
  {{ command = "mkdir -p dist && cat src/*.js > dist/app.js", timeout = 60 }},
  {{ command = "cp \\"$STAMP\\" dist/stamp.txt && echo built $DEPLOYHQ_END_REVISION" }},
]
"""


ENV_FILE = '\n[[projects.website.servers.production.config_files]]\npath = ".env"\nbody = "K=1"\n'


def build_config(site: Site, tmp_path: Path, extra: str = "") -> Path:
    """The site's project with two build commands; ``dist/stamp.txt`` is a copy of a
    file outside the repository, so a rebuild and a stored snapshot can differ."""
    stamp = tmp_path / "stamp"
    if not stamp.exists():
        stamp.write_text("A")
    site.write_config(extra)
    text = site.config.read_text().replace(
        'branch = "main"\n', 'branch = "main"\n' + BUILD.format(stamp=stamp), 1
    )
    site.config.write_text(text)
    return stamp


def cli(site: Site, *args: str, code: int = 0) -> dict:  # type: ignore[type-arg]
    done = run_cli(*args, "--config", site.config, "--json")
    assert done.returncode == code, done.stderr + done.stdout
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_build_output_is_deployed_and_unchanged_output_is_not_uploaded(
    site: Site, tmp_path: Path
) -> None:
    build_config(site, tmp_path)
    site.repo.commit({"src/a.js": "a();\n", "src/b.js": "b();\n", "README.md": "r"})
    done = run_cli("deploy", "website", "--server", "production", "--config", site.config)
    assert done.returncode == 0, done.stderr
    assert f"  | built {site.repo.head()}" in done.stderr  # streamed as it ran
    assert site.files() == {"app.js": b"a();\nb();\n", "stamp.txt": b"A"}
    shown = cli(site, "deployments", "list", "website")["records"][0]
    shown = cli(site, "deployments", "show", "website", shown["identifier"])
    assert [(c["when"], c["exit_status"]) for c in shown["commands"]] == [("build", 0)] * 2
    assert shown["commands"][1]["output"] == f"built {site.repo.head()}\n"
    # a commit that changes nothing in the output uploads nothing
    site.repo.commit({"README.md": "changed"})
    uploads: list[str] = []
    again = dhq.deploy(
        "website",
        "production",
        config=site.config,
        hooks={"file.uploaded": lambda e: uploads.append(e.path or "")},
    )
    assert again.status is dhq.DeploymentStatus.COMPLETED
    assert again.end_revision == site.repo.head()
    assert uploads == []
    site.repo.commit({"src/b.js": "B();\n"})
    dhq.deploy(
        "website",
        "production",
        config=site.config,
        hooks={"file.uploaded": lambda e: uploads.append(e.path or "")},
    )
    assert uploads == ["app.js"]


def test_a_failing_build_touches_nothing(site: Site, tmp_path: Path) -> None:
    build_config(site, tmp_path)
    site.repo.commit({"src/a.js": "a();\n"})
    first = cli(site, "deploy", "website", "--server", "production")
    before = site.files()
    marker = (site.root / MARKER_PATH).read_text()
    site.repo.commit({"src/a.js": "broken"})
    text = site.config.read_text().replace("cat src/*.js", "exit 3; cat src/*.js")
    site.config.write_text(text)
    failed = run_cli("deploy", "website", "--server", "production", "--config", site.config)
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1] == (
        "error: build command 'mkdir -p dist && exit 3; cat src/*.js > dist/app.js' "
        "exited with status 3; nothing was deployed"
    )
    assert site.files() == before
    assert (site.root / MARKER_PATH).read_text() == marker
    latest = cli(site, "deployments", "list", "website")["records"][0]
    assert latest["status"] == "failed" and latest["identifier"] != first["identifier"]
    shown = cli(site, "deployments", "show", "website", latest["identifier"])
    assert [c["exit_status"] for c in shown["commands"]] == [3]
    assert shown["changes"] == []
    assert not list((site.state_dir / "builds").iterdir())  # no working directory left


def test_a_build_command_that_times_out_is_one_line(site: Site, tmp_path: Path) -> None:
    build_config(site, tmp_path)
    text = site.config.read_text().replace("timeout = 60", "timeout = 0.5")
    site.config.write_text(text.replace("mkdir -p dist &&", "sleep 30; mkdir -p dist &&"))
    site.repo.commit({"src/a.js": "a();\n"})
    failed = run_cli("deploy", "website", "--server", "production", "--config", site.config)
    assert failed.returncode == 1
    assert failed.stderr.strip().startswith("error: build command 'sleep 30;")
    assert failed.stderr.strip().endswith("timed out after 0.5 s; nothing was deployed")
    assert not site.root.exists() or site.files() == {}


def test_rollback_rebuilds_or_restores_the_stored_snapshot(site: Site, tmp_path: Path) -> None:
    stamp = build_config(site, tmp_path)
    site.repo.commit({"src/a.js": "one();\n"})
    one = cli(site, "deploy", "website", "--server", "production")
    stamp.write_text("B")
    site.repo.commit({"src/a.js": "two();\n"})
    cli(site, "deploy", "website", "--server", "production")
    assert site.files() == {"app.js": b"two();\n", "stamp.txt": b"B"}
    stamp.write_text("C")
    # run_build_commands (the default): the build runs again at the target's revision
    rebuilt = cli(site, "rollback", "website", one["identifier"])
    assert rebuilt["configuration"]["run_build_commands"] is True
    assert site.files() == {"app.js": b"one();\n", "stamp.txt": b"C"}
    shown = cli(site, "deployments", "show", "website", rebuilt["identifier"])
    assert [c["when"] for c in shown["commands"]] == ["build", "build"]
    assert shown["commands"][1]["output"] == f"built {one['end_revision']}\n"
    # without: exactly what the target deployment put there, nothing run
    exact = cli(site, "rollback", "website", one["identifier"], "--no-run-build-commands")
    assert site.files() == {"app.js": b"one();\n", "stamp.txt": b"A"}
    shown = cli(site, "deployments", "show", "website", exact["identifier"])
    assert "commands" not in shown


def test_preview_of_a_build_lists_the_outputs_changes(site: Site, tmp_path: Path) -> None:
    build_config(site, tmp_path)
    site.repo.commit({"src/a.js": "a();\n"})
    cli(site, "deploy", "website", "--server", "production")
    site.repo.commit({"src/b.js": "b();\n"})
    preview = cli(site, "deploy", "website", "--server", "production", "--preview")
    assert [(c["path"], c["change"]) for c in preview["changes"]] == [("app.js", "modified")]
    assert site.files()["app.js"] == b"a();\n"


def test_config_files_only_runs_no_build(site: Site, tmp_path: Path) -> None:
    build_config(site, tmp_path, ENV_FILE)
    site.repo.commit({"src/a.js": "a();\n"})
    cli(site, "deploy", "website", "--server", "production")
    site.repo.commit({"src/a.js": "changed();\n"})
    only = cli(site, "deploy", "website", "--server", "production", "--config-files-only")
    shown = cli(site, "deployments", "show", "website", only["identifier"])
    assert "commands" not in shown
    assert site.files()["app.js"] == b"a();\n"


@pytest.mark.parametrize("order", ["parallel", "sequential"])
def test_a_group_builds_once_for_local_and_ssh_servers(
    site: Site, tmp_path: Path, sshd: SSHServer, order: str
) -> None:
    remote = tmp_path / "remote"
    group_config(site, ssh_second(sshd, remote), order=order)
    text = site.config.read_text()
    build_config(site, tmp_path)  # rewrites the config: put the group back
    site.config.write_text(
        site.config.read_text() + text[text.index("\n[projects.website.servers.production2]") :]
    )
    site.repo.commit({"src/a.js": "a();\n"})
    done = cli(site, "deploy", "website", "--server", "web")
    assert done["status"] == "completed"
    shown = cli(site, "deployments", "show", "website", done["identifier"])
    assert [c["when"] for c in shown["commands"]] == ["build", "build"]  # once, not per server
    assert (remote / "app.js").read_bytes() == b"a();\n"
    assert site.files() == {"app.js": b"a();\n", "stamp.txt": b"A"}
    # a failing build: no server touched, every member says why
    site.config.write_text(site.config.read_text().replace("cat src/*.js", "exit 1; cat src/*.js"))
    site.repo.commit({"src/a.js": "b();\n"})
    failed = cli(site, "deploy", "website", "--server", "web", code=1)
    assert failed["error"].endswith("exited with status 1; nothing was deployed")
    latest = cli(site, "deployments", "list", "website")["records"][0]
    assert {s["status"] for s in latest["servers"]} == {"failed"}
    assert all(s["error"].startswith("not run: the build failed") for s in latest["servers"])
    assert (remote / "app.js").read_bytes() == b"a();\n"


def test_deploy_flags_skip_the_build_or_keep_the_servers_config_files(
    site: Site, tmp_path: Path
) -> None:
    build_config(site, tmp_path, ENV_FILE)
    site.repo.commit({"src/a.js": "a();\n"})
    cli(site, "deploy", "website", "--server", "production")
    assert site.files() == {"app.js": b"a();\n", "stamp.txt": b"A", ".env": b"K=1"}
    site.config.write_text(site.config.read_text().replace('body = "K=1"', 'body = "K=2"'))
    # --no-copy-config-files: the server keeps the .env it has
    kept = cli(site, "deploy", "website", "--server", "production", "--no-copy-config-files")
    assert kept["configuration"]["copy_config_files"] is False
    assert site.files()[".env"] == b"K=1"
    # --no-run-build-commands: the repository's files, unbuilt (nothing is run)
    raw = cli(site, "deploy", "website", "--server", "production", "--no-run-build-commands")
    assert raw["configuration"]["run_build_commands"] is False
    shown = cli(site, "deployments", "show", "website", raw["identifier"])
    assert "commands" not in shown
    assert site.files() == {"src/a.js": b"a();\n", ".env": b"K=2"}
