"""(b) Whole ``deployhq-lite deploy`` processes into a local directory vs ``rsync -a``.

Every timed run starts from the same prepared state, rebuilt (untimed) before each
repetition; ours and the reference alternate (A B A B ...). After each of our runs the
destination is compared with the git tree, file by file (content, exec bit, symlinks,
no leftovers, no stray directories), and the server marker must name the revision.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    BenchError,
    GitTree,
    Row,
    alternate,
    copy_tree,
    git,
    git_tree,
    log,
    remove,
    run,
    settle,
    timed,
    timed_all,
    verify_tree,
)

PROJECT = "bench"
SERVER = "local"
TARGET_INITIAL = 1.5
TARGET_SMALL = 1.0
TARGET_NOOP = 1.0


def _rsync_delete(src: Path, dest: Path) -> list[str]:
    return ["rsync", "-a", "--delete", "--exclude=/.git", f"{src}/", f"{dest}/"]


def _with_sync(cmd: list[str], dest: Path) -> list[list[str]]:
    """The command followed by ``sync -f`` (syncfs of dest's filesystem, like our deploy)."""
    return [cmd, ["sync", "-f", str(dest)]]


def _fresh_dir(path: Path) -> Path:
    remove(path)
    path.mkdir(parents=True)
    return path


@dataclass
class Bench:
    repo: Path
    work: Path
    cli: Path
    repeat: int
    warmup: int = 1
    revisions: dict[str, str] = field(default_factory=dict)
    trees: dict[str, GitTree] = field(default_factory=dict)
    _golden: Path | None = None
    _worktree: Path | None = None

    def __post_init__(self) -> None:
        for tag in ("v1", "v2", "v3"):
            self.revisions[tag] = git(self.repo, "rev-parse", f"{tag}^{{commit}}").decode().strip()
            self.trees[tag] = git_tree(self.repo, tag)

    # -- our side -------------------------------------------------------------------------

    def scenario(self, path: Path) -> Path:
        """A fresh config + empty server root; state_dir and root relative to the config."""
        _fresh_dir(path / "root")
        (path / "config.toml").write_text(
            'state_dir = "state"\n\n'
            f"[projects.{PROJECT}]\n"
            f"repository = {json.dumps(str(self.repo))}\n"
            'branch = "main"\n\n'
            f"[projects.{PROJECT}.servers.{SERVER}]\n"
            'root = "root"\n',
            encoding="utf-8",
        )
        return path

    def deploy_cmd(self, scenario: Path, tag: str) -> list[str]:
        config = str(scenario / "config.toml")
        cmd = [str(self.cli), "deploy", PROJECT, "--server", SERVER, "--revision", tag]
        return [*cmd, "--config", config]

    def check_ours(self, scenario: Path, tag: str) -> None:
        root = scenario / "root"
        verify_tree(root, self.trees[tag], label=f"deployhq-lite deploy {tag}")
        marker = json.loads((root / ".deployhq-lite" / "revision").read_text(encoding="utf-8"))
        if marker.get("revision") != self.revisions[tag]:
            raise BenchError(f"marker in {root} names {marker.get('revision')}, not {tag}")

    def golden_v2(self) -> Path:
        """A state dir + root after an initial deploy of v2 (built once, restored per run)."""
        if self._golden is None:
            golden = self.scenario(self.work / "golden-v2")
            run(self.deploy_cmd(golden, "v2"))
            self.check_ours(golden, "v2")
            self._golden = golden
        return self._golden

    def restore(self, golden: Path, scenario: Path) -> Path:
        """Make ``scenario`` an exact copy of ``golden`` again, copying only what differs.

        Deleting and re-copying 50,000 files between runs would leave the disk busy and
        slow down the next run, so only what a deploy changed is copied back: in the root
        the files it rewrote (newer mtimes than golden's), plus temp files and new paths
        deleted; the state dir (small, SQLite rewritten in place) is compared by content.
        """
        if not scenario.exists():
            copy_tree(golden, scenario)
            return scenario
        for part, extra in (("root", []), ("state", ["--checksum"])):
            run(["rsync", "-a", "--delete", *extra, f"{golden / part}/", f"{scenario / part}/"])
        return scenario

    # -- the reference side -------------------------------------------------------------------

    def export(self, tag: str, dest: Path) -> Path:
        """A plain checkout of ``tag`` (``git archive``), no ``.git``."""
        _fresh_dir(dest)
        tar = dest.with_suffix(".tar")
        git(self.repo, "archive", "--format=tar", "-o", str(tar), tag)
        run(["tar", "-xf", str(tar), "-C", str(dest)])
        tar.unlink()
        return dest

    def worktree(self) -> Path:
        """A ``git worktree`` of the source repository (checked out at v2 at first)."""
        if self._worktree is None:
            path = self.work / "worktree"
            git(self.repo, "worktree", "prune")
            remove(path)
            git(self.repo, "worktree", "add", "-q", "--detach", str(path), "v2")
            self._worktree = path
        return self._worktree

    def checkout(self, tag: str) -> None:
        """Only files that differ get rewritten, so only they get new mtimes."""
        git(self.worktree(), "checkout", "-q", "--detach", tag)

    def close(self) -> None:
        if self._worktree is not None:
            git(self.repo, "worktree", "remove", "--force", str(self._worktree))
            self._worktree = None


def _repeat(
    bench: Bench, label: str, steps: dict[str, Callable[[int], float]]
) -> dict[str, list[float]]:
    return alternate(label, steps, repeat=bench.repeat, warmup=bench.warmup)


# -- the cases ---------------------------------------------------------------------------------


def case_initial(bench: Bench) -> list[Row]:
    """Initial deploy of v1 into an empty root vs ``rsync -a export_v1/ empty/``."""
    files = len(bench.trees["v1"])
    log(f"\n(b1) initial deploy of v1 ({files} files) into an empty directory")
    source = bench.export("v1", bench.work / "export-v1")
    verify_tree(source, bench.trees["v1"], label="git archive v1", skip_marker=False)
    # A new directory per run: deleting 50,000 files between runs slows the next run down.
    made: list[Path] = [source]

    def new_dir(name: str, i: int) -> Path:
        made.append(_fresh_dir(bench.work / f"initial-{name}-{i}"))
        return made[-1]

    def ours(i: int) -> float:
        scenario = bench.scenario(new_dir("ours", i))
        settle()
        elapsed = timed(bench.deploy_cmd(scenario, "v1"))
        bench.check_ours(scenario, "v1")
        return elapsed

    def rsync(i: int) -> float:
        dest = new_dir("rsync", i)
        settle()
        elapsed = timed(["rsync", "-a", f"{source}/", f"{dest}/"])
        if i == 0:
            verify_tree(dest, bench.trees["v1"], label="rsync v1", skip_marker=False)
        return elapsed

    def rsync_sync(i: int) -> float:
        dest = new_dir("rsync-sync", i)
        settle()
        return timed_all(_with_sync(["rsync", "-a", f"{source}/", f"{dest}/"], dest))

    try:
        runs = _repeat(
            bench,
            "initial",
            {"deployhq-lite": ours, "rsync -a": rsync, "rsync -a; sync -f": rsync_sync},
        )
    finally:
        for path in made:
            remove(path)
    case = f"initial deploy v1 ({files} files)"
    return [
        Row(case, runs["deployhq-lite"], runs["rsync -a"], "rsync -a", TARGET_INITIAL),
        Row(case, runs["deployhq-lite"], runs["rsync -a; sync -f"], "rsync -a; sync -f"),
    ]


def _changed_by_rsync(src: Path, dest: Path) -> int:
    """How many files a ``rsync -a --delete`` would transfer or delete (dry run)."""
    cmd = _rsync_delete(src, dest)
    out = run([*cmd[:-2], "--dry-run", "--itemize-changes", *cmd[-2:]]).decode()
    return sum(1 for line in out.splitlines() if line.startswith((">f", "*deleting")))


def _prepare_rsync_small(bench: Bench, dest: Path) -> Path:
    """dest == worktree at v2, then the worktree moves to v3 (only changed files touched)."""
    worktree = bench.worktree()
    bench.checkout("v2")
    run(_rsync_delete(worktree, dest))
    bench.checkout("v3")
    return worktree


def _count_changes(old: GitTree, new: GitTree) -> int:
    return sum(1 for p in set(old) | set(new) if old.get(p) != new.get(p))


def case_small(bench: Bench) -> list[Row]:
    """v2 -> v3 (the small change set) vs ``rsync -a --delete`` from a touched checkout."""
    changes = _count_changes(bench.trees["v2"], bench.trees["v3"])
    log(f"\n(b2) deploy v2 -> v3 ({changes} changed paths)")
    golden = bench.golden_v2()
    scenario, dest = bench.work / "small-ours", bench.work / "small-rsync"
    worktree = _prepare_rsync_small(bench, _fresh_dir(dest))
    would_change = _changed_by_rsync(worktree, dest)
    log(f"  rsync sees {would_change} files to transfer/delete after `git checkout v3`")
    if would_change != changes:
        raise BenchError(f"unfair reference: rsync would touch {would_change} files, not {changes}")

    def ours(_: int) -> float:
        bench.restore(golden, scenario)
        settle()
        elapsed = timed(bench.deploy_cmd(scenario, "v3"))
        bench.check_ours(scenario, "v3")
        return elapsed

    def rsync(i: int) -> float:
        _prepare_rsync_small(bench, dest)
        settle()
        elapsed = timed(_rsync_delete(worktree, dest))
        if i == 0:
            verify_tree(dest, bench.trees["v3"], label="rsync v3", skip_marker=False)
        return elapsed

    def rsync_sync(_: int) -> float:
        _prepare_rsync_small(bench, dest)
        settle()
        return timed_all(_with_sync(_rsync_delete(worktree, dest), dest))

    try:
        runs = _repeat(
            bench,
            "v2->v3",
            {
                "deployhq-lite": ours,
                "rsync -a --delete": rsync,
                "rsync --delete; sync -f": rsync_sync,
            },
        )
    finally:
        remove(scenario)
        remove(dest)
    case = f"deploy v2->v3 ({changes} changes)"
    return [
        Row(
            case,
            runs["deployhq-lite"],
            runs["rsync -a --delete"],
            "rsync -a --delete",
            TARGET_SMALL,
        ),
        Row(
            case, runs["deployhq-lite"], runs["rsync --delete; sync -f"], "rsync --delete; sync -f"
        ),
    ]


def case_noop(bench: Bench) -> list[Row]:
    """Deploying v3 again vs ``rsync -a`` of the v3 checkout into a destination that matches.

    ``rsync -a`` (no ``--delete``) is the target's reference, as in the issue: it skips
    the receiver-side scan, so it is the faster of the two; ``--delete`` is informational.
    """
    log("\n(b3) no-op: deploy v3 again (server already at v3)")
    scenario, golden = bench.work / "noop-ours", bench.work / "golden-noop"
    bench.restore(bench.golden_v2(), golden)
    run(bench.deploy_cmd(golden, "v3"))
    bench.check_ours(golden, "v3")
    dest = _fresh_dir(bench.work / "noop-rsync")
    worktree = bench.worktree()
    bench.checkout("v3")
    run(_rsync_delete(worktree, dest))
    if _changed_by_rsync(worktree, dest):
        raise BenchError("unfair reference: rsync would still transfer files")

    def ours(_: int) -> float:
        bench.restore(golden, scenario)
        settle()
        elapsed = timed(bench.deploy_cmd(scenario, "v3"))
        bench.check_ours(scenario, "v3")
        return elapsed

    plain = ["rsync", "-a", "--exclude=/.git", f"{worktree}/", f"{dest}/"]

    def rsync(i: int) -> float:
        settle()
        elapsed = timed(plain)
        if i == 0:
            verify_tree(dest, bench.trees["v3"], label="rsync no-op", skip_marker=False)
        return elapsed

    def rsync_delete(_: int) -> float:
        settle()
        return timed(_rsync_delete(worktree, dest))

    try:
        runs = _repeat(
            bench,
            "no-op",
            {"deployhq-lite": ours, "rsync -a": rsync, "rsync -a --delete": rsync_delete},
        )
    finally:
        for path in (scenario, golden, dest):
            remove(path)
    case = f"no-op deploy v3 again ({len(bench.trees['v3'])} files)"
    return [
        Row(case, runs["deployhq-lite"], runs["rsync -a"], "rsync -a no-op", TARGET_NOOP),
        Row(case, runs["deployhq-lite"], runs["rsync -a --delete"], "rsync --delete no-op"),
    ]


CASES: list[tuple[str, Callable[[Bench], list[Row]]]] = [
    ("initial deploy v1", case_initial),
    ("deploy v2->v3", case_small),
    ("no-op deploy v3", case_noop),
]
