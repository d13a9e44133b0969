"""The ``deployhq-lite`` command line. The only place that configures logging and maps
errors to exit codes: 0 ok, 1 deployment/transport failure, 2 config or usage, 3 refused.

One module per command group; each registers its commands on ``cli`` when imported.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from typing import TYPE_CHECKING

import click

from . import content, deployments, gc, projects, servers, verify, web
from .common import cli

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["cli", "content", "deployments", "gc", "main", "projects", "servers", "verify", "web"]


class _PipeWriter(io.RawIOBase):
    """A standard stream whose reader may leave early (``deploy ... | head -1``): from
    then on what we write goes to /dev/null, so the command still ends with its own
    exit status (click would turn the first EPIPE into status 1, and mid-command)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, data: ReadableBuffer) -> int:
        try:
            return os.write(self._fd, data)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._fd)  # child processes and later writes: nowhere
            os.close(devnull)
            return memoryview(data).nbytes


def _guard_pipes() -> None:
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # not a real file: leave it
            continue
        guarded = io.TextIOWrapper(
            io.BufferedWriter(_PipeWriter(fd)),
            encoding=stream.encoding,
            errors=stream.errors,
            line_buffering=stream.line_buffering,
            write_through=getattr(stream, "write_through", False),
        )
        setattr(sys, name, guarded)


def main() -> None:
    """The console script.

    It ends with ``os._exit`` once logs and output are flushed: tearing the interpreter
    down (freeing every module and object) costs 40-60 ms a run, a tenth of a no-op
    deploy, and does nothing we need: by then every command has closed its store,
    transports, child processes and threads. An unexpected exception still takes the
    normal way out, traceback and all.
    """
    code: str | int | None
    _guard_pipes()
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
