"""Whole-process timing with peak memory: ``wait4`` in a small launcher, sampled ``VmHWM``.

A child's ``ru_maxrss`` (KiB on Linux, from ``wait4``) is the highest of the child itself
and every descendant it waited for (a ``git cat-file`` it started, ``ssh`` under ``scp``),
but it also counts the memory of the process that started it: the high-water mark of
the parent's address space is carried over at fork and at exec. The benchmark process
holds hundreds of MiB after building or checking big files, so commands are started by a
small launcher (``python -S -I``, about 7 MiB: the floor of every figure, measured by
``launcher_floor()``) that forks, execs, waits and reports the time and ``ru_maxrss``.

To tell the processes apart, a thread can also poll ``/proc`` while the command runs and
keep each descendant's ``VmHWM`` (its own high-water mark since its exec, exact up to the
last poll before it exits) and the highest ``RssAnon`` seen: the memory it holds itself,
without the file pages it has mapped (git reads packs through ``mmap``; those pages are
page cache, yet count in RSS).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from common import ENV, BenchError

POLL = 0.02  # seconds between samples

# argv: RESULT_FILE CMD...; writes "exit_code elapsed_s ru_maxrss_kib" to RESULT_FILE.
LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
elapsed = time.perf_counter() - start
with open(sys.argv[1], "w") as result:
    result.write(f"{os.waitstatus_to_exitcode(status)} {elapsed!r} {usage.ru_maxrss}")
"""


@dataclass(frozen=True, slots=True)
class Measured:
    elapsed: float  # fork to wait4 in the launcher: the command alone, start-up included
    tree_peak_kib: int  # wait4 ru_maxrss
    sampled: dict[str, ProcessPeak] = field(default_factory=dict)  # per process name


def measure(
    cmd: Sequence[str | os.PathLike[str]], *, timeout: float, sample: bool = False
) -> Measured:
    """Wall time (start-up included) and peak RSS of one process; raise if it fails.

    The launcher leads a new process group: a command still running after ``timeout``
    seconds (a hung deploy), or when the benchmark is interrupted, is killed with every
    process it started.
    """
    args = [str(c) for c in cmd]
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as tmp,
    ):
        result = Path(tmp, "result")
        launcher = [sys.executable, "-S", "-I", "-c", LAUNCHER, str(result), *args]
        proc = subprocess.Popen(launcher, env=ENV, stdout=out, stderr=err, start_new_session=True)
        sampler = _Sampler(proc.pid) if sample else None
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise BenchError(
                f"`{' '.join(args)}` still running after {timeout:g} s: killed it and its "
                f"children\n{_tail(out, err)}"
            ) from None
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            peaks = sampler.finish() if sampler else {}
        fields = result.read_text().split() if result.exists() else ["launcher failed", "0", "0"]
        code, elapsed, maxrss = fields
        if proc.returncode or code != "0":
            raise BenchError(f"`{' '.join(args)}` exited {code}\n{_tail(out, err)}")
    return Measured(float(elapsed), int(maxrss), peaks)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(out: IO[bytes], err: IO[bytes]) -> str:
    err.seek(0)
    out.seek(0)
    return (err.read() or out.read()).decode(errors="replace").strip()[-3000:]


def launcher_floor() -> int:
    """``ru_maxrss`` in KiB of ``true`` run by the launcher: what every figure starts from."""
    return measure(["true"], timeout=10).tree_peak_kib


@dataclass(frozen=True, slots=True)
class ProcessPeak:
    hwm_kib: int  # VmHWM: peak RSS, file-backed pages (mapped pack files) included
    anon_kib: int  # the highest RssAnon seen: memory the process itself holds

    def merge(self, other: ProcessPeak) -> ProcessPeak:
        return ProcessPeak(max(self.hwm_kib, other.hwm_kib), max(self.anon_kib, other.anon_kib))


def describe_peaks(sampled: dict[str, ProcessPeak]) -> str:
    if not sampled:
        return "not sampled"
    parts = [
        f"{name} {p.hwm_kib / 1024:.0f} MiB (anon {p.anon_kib / 1024:.0f})"
        for name, p in sampled.items()
    ]
    return "sampled VmHWM: " + ", ".join(parts)


class _Sampler:
    """Polls the memory of a process's descendants until ``finish()``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._seen: dict[int, tuple[str, ProcessPeak]] = {}  # pid -> (latest name, peaks)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def finish(self) -> dict[str, ProcessPeak]:
        """Peaks per process name (``git`` with its subcommand)."""
        self._stop.set()
        self._thread.join()
        peaks: dict[str, ProcessPeak] = {}
        for name, peak in self._seen.values():
            peaks[name] = peaks[name].merge(peak) if name in peaks else peak
        return peaks

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in _descendants(self.pid)[1:]:  # not the launcher itself
                found = _memory(pid)
                if found is None:
                    continue
                name, peak = found  # a pid's name changes at exec: keep the latest
                before = self._seen.get(pid)
                self._seen[pid] = (name, before[1].merge(peak) if before else peak)
            self._stop.wait(POLL)


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it (by parent pid; no /proc/PID/task/*/children)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_bytes()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


GIT_OPTIONS_WITH_VALUE = {"-C", "-c", "--git-dir", "--work-tree", "--namespace"}


def _memory(pid: int) -> tuple[str, ProcessPeak] | None:
    """(name, VmHWM and RssAnon now), or None once the process is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="utf-8", errors="replace")
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    if "VmHWM" not in fields or "RssAnon" not in fields:
        return None
    name = fields["Name"].strip()
    if name == "git":  # git --git-dir X cat-file --batch -> "git cat-file"
        words = iter(argv[1:])
        for word in words:
            if word in GIT_OPTIONS_WITH_VALUE:
                next(words, None)
            elif not word.startswith("-"):
                name = f"git {word}"
                break
    kib = {key: int(fields[key].split()[0]) for key in ("VmHWM", "RssAnon")}
    return name, ProcessPeak(kib["VmHWM"], kib["RssAnon"])
