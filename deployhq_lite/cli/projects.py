"""Projects: what the config holds, as DeployHQ's API shows it."""

from __future__ import annotations

import click

from ..views import projects_view
from .common import _engine, _opts, _print_json, _short, cli, common_options


@cli.group()
@common_options
def projects() -> None:
    """The projects of the config, their servers and server groups."""


@projects.command("list")
@common_options
def list_projects() -> None:
    """Every project with its repository, servers and server groups (and identifiers)."""
    with _engine() as engine:
        found = projects_view(engine)
        if _opts().json:
            _print_json(found)
            return
        if not found:
            click.echo("no projects in the config")
        for p in found:
            repository = p["repository"]
            click.echo(f"{p['permalink']}  {p['name']}  ({p['identifier']})")
            click.echo(f"  repository {repository['url']} ({repository['branch']})")
            for s in p["servers"]:
                where = s["server_path"]
                if s["hostname"]:
                    where = f"{s['username']}@{s['hostname']}:{where}"
                click.echo(
                    f"  server  {s['permalink']}  {s['name']}  ({s['protocol_type']}, {where}, "
                    f"at {_short(s['last_revision'])})  {s['identifier']}"
                )
            for g in p["server_groups"]:
                members = ", ".join(m["permalink"] for m in g["servers"])
                click.echo(
                    f"  group   {g['permalink']}  {g['name']}  ({members})  {g['identifier']}"
                )
