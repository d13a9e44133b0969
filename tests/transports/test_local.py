"""LocalTransport beyond the contract: symlinks already in the root, large files, disk details."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deployhq_lite.errors import PathOutsideRootError, RemotePathError, TransportError
from deployhq_lite.names import TEMP_SUFFIX, temp_name
from deployhq_lite.transports.base import Upload
from deployhq_lite.transports.local import LocalTransport


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the root with one file in it; it must never change."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    (path / "z").write_bytes(b"precious")
    (path / "secret.txt").write_bytes(b"secret")
    return path


@pytest.fixture
def t(root: Path) -> Iterator[LocalTransport]:
    with LocalTransport(root, server="site/prod") as transport:
        yield transport


def snapshot_of(path: Path) -> dict[str, bytes | str | None]:
    out: dict[str, bytes | str | None] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = p.relative_to(path).as_posix()
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = None
            else:
                out[rel] = p.read_bytes()
    return out


def temp_files(path: Path) -> list[str]:
    return [str(p) for p in path.rglob(f"*{TEMP_SUFFIX}")]


# -- a symlink inside the root that points out of it ---------------------------------------------

THROUGH_LINK: dict[str, Callable[[LocalTransport], object]] = {
    "put_file": lambda t: t.put_file("uploads/x", b"x"),
    "put_file_deeper": lambda t: t.put_file("uploads/new/x", b"x"),
    "put_symlink": lambda t: t.put_symlink("uploads/y", "/etc/passwd"),
    "delete": lambda t: t.delete("uploads/z"),
    "make_dirs": lambda t: t.make_dirs("uploads/sub"),
    "stat": lambda t: t.stat("uploads/z"),
    "read_file": lambda t: t.read_file("uploads/secret.txt"),
    "prune_dirs": lambda t: t.prune_dirs(["uploads/empty"]),
}


@pytest.mark.parametrize("relative", [False, True], ids=["absolute-link", "relative-link"])
@pytest.mark.parametrize("operation", sorted(THROUGH_LINK))
def test_refuses_to_go_through_a_symlink_pointing_outside(
    t: LocalTransport, root: Path, outside: Path, operation: str, relative: bool
) -> None:
    (outside / "empty").mkdir()
    (root / "uploads").symlink_to("../elsewhere" if relative else outside)
    assert (root / "uploads" / "z").read_bytes() == b"precious"  # the link really works
    before = snapshot_of(outside)
    with pytest.raises(PathOutsideRootError) as excinfo:
        THROUGH_LINK[operation](t)
    assert excinfo.value.path == "uploads"
    assert excinfo.value.server == "site/prod"
    assert "symlink" in str(excinfo.value)
    assert snapshot_of(outside) == before
    assert sorted(os.listdir(root)) == ["uploads"]


def test_batches_report_symlink_refusals_per_item(
    t: LocalTransport, root: Path, outside: Path
) -> None:
    (root / "uploads").symlink_to(outside)
    before = snapshot_of(outside)
    put: dict[str, type[TransportError] | None] = {}
    deleted: dict[str, type[TransportError] | None] = {}
    t.put_many(
        [
            Upload("ok.txt", lambda: b"ok"),
            Upload("uploads/evil.txt", lambda: b"evil"),
            Upload("uploads/evil-link", lambda: b"/etc/passwd", is_symlink=True),
            Upload("later.txt", lambda: b"later"),
        ],
        lambda p, e: put.update({p: None if e is None else type(e)}),
    )
    t.delete_many(
        ["uploads/z", "later.txt"],
        lambda p, e: deleted.update({p: None if e is None else type(e)}),
    )
    assert put == {
        "ok.txt": None,
        "uploads/evil.txt": PathOutsideRootError,
        "uploads/evil-link": PathOutsideRootError,
        "later.txt": None,
    }
    assert deleted == {"uploads/z": PathOutsideRootError, "later.txt": None}
    assert snapshot_of(outside) == before
    assert snapshot_of(root) == {"ok.txt": b"ok", "uploads": f"-> {outside}"}


@pytest.mark.parametrize("target_name", ["secret.txt", "."])
def test_replacing_a_final_symlink_replaces_the_link_itself(
    t: LocalTransport, root: Path, outside: Path, target_name: str
) -> None:
    (root / "config.php").symlink_to(outside / target_name)
    before = snapshot_of(outside)
    t.put_file("config.php", b"<?php // ours", mode=0o644)
    assert not (root / "config.php").is_symlink()
    assert (root / "config.php").read_bytes() == b"<?php // ours"
    assert snapshot_of(outside) == before
    assert temp_files(root) == []


def test_symlink_over_a_symlink_to_outside_and_delete_touch_only_the_link(
    t: LocalTransport, root: Path, outside: Path
) -> None:
    (root / "a").symlink_to(outside / "secret.txt")
    (root / "b").symlink_to(outside)
    before = snapshot_of(outside)
    t.put_symlink("a", "inside.txt")
    assert os.readlink(root / "a") == "inside.txt"
    t.delete("b")
    assert not (root / "b").exists() and not (root / "b").is_symlink()
    assert snapshot_of(outside) == before


def test_symlink_inside_the_root_to_inside_is_still_refused(t: LocalTransport, root: Path) -> None:
    (root / "real").mkdir(parents=True)
    (root / "alias").symlink_to("real")
    with pytest.raises(PathOutsideRootError):
        t.put_file("alias/x", b"x")
    assert os.listdir(root / "real") == []


# -- files on disk -------------------------------------------------------------------------------


def test_large_file_round_trips(t: LocalTransport, root: Path) -> None:
    data = os.urandom(20 * 1024 * 1024 + 7)
    t.put_file("media/big.bin", data, mode=0o644)
    on_disk = (root / "media" / "big.bin").read_bytes()
    assert hashlib.sha256(on_disk).digest() == hashlib.sha256(data).digest()
    assert t.read_file("media/big.bin") == data
    entry = t.stat("media/big.bin")
    assert entry is not None and entry.size == len(data)
    assert temp_files(root) == []


def test_overwrite_renames_over_the_old_file(t: LocalTransport, root: Path, tmp_path: Path) -> None:
    t.put_file("page.html", b"old")
    os.link(root / "page.html", tmp_path / "old-inode")
    old_inode = (root / "page.html").stat().st_ino
    t.put_file("page.html", b"new")
    assert (root / "page.html").read_bytes() == b"new"
    assert (root / "page.html").stat().st_ino != old_inode
    assert (tmp_path / "old-inode").read_bytes() == b"old"  # never written in place


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_a_temp_file_left_by_an_interrupted_run_is_replaced(
    t: LocalTransport, root: Path, kind: str
) -> None:
    (root / "d").mkdir(parents=True)
    (root / "d" / temp_name("x")).write_bytes(b"half written")
    if kind == "file":
        t.put_file("d/x", b"complete", mode=0o755)
        assert (root / "d" / "x").read_bytes() == b"complete"
    else:
        t.put_symlink("d/x", "target")
        assert os.readlink(root / "d" / "x") == "target"
    assert temp_files(root) == []


def test_a_write_that_breaks_midway_leaves_no_temp_file(t: LocalTransport, root: Path) -> None:
    t.put_file("keep.txt", b"old")
    with pytest.raises(TransportError, match=r"unexpected error on keep\.txt") as raised:
        t.put_file("keep.txt", object(), mode=0o644)  # type: ignore[arg-type]
    assert isinstance(raised.value.__cause__, TypeError)
    assert (root / "keep.txt").read_bytes() == b"old"
    assert temp_files(root) == []


def test_long_names_use_a_short_temp_name(t: LocalTransport, root: Path) -> None:
    name = "n" * 250
    assert len(temp_name(name)) <= 255
    t.put_file(f"d/{name}", b"long")
    t.put_symlink(f"d/{name}", "target")
    assert os.listdir(root / "d") == [name]


def test_mode_is_exact_whatever_the_umask(t: LocalTransport, root: Path) -> None:
    old = os.umask(0o077)
    try:
        t.put_file("run.sh", b"#!/bin/sh\n", mode=0o755)
        t.put_file("page.html", b"<p>", mode=0o644)
    finally:
        os.umask(old)
    assert (root / "run.sh").stat().st_mode & 0o7777 == 0o755
    assert (root / "page.html").stat().st_mode & 0o7777 == 0o644


def test_open_creates_a_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "root"
    with LocalTransport(root) as transport:
        transport.put_file("x", b"x")
    assert (root / "x").read_bytes() == b"x"


def test_disk_errors_become_remote_path_errors(t: LocalTransport, root: Path) -> None:
    name = "n" * 300  # longer than any Linux file name may be
    with pytest.raises(RemotePathError) as excinfo:
        t.put_file(f"d/{name}", b"x")
    assert isinstance(excinfo.value.__cause__, OSError)
    assert str(root) in str(excinfo.value)
    assert excinfo.value.path == f"d/{name}"
    assert excinfo.value.server == "site/prod"
    assert temp_files(root) == []
    assert os.listdir(root / "d") == []


def test_many_directories_in_one_batch(t: LocalTransport, root: Path) -> None:
    """More directories than the transport keeps open at once, written in one batch."""
    uploads = [
        Upload(f"d{i % 300}/sub/f{i}", functools.partial(str.encode, str(i))) for i in range(900)
    ]
    errors: list[tuple[str, TransportError | None]] = []
    t.put_many(uploads, lambda p, e: errors.append((p, e)))
    assert sorted(p for p, _ in errors) == sorted(u.path for u in uploads)
    assert [e for _, e in errors if e is not None] == []
    for i in (0, 299, 300, 899):
        assert (root / f"d{i % 300}" / "sub" / f"f{i}").read_bytes() == b"%d" % i
    assert temp_files(root) == []


def test_sync_works(t: LocalTransport, root: Path) -> None:
    t.put_file("a", b"a")
    t.sync()
    assert (root / "a").read_bytes() == b"a"
    t.close()
    with pytest.raises(TransportError):
        t.sync()


def test_a_command_past_its_timeout_returns_even_if_a_child_keeps_the_output_open(
    t: LocalTransport,
) -> None:
    """The whole process group is killed at the deadline; a process that left the group
    (and still holds the pipe) cannot keep the deployment waiting."""
    import time

    started = time.monotonic()
    status, output, seconds = t.run_command("setsid sleep 30 & echo started; sleep 30", timeout=0.5)
    assert status is None and output == "started\n"
    assert time.monotonic() - started < 10 and seconds < 10


def test_the_output_pipe_a_leftover_process_held_is_closed_when_it_lets_go(
    t: LocalTransport,
) -> None:
    """run_shell returns at the deadline without the pipe a process outside our group
    still holds; the pipe is closed once that process ends, not left for the garbage
    collector to find unclosed (a ResourceWarning, an error under this suite). The
    leftover outlives run_shell's GRACE (2 s)."""
    import gc
    import threading
    import time
    import warnings

    def readers() -> set[threading.Thread]:
        return {th for th in threading.enumerate() if th.name == "dhq-command-output"}

    earlier = readers()  # another test's leftover may still be sleeping
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status, output, _ = t.run_command("setsid sleep 4 & echo started; sleep 30", timeout=0.3)
        assert status is None and output == "started\n"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and readers() - earlier:
            time.sleep(0.05)
        assert not readers() - earlier
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_the_find_listing_and_the_python_walk_agree(tmp_path: Path) -> None:
    """verify lists a local server with GNU find when it can, else in Python: the same
    entries either way, symlinks listed and never followed, odd names kept."""
    import os

    from deployhq_lite.transports import localtree

    root = tmp_path / "root"
    (root / "a/b").mkdir(parents=True)
    (root / "a/b/file.txt").write_text("x")
    (root / "run").write_text("#!/bin/sh\n")
    (root / "run").chmod(0o755)
    (root / "new\nline name").write_text("n")
    (root / "out").symlink_to(tmp_path)  # out of the root: listed, not entered
    (tmp_path / "secret").write_text("s")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        by_find = localtree._find(fd)
        assert by_find is not None
        here = list(localtree.walk_here(fd, None))
    finally:
        os.close(fd)
    assert sorted(by_find) == sorted(here)
    paths = {p for p, _ in here}
    assert paths == {"a", "a/b", "a/b/file.txt", "run", "new\nline name", "out"}
    assert dict(here)["out"].target == str(tmp_path)
