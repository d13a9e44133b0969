"""The ``deployhq-lite`` command line. The only place that configures logging and maps
errors to exit codes: 0 ok, 1 deployment/transport failure, 2 config or usage, 3 refused.

One module per command group; each registers its commands on ``cli`` when imported.
"""

from __future__ import annotations

import sys

import click

from . import content, deployments, servers, web
from .common import cli

__all__ = ["cli", "content", "deployments", "main", "servers", "web"]


def main() -> None:
    try:
        cli(prog_name="deployhq-lite")
    except KeyboardInterrupt:
        click.echo("interrupted; the marker was not moved (deploy again to converge)", err=True)
        sys.exit(130)
