"""Changesets as pure values: the path guard, canonical order, pruning candidates, counts."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployhq_lite.changeset import (
    RESERVED_DIR,
    Changeset,
    Entry,
    EntryKind,
    FileChange,
    apply,
    build_changeset,
    check_path,
    classify,
    diff,
)
from deployhq_lite.errors import RepositoryError, UnsafePathError
from deployhq_lite.records import ChangeKind

A = Entry("a" * 40)
B = Entry("b" * 40)
A_EXEC = Entry("a" * 40, EntryKind.EXECUTABLE)
LINK_A = Entry("a" * 40, EntryKind.SYMLINK)
LINK_C = Entry("c" * 40, EntryKind.SYMLINK)

ADDED, DELETED, MODIFIED = ChangeKind.ADDED, ChangeKind.DELETED, ChangeKind.MODIFIED


def add(path: str, entry: Entry = A) -> FileChange:
    return FileChange(ADDED, path, None, entry)


def delete(path: str, entry: Entry = A) -> FileChange:
    return FileChange(DELETED, path, entry, None)


def modify(path: str, old: Entry = A, new: Entry = B) -> FileChange:
    return FileChange(MODIFIED, path, old, new)


def kinds_and_paths(changeset: Changeset) -> list[tuple[str, str]]:
    return [(c.kind.value, c.path) for c in changeset]


# -- check_path -----------------------------------------------------------------------------------

REFUSED = {
    "..": "component",
    "../x": "component",
    "a/../b": "component",
    "a/..": "component",
    ".": "component",
    "./a": "component",
    "/abs": "absolute",
    "/": "absolute",
    "a//b": "component",
    "a/": "component",
    "": "empty",
    ".git": ".git",
    ".git/config": ".git",
    ".GIT/x": ".git",
    ".Git/HEAD": ".git",
    "sub/.git": ".git",
    "sub/.git/hooks/post-checkout": ".git",
    ".git./x": ".git",
    ".git /x": ".git",
    "git~1": ".git",
    "GIT~1/config": ".git",
    "sub/Git~1": ".git",
    "\uff0e\uff47\uff49\uff54/config": ".git",  # fullwidth, NFKC-folds to .git
    "a\\b": "backslash",
    "..\\x": "backslash",
    "a\0b": "NUL",
    "a\x01b": "control",
    "tab\there": "control",
    "new\nline": "control",
    "esc\x1b": "control",
    ".deployhq-lite/revision": "reserved",
    ".deployhq-lite/x/y": "reserved",
    ".deployhq-lite": "reserved",
    # what a case-folding, normalising or NTFS server takes for .git or our directory
    ".DEPLOYHQ-LITE/revision": "reserved",
    ".Deployhq-Lite": "reserved",
    ".deployhq-lite./revision": "reserved",
    ".deployhq-lite /revision": "reserved",
    ".deployhq-lite. . /revision": "reserved",
    ".deployhq-lite\u2024/revision": "reserved",  # ONE DOT LEADER: NFKC "."
    ".deployhq-lite\u200c/revision": "reserved",  # HFS+ ignores zero-width (non-)joiners
    ".deploy\u200dhq-lite/revision": "reserved",
    "\ufeff.deployhq-lite/revision": "reserved",
    ".deployhq-lite\u202e/revision": "reserved",
    ".deployhq-lite::$INDEX_ALLOCATION/revision": "reserved",
    ".deployhq-lite:/revision": "reserved",
    "DEPLOY~1/revision": "reserved",
    "deploy~2": "reserved",
    ".git::$INDEX_ALLOCATION/config": ".git",
    ".git:": ".git",
    ".git:stream": ".git",
    ".GIT. :x/config": ".git",
    ".g\u200cit/config": ".git",
    ".git\ufeff/config": ".git",
    "\u200e.git": ".git",
    ".gi\u206ft": ".git",
    "GIT~1:": ".git",
    ".git\u2024/config": ".git",
    "a/.index.html.DHQ-TMP": "temp",
    "a/.x.Dhq-Tmp.": "temp",
    "a/.x.dhq-tmp:": "temp",
    "a/.x.dhq\u200c-tmp": "temp",
    "\uff0ex.dhq-tmp": "temp",
    "del\x7f": "control",
    "c1\x80": "control",
    "nel\x85": "control",
    "csi\x9b[2J": "control",
    "ls\u2028": "control",
    "ps\u2029x": "control",
}


@pytest.mark.parametrize("path", sorted(REFUSED))
def test_check_path_refuses(path: str) -> None:
    with pytest.raises(UnsafePathError) as excinfo:
        check_path(path)
    assert excinfo.value.path == path
    assert REFUSED[path] in excinfo.value.reason
    assert repr(path) in str(excinfo.value)
    assert isinstance(excinfo.value, RepositoryError)


@pytest.mark.parametrize(
    "path",
    [
        "a b/ü.txt",
        "index.html",
        ".github/x",
        ".github/workflows/ci.yml",
        ".gitignore",
        "sub/.gitignore",
        ".gitkeep",
        ".git-blame-ignore-revs",
        "x.git",
        "git~2",
        "a~b/c~",
        "~/x",
        "...x",
        "a..b",
        "deployhq-lite/revision",
        ".deployhq-lite-old/x",
        "sub/.deployhq-lite/revision",
        "README",
        "日本語/ファイル.txt",
        "é/é",
        "-rf",
        "con",
        " leading and trailing ",
        "sub/.DEPLOYHQ-LITE/revision",  # reserved at the top level only
        "sub/DEPLOY~1",
        "deploy~",
        "deploy~x",
        "a:b",
        ".gitx:y",
        "x.dhq-tmp",
        ".x.dhq-tmp.old",
        "caf\udce9.txt",  # bytes that are not UTF-8 (as os.fsdecode holds them)
        "d\udcfe/f\udc85",  # a raw byte 0x85 is not the character U+0085
        "\u00a0nbsp",
        "zwj\u200dalone",
    ],
)
def test_check_path_accepts(path: str) -> None:
    check_path(path)


_IGNORED_BY_HFS = (
    "\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    + "".join(chr(c) for c in range(0x206A, 0x2070))
    + "\ufeff"
)


def _as_a_server_sees_it(part: str) -> str:
    """The rules, written out independently of the module (and of its fast path)."""
    kept = "".join(ch for ch in part if ch not in _IGNORED_BY_HFS)
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", kept).casefold())
    if ":" in folded:
        folded = folded[: folded.index(":")]
    while folded.endswith((".", " ")):
        folded = folded[:-1]
    return folded


def _reference_is_unsafe(path: str) -> bool:
    if not path or "\0" in path or path.startswith("/") or "\\" in path:
        return True
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            return True
        seen = _as_a_server_sees_it(part)
        if seen in (".git", "git~1"):
            return True
        if seen.startswith(".") and seen.endswith(".dhq-tmp"):
            return True
        if any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in "\u2028\u2029" for ch in part):
            return True
    top = _as_a_server_sees_it(parts[0])
    return top == RESERVED_DIR or (
        top.startswith("deploy~") and top[7:].isdigit() and top[7:].isascii()
    )


@given(
    st.text(alphabet="./\\~ aGgitT1-ü\x01\0\x7f\x85:\u200c\ufeff\u2024\u2028E", max_size=12)
    | st.sampled_from(list(REFUSED))
    | st.builds(
        "".join,
        st.lists(
            st.sampled_from(
                [
                    ".",
                    "deployhq-lite",
                    "DEPLOYHQ",
                    "-lite",
                    "dhq-tmp",
                    "DHQ",
                    "-TMP",
                    "x",
                    "/",
                    ":",
                    " ",
                    "\u200d",
                    "\u2024",
                    "git",
                    "deploy~",
                    "1",
                    "\x9b",
                    "\udce9",
                ]
            ),
            max_size=8,
        ),
    )
)
def test_check_path_agrees_with_the_written_rules(path: str) -> None:
    try:
        check_path(path)
    except UnsafePathError:
        refused = True
    else:
        refused = False
    assert refused == _reference_is_unsafe(path)


def test_build_changeset_checks_every_path() -> None:
    with pytest.raises(UnsafePathError):
        build_changeset([("ok", None, A), ("sub/.git/config", None, A)])
    with pytest.raises(UnsafePathError):
        diff({}, {".deployhq-lite/revision": A})


# -- classify -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (A, A, []),
        (None, None, []),
        (None, A, [add("p")]),
        (A, None, [delete("p")]),
        (A, B, [modify("p")]),
        (A, A_EXEC, [modify("p", A, A_EXEC)]),
        (A_EXEC, A, [modify("p", A_EXEC, A)]),
        (LINK_A, LINK_C, [modify("p", LINK_A, LINK_C)]),
        (A, LINK_A, [delete("p"), add("p", LINK_A)]),
        (LINK_A, A_EXEC, [delete("p", LINK_A), add("p", A_EXEC)]),
    ],
    ids=[
        "same",
        "absent",
        "added",
        "deleted",
        "content",
        "exec-on",
        "exec-off",
        "retarget",
        "file-to-link",
        "link-to-exec",
    ],
)
def test_classify(old: Entry | None, new: Entry | None, expected: list[FileChange]) -> None:
    assert classify("p", old, new) == expected
    assert build_changeset([("p", old, new)]) == Changeset.of(expected)


def test_build_changeset_merges_halves_of_one_path() -> None:
    """libgit2 reports a type change as a deletion and an addition of the same path."""
    halves = [("p", A, None), ("q", None, None), ("p", None, LINK_A)]
    assert list(build_changeset(halves)) == [delete("p"), add("p", LINK_A)]
    assert list(build_changeset([("p", A, None), ("p", None, B)])) == [modify("p")]


# -- ordering -------------------------------------------------------------------------------------


def test_canonical_order_deletes_deepest_first_then_writes_in_path_order() -> None:
    changes = [
        add("b"),
        modify("a/z"),
        delete("x"),
        delete("d/e/f"),
        add("a b"),
        delete("d/g"),
        delete("c"),
        add("x/y"),
        modify("a"),
        delete("d/e/a"),
    ]
    assert kinds_and_paths(Changeset.of(changes)) == [
        ("deleted", "d/e/a"),
        ("deleted", "d/e/f"),
        ("deleted", "d/g"),
        ("deleted", "c"),
        ("deleted", "x"),
        ("modified", "a"),
        ("added", "a b"),
        ("modified", "a/z"),
        ("added", "b"),
        ("added", "x/y"),
    ]


def test_order_does_not_depend_on_input_order() -> None:
    changes = [add("b"), delete("a/b"), modify("a"), delete("c"), add("c", LINK_A)]
    assert Changeset.of(changes) == Changeset.of(reversed(changes))
    assert list(Changeset.of(changes)) == [
        delete("a/b"),
        delete("c"),
        modify("a"),
        add("b"),
        add("c", LINK_A),
    ]


def test_reverse_swaps_sides_and_keeps_canonical_order() -> None:
    forward = diff({"x": A, "d/y": A, "m": A, "t": A}, {"x/z": B, "m": B, "t": LINK_A})
    assert kinds_and_paths(forward) == [
        ("deleted", "d/y"),
        ("deleted", "t"),
        ("deleted", "x"),
        ("modified", "m"),
        ("added", "t"),
        ("added", "x/z"),
    ]
    backward = forward.reverse()
    assert kinds_and_paths(backward) == [
        ("deleted", "x/z"),
        ("deleted", "t"),
        ("added", "d/y"),
        ("modified", "m"),
        ("added", "t"),
        ("added", "x"),
    ]
    assert [c for c in backward if c.path == "m"] == [modify("m", B, A)]
    assert backward.reverse() == forward


def test_file_change_reverse() -> None:
    assert add("p").reverse() == delete("p")
    assert delete("p", B).reverse() == add("p", B)
    assert modify("p", A, B).reverse() == modify("p", B, A)


def test_deletes_and_writes_partition_the_changes() -> None:
    changeset = diff({"a": A, "b": A, "c/d": A}, {"a": B, "e": A, "c": A})
    assert [c.path for c in changeset.deletes] == ["c/d", "b"]
    assert [c.path for c in changeset.writes] == ["a", "c", "e"]
    assert changeset.paths() == {"a", "b", "c", "c/d", "e"}
    assert len(changeset) == 5 and bool(changeset)
    assert not Changeset() and len(diff({"a": A}, {"a": A})) == 0


# -- emptied_dirs and counts ----------------------------------------------------------------------


def test_emptied_dirs_are_parents_of_deletes_deepest_first() -> None:
    changeset = Changeset.of(
        [
            delete("a/b/c.txt"),
            delete("a/d.txt"),
            delete("x/y/z/w"),
            delete("top"),
            add("n/m/o"),
            modify("p/q"),
        ]
    )
    assert changeset.emptied_dirs() == ["x/y/z", "a/b", "x/y", "a", "x"]


def test_emptied_dirs_never_includes_the_root() -> None:
    assert Changeset.of([delete("a"), add("b/c")]).emptied_dirs() == []
    assert Changeset().emptied_dirs() == []


def test_emptied_dirs_of_a_directory_becoming_a_file() -> None:
    changeset = diff({"x/y": A, "x/z/w": A}, {"x": B})
    assert changeset.emptied_dirs() == ["x/z", "x"]


def test_counts_include_every_kind() -> None:
    assert Changeset().counts() == {"added": 0, "deleted": 0, "modified": 0}
    changeset = diff({"a": A, "b": A, "l": LINK_A}, {"a": B, "c": A, "d": A, "l": A})
    assert changeset.counts() == {"added": 3, "deleted": 2, "modified": 1}


# -- the reference model --------------------------------------------------------------------------


def test_apply_diff_reaches_the_new_snapshot() -> None:
    old = {"a": A, "d/x": A, "l": LINK_A, "e": A}
    new = {"a": B, "d": A, "l": A, "e": A_EXEC, "n/m": LINK_C}
    assert apply(diff(old, new), old) == new
    assert apply(diff(old, new).reverse(), new) == old
    assert apply(Changeset(), old) == old


def test_temp_file_names_are_reserved() -> None:
    with pytest.raises(UnsafePathError, match="temp files"):
        check_path("assets/.app.js.dhq-tmp")
    check_path("assets/app.dhq-tmp")  # no leading dot: not a name we ever write
