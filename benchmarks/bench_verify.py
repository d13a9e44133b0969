"""``deployhq-lite verify`` against rsync's dry runs, side by side in one run.

    python benchmarks/bench_verify.py [--files 50000] [--ssh-files 3000] [--repeat 5]

Local: a server of ``--files`` files (1-8 KiB) deployed, then 100 differences made on it
(40 same-size edits, 20 deletions, 20 chmods, 20 new files). ``verify`` is timed against
``rsync -anc --delete --itemize-changes`` from an export of the same revision (rsync
reads and checksums both sides; we hash the server's files only, the snapshot's blob ids
being known), and ``verify --fast`` against ``rsync -an --delete`` (its quick check:
size and time). SSH: ``--ssh-files`` files on a real sshd on 127.0.0.1, ``verify`` (one
remote ``git hash-object``) against ``rsync -anc -e ssh``, and ``verify`` reading files
back over SFTP (a server that allows no commands) for the record. Every run of ours
must find exactly the differences made (checked from its JSON), and rsync must list them.
Whole processes are timed; ours and the reference alternate (A B A B ...).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (
    ENV,
    BenchError,
    Row,
    alternate,
    find_cli,
    log,
    print_table,
    remove,
    run,
    settle,
)

from deployhq_lite.repobuilder import GitRepoBuilder
from deployhq_lite.testing.sshd import SSHServer, start_sshd

TARGET_FULL = 1.0
TARGET_FAST = 0.5
TARGET_SSH = 1.0
DIFFERENCES = {"modified": 40, "missing": 20, "mode": 20, "extra": 20}


def _content(rng: random.Random) -> bytes:
    size = rng.randint(1024, 8192)
    return rng.randbytes(size // 2).hex().encode()[:size]


def make_repo(path: Path, files: int) -> str:
    rng = random.Random(7)
    repo = GitRepoBuilder.create(path)
    repo.commit(
        {
            f"d{i % 100:02d}/s{(i // 100) % 50:02d}/file{i:06d}.txt": _content(rng)
            for i in range(files)
        },
        "v1",
    )
    return repo.head()


def write_config(work: Path, repo: Path, root: Path, server: str) -> Path:
    config = work / "deployhq-lite.toml"
    config.write_text(
        f'state_dir = "{work / "state"}"\n\n[projects.bench]\nrepository = "{repo}"\n'
        f'branch = "main"\n\n[projects.bench.servers.local]\nprotocol_type = "local"\n'
        f'root = "{root}"\n' + server
    )
    return config


def export(root: Path, dest: Path) -> None:
    """The revision as deployed, beside the server: ``cp -a`` of the server before the
    differences are made, so rsync's quick check sees the same times (an export made
    by ``git archive`` would differ in every file's time, and rsync would list all)."""
    remove(dest)
    run(["cp", "-a", str(root), str(dest)])
    remove(dest / ".deployhq-lite")


def make_differences(root: Path, seed: int = 3) -> dict[str, str]:
    """The 100 differences, made on the server; path -> the kind verify must report."""
    rng = random.Random(seed)
    files = sorted(p for p in root.rglob("*.txt") if ".deployhq-lite" not in p.parts)
    picked = rng.sample(files, sum(DIFFERENCES.values()) - DIFFERENCES["extra"])
    made: dict[str, str] = {}
    edits = picked[: DIFFERENCES["modified"]]
    gone = picked[len(edits) : len(edits) + DIFFERENCES["missing"]]
    chmods = picked[len(edits) + len(gone) :]
    for path in edits:
        data = bytearray(path.read_bytes())
        data[0] = ord("Z") if data[0] != ord("Z") else ord("Y")  # same size: only a hash tells
        path.write_bytes(bytes(data))
        made[str(path.relative_to(root))] = "modified"
    for path in gone:
        path.unlink()
        made[str(path.relative_to(root))] = "missing"
    for path in chmods:
        path.chmod(0o755)
        made[str(path.relative_to(root))] = "mode"
    for i in range(DIFFERENCES["extra"]):
        extra = root / f"d{i:02d}" / f"extra{i:02d}.txt"
        extra.write_text("not in the revision\n")
        made[str(extra.relative_to(root))] = "extra"
    return made


def timed_verify(cli: Path, config: Path, expected: dict[str, str], *extra: str) -> float:
    """One whole ``verify`` process; it must report exactly ``expected``."""
    cmd = [str(cli), "verify", "bench", "--server", "local", "--config", str(config), "--json"]
    start = time.perf_counter()
    done = subprocess.run([*cmd, *extra], env=ENV, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 1:
        raise BenchError(f"verify exited {done.returncode}: {done.stderr.decode()[-500:]}")
    found = {d["path"]: d["kind"] for d in json.loads(done.stdout)["differences"]}
    if found != expected:
        missed = set(expected.items()) ^ set(found.items())
        raise BenchError(f"verify {' '.join(extra)} found other differences: {sorted(missed)[:5]}")
    return elapsed


def timed_rsync(cmd: Sequence[str], expected: int) -> float:
    """One whole rsync dry run; it must list at least ``expected`` changed paths."""
    start = time.perf_counter()
    done = subprocess.run(list(cmd), env=ENV, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode:
        raise BenchError(f"{cmd[0]} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    listed = [line for line in done.stdout.decode().splitlines() if line and line[0] in "<>*c."]
    if len(listed) < expected:
        raise BenchError(f"rsync listed {len(listed)} changes, expected {expected}+")
    return elapsed


def measure(
    label: str, ours: Callable[[], float], ref: Callable[[], float], args: argparse.Namespace
) -> tuple[list[float], list[float]]:
    def step(fn: Callable[[], float]) -> Callable[[int], float]:
        def go(_: int) -> float:
            settle()
            return fn()

        return go

    got = alternate(
        label, {"ours": step(ours), "reference": step(ref)}, repeat=args.repeat, warmup=1
    )
    return got["ours"], got["reference"]


def local_cases(cli: Path, work: Path, args: argparse.Namespace) -> list[Row]:
    repo, root, exported = work / "repo", work / "root", work / "export"
    log(f"building a repository of {args.files} files ...")
    make_repo(repo, args.files)
    config = write_config(work, repo, root, "")
    run([cli, "deploy", "bench", "--server", "local", "--config", config])
    export(root, exported)
    expected = make_differences(root)
    # rsync compares from the export of the revision to the server (dry run, checksums)
    common = ["-n", "--delete", "--itemize-changes", "--exclude=/.deployhq-lite"]
    rsync_c = ["rsync", "-a", "-c", *common, f"{exported}/", f"{root}/"]
    rsync_q = ["rsync", "-a", *common, f"{exported}/", f"{root}/"]
    fast_expected = {p: k for p, k in expected.items() if k != "modified"}  # same size: unseen
    rows = []
    ours, ref = measure(
        "verify (local)",
        lambda: timed_verify(cli, config, expected),
        lambda: timed_rsync(rsync_c, len(expected)),
        args,
    )
    rows.append(
        Row(
            f"verify, {args.files} local files, 100 differences",
            ours,
            ref,
            "rsync -anc",
            TARGET_FULL,
        )
    )
    ours, ref = measure(
        "verify --fast (local)",
        lambda: timed_verify(cli, config, fast_expected, "--fast"),
        lambda: timed_rsync(rsync_q, len(fast_expected)),
        args,
    )
    rows.append(
        Row(f"verify --fast, {args.files} local files", ours, ref, "rsync -an", TARGET_FAST)
    )
    return rows


def ssh_server_keys(sshd: SSHServer, root: Path) -> str:
    return (
        f'protocol_type = "ssh"\nhost = "{sshd.host}"\nport = {sshd.port}\nuser = "{sshd.user}"\n'
        f'key_path = "{sshd.user_key}"\nknown_hosts_path = "{sshd.known_hosts}"\n'
        "use_agent = false\n"
    )


def ssh_cases(cli: Path, work: Path, args: argparse.Namespace) -> list[Row]:
    """3,000 files on a real sshd: remote hashing vs rsync -anc over ssh, and SFTP
    read-back (a server that runs no commands) for the record."""
    repo, root, exported = work / "ssh-repo", work / "ssh-root", work / "ssh-export"
    make_repo(repo, args.ssh_files)
    rows = []
    with start_sshd(work / "sshd") as sshd, start_sshd(work / "sshd-sftp", sftp_only=True) as only:
        config = write_config(work, repo, root, "")
        text = config.read_text().replace('protocol_type = "local"\n', "")
        config.write_text(text + ssh_server_keys(sshd, root))
        run([cli, "deploy", "bench", "--server", "local", "--config", config])
        export(root, exported)
        expected = make_differences(root)
        ssh = (
            f"ssh -p {sshd.port} -i {sshd.user_key} -o IdentitiesOnly=yes "
            f"-o UserKnownHostsFile={sshd.known_hosts} -o StrictHostKeyChecking=yes"
        )
        common = ["-n", "--delete", "--itemize-changes", "--exclude=/.deployhq-lite", "-e", ssh]
        rsync_c = ["rsync", "-a", "-c", *common, f"{exported}/", f"{sshd.user}@{sshd.host}:{root}/"]
        ours, ref = measure(
            "verify (ssh, remote hashing)",
            lambda: timed_verify(cli, config, expected),
            lambda: timed_rsync(rsync_c, len(expected)),
            args,
        )
        rows.append(
            Row(
                f"verify over SSH, {args.ssh_files} files",
                ours,
                ref,
                "rsync -anc -e ssh",
                TARGET_SSH,
            )
        )
        config.write_text(text + ssh_server_keys(only, root))
        ours, ref = measure(
            "verify (sftp read-back)",
            lambda: timed_verify(cli, config, expected),
            lambda: timed_rsync(rsync_c, len(expected)),
            args,
        )
        rows.append(
            Row(
                f"verify over SFTP read-back, {args.ssh_files} files",
                ours,
                ref,
                "rsync -anc -e ssh",
                None,
            )
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--ssh-files", type=int, default=3_000)
    parser.add_argument("--only", choices=["local", "ssh"], default=None)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    cli = find_cli()
    with tempfile.TemporaryDirectory(prefix="dhq-verify-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        settle.configure(work, 20.0)
        rows = []
        if args.only in (None, "local"):
            rows += local_cases(cli, work, args)
        if args.only in (None, "ssh"):
            rows += ssh_cases(cli, work, args)
    log("")
    print_table(rows)
    log(settle.describe())
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    os.environ.pop("DEPLOYHQ_LITE_CONFIG", None)
    sys.exit(main())
