"""``verify``: what a server really holds, compared with its latest deployment."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..records import Verification, VerificationStatus
from .common import SHOWN, _engine, _opts, _print_json, _short, cli, common_options, echo_table

EXIT_DIFFERS = 1  # like diff(1): 0 the same, 1 different


@cli.command()
@click.argument("project")
@click.option("--server", "-s", required=True, help="Server or server group to check.")
@click.option("--fast", is_flag=True, help="Compare kind, size and mode only (no hashing).")
@common_options
def verify(project: str, server: str, fast: bool) -> None:
    """Compare what a server holds with its latest deployment's snapshot.

    Exit status 0 when it matches, 1 when it differs (or could not be checked), 2 for a
    config or usage error, 3 when there is no deployment to compare with."""
    with _engine() as engine:
        results = engine.verify(project, server, fast=fast)
    if _opts().json:
        _print_json(_json(project, server, results))
    else:
        for result in results:
            _echo(result)
    if not all(r.in_sync for r in results):
        sys.exit(EXIT_DIFFERS)


def _json(project: str, server: str, results: list[Verification]) -> dict[str, Any]:
    if len(results) == 1 and results[0].server == server:
        return results[0].to_json()
    return {
        "project": project,
        "server": server,
        "in_sync": all(r.in_sync for r in results),
        "servers": [r.to_json() for r in results],
    }


def _echo(v: Verification) -> None:
    where = f"{v.project}/{v.server}"
    if v.status is not VerificationStatus.COMPLETED:
        click.echo(f"{where}: not checked: {v.error}")
        return
    against = f"deployment {v.deployment} (revision {_short(v.revision)})"
    if v.in_sync:
        click.echo(f"{where}: in sync with {against}; {v.checked} paths checked ({v.method})")
        return
    click.echo(
        f"{where}: {len(v.differences)} differences from {against}; "
        f"{v.checked} paths checked ({v.method})"
    )
    rows = [
        (d.kind.value, d.path, d.expected or "-", d.found or "-") for d in v.differences[:SHOWN]
    ]
    echo_table(("  kind", "path", "expected", "found"), [("  " + r[0], *r[1:]) for r in rows])
    if len(v.differences) > SHOWN:
        click.echo(f"  ... and {len(v.differences) - SHOWN} more (use --json for all)")
