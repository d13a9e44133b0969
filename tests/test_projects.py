"""`deployhq-lite projects list`: what the config holds, in DeployHQ's shapes."""

from __future__ import annotations

import json
from pathlib import Path

import deployhq_lite as dhq
from deployhq_lite.config import project_identifier, server_identifier
from deployhq_lite.testing.plugin import Site, run_cli

SSH_AND_GROUP = """
[projects.website.servers.edge]
name = "Edge"
protocol_type = "ssh"
host = "edge.example.com"
user = "deploy"
port = 2222
root = "/srv/www"
password_env = "EDGE_PASSWORD"

[projects.website.server_groups.everywhere]
name = "Everywhere"
servers = ["production", "edge"]
"""


def test_projects_list_shows_projects_servers_and_groups(site: Site, tmp_path: Path) -> None:
    site.write_config(SSH_AND_GROUP)
    site.repo.commit({"index.html": "one"})
    done = dhq.deploy("website", "production", config=site.config)

    listed = run_cli("projects", "list", "--json", "--config", site.config)
    assert listed.returncode == 0, listed.stderr
    [project] = json.loads(listed.stdout)
    production, edge = project["servers"]
    assert {k: project[k] for k in ("identifier", "name", "permalink", "branch")} == {
        "identifier": project_identifier("website"),
        "name": "Website",
        "permalink": "website",
        "branch": "main",
    }
    assert project["repository"] == {
        "scm_type": "git",
        "url": str(site.repo.path),
        "branch": "main",
    }
    group_id = server_identifier("website", "everywhere")
    assert production == {
        "identifier": done.server_identifier,
        "name": "Production Server",
        "permalink": "production",
        "protocol_type": "local",
        "server_path": str(site.root),
        "hostname": None,
        "username": None,
        "port": None,
        "last_revision": done.end_revision,
        "preferred_branch": "main",
        "enabled": True,
        "server_group_identifier": group_id,
    }
    assert (edge["hostname"], edge["username"], edge["port"]) == (
        "edge.example.com",
        "deploy",
        2222,
    )
    assert (edge["server_path"], edge["last_revision"]) == ("/srv/www", None)
    assert "EDGE_PASSWORD" not in listed.stdout  # no credentials, not even their names
    assert project["server_groups"] == [
        {
            "identifier": group_id,
            "name": "Everywhere",
            "permalink": "everywhere",
            "transfer_order": "parallel",
            "last_revision": None,
            "preferred_branch": "main",
            "servers": [
                {"identifier": done.server_identifier, "permalink": "production"},
                {"identifier": edge["identifier"], "permalink": "edge"},
            ],
        }
    ]

    human = run_cli("projects", "list", "--config", site.config)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0] == f"website  Website  ({project_identifier('website')})"
    assert f"  repository {site.repo.path} (main)" in lines
    assert any(
        line.startswith("  server  production  Production Server  (local, ")
        and done.end_revision[:12] in line
        and done.server_identifier in line
        for line in lines
    )
    assert any("deploy@edge.example.com:/srv/www" in line for line in lines)
    assert f"  group   everywhere  Everywhere  (production, edge)  {group_id}" in lines
