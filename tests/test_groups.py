"""Server groups: one deployment to several servers, each with its own start and outcome."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployhq_lite.deployments.rules import ROLLBACK_LATEST, ROLLBACK_NO_SERVER
from deployhq_lite.marker import MARKER_PATH
from deployhq_lite.testing.plugin import Site, read_tree, run_cli
from deployhq_lite.testing.sshd import SSHServer


def group_config(
    site: Site,
    second: str,
    *,
    order: str = "parallel",
    extra: str = "",
) -> Path:
    """``production`` (local, the site's root) plus ``production2`` (the ``second`` keys)
    in group ``web``; ``extra`` goes at the end of production2's table."""
    site.write_config()
    site.config.write_text(
        site.config.read_text()
        + "\n[projects.website.servers.production2]\n"
        + 'name = "Production Two"\n'
        + second
        + extra
        + "\n[projects.website.server_groups.web]\n"
        + 'name = "Web cluster"\nservers = ["production", "production2"]\n'
        + f'transfer_order = "{order}"\n'
    )
    return site.config


def local_second(tmp_path: Path) -> str:
    return f'protocol_type = "local"\nroot = "{tmp_path / "www2"}"\n'


def ssh_second(sshd: SSHServer, root: Path) -> str:
    return (
        f'protocol_type = "ssh"\nroot = "{root}"\nhost = "{sshd.host}"\nport = {sshd.port}\n'
        f'user = "{sshd.user}"\nkey_path = "{sshd.user_key}"\n'
        f'known_hosts_path = "{sshd.known_hosts}"\nuse_agent = false\n'
    )


def cli(site: Site, *args: str, code: int = 0) -> dict:  # type: ignore[type-arg]
    done = run_cli(*args, "--config", site.config, "--json")
    assert done.returncode == code, done.stderr + done.stdout
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def marker(root: Path) -> dict[str, str]:
    return json.loads((root / MARKER_PATH).read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("order", ["parallel", "sequential"])
def test_group_deploy_is_one_deployment_with_each_servers_own_start(
    site: Site, tmp_path: Path, order: str
) -> None:
    group_config(site, local_second(tmp_path), order=order)
    first = site.repo.commit({"index.html": "one", "a.txt": "a"})
    alone = cli(site, "deploy", "website", "--server", "production", "--revision", first)
    second = site.repo.commit({"index.html": "two", "a.txt": None, "b.txt": "b"})
    done = cli(site, "deploy", "website", "--server", "web")
    assert done["status"] == "completed"
    assert done["server_group"] == "web" and done["group_name"] == "Web cluster"
    servers = {s["server"]: s for s in done["servers"]}
    assert [s["name"] for s in done["servers"]] == ["Production Server", "Production Two"]
    # each server starts from its own latest end revision
    assert servers["production"]["start_revision"] == first
    assert servers["production2"]["start_revision"] is None
    assert {s["status"] for s in done["servers"]} == {"completed"}
    assert {c["path"] for c in servers["production"]["changes"]} == {"index.html", "a.txt", "b.txt"}
    assert {c["path"] for c in servers["production2"]["changes"]} == {"index.html", "b.txt"}
    assert {(c["server"], c["path"]) for c in done["changes"]} >= {("production2", "b.txt")}
    for root in (site.root, tmp_path / "www2"):
        assert read_tree(root) == read_tree(site.root)
        assert marker(root)["revision"] == second
    # one deployment in the project's list; each member in its server's list
    listed = cli(site, "deployments", "list", "website")["records"]
    assert [d["identifier"] for d in listed] == [done["identifier"], alone["identifier"]]
    two = cli(site, "deployments", "list", "website", "--server", "production2")["records"]
    assert [d["identifier"] for d in two] == [servers["production2"]["deployment"]]
    shown = cli(site, "deployments", "show", "website", done["identifier"])
    assert shown["servers"] == done["servers"]
    member = servers["production2"]["deployment"]  # a member is a deployment of its own
    assert cli(site, "deployments", "show", "website", member[:8])["identifier"] == member


def test_group_rollback_rolls_every_server_back_and_follows_the_rules(
    site: Site, tmp_path: Path
) -> None:
    group_config(site, local_second(tmp_path))
    site.repo.commit({"index.html": "one", "keep.txt": "k"})
    one = cli(site, "deploy", "website", "--server", "web")
    expected = {root: read_tree(root) for root in (site.root, tmp_path / "www2")}
    site.repo.commit({"index.html": "two", "keep.txt": None, "new.txt": "n"})
    two = cli(site, "deploy", "website", "--server", "web")
    refused = cli(site, "rollback", "website", two["identifier"], code=3)
    assert refused == {
        "error": ROLLBACK_LATEST,
        "reason": "it is the latest completed deployment on every server of 'web'",
    }
    preview = cli(site, "rollback", "website", one["identifier"], "--mode", "preview")
    assert preview["status"] == "preview_pending"
    shown = cli(site, "deployments", "preview", "website", preview["identifier"])
    assert {(c["server"], c["path"], c["change"]) for c in shown["changes"]} == {
        (server, path, change)
        for server in ("production", "production2")
        for path, change in [
            ("index.html", "modified"),
            ("keep.txt", "added"),
            ("new.txt", "deleted"),
        ]
    }
    back = cli(site, "rollback", "website", one["identifier"])
    assert back["status"] == "completed" and back["rollback_of"] == one["identifier"]
    assert [s["start_revision"] for s in back["servers"]] == [two["end_revision"]] * 2
    assert {root: read_tree(root) for root in expected} == expected
    # the group is gone from the config: "Deployment has no parent server"
    site.write_config("\n[projects.website.servers.production2]\n" + local_second(tmp_path))
    refused = cli(site, "rollback", "website", two["identifier"], code=3)
    assert refused == {
        "error": ROLLBACK_NO_SERVER,
        "reason": "its server group 'web' is no longer in the config",
    }


@pytest.mark.parametrize("order", ["parallel", "sequential"])
def test_one_server_failing_leaves_its_marker_and_records_the_others(
    site: Site, tmp_path: Path, order: str
) -> None:
    fail = (
        "\n[[projects.website.servers.production2.ssh_commands]]\n"
        'command = "test ! -e fail.flag"\nwhen = "before"\n'
    )
    group_config(site, local_second(tmp_path), order=order, extra=fail)
    site.repo.commit({"index.html": "one"})
    one = cli(site, "deploy", "website", "--server", "web")
    (tmp_path / "www2" / "fail.flag").write_text("")
    second = site.repo.commit({"index.html": "two"})
    failed = cli(site, "deploy", "website", "--server", "web", code=1)
    assert "1 of 2 servers did not complete (production2)" in failed["error"]
    latest = cli(site, "deployments", "list", "website")["records"][0]
    assert latest["status"] == "failed" and latest["identifier"] != one["identifier"]
    shown = cli(site, "deployments", "show", "website", latest["identifier"])
    servers = {s["server"]: s for s in shown["servers"]}
    assert servers["production"]["status"] == "completed"
    assert [c["path"] for c in servers["production"]["changes"]] == ["index.html"]
    assert servers["production2"]["status"] == "failed"
    assert "before command" in servers["production2"]["error"]
    assert marker(site.root)["revision"] == second
    assert marker(tmp_path / "www2")["revision"] == one["end_revision"]
    assert (tmp_path / "www2" / "index.html").read_text() == "one"
    # fixed: deploying the group again converges the failed server
    (tmp_path / "www2" / "fail.flag").unlink()
    again = cli(site, "deploy", "website", "--server", "web")
    assert again["status"] == "completed"
    assert marker(tmp_path / "www2")["revision"] == second


def test_sequential_group_stops_at_the_first_failed_server(site: Site, tmp_path: Path) -> None:
    group_config(site, local_second(tmp_path), order="sequential")
    site.config.write_text(
        site.config.read_text().replace(
            'servers = ["production", "production2"]', 'servers = ["production2", "production"]'
        )
        + "\n[[projects.website.servers.production2.ssh_commands]]\n"
        'command = "exit 7"\nwhen = "before"\n'
    )
    site.repo.commit({"index.html": "one"})
    cli(site, "deploy", "website", "--server", "web", code=1)
    latest = cli(site, "deployments", "list", "website")["records"][0]
    servers = {s["server"]: s for s in latest["servers"]}
    assert servers["production2"]["error"].endswith("the server marker was not moved")
    assert servers["production"]["status"] == "failed"
    assert servers["production"]["error"].startswith("not run: production2 failed before it")
    assert not site.root.exists() or not (site.root / MARKER_PATH).exists()


def test_group_over_local_and_ssh(site: Site, tmp_path: Path, sshd: SSHServer) -> None:
    remote = tmp_path / "remote-www"
    group_config(site, ssh_second(sshd, remote))
    site.repo.commit({"index.html": "one", "sub/x.txt": "x"})
    one = cli(site, "deploy", "website", "--server", "web")
    site.repo.commit({"index.html": "two", "sub/x.txt": None})
    cli(site, "deploy", "website", "--server", "web")
    assert read_tree(remote) == read_tree(site.root)
    back = cli(site, "rollback", "website", one["identifier"])
    assert back["status"] == "completed"
    assert read_tree(remote) == read_tree(site.root)
    assert (remote / "sub" / "x.txt").read_text() == "x"


def test_unknown_destination_names_servers_and_groups(site: Site, tmp_path: Path) -> None:
    group_config(site, local_second(tmp_path))
    site.repo.commit({"index.html": "one"})
    done = run_cli("deploy", "website", "--server", "nope", "--config", site.config)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: unknown server or server group 'nope' in project 'website' "
        "(known: production, production2, web)"
    )


def test_a_group_naming_an_unknown_server_is_one_line(site: Site, tmp_path: Path) -> None:
    site.config.write_text(
        site.config.read_text()
        + '\n[projects.website.server_groups.web]\nservers = ["production", "typo"]\n'
    )
    done = run_cli("deploy", "website", "--server", "web", "--config", site.config)
    assert done.returncode == 2
    assert "server group 'web' lists 'typo', not a server of this project" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
