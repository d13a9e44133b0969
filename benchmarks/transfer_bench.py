"""Our SFTP deploy vs OpenSSH's scp and sftp and rsync over ssh, side by side in one run.

    python benchmarks/transfer_bench.py [--repeat 3] [--warmup 1] [--big-mib 512]
                                        [--workdir DIR] [--settle-timeout 5]
                                        [--timeout 120] [--only CASE ...]

Starts its own OpenSSH ``sshd`` on 127.0.0.1 (``deployhq_lite.testing.sshd``) and times
whole processes on both sides: ``deployhq-lite deploy`` over its SFTP transport against
``rsync -a -e ssh``, ``scp`` and ``sftp -b``, all with the same key, known_hosts and cipher
(aes128-gcm@openssh.com). Every timed run starts from the same server state, rebuilt
untimed before it; ours and the reference alternate. After each of our runs the server
root is compared with the git tree, file by file, and the marker must name the revision.
Peak RSS comes from ``wait4`` (see transfer_rss.py).

Exit status 0 when every case ran (a missed target is a measurement, not an error), 1 when
any case errored or a deploy left a wrong tree.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from bench_transfer import CASES, Bench, RSSLine
from common import ENV, Row, filesystem_of, find_cli, log, print_table, remove, settle, tool_version
from run import guarded, package_revision
from transfer_data import Data, ensure_data
from transfer_rss import launcher_floor

from deployhq_lite.testing.sshd import start_sshd


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per side (3)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted rounds per case (1)")
    parser.add_argument("--big-mib", type=int, default=512, help="case 3's file in MiB (512)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "deployhq-lite-transfer-bench",
        help="work files and the cached data (default: $TMPDIR/deployhq-lite-transfer-bench)",
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=5.0,
        help="before each timed run, wait up to this many seconds for an idle disk and CPU (5)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="kill any one command still running after this many seconds (120)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(CASES),
        help="run only this case; repeat the option for several",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0 or args.big_mib < 1:
        parser.error("--repeat and --big-mib must be at least 1, --warmup at least 0")
    return args


def _stderr_of(cmd: Sequence[str]) -> str:
    """The first line a tool prints on stderr (``ssh -V``)."""
    try:
        done = subprocess.run(list(cmd), capture_output=True, check=False, env=ENV)
    except OSError:
        return "not installed"
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    return lines[0] if lines else "?"


def print_header(work: Path, cli: Path, big_mib: int) -> None:
    import paramiko

    log("deployhq-lite transfer benchmarks (SFTP to a loopback OpenSSH sshd)")
    log(f"  machine   {platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}")
    log(f"  python    {sys.version.split()[0]} ({sys.executable})")
    log(f"  paramiko  {paramiko.__version__}")
    log(f"  openssh   {_stderr_of(['ssh', '-V'])}")
    log(f"  rsync     {tool_version(['rsync', '--version'])}")
    log(f"  cli       {cli}")
    log(f"  package   {package_revision()}")
    log(f"  workdir   {work}")
    log(f"  fs        {filesystem_of(work)}")
    log(f"  big file  {big_mib} MiB")
    log("  load avg  " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


def print_rss(lines: Sequence[RSSLine], floor_kib: int) -> None:
    if not lines:
        return
    log(
        "\npeak RSS (wait4 ru_maxrss of the process tree: the highest of the process and of"
        f"\nevery descendant it waited for; {floor_kib / 1024:.1f} MiB is the launcher's floor)"
    )
    width = max(len(line.label) for line in lines)
    for line in lines:
        cells = [f"  {line.label:<{width}}  ours {line.ours_kib / 1024:5.0f} MiB"]
        if line.target_mib is not None:
            ok = line.ours_kib / 1024 <= line.target_mib
            cells.append(f"target <= {line.target_mib:g} MiB: {'pass' if ok else 'MISS'}")
        cells += [f"[{line.reference}]" if line.reference else "", line.sampled]
        log("  ".join(c for c in cells if c))


def run_cases(
    args: argparse.Namespace, data: Data, run_dir: Path, rows: list[Row]
) -> tuple[bool, list[RSSLine]]:
    """Every case selected, each guarded: a failure adds an ERROR row and the next one runs."""
    ok = True
    with start_sshd(run_dir / "sshd") as server:
        log(f"\nsshd: {server.user}@{server.host}:{server.port} (internal-sftp, key only)")
        bench = Bench(data, server, find_cli(), run_dir, args.repeat, args.warmup, args.timeout)
        for name in args.only or list(CASES):
            ok = guarded(name, rows, functools.partial(CASES[name], bench)) and ok
    return ok, bench.rss


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    cli = find_cli()
    settle.configure(work, args.settle_timeout)
    print_header(work, cli, args.big_mib)
    data = ensure_data(work / "cache", args.big_mib)
    run_dir = work / "run"
    remove(run_dir)
    run_dir.mkdir()
    rows: list[Row] = []
    rss: list[RSSLine] = []
    try:
        ok, rss = run_cases(args, data, run_dir, rows)
    except Exception as exc:  # sshd did not start, or reading the repository failed
        traceback.print_exc()
        rows.append(Row("set-up", None, None, "-", error=str(exc).splitlines()[0]))
        ok = False
    remove(run_dir)
    log(f"\nsummary (medians of {args.repeat} runs; whole processes on both sides)")
    log(f"  workdir {work} on {filesystem_of(work)}; total {time.perf_counter() - started:.0f} s")
    log("  load avg  " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    log(f"  {settle.describe()}")
    print_table(rows)
    print_rss(rss, launcher_floor())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
