"""Config files: kept in the config, written on every deployment and rollback as configured now."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import deployhq_lite as dhq
from deployhq_lite.deployments.rules import ROLLBACK_CONFIG_FILES
from deployhq_lite.testing.plugin import Site, run_cli
from deployhq_lite.testing.sshd import SSHServer
from tests.test_sftp_e2e import ssh_config


def config_file(site: Site, path: str, body: str) -> None:
    text = site.config.read_text()
    site.config.write_text(
        text + "\n[[projects.website.servers.production.config_files]]\n"
        f"path = {json.dumps(path)}\nbody = {json.dumps(body)}\n"
    )


def cli(site: Site, *args: str) -> dict:  # type: ignore[type-arg]
    done = run_cli(*args, "--config", site.config, "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_config_files_are_written_restored_and_kept_on_request(site: Site) -> None:
    config_file(site, "config/database.yml", "host: db1\n")
    site.repo.commit({"index.html": "one", "config/database.yml": "from git: ignored\n"})
    first = cli(site, "deploy", "website", "--server", "production")
    assert site.files() == {"index.html": b"one", "config/database.yml": b"host: db1\n"}
    site.write_config()
    config_file(site, "config/database.yml", "host: db2\n")
    site.repo.commit({"index.html": "two"})
    cli(site, "deploy", "website", "--server", "production")
    assert site.files()["config/database.yml"] == b"host: db2\n"
    # --no-copy-config-files: the server keeps the config files it has
    kept = cli(site, "rollback", "website", first["identifier"], "--no-copy-config-files")
    assert kept["status"] == "completed"
    assert site.files() == {"index.html": b"one", "config/database.yml": b"host: db2\n"}
    # a plain rollback restores the first deployment's files with the config files as
    # configured now (DeployHQ): never the old body stored with the first deployment
    site.write_config()
    config_file(site, "config/database.yml", "host: db3\n")
    cli(site, "rollback", "website", first["identifier"])
    assert site.files() == {"index.html": b"one", "config/database.yml": b"host: db3\n"}


def test_config_files_only_deployment_and_its_rollback_refusal(site: Site) -> None:
    config_file(site, ".env", "SECRET_KEY=abc\n")
    site.repo.commit({"index.html": "one"})
    cli(site, "deploy", "website", "--server", "production")
    site.write_config()
    config_file(site, ".env", "SECRET_KEY=def\n")
    site.repo.commit({"index.html": "two"})  # not deployed by a config-files-only run
    only = cli(site, "deploy", "website", "--server", "production", "--config-files-only")
    assert site.files() == {"index.html": b"one", ".env": b"SECRET_KEY=def\n"}
    shown = cli(site, "deployments", "show", "website", only["identifier"])
    assert [c["path"] for c in shown["changes"]] == [".env"]
    cli(site, "deploy", "website", "--server", "production")  # so `only` is not the latest
    refused = run_cli("rollback", "website", only["identifier"], "--config", site.config, "--json")
    assert refused.returncode == 3
    assert json.loads(refused.stdout) == {
        "error": ROLLBACK_CONFIG_FILES,
        "reason": "it deployed only config files",
    }


def test_project_level_config_files_name_their_servers(site: Site, tmp_path: Path) -> None:
    body = tmp_path / "robots.txt"
    body.write_text("User-agent: *\n")
    text = site.config.read_text().replace(
        "[projects.website.servers.production]",
        "[[projects.website.config_files]]\n"
        f'path = "robots.txt"\nbody_file = "{body}"\nservers = ["production"]\n\n'
        "[[projects.website.config_files]]\n"
        'path = "elsewhere.txt"\nbody = "x"\nservers = ["staging"]\n\n'
        "[projects.website.servers.production]",
    )
    site.config.write_text(text)
    site.repo.commit({"index.html": "one"})
    cli(site, "deploy", "website", "--server", "production")
    assert site.files() == {"index.html": b"one", "robots.txt": b"User-agent: *\n"}


def test_config_files_over_ssh(site: Site, sshd: SSHServer) -> None:
    ssh_config(site, sshd)
    config_file(site, "shared/settings.php", "<?php $db = 'prod';\n")
    first = site.repo.commit({"index.php": "one"})
    done = dhq.deploy("website", "production", revision=first, config=site.config)
    assert site.files() == {"index.php": b"one", "shared/settings.php": b"<?php $db = 'prod';\n"}
    assert done.status is dhq.DeploymentStatus.COMPLETED


def test_a_config_file_needs_exactly_one_body(site: Site) -> None:
    text = site.config.read_text()
    site.config.write_text(
        text + '\n[[projects.website.servers.production.config_files]]\npath = "a"\n'
    )
    site.repo.commit({"index.html": "one"})
    done = run_cli("deploy", "website", "--server", "production", "--config", site.config)
    assert done.returncode == 2
    assert "needs one of body or body_file" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def set_config_file(site: Site, body: str, *, builds: bool) -> None:
    """The site's project with one config file ``.env``; with ``builds`` a build command
    (no build_output: the built checkout is deployed)."""
    site.write_config()
    if builds:
        build = 'branch = "main"\nbuild_commands = [{ command = "echo built > built.txt" }]\n'
        site.config.write_text(site.config.read_text().replace('branch = "main"\n', build, 1))
    config_file(site, ".env", body)


@pytest.mark.parametrize("builds", [True, False], ids=["build-commands", "no-build-commands"])
@pytest.mark.parametrize("run_build_commands", [True, False], ids=["run-builds", "no-run-builds"])
def test_a_rollback_copies_the_config_files_configured_now(
    site: Site, builds: bool, run_build_commands: bool
) -> None:
    """DeployHQ copies the server's current config files on a rollback, whether or not the
    target is built again: never the bodies stored with the target (an old secret)."""
    set_config_file(site, "SECRET=old\n", builds=builds)
    site.repo.commit({"index.html": "one"})
    first = dhq.deploy("website", "production", config=site.config)
    assert site.files()[".env"] == b"SECRET=old\n"
    set_config_file(site, "SECRET=new\n", builds=builds)
    site.repo.commit({"index.html": "two"})
    dhq.deploy("website", "production", config=site.config)
    set_config_file(site, "SECRET=newest\n", builds=builds)
    back = dhq.rollback(
        "website", first.identifier, run_build_commands=run_build_commands, config=site.config
    )
    assert back.status is dhq.DeploymentStatus.COMPLETED
    built = {"built.txt": b"built\n"} if builds else {}
    assert site.files() == {"index.html": b"one", ".env": b"SECRET=newest\n", **built}
    # without copy_config_files the server keeps the .env it holds: it is not written
    dhq.deploy("website", "production", config=site.config)
    set_config_file(site, "SECRET=not-yet\n", builds=builds)
    uploads: list[str] = []
    kept = dhq.rollback(
        "website",
        first.identifier,
        run_build_commands=run_build_commands,
        copy_config_files=False,
        config=site.config,
        hooks={"file.uploaded": lambda e: uploads.append(e.path or "")},
    )
    assert kept.status is dhq.DeploymentStatus.COMPLETED
    assert site.files() == {"index.html": b"one", ".env": b"SECRET=newest\n", **built}
    assert uploads == ["index.html"]
