"""Collecting the snapshot store: one pack of what its refs reach, owned by the store.

The store takes in its sources' pack files as hard links (``git.import_packs``): cheap
while the source keeps them, but every repack of a source leaves the old pack behind
here and links the new one, so the store only grows. :func:`collect` repacks the store
from its own refs (``git repack -a -d``: every deployment's snapshot, nothing else),
drops the links and the objects no ref reaches (``git prune``), and reports the size of
the objects directory before and after.

Concurrency. A deployment writes objects into the store before a ref reaches them, in
two places:

- ``SnapshotStore.keep`` copies a deployment's objects and then sets its ref. It holds
  the store lock shared (:func:`store_lock`); ``collect`` holds it exclusively, so the
  two never overlap (a gc in the middle would prune the copied objects before the ref
  names them). ``collect`` never waits for the lock: it refuses, and the worker tries
  again next round.
- A deployment's tree (a selection, config files, a build's output) is written when it
  is created or built, long before it runs. Under the lock, ``collect`` asks the history
  (``in_flight``) and refuses while any deployment is queued or running: nobody is
  writing then. What it cannot see is a deployment being created this very moment (its
  row is not written yet), so loose objects younger than ``LOOSE_GRACE`` seconds are
  kept (``git prune --expire``), git gc's own answer to the same race. Packed objects
  that no ref reaches are dropped at once: the store packs nothing itself, so those
  are copies of a source's objects, which ``keep`` copies again from the source when a
  deployment needs them.

git runs as a subprocess with an argument list, ``GIT_DIR`` set to the store and
neither system nor user config (only the store's own), like every other git we run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StoreBusyError, StoreError
from ..log import get_logger
from ..records import utcnow

LOCK_NAME = "deployhq-lite-gc.lock"  # in the store: shared by keep, exclusive for gc
RECORD_NAME = "deployhq-lite-gc.json"  # in the store: what the last gc left
LOOSE_GRACE = 3600  # seconds a loose object no ref reaches is kept (see above)

# No bitmaps or reverse indexes (nothing fetches from the store; they cost space and
# make bytes_after differ from git's own disk-usage figure), no server info files.
_GIT_CONFIG = (
    *("-c", "repack.writeBitmaps=false"),
    *("-c", "pack.writeBitmapHashCache=false"),
    *("-c", "pack.writeReverseIndex=false"),
    *("-c", "gc.auto=0"),
)
_PACK_OVERHEAD = 12 + 20  # a pack's header and trailing checksum
_INDEX_FIXED, _INDEX_PER_OBJECT = 8 + 256 * 4 + 20 + 20, 20 + 4 + 4  # a version 2 index

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class StoreSize:
    """Bytes in the objects directory (each file once); ``shared`` of them are in files
    also linked from elsewhere (a source's packs), which cost no disk of their own."""

    total: int
    shared: int

    @property
    def owned(self) -> int:
        return self.total - self.shared


@dataclass(frozen=True, slots=True)
class GcReport:
    """What a gc did (or, with ``dry_run``, would do: ``bytes_after`` is then git's
    figure for what the store's refs reach, plus the loose objects it would keep)."""

    path: str
    bytes_before: int
    bytes_after: int
    shared_before: int
    refs: int
    dry_run: bool

    @property
    def reclaimed(self) -> int:
        return self.bytes_before - self.bytes_after

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "reclaimed": self.reclaimed,
            "shared_before": self.shared_before,
            "refs": self.refs,
            "dry_run": self.dry_run,
        }


def measure(store: Path) -> StoreSize:
    """The size of ``store``'s objects directory (symlinks not followed)."""
    total = shared = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, _dirs, files in os.walk(store / "objects"):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:  # removed as we walked
                continue
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
            if st.st_nlink > 1:
                shared += st.st_size
    return StoreSize(total, shared)


@contextlib.contextmanager
def store_lock(store: Path, *, exclusive: bool) -> Iterator[None]:
    """The store's lock: shared while a deployment keeps its snapshot (waiting for a gc
    to finish), exclusive while it is collected (never waiting: StoreBusyError)."""
    try:
        fd = os.open(store / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot lock snapshot store {store}: {exc.strerror}") from None
    try:
        if not _try_flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH):
            if exclusive:
                raise StoreBusyError(
                    f"snapshot store {store} is in use (a deployment is keeping its "
                    "snapshot, or another gc is running); try again when it is done"
                )
            log.info("snapshots.waiting", path=str(store), reason="a gc is running")
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def _try_flock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def collect(
    store: Path, *, in_flight: Callable[[], Sequence[str]], dry_run: bool = False
) -> GcReport:
    """Repack ``store`` from its refs and drop what they do not reach (see the module
    docstring); with ``dry_run``, only say what that would reclaim. ``in_flight()``
    lists the deployments queued or running: while there are any, StoreBusyError."""
    with store_lock(store, exclusive=True):
        busy = list(in_flight())
        if busy:
            shown = ", ".join(busy[:5]) + (", ..." if len(busy) > 5 else "")
            raise StoreBusyError(
                f"cannot gc the snapshot store while deployments are queued or running "
                f"({len(busy)}: {shown}); try again when they have finished"
            )
        report = _collect(store, _Git(store), dry_run=dry_run)
    if not dry_run:
        log.info("snapshots.collected", **report.to_json())
    return report


def _collect(store: Path, git: _Git, *, dry_run: bool) -> GcReport:
    before = measure(store)
    refs = len(git.run("for-each-ref", "--format=%(refname)").splitlines())
    reachable = int(git.run("rev-list", "--count", "--objects", "--all") or 0)
    loose = _unreachable_loose(git, store)
    cutoff = time.time() - LOOSE_GRACE
    size = before
    if _is_collected(git, store, reachable, loose, cutoff):
        pass  # a gc would change nothing: it does not rewrite the pack either
    elif dry_run:
        usage = int(git.run("rev-list", "--disk-usage", "--objects", "--all") or 0)
        kept_loose = sum(n for n, mtime in loose.values() if mtime >= cutoff)
        estimate = kept_loose + _pack_size(usage, reachable)
        return GcReport(str(store), before.total, estimate, before.shared, refs, True)
    else:
        git.run("repack", "-a", "-d", "-n", "-q")
        git.run("prune", f"--expire={LOOSE_GRACE}.seconds.ago")
        _own_packs(store)
        (store / "objects" / "info" / "alternates").unlink(missing_ok=True)  # all ours now
        size = measure(store)
    if not dry_run:
        _write_record(store, size)
    return GcReport(str(store), before.total, size.total, before.shared, refs, dry_run)


def is_due(store: Path, grow_by: int) -> bool:
    """Whether ``store`` holds ``grow_by`` bytes more of its own than its last gc left
    (than nothing, before its first). Bytes shared with a source by hard link are not
    counted: they cost no disk while the source keeps them, and every deployment after a
    gc links the source's packs again."""
    if grow_by <= 0 or not (store / "objects").is_dir():
        return False
    last = 0
    with contextlib.suppress(OSError, ValueError, TypeError):
        last = int(json.loads((store / RECORD_NAME).read_text())["owned_bytes"])
    return measure(store).owned >= last + grow_by


def _is_collected(
    git: _Git, store: Path, reachable: int, loose: dict[str, tuple[int, float]], cutoff: float
) -> bool:
    """One pack of our own holding exactly what the refs reach, and loose only the
    unreachable objects too young to prune: a gc would change nothing."""
    counts = dict(
        line.split(": ", 1) for line in git.run("count-objects", "-v").splitlines() if ": " in line
    )
    packs = list((store / "objects" / "pack").glob("pack-*.pack"))
    return (
        int(counts.get("packs", 0)) == len(packs) <= 1
        and int(counts.get("in-pack", 0)) == reachable
        and int(counts.get("count", 0)) == len(loose)
        and all(mtime >= cutoff for _, mtime in loose.values())
        and not _linked_packs(store)
        and not (store / "objects" / "info" / "alternates").exists()
    )


def _unreachable_loose(git: _Git, store: Path) -> dict[str, tuple[int, float]]:
    """Loose objects no ref reaches: id -> (size on disk, mtime)."""
    found: dict[str, tuple[int, float]] = {}
    for line in git.run("prune", "--dry-run", "--expire=now").splitlines():
        oid = line.split(" ", 1)[0]
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(store / "objects" / oid[:2] / oid[2:])
            found[oid] = (st.st_size, st.st_mtime)
    return found


def _pack_size(disk_usage: int, objects: int) -> int:
    """Bytes of one pack and its index holding ``objects`` using ``disk_usage`` bytes."""
    if objects == 0:
        return 0
    return _PACK_OVERHEAD + disk_usage + _INDEX_FIXED + _INDEX_PER_OBJECT * objects


def _linked_packs(store: Path) -> list[Path]:
    pack_dir = store / "objects" / "pack"
    return [p for p in pack_dir.glob("pack-*") if p.is_file() and p.stat().st_nlink > 1]


def _own_packs(store: Path) -> None:
    """Make every pack file the store's alone: a file still linked from elsewhere (a
    pack git left as it was) is copied and the copy renamed over it."""
    for path in _linked_packs(store):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.copy2(path, tmp)
        os.replace(tmp, path)


def _write_record(store: Path, after: StoreSize) -> None:
    tmp = store / f".{RECORD_NAME}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"owned_bytes": after.owned, "collected_at": utcnow()}) + "\n")
    os.replace(tmp, store / RECORD_NAME)


class _Git:
    """git in the store: an argument list, GIT_DIR set, no system or user config."""

    def __init__(self, store: Path) -> None:
        self._store = store
        self._git = shutil.which("git")
        if self._git is None:
            raise StoreError("cannot gc the snapshot store: git is not installed (not on PATH)")
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(
            GIT_DIR=str(store),
            GIT_CONFIG_NOSYSTEM="1",
            GIT_CONFIG_GLOBAL=os.devnull,
            GIT_TERMINAL_PROMPT="0",
            LC_ALL="C",
        )
        self._env = env

    def run(self, *args: str) -> str:
        assert self._git is not None
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [self._git, *_GIT_CONFIG, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=self._env,
            check=False,
        )
        if done.returncode != 0:
            detail = done.stderr.decode(errors="replace").strip().splitlines()
            raise StoreError(
                f"git {args[0]} failed in snapshot store {self._store}: "
                f"{detail[-1] if detail else f'exit status {done.returncode}'}"
            )
        return done.stdout.decode().strip()
