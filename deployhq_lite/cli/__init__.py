"""The ``deployhq-lite`` command line. The only place that configures logging and maps
errors to exit codes: 0 ok, 1 deployment/transport failure, 2 config or usage, 3 refused.

One module per command group; each registers its commands on ``cli`` when imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import click

from . import content, deployments, gc, projects, servers, web
from .common import cli

__all__ = ["cli", "content", "deployments", "gc", "main", "projects", "servers", "web"]


def main() -> None:
    """The console script.

    It ends with ``os._exit`` once logs and output are flushed: tearing the interpreter
    down (freeing every module and object) costs 40-60 ms a run, a tenth of a no-op
    deploy, and does nothing we need: by then every command has closed its store,
    transports, child processes and threads. An unexpected exception still takes the
    normal way out, traceback and all.
    """
    code: str | int | None
    try:
        cli(prog_name="deployhq-lite")
        code = 0
    except SystemExit as exc:  # click ends every command this way
        code = exc.code
    except KeyboardInterrupt:
        click.echo("interrupted; the marker was not moved (deploy again to converge)", err=True)
        code = 130
    if isinstance(code, str):  # sys.exit("message"): printed, status 1
        click.echo(code, err=True)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to keep
            stream.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)
