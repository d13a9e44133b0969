"""Run an operator's command line on this machine: ``sh -c`` in its own process group,
output streamed line by line and its tail kept, the whole group killed at the deadline.

The command comes from the config only (build commands, and SSH commands on a local
server); nothing is ever interpolated into it. Used by ``builds`` and by the local
transport, so both stop a runaway command the same way and see the same scrubbed
environment: a few harmless variables of ours, then the caller's (``DEPLOYHQ_*``...),
never the rest of ours (``DEPLOYHQ_LITE_*`` may hold passwords and passphrases).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from .values import OUTPUT_LIMIT, CommandOutcome

GRACE = 2.0  # seconds to collect the last output after a command's group was killed

# The only variables of ours a command sees: none of them can hold a secret.
PASSED_VARIABLES = (
    *("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ"),
    *("TMPDIR", "USER", "LOGNAME", "SHELL", "TERM"),
)


def scrubbed_environment(variables: Mapping[str, str]) -> dict[str, str]:
    """The whole environment of a command run here: our ``PASSED_VARIABLES``, then
    ``variables`` (they win)."""
    ours = {key: os.environ[key] for key in PASSED_VARIABLES if key in os.environ}
    return {**ours, **variables}


def run_shell(
    command: str,
    *,
    cwd: Path,
    timeout: float,
    variables: Mapping[str, str],
    on_output: Callable[[str], None] | None = None,
) -> CommandOutcome:
    """(exit status or None when it timed out, the output's last ``OUTPUT_LIMIT`` bytes,
    seconds). The command sees ``scrubbed_environment(variables)``; an exception from
    ``on_output`` is raised once the command has ended (its output is still read to the
    end)."""
    started = time.monotonic()
    deadline = started + timeout
    proc = subprocess.Popen(  # noqa: S602 - the operator's own command line, from config
        command,
        shell=True,
        cwd=cwd,
        env=scrubbed_environment(variables),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    reader = _Reader(proc.stdout, on_output)
    reader.start()
    status: int | None = None
    try:
        # Output first: while something holds the pipe, the shell is not reaped, so its
        # process group id cannot go to another process before we kill the group.
        reader.join(max(0.0, deadline - time.monotonic()))
        if not reader.is_alive():
            with contextlib.suppress(subprocess.TimeoutExpired):
                status = proc.wait(max(0.0, deadline - time.monotonic()))
    finally:
        if proc.returncode is None:
            _kill_group(proc)
        reader.join(GRACE)  # a process that left our group may still hold the pipe
    if reader.error is not None:
        raise reader.error
    text = bytes(reader.tail[-OUTPUT_LIMIT:]).decode("utf-8", "replace")
    return status, text, time.monotonic() - started


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the shell and everything it started
    proc.wait()


class _Reader(threading.Thread):
    """Reads a command's output line by line: hands each line on, keeps the tail."""

    def __init__(self, out: IO[bytes], on_output: Callable[[str], None] | None) -> None:
        super().__init__(name="dhq-command-output", daemon=True)
        self._out, self._on_output = out, on_output
        self.tail = bytearray()
        self.error: Exception | None = None  # raised by on_output; reading goes on

    def run(self) -> None:
        # The reader closes the pipe itself: when a process that left our group still
        # holds it, run_shell returns without waiting and the pipe is closed at its EOF.
        with self._out:
            while line := self._out.readline(OUTPUT_LIMIT):
                self.tail += line
                if len(self.tail) > 2 * OUTPUT_LIMIT:
                    del self.tail[:-OUTPUT_LIMIT]
                if self._on_output is not None and self.error is None:
                    try:
                        self._on_output(line.decode("utf-8", "replace").rstrip("\r\n"))
                    except Exception as exc:
                        self.error = exc
