"""Benchmarks of deployhq-lite against git and rsync, measured side by side in one run.

    python benchmarks/run.py [--files 50000] [--changes 5000] [--small-changes 600]
                             [--repeat 5] [--workdir DIR]

(a) changeset computation in process vs ``git diff --raw -z --no-renames`` (a process);
(b) whole ``deployhq-lite deploy`` processes vs ``rsync -a``: initial, v2 -> v3, no-op.
Prints one summary table. Exit status 0 when every case ran (a missed target is a
measurement, not an error), 1 when any case errored or a deploy was wrong.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from bench_changeset import run_changeset
from bench_deploy import CASES, Bench
from common import (
    ROOT,
    BenchError,
    Row,
    filesystem_of,
    find_cli,
    git,
    log,
    print_table,
    remove,
    run,
    settle,
    tool_version,
)

MAKE_REPO = ROOT / "fixtures" / "make_big_repo.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50_000, help="files in v1 (50000)")
    parser.add_argument("--changes", type=int, default=5_000, help="changes v1 -> v2 (5000)")
    parser.add_argument("--small-changes", type=int, default=600, help="changes v2 -> v3 (600)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per side (5)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="uncounted rounds before each deploy case (1)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "deployhq-lite-bench",
        help="work files and the cached repository (default: $TMPDIR/deployhq-lite-bench)",
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=20.0,
        help="before each timed run, wait up to this many seconds for an idle disk and CPU (20)",
    )
    parser.add_argument(
        "--only",
        choices=["changeset", "deploy"],
        help="run only part (a) changeset or part (b) deploy",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0:
        parser.error("--repeat must be at least 1 and --warmup at least 0")
    return args


def ensure_repo(args: argparse.Namespace, cache: Path) -> Path:
    """The generated repository, built once per size and fixture version, then reused."""
    fixture = hashlib.sha256(MAKE_REPO.read_bytes()).hexdigest()[:10]
    name = f"repo-f{args.files}-c{args.changes}-s{args.small_changes}-{fixture}"
    repo = cache / name
    if (repo / ".bench-complete").exists():
        log(f"repository: {repo} (cached)")
        return repo
    building = cache / f"{name}.building"
    remove(building)
    remove(repo)
    cache.mkdir(parents=True, exist_ok=True)
    log(f"repository: building {repo} with {MAKE_REPO.name} ...")
    start = time.perf_counter()
    run(
        [
            sys.executable,
            str(MAKE_REPO),
            str(building),
            "--files",
            str(args.files),
            "--changes",
            str(args.changes),
            "--small-changes",
            str(args.small_changes),
        ]
    )
    building.rename(repo)
    (repo / ".bench-complete").write_text("built by benchmarks/run.py\n", encoding="utf-8")
    log(f"repository: built in {time.perf_counter() - start:.1f} s")
    return repo


def print_header(work: Path, cli: Path) -> None:
    import pygit2

    log("deployhq-lite benchmarks")
    log(f"  machine   {platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}")
    log(f"  python    {sys.version.split()[0]} ({sys.executable})")
    version = getattr(pygit2, "__version__", "?")
    log(f"  pygit2    {version} (libgit2 {pygit2.LIBGIT2_VERSION})")
    log(f"  git       {tool_version(['git', '--version'])}")
    log(f"  rsync     {tool_version(['rsync', '--version'])}")
    log(f"  cli       {cli}")
    log(f"  package   {package_revision()}")
    log(f"  workdir   {work}")
    log(f"  fs        {filesystem_of(work)}")
    log("  load avg  " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


def package_revision() -> str:
    """The commit of the working tree being measured, and whether the package is edited."""
    try:
        head = git(ROOT, "rev-parse", "--short=12", "HEAD").decode().strip()
        dirty = git(ROOT, "status", "--porcelain", "--", "deployhq_lite", "pyproject.toml")
    except BenchError as exc:
        return f"unknown ({str(exc).splitlines()[0]})"
    return f"{head}" + (" + uncommitted changes in deployhq_lite/" if dirty.strip() else "")


def guarded(name: str, rows: list[Row], fn: Callable[[], list[Row]]) -> bool:
    """Run one case; on failure print the traceback, add an ERROR row and go on."""
    try:
        rows.extend(fn())
        return True
    except Exception as exc:
        traceback.print_exc()
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        rows.append(Row(name, None, None, "-", error=message))
        return False


def run_deploy_cases(args: argparse.Namespace, repo: Path, run_dir: Path, rows: list[Row]) -> bool:
    ok = True
    try:
        bench = Bench(repo, run_dir, find_cli(), args.repeat, args.warmup)
    except Exception as exc:
        traceback.print_exc()
        rows.append(Row("deploy benchmarks set-up", None, None, "-", error=str(exc)))
        return False
    try:
        for name, case in CASES:
            ok = guarded(name, rows, functools.partial(case, bench)) and ok
    finally:
        try:
            bench.close()
        except BenchError as exc:
            log(f"warning: {exc}")
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    cli = find_cli()
    settle.configure(work, args.settle_timeout)
    print_header(work, cli)
    repo = ensure_repo(args, work / "cache")
    git(repo, "worktree", "prune")
    run_dir = work / "run"
    remove(run_dir)
    run_dir.mkdir()
    rows: list[Row] = []
    ok = True
    started = time.perf_counter()
    if args.only in (None, "changeset"):
        settle()
        log(f"\n(a) changeset v1 -> v2, {args.repeat} runs each, alternating")
        ok = guarded("changeset", rows, lambda: run_changeset(repo, args.repeat)) and ok
    if args.only in (None, "deploy"):
        ok = run_deploy_cases(args, repo, run_dir, rows) and ok
    remove(run_dir)
    log(f"\nsummary (medians of {args.repeat} runs; whole processes except 'changeset' ours)")
    log(f"  workdir {work} on {filesystem_of(work)}; total {time.perf_counter() - started:.0f} s")
    log("  load avg  " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    log(f"  {settle.describe()}")
    print_table(rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
