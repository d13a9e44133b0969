"""The README's snippets run as written: set-up commands, config, quickstart, hook."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def test_exactly_two_setup_commands() -> None:
    setup = README.split("## Set up", 1)[1].split("## Quickstart", 1)[0]
    commands = re.findall(r"```sh\n(.*?)```", setup, flags=re.S)
    assert [c.strip() for c in commands] == [
        "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/deployhq-lite demo",
        "bash .ci/run",
    ]
    assert (ROOT / ".ci" / "run").exists()


def test_demo_command_runs(tmp_path: Path) -> None:
    done = run(["deployhq-lite", "demo", "--dir", str(tmp_path / "demo")], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "site now matches the first revision: yes" in done.stdout
    assert "4. roll back to deployment 1" in done.stdout


def test_quickstart_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "deployhq-lite.toml").write_text(blocks("toml")[0])
    script = blocks("sh")[2]
    done = run(["bash", "-euo", "pipefail", "-c", script], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("<h1>v1</h1>")
    assert '"status": "preview_pending"' in done.stdout
    assert not (tmp_path / "www" / "news.html").exists()
    assert (tmp_path / "www" / ".deployhq-lite" / "revision").exists()


@pytest.mark.parametrize("name", ["config.example.toml"])
def test_example_config_is_valid(name: str) -> None:
    from deployhq_lite.config import load_settings

    settings = load_settings(ROOT / name)
    website = settings.projects["website"]
    assert website.servers["production"].name == "Production Server"
    assert website.server_groups["web"].servers == ["production", "production2"]
    assert [c.command for c in website.build_commands] == ["npm ci", "npm run build"]


def test_example_config_shows_every_option() -> None:
    from deployhq_lite import config

    text = (ROOT / "config.example.toml").read_text()
    models = [
        config.Settings,
        config.ProjectConfig,
        config.ServerConfig,
        config.ConfigFileConfig,
        config.SSHCommandConfig,
        config.BuildCommandConfig,
        config.ServerGroupConfig,
        config.StackConfig,
        config.EnvironmentConfig,
        config.UserConfig,
    ]
    missing = [
        f"{model.__name__}.{field}"
        for model in models
        for field in model.model_fields
        # a key (``name =``, commented out or inline) or a table (``[projects.x.name]``)
        if not re.search(rf"\b{field} =|[.\[]{field}[.\]]", text)
    ]
    assert missing == []


def test_hook_snippet_deploys_a_push(tmp_path: Path) -> None:
    hook = blocks("python")[0]
    assert hook.startswith("#!/usr/bin/env python3")
    repo = tmp_path / "origin.git"
    assert run(["git", "init", "-q", "--bare", "-b", "main", str(repo)], tmp_path).returncode == 0
    config = tmp_path / "deployhq-lite.toml"
    config.write_text(
        blocks("toml")[0].replace('"site-repo"', f'"{repo}"').replace('"www"', '"www"')
    )
    body = hook.replace("/etc/deployhq-lite.toml", str(config))
    target = repo / "hooks" / "post-receive"
    target.write_text(f"#!{sys.executable}\n" + body.split("\n", 1)[1])
    target.chmod(0o755)
    work = tmp_path / "work"
    steps = [
        ["git", "clone", "-q", str(repo), str(work)],
        ["git", "-C", str(work), "checkout", "-q", "-b", "main"],
    ]
    for step in steps:
        assert run(step, tmp_path).returncode == 0
    (work / "index.html").write_text("pushed\n")
    assert run(["git", "-C", str(work), "add", "-A"], tmp_path).returncode == 0
    assert run(["git", "-C", str(work), "commit", "-qm", "push"], tmp_path).returncode == 0
    pushed = run(["git", "-C", str(work), "push", "-q", "origin", "main"], tmp_path)
    assert pushed.returncode == 0, pushed.stderr
    assert "deployed" in pushed.stderr and "completed" in pushed.stderr
    assert (tmp_path / "www" / "index.html").read_text() == "pushed\n"
