"""Shared helpers for the benchmarks: timing, subprocesses, tree checks, the result table."""

from __future__ import annotations

import compileall
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER_DIR = ".deployhq-lite"

# git run by the benchmark never reads the user's or the system's config.
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}


class BenchError(RuntimeError):
    """A benchmark step failed or produced a wrong result."""


def clean_env() -> dict[str, str]:
    """The environment for every subprocess: no DEPLOYHQ_LITE_* overrides, isolated git."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DEPLOYHQ_LITE_")}
    env.update(GIT_ENV)
    return env


ENV = clean_env()


def run(cmd: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None) -> bytes:
    """Run a command (untimed); raise with its stderr when it fails; return stdout."""
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=ENV, capture_output=True, check=False)
    if done.returncode:
        raise BenchError(_describe_failure(cmd, done))
    return done.stdout


def timed(cmd: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None) -> float:
    """Wall time of one whole process (start-up included); raise if it fails."""
    args = [str(c) for c in cmd]
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode:
        raise BenchError(_describe_failure(cmd, done))
    return elapsed


def timed_all(cmds: Sequence[Sequence[str | os.PathLike[str]]]) -> float:
    """Wall time of several processes run one after the other (e.g. rsync then sync)."""
    start = time.perf_counter()
    for cmd in cmds:
        args = [str(c) for c in cmd]
        done = subprocess.run(args, env=ENV, capture_output=True, check=False)
        if done.returncode:
            raise BenchError(_describe_failure(cmd, done))
    return time.perf_counter() - start


def _describe_failure(
    cmd: Sequence[str | os.PathLike[str]], done: subprocess.CompletedProcess[bytes]
) -> str:
    words = " ".join(str(c) for c in cmd)
    err = (done.stderr or b"").decode(errors="replace").strip()
    out = (done.stdout or b"").decode(errors="replace").strip()
    return f"`{words}` exited {done.returncode}\n{err or out}"


def time_call(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def git(repo: Path, *args: str) -> bytes:
    return run(["git", "-C", str(repo), *args])


class Settler:
    """Before a timed run: flush dirty pages, then wait until the machine is quiet.

    Quiet means, over one window, at most a trickle of requests completed on the work
    directory's disk (deleting or copying 50,000 files leaves it busy for seconds after
    ``sync``) and the CPUs mostly idle (other people's test runs on a shared machine). After
    ``timeout`` seconds the run starts anyway and is counted as noisy.
    """

    window = 1.0
    max_busy = 0.25  # share of all CPUs
    max_disk_ops = 20  # requests completed per window

    def __init__(self) -> None:
        self.disk_stat: Path | None = None
        self.timeout = 20.0
        self.runs = 0
        self.noisy = 0

    def configure(self, workdir: Path, timeout: float) -> None:
        dev = workdir.stat().st_dev
        stat = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat")
        self.disk_stat = stat if os.major(dev) and stat.exists() else None
        self.timeout = timeout

    def _disk(self) -> int:
        """Requests completed so far: reads, writes and discards."""
        if self.disk_stat is None:
            return 0
        fields = [int(x) for x in self.disk_stat.read_text().split()]
        return fields[0] + fields[4] + sum(fields[11:12])

    def __call__(self) -> None:
        os.sync()
        self.runs += 1
        deadline = time.monotonic() + self.timeout
        while True:
            disk, cpu = self._disk(), _cpu_times()
            time.sleep(self.window)
            disk_after, cpu_after = self._disk(), _cpu_times()
            busy = (cpu_after[0] - cpu[0]) / max(1, cpu_after[1] - cpu[1])
            if disk_after - disk <= self.max_disk_ops and busy < self.max_busy:
                return
            if time.monotonic() > deadline:
                self.noisy += 1
                return

    def describe(self) -> str:
        return (
            f"{self.noisy} of {self.runs} timed runs started on a busy machine "
            f"(disk or CPU still busy after waiting {self.timeout:g} s)"
        )


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot; iowait counts as idle."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


settle = Settler()


def remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def copy_tree(src: Path, dst: Path) -> None:
    """``cp -a src dst`` (dst must not exist): modes, times and symlinks kept."""
    remove(dst)
    run(["cp", "-a", str(src), str(dst)])


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt_times(values: Sequence[float]) -> str:
    return " ".join(f"{v:.3f}" for v in values)


def log(message: str) -> None:
    print(message, flush=True)


# -- where we run ---------------------------------------------------------------------------------


def filesystem_of(path: Path) -> str:
    """``fstype on mountpoint (device)`` for the filesystem holding ``path``."""
    real = str(path.resolve())
    best = ("", "?", "?")
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, mountpoint, fstype = line.split()[:3]
                mountpoint = mountpoint.replace("\\040", " ")
                inside = real == mountpoint or real.startswith(mountpoint.rstrip("/") + "/")
                if inside and len(mountpoint) >= len(best[0]):
                    best = (mountpoint, fstype, device)
    except OSError:
        return "unknown (no /proc/self/mounts)"
    mountpoint, fstype, device = best
    return f"{fstype} on {mountpoint} ({device})"


def tool_version(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(cmd), capture_output=True, check=False, env=ENV).stdout
    except OSError:
        return "not installed"
    return out.decode(errors="replace").splitlines()[0].strip() if out else "?"


def find_cli() -> Path:
    """The ``deployhq-lite`` console script of the interpreter running the benchmark,
    with the package's bytecode compiled first.

    A regular ``pip install`` compiles every module; an editable one leaves it to the
    first import, and with ``PYTHONDONTWRITEBYTECODE`` set (as on CI machines) every run
    compiles all of them again: 40-50 ms a process that no installed tool pays.
    """
    import deployhq_lite

    compileall.compile_dir(Path(deployhq_lite.__file__).parent, quiet=1)
    candidates = [
        Path(sys.executable).parent / "deployhq-lite",
        ROOT / ".venv" / "bin" / "deployhq-lite",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("deployhq-lite")
    if found:
        return Path(found)
    raise BenchError("deployhq-lite console script not found: `pip install -e .` in the venv")


# -- checking a deployed tree ---------------------------------------------------------------------

GitTree = dict[str, tuple[str, str]]  # path -> (mode, blob id)


def git_tree(repo: Path, revision: str) -> GitTree:
    """Every file, executable and symlink of ``revision`` as git records it."""
    raw = git(repo, "ls-tree", "-r", "-z", "--full-tree", revision)
    tree: GitTree = {}
    for record in raw.split(b"\0"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        mode, _kind, oid = meta.decode().split()
        tree[path.decode()] = (mode, oid)
    return tree


def _blob_id(data: bytes) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    h.update(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def _entry_of(full: Path) -> tuple[str, str]:
    info = full.lstat()
    if full.is_symlink():
        return "120000", _blob_id(os.fsencode(os.readlink(full)))
    if not full.is_file():
        return "other", ""
    mode = "100755" if info.st_mode & 0o100 else "100644"
    return mode, _blob_id(full.read_bytes())


def scan_tree(root: Path, *, skip_marker: bool) -> tuple[GitTree, list[str]]:
    """What ``root`` holds as (mode, blob id) per path, plus every directory below it."""
    found: GitTree = {}
    dirs: list[str] = []
    for current, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(current, root)
        prefix = "" if rel_dir == "." else rel_dir + "/"
        if skip_marker and not prefix and MARKER_DIR in dirnames:
            dirnames.remove(MARKER_DIR)
        for name in list(dirnames):
            if (Path(current) / name).is_symlink():  # os.walk lists links to dirs as dirs
                dirnames.remove(name)
                filenames.append(name)
            else:
                dirs.append(prefix + name)
        for name in filenames:
            found[prefix + name] = _entry_of(Path(current) / name)
    return found, dirs


def verify_tree(root: Path, expected: GitTree, *, label: str, skip_marker: bool = True) -> None:
    """Fail loudly unless ``root`` holds exactly ``expected`` (content, modes, no leftovers)."""
    actual, dirs = scan_tree(root, skip_marker=skip_marker)
    problems: list[str] = []
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    wrong = sorted(p for p in set(expected) & set(actual) if expected[p] != actual[p])
    wanted_dirs = _all_parents(expected)
    stray_dirs = sorted(d for d in dirs if d not in wanted_dirs)
    for title, items in (
        ("missing", missing),
        ("unexpected", extra),
        ("wrong content or mode", wrong),
        ("stray directories", stray_dirs),
    ):
        if items:
            problems.append(f"{len(items)} {title}: {', '.join(items[:5])}")
    if problems:
        raise BenchError(f"{label}: {root} does not match the expected tree: {'; '.join(problems)}")


def _all_parents(paths: GitTree) -> set[str]:
    parents: set[str] = set()
    for path in paths:
        parts = path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parents.add("/".join(parts[:depth]))
    return parents


# -- the summary -----------------------------------------------------------------------------


NOISY_SPREAD = 1.5


@dataclass
class Row:
    case: str
    ours: list[float] | None
    reference: list[float] | None
    reference_name: str
    target: float | None = None  # None: informational
    error: str | None = None

    @staticmethod
    def _ratio(ours: float | None, reference: float | None) -> float | None:
        return None if ours is None or not reference else ours / reference

    @property
    def ratio(self) -> float | None:
        """Median over median: the figure the target applies to."""
        return self._ratio(_stat(self.ours, median), _stat(self.reference, median))

    @property
    def min_ratio(self) -> float | None:
        """Best over best: less sensitive to interference from other processes."""
        return self._ratio(_stat(self.ours, min), _stat(self.reference, min))

    @property
    def paired_ratio(self) -> float | None:
        """Median of ours/reference per round: each pair ran back to back, so slow drift
        of the machine cancels out."""
        if not self.ours or not self.reference or len(self.ours) != len(self.reference):
            return None
        return median([o / r for o, r in zip(self.ours, self.reference, strict=True) if r])

    @property
    def noisy(self) -> bool:
        """Either side's slowest run took over NOISY_SPREAD times its fastest."""
        return any(v and max(v) > NOISY_SPREAD * min(v) for v in (self.ours, self.reference))

    @property
    def verdict(self) -> str:
        if self.error:
            return "ERROR"
        if self.target is None or self.ratio is None:
            return "info" + ("*" if self.noisy else "")
        return ("pass" if self.ratio <= self.target else "MISS") + ("*" if self.noisy else "")


def _stat(values: list[float] | None, fn: Callable[[Sequence[float]], float]) -> float | None:
    return fn(values) if values else None


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_table(rows: Sequence[Row]) -> None:
    headers = ["case", "ours (s)", "reference", "ref (s)", "ratio", "target", "result"]
    headers += ["paired", "min ratio"]
    body = [
        [
            r.case,
            _num(_stat(r.ours, median), ".3f"),
            r.reference_name,
            _num(_stat(r.reference, median), ".3f"),
            _num(r.ratio, ".2f") + ("x" if r.ratio is not None else ""),
            "-" if r.target is None else f"<= {r.target:g}x",
            r.verdict,
            _num(r.paired_ratio, ".2f") + ("x" if r.paired_ratio is not None else ""),
            _num(r.min_ratio, ".2f") + ("x" if r.min_ratio is not None else ""),
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in body)) for i, h in enumerate(headers)]
    numeric = {1, 3, 4, 7, 8}

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    log(fmt(headers))
    log(fmt(["-" * w for w in widths]))
    for line in body:
        log(fmt(line))
    if any(r.noisy for r in rows):
        log(
            f"* noisy: on one side the slowest run took over {NOISY_SPREAD:g}x the fastest "
            "(something else used the disk or CPUs); compare 'min ratio', or run again"
        )
    for r in rows:
        if r.error:
            log(f"ERROR in {r.case}: {r.error}")


def alternate(
    label: str, steps: dict[str, Callable[[int], float]], *, repeat: int, warmup: int
) -> dict[str, list[float]]:
    """Run every step once per round, in order (A B A B), and report each side.

    The first ``warmup`` rounds are not counted: the first bulk writes after a previous
    run's clean-up are often much slower on this kind of VM disk.
    """
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + repeat):
        times = {name: step(i) for name, step in steps.items()}
        done = ", ".join(f"{name} {elapsed:.3f} s" for name, elapsed in times.items())
        if i < warmup:
            log(f"  {label} warm-up {i + 1}/{warmup} (not counted): {done}")
            continue
        for name, elapsed in times.items():
            samples[name].append(elapsed)
        log(f"  {label} run {i + 1 - warmup}/{repeat}: {done}")
    for name, values in samples.items():
        log(
            f"  {name:<24} median {median(values):7.3f} s  min {min(values):7.3f} s"
            f"   runs: {fmt_times(values)}"
        )
    return samples
