"""SSH commands before and after the file changes, over local and real ssh (issue 6)."""

from __future__ import annotations

import json

import pytest

from deployhq_lite.testing.plugin import Site, run_cli
from deployhq_lite.transports.ssh.connection import remote_command
from tests.test_sftp_e2e import ssh_config


def command(site: Site, cmd: str, **keys: object) -> None:
    text = site.config.read_text()
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    site.config.write_text(
        text + "\n[[projects.website.servers.production.ssh_commands]]\n"
        f"command = {json.dumps(cmd)}\n{extra}"
    )


def deploy(site: Site) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    done = run_cli("deploy", "website", "--server", "production", "--config", site.config, "--json")
    data = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, data, done.stderr


def show(site: Site, identifier: str) -> dict:  # type: ignore[type-arg]
    done = run_cli("deployments", "show", "website", identifier, "--config", site.config, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def latest(site: Site) -> str:
    done = run_cli("deployments", "list", "website", "--config", site.config, "--json")
    return str(json.loads(done.stdout)["records"][0]["identifier"])


@pytest.fixture(params=["local", "ssh"])
def server(request: pytest.FixtureRequest, site: Site) -> Site:
    if request.param == "ssh":
        ssh_config(site, request.getfixturevalue("sshd"))
    return site


def test_commands_run_in_order_around_the_file_changes(server: Site) -> None:
    site = server
    command(site, "cat index.html 2>/dev/null || echo none", when="before")
    command(site, "cat index.html; echo done >&2", when="after")
    command(site, "echo first-only", when="after", run="first_deployment")
    site.repo.commit({"index.html": "one\n"})
    code, first, err = deploy(site)
    assert code == 0, err
    shown = show(site, first["identifier"])
    assert [(c["when"], c["exit_status"], c["output"]) for c in shown["commands"]] == [
        ("before", 0, "none\n"),
        ("after", 0, "one\ndone\n"),
        ("after", 0, "first-only\n"),
    ]
    site.repo.commit({"index.html": "two\n"})
    code, second, err = deploy(site)
    assert code == 0, err
    outputs = [c["output"] for c in show(site, second["identifier"])["commands"]]
    assert outputs == ["one\n", "two\ndone\n"]  # first_deployment ones ran once


def test_a_failing_before_command_halts_before_any_change(server: Site) -> None:
    site = server
    site.repo.commit({"index.html": "one\n"})
    assert deploy(site)[0] == 0
    marker = (site.root / ".deployhq-lite" / "revision").read_bytes()
    command(site, "echo checking; exit 3", when="before", halt_on_error=True)
    site.repo.commit({"index.html": "two\n"})
    code, data, _ = deploy(site)
    assert code == 1
    assert "before command 'echo checking; exit 3' exited with status 3" in data["error"]
    assert (site.root / "index.html").read_text() == "one\n"
    assert (site.root / ".deployhq-lite" / "revision").read_bytes() == marker
    failed = show(site, latest(site))
    assert failed["status"] == "failed"
    assert failed["commands"][0]["output"] == "checking\n"


def test_commands_that_do_not_halt_and_timeouts(server: Site) -> None:
    site = server
    command(site, "exit 1", when="after", halt_on_error=False)
    site.repo.commit({"index.html": "one\n"})
    code, done, err = deploy(site)
    assert code == 0, err
    assert show(site, done["identifier"])["commands"][0]["exit_status"] == 1
    command(site, "sleep 5", when="after", timeout=0.5)
    site.repo.commit({"index.html": "two\n"})
    code, data, _ = deploy(site)
    assert code == 1
    assert "timed out after 0.5 s (after the file changes)" in data["error"]
    timed = show(site, latest(site))["commands"][-1]
    assert (timed["timed_out"], timed["exit_status"]) == (True, None)
    assert timed["duration"] < 4


def test_unknown_command_keys_are_one_line_errors(site: Site) -> None:
    command(site, "true", when="sometimes")
    site.repo.commit({"index.html": "one\n"})
    code, data, _ = deploy(site)
    assert code == 2
    assert "ssh_commands.0.when" in data["error"]


def test_commands_see_the_deployment_variables_and_none_of_our_secrets(
    server: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like build commands: a scrubbed environment plus ``DEPLOYHQ_*``, exported over SSH
    with each value quoted (a branch name is never read as shell text)."""
    site = server
    monkeypatch.setenv("DEPLOYHQ_LITE_SOMETHING_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("DEPLOYER_ONLY_VARIABLE", "not-for-commands")
    branch = "it's$(touch${IFS}pwned)"
    site.repo.branch = branch
    site.config.write_text(site.config.read_text().replace('"main"', json.dumps(branch)))
    command(site, "env", when="after")
    first = site.repo.commit({"index.html": "one\n"})
    assert deploy(site)[0] == 0
    second = site.repo.commit({"index.html": "two\n"})
    code, done, err = deploy(site)
    assert code == 0, err
    shown = show(site, done["identifier"])
    output = shown["commands"][0]["output"]
    variables = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    assert {k: v for k, v in variables.items() if k.startswith("DEPLOYHQ_")} == {
        "DEPLOYHQ_PROJECT": "website",
        "DEPLOYHQ_SERVER": "production",
        "DEPLOYHQ_DEPLOYMENT": done["identifier"],
        "DEPLOYHQ_BRANCH": branch,
        "DEPLOYHQ_START_REVISION": first,
        "DEPLOYHQ_END_REVISION": second,
        "DEPLOYHQ_ROLLBACK": "0",
    }
    assert "PATH" in variables
    assert "hunter2-secret" not in json.dumps(shown)
    assert "not-for-commands" not in output
    assert not (site.root / "pwned").exists()
    history = list(site.state_dir.glob("history.sqlite3*"))
    assert history
    for path in history:
        assert b"hunter2-secret" not in path.read_bytes()


def test_only_variable_names_are_exported_over_ssh() -> None:
    line = remote_command("/srv/my www", "env", {"DEPLOYHQ_BRANCH": "a'b;c"})
    assert line == "export DEPLOYHQ_BRANCH='a'\"'\"'b;c'; cd '/srv/my www' && env"
    with pytest.raises(ValueError, match="not an environment variable name"):
        remote_command("/srv", "env", {"A=B; rm -rf ~; X": "1"})
