"""The transport contract, one suite for every backend.

A backend is a factory in ``BACKENDS`` returning a :class:`Server`: an unopened
transport plus a way to list what its root holds. Adding a backend is one line there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deployhq_lite.errors import (
    PathOutsideRootError,
    RemotePathError,
    TransportError,
    TransportStateError,
)
from deployhq_lite.names import TEMP_SUFFIX
from deployhq_lite.testing.plugin import read_tree
from deployhq_lite.transports.base import Transport, Upload
from deployhq_lite.transports.local import LocalTransport
from deployhq_lite.transports.memory import MemoryFile, MemorySymlink, MemoryTransport

SERVER = "contract/server"  # the label every backend gets; errors must name it

# What a root holds: path -> ("file", bytes, mode) | ("symlink", target) | ("dir",)
Listing = dict[str, tuple[object, ...]]


@dataclass
class Server:
    name: str
    transport: Transport
    listing: Callable[[], Listing]
    outside: Callable[[], set[str]]  # what sits next to the root; must never change


def list_dir(root: Path) -> Listing:
    return read_tree(root, skip_marker=False)


def list_memory(transport: MemoryTransport) -> Listing:
    out: Listing = {d: ("dir",) for d in transport.dirs}
    for path, node in transport.nodes.items():
        if isinstance(node, MemoryFile):
            out[path] = ("file", node.data, node.mode)
        else:
            out[path] = ("symlink", node.target)
    return out


def _local(request: pytest.FixtureRequest, tmp_path: Path) -> Server:
    root = tmp_path / "root"
    return Server(
        "local",
        LocalTransport(root, server=SERVER),
        lambda: list_dir(root),
        lambda: {p.name for p in tmp_path.iterdir()} - {"root"},
    )


def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> Server:
    transport = MemoryTransport(server=SERVER)
    return Server("memory", transport, lambda: list_memory(transport), set)


def _sftp(request: pytest.FixtureRequest, tmp_path: Path) -> Server:
    from deployhq_lite.transports.ssh.sftp import SFTPTransport

    root = tmp_path / "root"
    config = request.getfixturevalue("sshd").server_config(root)
    return Server(
        "sftp",
        SFTPTransport(config, server=SERVER),
        lambda: list_dir(root),
        lambda: {p.name for p in tmp_path.iterdir()} - {"root"},
    )


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Server]] = {
    "local": _local,
    "memory": _memory,
    "sftp": _sftp,
}


@pytest.fixture(params=sorted(BACKENDS))
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Server:
    """An unopened transport of each backend."""
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
def t(server: Server) -> Iterator[Transport]:
    with server.transport as transport:
        yield transport


def temp_files(listing: Listing) -> list[str]:
    return [p for p in listing if p.endswith(TEMP_SUFFIX)]


# -- lifecycle -------------------------------------------------------------------------------


def test_open_and_close_are_idempotent(server: Server) -> None:
    transport = server.transport
    transport.open()
    transport.open()
    transport.put_file("a.txt", b"a")
    assert transport.read_file("a.txt") == b"a"
    transport.close()
    transport.close()
    with pytest.raises(TransportStateError):
        transport.stat("a.txt")


def test_reopening_after_close_raises(server: Server) -> None:
    server.transport.open()
    server.transport.close()
    with pytest.raises(TransportStateError, match="closed"):
        server.transport.open()


def test_closing_an_unopened_transport_makes_it_unusable(server: Server) -> None:
    server.transport.close()
    with pytest.raises(TransportStateError):
        server.transport.open()


def test_with_statement_opens_then_closes(server: Server) -> None:
    with server.transport as transport:
        assert transport is server.transport
        transport.put_file("a.txt", b"a")
    with pytest.raises(TransportStateError):
        server.transport.read_file("a.txt")
    assert server.listing() == {"a.txt": ("file", b"a", 0o644)}


OPERATIONS: dict[str, Callable[[Transport], object]] = {
    "stat": lambda t: t.stat("a"),
    "read_file": lambda t: t.read_file("a"),
    "put_file": lambda t: t.put_file("a", b"x"),
    "put_symlink": lambda t: t.put_symlink("a", "b"),
    "delete": lambda t: t.delete("a"),
    "make_dirs": lambda t: t.make_dirs("a"),
    "prune_dirs": lambda t: t.prune_dirs(["a"]),
    "sync": lambda t: t.sync(),
    "probe": lambda t: t.probe(),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_use_before_open_raises(server: Server, operation: str) -> None:
    with pytest.raises(TransportStateError, match="not open") as excinfo:
        OPERATIONS[operation](server.transport)
    assert excinfo.value.server == SERVER
    assert server.listing() == {}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_use_after_close_raises(server: Server, operation: str) -> None:
    with server.transport:
        pass
    with pytest.raises(TransportStateError):
        OPERATIONS[operation](server.transport)
    assert server.listing() == {}


def test_probe_reports_the_root_and_leaves_nothing_behind(server: Server) -> None:
    with server.transport as transport:
        report = transport.probe()
    root = report["root"]
    assert isinstance(root, str)
    assert root
    assert server.listing() == {}
    assert server.outside() == set()


# -- put_file ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o755, 0o600])
def test_put_file_writes_bytes_and_mode(server: Server, t: Transport, mode: int) -> None:
    data = bytes(range(256)) * 3
    t.put_file("dir/file.bin", data, mode=mode)
    assert t.read_file("dir/file.bin") == data
    entry = t.stat("dir/file.bin")
    assert entry is not None
    assert (entry.kind, entry.size, entry.mode) == ("file", len(data), mode)
    assert server.listing()["dir/file.bin"] == ("file", data, mode)


def test_put_file_default_mode_is_0644(server: Server, t: Transport) -> None:
    t.put_file("a", b"")
    assert server.listing() == {"a": ("file", b"", 0o644)}


def test_put_file_creates_parents_and_leaves_no_temp_files(server: Server, t: Transport) -> None:
    t.put_file("a/b/c/d.txt", b"deep")
    assert server.listing() == {
        "a": ("dir",),
        "a/b": ("dir",),
        "a/b/c": ("dir",),
        "a/b/c/d.txt": ("file", b"deep", 0o644),
    }
    for parent in ("a", "a/b", "a/b/c"):
        entry = t.stat(parent)
        assert entry is not None and entry.kind == "dir"


def test_put_file_overwrites_content_and_mode(server: Server, t: Transport) -> None:
    t.put_file("run.sh", b"old, longer content", mode=0o755)
    t.put_file("run.sh", b"new", mode=0o644)
    assert server.listing() == {"run.sh": ("file", b"new", 0o644)}
    t.put_file("run.sh", b"newer", mode=0o755)
    assert server.listing() == {"run.sh": ("file", b"newer", 0o755)}


def test_failed_put_over_a_directory_raises_and_leaves_no_temp_files(
    server: Server, t: Transport
) -> None:
    t.put_file("taken/inside.txt", b"keep")
    before = server.listing()
    with pytest.raises(RemotePathError) as excinfo:
        t.put_file("taken", b"x")
    assert excinfo.value.path == "taken"
    with pytest.raises(RemotePathError):
        t.put_symlink("taken", "elsewhere")
    assert server.listing() == before
    assert temp_files(server.listing()) == []


def test_put_below_a_file_raises(server: Server, t: Transport) -> None:
    t.put_file("a.txt", b"a")
    with pytest.raises(RemotePathError):
        t.put_file("a.txt/b.txt", b"b")
    with pytest.raises(RemotePathError):
        t.make_dirs("a.txt/sub")
    assert server.listing() == {"a.txt": ("file", b"a", 0o644)}


# -- symlinks ---------------------------------------------------------------------------------


def test_put_symlink_stores_the_target_verbatim(server: Server, t: Transport) -> None:
    t.put_symlink("links/up", "../../outside/nowhere")
    entry = t.stat("links/up")
    assert entry is not None
    assert (entry.kind, entry.target) == ("symlink", "../../outside/nowhere")
    assert server.listing() == {
        "links": ("dir",),
        "links/up": ("symlink", "../../outside/nowhere"),
    }
    assert server.outside() == set()


def test_put_symlink_retargets(server: Server, t: Transport) -> None:
    t.put_symlink("l", "one")
    t.put_symlink("l", "two")
    assert server.listing() == {"l": ("symlink", "two")}


def test_file_replaced_by_symlink_and_back(server: Server, t: Transport) -> None:
    t.put_file("target.txt", b"target")
    t.put_file("x", b"file", mode=0o755)
    t.put_symlink("x", "target.txt")
    assert server.listing() == {
        "target.txt": ("file", b"target", 0o644),
        "x": ("symlink", "target.txt"),
    }
    t.put_file("x", b"file again")
    assert server.listing() == {
        "target.txt": ("file", b"target", 0o644),
        "x": ("file", b"file again", 0o644),
    }
    assert temp_files(server.listing()) == []


def test_read_file_of_a_symlink_or_directory_raises(server: Server, t: Transport) -> None:
    t.put_file("d/f", b"f")
    t.put_symlink("l", "d/f")
    with pytest.raises(RemotePathError):
        t.read_file("l")
    with pytest.raises(RemotePathError):
        t.read_file("d")


@pytest.mark.parametrize(
    "operation",
    [
        lambda t: t.put_file("link/x", b"x"),
        lambda t: t.put_symlink("link/y", "z"),
        lambda t: t.delete("link/f"),
        lambda t: t.make_dirs("link/sub"),
        lambda t: t.put_file("link/deeper/x", b"x"),
    ],
    ids=["put_file", "put_symlink", "delete", "make_dirs", "put_file_deeper"],
)
def test_never_goes_through_a_symlinked_directory(
    server: Server, t: Transport, operation: Callable[[Transport], object]
) -> None:
    t.put_file("real/f", b"f")
    t.put_symlink("link", "real")
    before = server.listing()
    with pytest.raises(PathOutsideRootError) as excinfo:
        operation(t)
    assert excinfo.value.path == "link"
    assert server.listing() == before


def test_batches_make_new_directories_and_refuse_bad_ones_per_item(
    server: Server, t: Transport
) -> None:
    """A batch checks (and makes) its directories before its files; a symlinked or
    file-in-the-way directory fails only the items under it."""
    from deployhq_lite.transports.base import Upload

    t.put_file("real/f", b"f")
    t.put_symlink("link", "real")
    t.put_file("file", b"x")
    put: dict[str, str | None] = {}
    t.put_many(
        [
            Upload(path, lambda path=path: path.encode())
            for path in (
                *("a/b/c/d.txt", "a/b/e.txt", "a/f.txt", "link/evil", "link/sub/evil"),
                *("file/x", "z.txt", "a/b/c/g/h.txt"),
            )
        ],
        lambda p, e: put.update({p: None if e is None else type(e).__name__}),
    )
    assert put == {
        "a/b/c/d.txt": None,
        "a/b/e.txt": None,
        "a/f.txt": None,
        "link/evil": "PathOutsideRootError",
        "link/sub/evil": "PathOutsideRootError",
        "file/x": "RemotePathError",
        "z.txt": None,
        "a/b/c/g/h.txt": None,
    }
    deleted: dict[str, str | None] = {}
    t.delete_many(
        ["link/f", "no/such/dir/f", "a/b/e.txt", "file/x"],
        lambda p, e: deleted.update({p: None if e is None else type(e).__name__}),
    )
    assert deleted == {
        "link/f": "PathOutsideRootError",
        "no/such/dir/f": None,
        "a/b/e.txt": None,
        "file/x": None,
    }
    listing = server.listing()
    assert listing["real/f"] == ("file", b"f", 0o644)
    assert "real/evil" not in listing and "real/sub" not in listing
    assert {p for p, entry in listing.items() if entry[0] == "file"} == {
        "real/f",
        "file",
        "a/b/c/d.txt",
        "a/f.txt",
        "z.txt",
        "a/b/c/g/h.txt",
    }


# -- delete -----------------------------------------------------------------------------------


def test_delete_missing_is_success(server: Server, t: Transport) -> None:
    t.put_file("present", b"p")
    t.delete("absent")
    t.delete("no/such/dir/file")
    t.delete("present")
    t.delete("present")
    assert server.listing() == {}


def test_delete_temps_removes_only_the_temp_names_of_the_paths(
    server: Server, t: Transport
) -> None:
    """What an interrupted run left; missing, below a file or a symlink: nothing to do."""
    t.put_file("a/x", b"x")
    t.put_file(f"a/.x{TEMP_SUFFIX}", b"partial")
    t.put_file(f"b/.gone{TEMP_SUFFIX}", b"partial")
    t.put_file(f"b/.kept{TEMP_SUFFIX}", b"not one of the paths")
    t.put_symlink("link", "a")
    t.delete_temps(["a/x", "b/gone", "no/such/y", "a/x/below-a-file", "link/x"])
    assert server.listing() == {
        "a": ("dir",),
        "a/x": ("file", b"x", 0o644),
        "b": ("dir",),
        f"b/.kept{TEMP_SUFFIX}": ("file", b"not one of the paths", 0o644),
        "link": ("symlink", "a"),
    }


def test_delete_a_file_leaves_its_parents(server: Server, t: Transport) -> None:
    t.put_file("a/b/c.txt", b"c")
    t.delete("a/b/c.txt")
    assert server.listing() == {"a": ("dir",), "a/b": ("dir",)}
    assert t.stat("a/b/c.txt") is None


def test_delete_a_symlink_removes_the_link_not_its_target(server: Server, t: Transport) -> None:
    t.put_file("d/target", b"t")
    t.put_symlink("l", "d/target")
    t.put_symlink("dl", "d")
    t.delete("l")
    t.delete("dl")
    assert server.listing() == {"d": ("dir",), "d/target": ("file", b"t", 0o644)}


def test_delete_a_directory_is_an_error(server: Server, t: Transport) -> None:
    t.make_dirs("d/e")
    with pytest.raises(RemotePathError) as excinfo:
        t.delete("d/e")
    assert excinfo.value.server == SERVER
    assert server.listing() == {"d": ("dir",), "d/e": ("dir",)}


# -- make_dirs and prune_dirs -------------------------------------------------------------------


def test_make_dirs_is_idempotent_and_accepts_the_root(server: Server, t: Transport) -> None:
    t.make_dirs("")
    t.make_dirs(".")
    assert server.listing() == {}
    t.make_dirs("a/b c/ü")
    t.make_dirs("a/b c/ü")
    t.make_dirs("a")
    assert server.listing() == {"a": ("dir",), "a/b c": ("dir",), "a/b c/ü": ("dir",)}


def test_prune_dirs_removes_empty_dirs_bottom_up(server: Server, t: Transport) -> None:
    t.make_dirs("a/b/c")
    t.put_file("a/keep.txt", b"k")
    removed = t.prune_dirs(["a", "a/b", "a/b/c"])
    assert removed == ["a/b/c", "a/b"]
    assert server.listing() == {"a": ("dir",), "a/keep.txt": ("file", b"k", 0o644)}


def test_prune_dirs_sorts_deepest_first_whatever_the_input_order(
    server: Server, t: Transport
) -> None:
    t.make_dirs("x/y/z")
    t.make_dirs("w")
    assert t.prune_dirs(["x", "w", "x/y", "x/y/z", "x/y"]) == ["x/y/z", "x/y", "w", "x"]
    assert server.listing() == {}


def test_prune_dirs_keeps_dirs_holding_anything(server: Server, t: Transport) -> None:
    t.put_symlink("only-link/l", "nowhere")
    t.put_file("only-file/f", b"")
    t.make_dirs("only-dir/sub")
    before = server.listing()
    assert t.prune_dirs(["only-link", "only-file", "only-dir"]) == []
    assert server.listing() == before


def test_prune_dirs_ignores_missing_paths_files_and_symlinks(server: Server, t: Transport) -> None:
    t.put_file("f", b"f")
    t.make_dirs("d")
    t.put_symlink("l", "d")
    assert t.prune_dirs(["missing", "missing/deeper", "f", "l"]) == []
    assert server.listing() == {"f": ("file", b"f", 0o644), "d": ("dir",), "l": ("symlink", "d")}


def test_prune_dirs_never_removes_the_root(server: Server, t: Transport) -> None:
    assert t.prune_dirs(["", "."]) == []
    t.put_file("still-writable", b"yes")  # fails if the root directory was removed
    assert server.listing() == {"still-writable": ("file", b"yes", 0o644)}


# -- stat ----------------------------------------------------------------------------------------


def test_stat_returns_none_for_absence(server: Server, t: Transport) -> None:
    assert t.stat("nothing") is None
    assert t.stat("no/such/parent") is None
    assert t.read_file("nothing") is None
    assert t.read_file("no/such/parent") is None
    t.make_dirs("d")
    dir_entry = t.stat("d")
    assert dir_entry is not None and dir_entry.kind == "dir"
    assert t.stat("d/nothing") is None


def test_absence_below_a_file_is_a_value(server: Server, t: Transport) -> None:
    t.put_file("file", b"f")
    assert t.stat("file/x") is None
    assert t.read_file("file/x") is None
    t.delete("file/x")
    assert server.listing() == {"file": ("file", b"f", 0o644)}


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["with space.txt", "dir with space/a b", "ü/é.txt", "日本/語", "-leading-dash", ".hidden"],
)
def test_unusual_names_round_trip(server: Server, t: Transport, path: str) -> None:
    t.put_file(path, path.encode())
    assert t.read_file(path) == path.encode()
    assert server.listing()[path] == ("file", path.encode(), 0o644)
    t.delete(path)
    assert t.stat(path) is None
    assert not [p for p in server.listing() if server.listing()[p][0] != "dir"]


def test_case_only_different_names_are_distinct(server: Server, t: Transport) -> None:
    t.put_file("README", b"upper")
    t.put_file("readme", b"lower")
    t.put_file("Dir/a", b"1")
    t.put_file("dir/a", b"2")
    assert t.read_file("README") == b"upper"
    assert t.read_file("readme") == b"lower"
    t.delete("README")
    assert server.listing() == {
        "readme": ("file", b"lower", 0o644),
        "Dir": ("dir",),
        "Dir/a": ("file", b"1", 0o644),
        "dir": ("dir",),
        "dir/a": ("file", b"2", 0o644),
    }


def test_names_that_are_not_utf8_are_written_as_their_bytes(server: Server, t: Transport) -> None:
    """POSIX names are bytes: one that is not UTF-8 is held as os.fsdecode holds it."""
    latin1 = os.fsdecode(b"d\xfe/caf\xe9.txt")
    target = os.fsdecode(b"caf\xe9.txt")
    t.put_file(latin1, b"x")
    t.put_symlink(os.fsdecode(b"d\xfe/l\xefnk"), target)
    done: list[tuple[str, object]] = []
    upload = Upload(os.fsdecode(b"n\xf1/\xe8"), lambda: b"y", mode=0o755)
    t.put_many([upload], lambda path, error: done.append((path, error)))
    assert done == [(upload.path, None)]
    assert t.read_file(latin1) == b"x"
    link = t.stat(os.fsdecode(b"d\xfe/l\xefnk"))
    assert link is not None and link.kind == "symlink" and link.target == target
    assert server.listing() == {
        os.fsdecode(b"d\xfe"): ("dir",),
        latin1: ("file", b"x", 0o644),
        os.fsdecode(b"d\xfe/l\xefnk"): ("symlink", target),
        os.fsdecode(b"n\xf1"): ("dir",),
        upload.path: ("file", b"y", 0o755),
    }
    t.delete_many([latin1, os.fsdecode(b"d\xfe/l\xefnk")], lambda path, error: None)
    t.delete(upload.path)
    assert t.prune_dirs([os.fsdecode(b"d\xfe"), os.fsdecode(b"n\xf1")]) == [
        os.fsdecode(b"d\xfe"),
        os.fsdecode(b"n\xf1"),
    ]
    assert server.listing() == {}


# -- the path guard ------------------------------------------------------------------------------

BAD_PATHS = [
    "/abs",
    "/",
    "/tmp/escape",
    "..",
    "../x",
    "a/../../x",
    "a/..",
    "a//b",
    "a/",
    "./a",
    "a/./b",
    "a\0b",
    "a\\..\\b",
]

PATH_OPERATIONS: dict[str, Callable[[Transport, str], object]] = {
    "stat": lambda t, p: t.stat(p),
    "read_file": lambda t, p: t.read_file(p),
    "put_file": lambda t, p: t.put_file(p, b"x"),
    "put_symlink": lambda t, p: t.put_symlink(p, "target"),
    "delete": lambda t, p: t.delete(p),
    "make_dirs": lambda t, p: t.make_dirs(p),
    "prune_dirs": lambda t, p: t.prune_dirs([p]),
}


@pytest.mark.parametrize("path", BAD_PATHS)
@pytest.mark.parametrize("operation", sorted(PATH_OPERATIONS))
def test_paths_outside_the_root_are_refused(
    server: Server, t: Transport, operation: str, path: str
) -> None:
    t.make_dirs("a")
    t.make_dirs("ok")
    with pytest.raises(PathOutsideRootError) as excinfo:
        PATH_OPERATIONS[operation](t, path)
    assert excinfo.value.path == path
    assert server.listing() == {"a": ("dir",), "ok": ("dir",)}
    assert server.outside() == set()


@pytest.mark.parametrize("path", ["/abs", "a/..", "a//b"])
def test_prune_dirs_refuses_a_bad_path_before_removing_anything(
    server: Server, t: Transport, path: str
) -> None:
    t.make_dirs("ok/x/y/z/w")
    with pytest.raises(PathOutsideRootError):
        t.prune_dirs(["ok/x/y/z/w", path])
    assert "ok/x/y/z/w" in server.listing()


@pytest.mark.parametrize("operation", ["stat", "read_file", "put_file", "put_symlink", "delete"])
@pytest.mark.parametrize("path", ["", "."])
def test_the_root_itself_is_not_a_file(
    server: Server, t: Transport, operation: str, path: str
) -> None:
    with pytest.raises(PathOutsideRootError):
        PATH_OPERATIONS[operation](t, path)
    assert server.listing() == {}


def test_errors_are_transport_errors_naming_the_server(server: Server, t: Transport) -> None:
    t.make_dirs("d")
    with pytest.raises(TransportError) as excinfo:
        t.delete("d")
    assert SERVER in str(excinfo.value)
    assert excinfo.value.server == SERVER
    assert excinfo.value.path == "d"


# -- sync -------------------------------------------------------------------------------------


def test_sync_keeps_what_was_written(server: Server, t: Transport) -> None:
    t.put_file("a", b"a")
    t.sync()
    t.sync()
    assert server.listing() == {"a": ("file", b"a", 0o644)}


# -- what the server holds (verify) ----------------------------------------------------------


def test_list_tree_lists_everything_parents_first_never_following_symlinks(
    t: Transport, server: Server, tmp_path: Path
) -> None:
    (tmp_path / "outside").mkdir(exist_ok=True)
    t.put_file("a.txt", b"aa")
    t.put_file("bin/run", b"#!/bin/sh\n", mode=0o755)
    t.put_file("d/e/f.txt", b"f")
    t.put_symlink("link", "a.txt")
    t.put_symlink("out", "../outside")
    listed = list(t.list_tree())
    paths = [p for p, _ in listed]
    assert set(paths) == {"a.txt", "bin", "bin/run", "d", "d/e", "d/e/f.txt", "link", "out"}
    assert all(paths.index(p.rpartition("/")[0]) < i for i, p in enumerate(paths) if "/" in p)
    kinds = {p: (e.kind, e.size if e.kind == "file" else None, e.target) for p, e in listed}
    assert kinds["a.txt"] == ("file", 2, None)
    assert kinds["d"][0] == "dir"
    assert kinds["link"] == ("symlink", None, "a.txt")
    assert kinds["out"] == ("symlink", None, "../outside")  # listed, not entered
    assert dict(listed)["bin/run"].mode & 0o100


def test_list_tree_prunes_what_it_is_told_to(t: Transport) -> None:
    t.put_file("keep/a", b"a")
    t.put_file("skip/b", b"b")
    t.put_file("c.log", b"c")
    listed = [p for p, _ in t.list_tree(lambda p: p == "skip" or p.endswith(".log"))]
    assert listed == ["keep", "keep/a"]


def test_file_digests_are_git_blob_ids_or_none(t: Transport) -> None:
    from deployhq_lite.values import git_blob_id

    t.put_file("a.txt", b"hello\n")
    t.put_file("sub/b.bin", bytes(range(256)) * 300)
    t.put_file("empty", b"")
    t.put_symlink("link", "a.txt")
    t.make_dirs("dir")
    found = t.file_digests(["a.txt", "sub/b.bin", "empty", "link", "dir", "missing"])
    assert found.method in ("git-hash-object", "sha1sum", "sftp-read")
    if found.method != "sha1sum":
        assert found.digests["a.txt"] == "ce013625030ba8dba906f756967f9e9ca394464a"
        assert found.digests["sub/b.bin"] == git_blob_id(bytes(range(256)) * 300)
        assert found.digests["empty"] == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    # a symlink is never followed, a directory never read, a missing file never guessed
    assert found.digests["link"] is None
    assert found.digests["dir"] is None
    assert found.digests["missing"] is None


# -- memory only: failure injection ---------------------------------------------------------


def test_memory_fail_on_raises_for_those_paths_only() -> None:
    with MemoryTransport(fail_on={"bad/file", "bad-link"}) as transport:
        transport.put_file("good", b"g")
        with pytest.raises(RemotePathError, match="injected") as excinfo:
            transport.put_file("bad/file", b"x")
        assert excinfo.value.path == "bad/file"
        with pytest.raises(RemotePathError):
            transport.put_symlink("bad-link", "good")
        assert transport.nodes == {"good": MemoryFile(b"g", 0o644)}
        assert transport.dirs == set()
        assert transport.stat("bad") is None


def test_memory_put_many_reports_injected_failures_per_item() -> None:
    from deployhq_lite.transports.base import Upload

    results: list[tuple[str, str | None]] = []
    with MemoryTransport(fail_on={"b"}) as transport:
        transport.put_many(
            [
                Upload("a", lambda: b"a"),
                Upload("b", lambda: b"b"),
                Upload("c", lambda: b"c", is_symlink=True),
            ],
            lambda p, e: results.append((p, None if e is None else type(e).__name__)),
        )
        assert results == [("a", None), ("b", "RemotePathError"), ("c", None)]
        assert transport.nodes == {"a": MemoryFile(b"a", 0o644), "c": MemorySymlink("c")}
        assert transport.syncs == 0
        transport.sync()
        assert transport.syncs == 1
