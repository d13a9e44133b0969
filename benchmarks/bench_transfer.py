"""The cases of transfer_bench.py: our SFTP deploy vs rsync over ssh, scp and sftp -b.

Each case alternates whole processes (ours, the reference, ours, ...), every timed run
starting from the same server state, rebuilt untimed before it (a new directory, or a
golden copy restored with ``rsync -a --delete``). After each of our runs the server root
is compared with ``git ls-tree`` of the revision (content, exec bit, no leftovers, no
stray directories) and the marker must name the revision; each reference's result is
checked the same way once per case.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    BenchError,
    GitTree,
    Row,
    alternate,
    copy_tree,
    git_tree,
    log,
    remove,
    run,
    settle,
    verify_tree,
)
from transfer_data import Data
from transfer_rss import Measured, ProcessPeak, describe_peaks, measure

from deployhq_lite.testing.sshd import SSHServer

PROJECT = "bench"
SERVER = "sftp"
CIPHER = "aes128-gcm@openssh.com"
TARGET_SMALL = 1.3
TARGET_MB = 1.3
TARGET_BIG = 1.5
TARGET_RSS_MIB = 100


Samples = dict[str, list[float]]  # side -> timed runs


def _fresh_dir(path: Path) -> Path:
    remove(path)
    path.mkdir(parents=True)
    return path


@dataclass(frozen=True, slots=True)
class RSSLine:
    """Peak RSS of our deploy for one case, the reference's beside it."""

    label: str
    ours_kib: int  # wait4 ru_maxrss: the process tree's peak
    reference: str = ""  # e.g. "scp 6 MiB"
    sampled: str = ""  # per process, when sampled
    target_mib: float | None = None


@dataclass
class Bench:
    data: Data
    server: SSHServer
    cli: Path
    work: Path
    repeat: int
    warmup: int
    timeout: float  # seconds any one process may take
    trees: dict[str, GitTree] = field(default_factory=dict)
    revisions: dict[str, str] = field(default_factory=dict)
    rss: list[RSSLine] = field(default_factory=list)
    _golden: Path | None = None

    def __post_init__(self) -> None:
        for tag in self.data.tags:
            self.trees[tag] = git_tree(self.data.repo, tag)
            rev = run(["git", "-C", str(self.data.repo), "rev-parse", f"{tag}^{{commit}}"])
            self.revisions[tag] = rev.decode().strip()

    # -- our side -------------------------------------------------------------------------

    def scenario(self, name: str) -> Path:
        """A fresh directory with a config, an empty server root and no state yet."""
        path = _fresh_dir(self.work / name)
        (path / "root").mkdir()
        self.write_config(path)
        return path

    def write_config(self, path: Path) -> Path:
        s = self.server
        keys = {
            "protocol_type": "ssh",
            "root": str(path / "root"),  # a path on the server: absolute, same machine
            "host": s.host,
            "port": s.port,
            "user": s.user,
            "key_path": str(s.user_key),
            "known_hosts_path": str(s.known_hosts),
            "use_agent": False,
        }
        lines = [
            'state_dir = "state"',
            "",
            f"[projects.{PROJECT}]",
            f"repository = {json.dumps(str(self.data.repo))}",
            'branch = "main"',
            "",
            f"[projects.{PROJECT}.servers.{SERVER}]",
            *(f"{k} = {json.dumps(v)}" for k, v in keys.items()),
        ]
        config = path / "config.toml"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return config

    def deploy_cmd(self, scenario: Path, tag: str) -> list[str]:
        config = str(scenario / "config.toml")
        cmd = [str(self.cli), "deploy", PROJECT, "--server", SERVER, "--revision", tag]
        return [*cmd, "--config", config]

    def deploy(self, scenario: Path, tag: str, *, sample: bool = False) -> Measured:
        """One whole deploy process, then the exact tree and the marker are checked.

        ``sample``: poll the RSS of each process below it while it runs (costs some CPU:
        only in warm-up rounds and untimed runs).
        """
        done = self.measure(self.deploy_cmd(scenario, tag), sample=sample)
        root = scenario / "root"
        verify_tree(root, self.trees[tag], label=f"deployhq-lite deploy {tag} over SFTP")
        marker = json.loads((root / ".deployhq-lite" / "revision").read_text(encoding="utf-8"))
        if marker.get("revision") != self.revisions[tag]:
            raise BenchError(f"marker in {root} names {marker.get('revision')}, not {tag}")
        return done

    def measure(self, cmd: list[str], *, sample: bool = False) -> Measured:
        return measure(cmd, timeout=self.timeout, sample=sample)

    def golden_small(self) -> Path:
        """A state dir + root after deploying ``small`` (built once, restored per run)."""
        if self._golden is None:
            scenario = self.scenario("deployed")
            self.deploy(scenario, "small")
            copy_tree(scenario, self.work / "golden-small")
            self._golden = self.work / "golden-small"
        return self._golden

    def restore_deployed(self) -> Path:
        """``work/deployed`` back to exactly the golden state, copying only what differs."""
        golden, scenario = self.golden_small(), self.work / "deployed"
        for part, extra in (("root", []), ("state", ["--checksum"])):
            run(["rsync", "-a", "--delete", *extra, f"{golden / part}/", f"{scenario / part}/"])
        return scenario

    # -- the reference side -------------------------------------------------------------------

    def ssh_options(self) -> list[str]:
        """What every OpenSSH client gets: no config files, this key, this host key, gcm."""
        s = self.server
        return [
            "-F",
            "none",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={s.known_hosts}",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            str(s.user_key),
            "-c",
            CIPHER,
        ]

    def remote(self, path: Path) -> str:
        return f"{self.server.user}@{self.server.host}:{path}"

    def rsync_cmd(self, src: Path, dest: Path, *extra: str) -> list[str]:
        ssh = " ".join(shlex.quote(w) for w in ["ssh", "-p", str(self.server.port)])
        ssh += " " + " ".join(shlex.quote(w) for w in self.ssh_options())
        return ["rsync", "-a", *extra, "-e", ssh, f"{src}/", self.remote(dest) + "/"]

    def scp_cmd(self, *args: str) -> list[str]:
        return ["scp", "-q", "-P", str(self.server.port), *self.ssh_options(), *args]

    def sftp_cmd(self, batch: Path) -> list[str]:
        s = self.server
        target = f"{s.user}@{s.host}"
        return ["sftp", "-q", "-b", str(batch), "-P", str(s.port), *self.ssh_options(), target]


def _alternate(bench: Bench, label: str, steps: dict[str, Callable[[int], float]]) -> Samples:
    return alternate(label, steps, repeat=bench.repeat, warmup=bench.warmup)


class Peak:
    """The highest RSS seen over a case's runs, per side; per process from sampled runs."""

    def __init__(self, reference: str) -> None:
        self.reference = reference
        self.kib: dict[str, int] = {}
        self.sampled: dict[str, ProcessPeak] = {}

    def add(self, side: str, done: Measured) -> float:
        self.kib[side] = max(self.kib.get(side, 0), done.tree_peak_kib)
        for name, found in done.sampled.items():
            before = self.sampled.get(name)
            self.sampled[name] = before.merge(found) if before else found
        return done.elapsed

    def reference_mib(self) -> str:
        ref = self.kib.get(self.reference)
        return "" if ref is None else f"{self.reference} {ref / 1024:.0f} MiB"

    def line(self, label: str) -> RSSLine:
        sampled = describe_peaks(self.sampled) if self.sampled else ""
        return RSSLine(label, self.kib.get("ours", 0), self.reference_mib(), sampled)


# -- the cases ---------------------------------------------------------------------------------


def _initial(bench: Bench, tag: str, peak: Peak) -> Callable[[int], float]:
    """Our side of an initial deploy: fresh state, empty root, new directory per run."""

    def ours(i: int) -> float:
        scenario = bench.scenario(f"{tag}-ours-{i}")
        settle()
        elapsed = peak.add("ours", bench.deploy(scenario, tag, sample=i < bench.warmup))
        remove(scenario)
        return elapsed

    return ours


def case_small(bench: Bench) -> list[Row]:
    """(1) Initial deploy of ``small`` vs ``rsync -a -e ssh`` of a checkout into an empty dir."""
    files = len(bench.trees["small"])
    log(f"\n(1) initial deploy of {files} small files vs rsync -a -e ssh into an empty dir")
    source, peak = bench.data.export("small"), Peak("rsync")

    def rsync(i: int) -> float:
        dest = _fresh_dir(bench.work / f"small-rsync-{i}")
        settle()
        elapsed = peak.add("rsync", bench.measure(bench.rsync_cmd(source, dest)))
        if i == 0:
            verify_tree(dest, bench.trees["small"], label="rsync small", skip_marker=False)
        remove(dest)
        return elapsed

    steps = {"deployhq-lite": _initial(bench, "small", peak), "rsync -a -e ssh": rsync}
    runs = _alternate(bench, "small files", steps)
    case = f"(1) initial, {files} files 1-8 KiB"
    bench.rss.append(peak.line(case))
    ours, ref = runs["deployhq-lite"], runs["rsync -a -e ssh"]
    return [Row(case, ours, ref, "rsync -a -e ssh", TARGET_SMALL)]


def case_mb(bench: Bench) -> list[Row]:
    """(2) 200 x 1 MiB into an empty root vs ``scp -r`` of a checkout."""
    files = len(bench.trees["mb"])
    log(f"\n(2) initial deploy of {files} x 1 MiB vs scp -r into an empty dir")
    source, peak = bench.data.export("mb"), Peak("scp")

    def scp(i: int) -> float:
        parent = _fresh_dir(bench.work / f"mb-scp-{i}")
        dest = parent / "root"  # absent: ``scp -r src host:dest`` makes dest a copy of src
        settle()
        elapsed = peak.add(
            "scp", bench.measure(bench.scp_cmd("-r", str(source), bench.remote(dest)))
        )
        if i == 0:
            verify_tree(dest, bench.trees["mb"], label="scp -r mb", skip_marker=False)
        remove(parent)
        return elapsed

    runs = _alternate(
        bench, "1 MiB files", {"deployhq-lite": _initial(bench, "mb", peak), "scp -r": scp}
    )
    case = f"(2) initial, {files} x 1 MiB"
    bench.rss.append(peak.line(case))
    return [Row(case, runs["deployhq-lite"], runs["scp -r"], "scp -r", TARGET_MB)]


def case_big(bench: Bench) -> list[Row]:
    """(3) One big file vs ``scp``; then our peak RSS for it and for a 64 MiB file."""
    mib = bench.data.big_mib
    log(f"\n(3) initial deploy of one {mib} MiB file vs scp into an empty dir")
    source, peak = bench.data.export("big") / "big.bin", Peak("scp")

    def scp(i: int) -> float:
        dest = _fresh_dir(bench.work / f"big-scp-{i}")
        settle()
        elapsed = peak.add("scp", bench.measure(bench.scp_cmd(str(source), bench.remote(dest))))
        if i == 0:
            verify_tree(dest, bench.trees["big"], label="scp big", skip_marker=False)
        remove(dest)
        return elapsed

    runs = _alternate(
        bench, "big file", {"deployhq-lite": _initial(bench, "big", peak), "scp": scp}
    )
    log("  peak RSS: one more deploy per size, untimed, with descendants sampled")
    for tag, size in (("big64", 64), ("big", mib)):
        scenario = bench.scenario(f"rss-{tag}")
        settle()
        done = bench.deploy(scenario, tag, sample=True)
        remove(scenario)
        sampled = describe_peaks(done.sampled)
        tree = f"tree {done.tree_peak_kib / 1024:.0f} MiB"
        log(f"    {size:>5} MiB file: {done.elapsed:.3f} s, {tree}, {sampled}")
        ref = peak.reference_mib() if tag == "big" else ""
        label = f"(3) one {size} MiB file"
        bench.rss.append(RSSLine(label, done.tree_peak_kib, ref, sampled, TARGET_RSS_MIB))
    return [
        Row(f"(3) initial, 1 x {mib} MiB", runs["deployhq-lite"], runs["scp"], "scp", TARGET_BIG)
    ]


def _delete_batch(bench: Bench, dest: Path) -> tuple[Path, int]:
    """An ``sftp -b`` script: cd, one ``rm`` per deleted file, one ``rmdir`` per emptied dir."""
    gone = sorted(set(bench.trees["small"]) - set(bench.trees["small-del"]))
    dirs = sorted({p.rsplit("/", 1)[0] for p in gone if "/" in p}, reverse=True)
    lines = [f'cd "{dest}"', *(f'rm "{p}"' for p in gone), *(f'rmdir "{d}"' for d in dirs)]
    batch = bench.work / "delete.sftp"
    batch.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return batch, len(dirs)


def case_delete(bench: Bench) -> list[Row]:
    """(4) Deploy ``small-del`` over ``small`` vs ``sftp -b`` removing the same files."""
    count = len(set(bench.trees["small"]) - set(bench.trees["small-del"]))
    source, peak = bench.data.export("small"), Peak("sftp")
    dest = _fresh_dir(bench.work / "delete-sftp")
    batch, dirs = _delete_batch(bench, dest)
    log(f"\n(4) {count} deletes + {dirs} emptied dirs: deploy small-del over small vs sftp -b")

    def ours(i: int) -> float:
        scenario = bench.restore_deployed()
        settle()
        return peak.add("ours", bench.deploy(scenario, "small-del", sample=i < bench.warmup))

    def sftp(i: int) -> float:
        run(["rsync", "-a", "--delete", f"{source}/", f"{dest}/"])
        settle()
        elapsed = peak.add("sftp", bench.measure(bench.sftp_cmd(batch)))
        if i == 0:
            verify_tree(dest, bench.trees["small-del"], label="sftp -b rm", skip_marker=False)
        return elapsed

    try:
        runs = _alternate(bench, "deletes", {"deployhq-lite": ours, "sftp -b": sftp})
    finally:
        remove(dest)
    case = f"(4) delete {count} files"
    bench.rss.append(peak.line(case))
    return [Row(case, runs["deployhq-lite"], runs["sftp -b"], f"sftp -b, {count} rm")]


def case_noop(bench: Bench) -> list[Row]:
    """(5) Deploy ``small`` again (nothing changed) vs an rsync over ssh that sends nothing."""
    log("\n(5) no-op: deploy small again vs rsync -a -e ssh into an up-to-date dir")
    source, peak = bench.data.export("small"), Peak("rsync")
    dest = _fresh_dir(bench.work / "noop-rsync")
    run(bench.rsync_cmd(source, dest))
    out = run(bench.rsync_cmd(source, dest, "--dry-run", "--itemize-changes")).decode()
    if any(line.startswith((">f", "cd", "*deleting")) for line in out.splitlines()):
        raise BenchError(f"unfair reference: rsync would still transfer files:\n{out[:500]}")

    def ours(i: int) -> float:
        scenario = bench.restore_deployed()
        settle()
        return peak.add("ours", bench.deploy(scenario, "small", sample=i < bench.warmup))

    def rsync(i: int) -> float:
        settle()
        elapsed = peak.add("rsync", bench.measure(bench.rsync_cmd(source, dest)))
        if i == 0:
            verify_tree(dest, bench.trees["small"], label="rsync no-op", skip_marker=False)
        return elapsed

    try:
        runs = _alternate(bench, "no-op", {"deployhq-lite": ours, "rsync -a -e ssh": rsync})
    finally:
        remove(dest)
    case = f"(5) no-op, {len(bench.trees['small'])} files"
    bench.rss.append(peak.line(case))
    return [Row(case, runs["deployhq-lite"], runs["rsync -a -e ssh"], "rsync -a -e ssh no-op")]


CASES: dict[str, Callable[[Bench], list[Row]]] = {
    "small": case_small,
    "mb": case_mb,
    "big": case_big,
    "delete": case_delete,
    "noop": case_noop,
}
