"""The data for transfer_bench.py: one git repository and plain copies for the references.

Built once into ``WORKDIR/cache/`` (the directory name holds the big file's size and a
hash of this script, so either change rebuilds it) and reused afterwards. Tags:

- ``small``: 2,000 files of 1-8 KiB random bytes in 20 directories, plus ``index.html``
- ``small-del``: ``small`` with the 2,000 files deleted (``index.html`` stays)
- ``mb``: 200 files of 1 MiB random bytes (top level)
- ``big64``: one 64 MiB file ``big.bin``; ``big``: one ``--big-mib`` MiB file ``big.bin``

``exports/<tag>/`` holds the same files written from the same bytes, checked against
``git ls-tree`` of the tag before the cache is marked complete.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
from pathlib import Path

from common import git_tree, log, remove, verify_tree

from deployhq_lite.repobuilder import GitRepoBuilder

SMALL_FILES = 2_000
SMALL_DIRS = 20
MB_FILES = 200
MIB = 1024 * 1024
EXPORTED = ("small", "mb", "big")


@dataclass(frozen=True, slots=True)
class Data:
    path: Path
    big_mib: int
    tags: tuple[str, ...] = ("small", "small-del", "mb", "big64", "big")

    @property
    def repo(self) -> Path:
        return self.path / "repo.git"

    def export(self, tag: str) -> Path:
        return self.path / "exports" / tag


def ensure_data(cache: Path, big_mib: int) -> Data:
    script = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]
    name = f"transfer-big{big_mib}-{script}"
    data = Data(cache / name, big_mib)
    if (data.path / ".bench-complete").exists():
        log(f"data: {data.path} (cached)")
        return data
    for stale in cache.glob(f"transfer-big{big_mib}-*"):  # built by an older version
        remove(stale)
    building = Data(cache / f"{name}.building", big_mib)
    building.path.mkdir(parents=True)
    log(f"data: building {data.path} ({big_mib + 64 + MB_FILES + 10} MiB of random bytes) ...")
    start = time.perf_counter()
    _build(building)
    for tag in EXPORTED:
        expected = git_tree(building.repo, tag)
        verify_tree(building.export(tag), expected, label=f"export {tag}", skip_marker=False)
    building.path.rename(data.path)
    (data.path / ".bench-complete").write_text("built by transfer_bench.py\n", encoding="utf-8")
    log(f"data: built in {time.perf_counter() - start:.1f} s")
    return data


def _build(data: Data) -> None:
    rng = random.Random(20261124)
    repo = GitRepoBuilder.create(data.repo, bare=True)
    small: dict[str, bytes] = {"index.html": b"<h1>transfer bench</h1>\n"}
    per_dir = SMALL_FILES // SMALL_DIRS
    for i in range(SMALL_FILES):
        small[f"d{i // per_dir:02}/f{i:04}.bin"] = rng.randbytes(rng.randint(1024, 8 * 1024))
    _commit(repo, data, "small", small)
    repo.commit({path: None for path in small if path != "index.html"}, "delete the files")
    repo.tag("small-del")
    _commit(repo, data, "mb", {f"m{i:03}.bin": rng.randbytes(MIB) for i in range(MB_FILES)})
    _commit(repo, data, "big64", {"big.bin": _random_mib(rng, 64)})
    _commit(repo, data, "big", {"big.bin": _random_mib(rng, data.big_mib)})


def _random_mib(rng: random.Random, mib: int) -> bytes:
    return b"".join(rng.randbytes(MIB) for _ in range(mib))  # randbytes stops below 256 MiB


def _commit(repo: GitRepoBuilder, data: Data, tag: str, files: dict[str, bytes]) -> None:
    """A commit holding exactly ``files`` (tagged), and the same files in exports/tag."""
    repo.commit(files, tag, replace=True)
    repo.tag(tag)
    if tag not in EXPORTED:
        return
    for path, content in files.items():
        target = data.export(tag) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
