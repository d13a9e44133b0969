"""Drift: how what a server holds differs from a snapshot, as pure values (no I/O).

The snapshot side is what a deployment put there (``Expected`` per path: kind, blob id,
size, a symlink's target); the server side is its listing (``Listed``: every
``transports.RemoteEntry`` is one). :func:`compare` finds every difference but content,
and names the files whose content must be hashed to tell (same kind, same size);
:func:`content_differences` judges those from their digests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from .records import Difference, DifferenceKind

ExpectedKind = Literal["file", "executable", "symlink"]


@dataclass(frozen=True, slots=True)
class Expected:
    kind: ExpectedKind
    blob: str
    size: int
    target: str | None = None  # a symlink's


class Listed(Protocol):
    """One entry of a server's listing (``transports.RemoteEntry`` is one)."""

    @property
    def kind(self) -> str: ...  # file | dir | symlink | other
    @property
    def size(self) -> int: ...
    @property
    def mode(self) -> int: ...
    @property
    def target(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Comparison:
    differences: list[Difference]
    to_hash: list[str]  # regular files of the expected kind and size: their content decides
    checked: int  # paths compared (the snapshot's and the server's, once each)


def compare(
    expected: Mapping[str, Expected], listed: Mapping[str, Listed], *, fast: bool = False
) -> Comparison:
    """Every difference but content; with ``fast``, a size that differs is ``modified``
    and nothing is left to hash (rsync's quick check)."""
    differences: list[Difference] = []
    to_hash: list[str] = []
    for path, want in expected.items():
        found = listed.get(path)
        if found is None:
            differences.append(Difference(path, DifferenceKind.MISSING, want.kind, None))
            continue
        wrong_type = _type_difference(path, want, found)
        if wrong_type is not None:
            differences.append(wrong_type)
        elif want.kind != "symlink":  # a symlink with the same target: nothing else to see
            differences += _file_differences(path, want, found)
            if found.size == want.size and not fast:
                to_hash.append(path)
    differences += _unexpected(expected, listed)
    checked = len(expected.keys() | {p for p, f in listed.items() if f.kind != "dir"})
    return Comparison(sorted(differences, key=_order), to_hash, checked)


def _file_differences(path: str, want: Expected, found: Listed) -> list[Difference]:
    """A regular file where the snapshot has one: its exec bit and its size."""
    out = []
    if (want.kind == "executable") != bool(found.mode & 0o100):
        out.append(Difference(path, DifferenceKind.MODE, _mode(want.kind), _found_mode(found)))
    if found.size != want.size:
        out.append(Difference(path, DifferenceKind.MODIFIED, _content(want), f"{found.size} bytes"))
    return out


def _unexpected(expected: Mapping[str, Expected], listed: Mapping[str, Listed]) -> list[Difference]:
    """What the server has where the snapshot has nothing, or a directory."""
    out = []
    directories = _directories(expected)
    for path, found in listed.items():
        if path in expected:
            continue
        if path in directories:
            if found.kind != "dir":
                out.append(Difference(path, DifferenceKind.TYPE, "directory", _describe(found)))
        elif found.kind != "dir":  # a directory's files are reported; it is not (git has none)
            out.append(Difference(path, DifferenceKind.EXTRA, None, _describe(found)))
    return out


def content_differences(
    expected: Mapping[str, Expected],
    digests: Mapping[str, str | None],
    *,
    matches: Callable[[Expected, str], bool],
    label: str = "blob",
) -> list[Difference]:
    """A ``modified`` for each hashed file whose digest does not match (``matches``
    compares a digest with the snapshot's entry); a file that could not be read as a
    regular file any more (None) changed type while it was being checked."""
    found: list[Difference] = []
    for path, digest in digests.items():
        want = expected[path]
        if digest is None:
            found.append(Difference(path, DifferenceKind.TYPE, want.kind, "not a regular file"))
        elif not matches(want, digest):
            found.append(
                Difference(
                    path,
                    DifferenceKind.MODIFIED,
                    _content(want),
                    f"{want.size} bytes, {label} {digest or 'unreadable'}",
                )
            )
    return sorted(found, key=_order)


def merge(*parts: Sequence[Difference]) -> list[Difference]:
    return sorted((d for part in parts for d in part), key=_order)


def _type_difference(path: str, want: Expected, found: Listed) -> Difference | None:
    if want.kind == "symlink":
        if found.kind == "symlink" and found.target == want.target:
            return None
    elif found.kind == "file":
        return None
    return Difference(path, DifferenceKind.TYPE, _describe_expected(want), _describe(found))


def _directories(expected: Mapping[str, Expected]) -> set[str]:
    found: set[str] = set()
    for path in expected:
        parent = path.rpartition("/")[0]
        while parent and parent not in found:  # stops at the first parent already seen
            found.add(parent)
            parent = parent.rpartition("/")[0]
    return found


def _describe_expected(want: Expected) -> str:
    return f"symlink -> {want.target}" if want.kind == "symlink" else want.kind


def _describe(found: Listed) -> str:
    if found.kind == "symlink":
        return f"symlink -> {found.target}"
    if found.kind == "dir":
        return "directory"
    if found.kind == "file":
        return "executable" if found.mode & 0o100 else "file"
    return "other"  # a socket, a FIFO, a device


def _mode(kind: ExpectedKind) -> str:
    return "100755" if kind == "executable" else "100644"


def _found_mode(found: Listed) -> str:
    return "100755" if found.mode & 0o100 else "100644"


def _content(want: Expected) -> str:
    return f"{want.size} bytes, blob {want.blob}"


def _order(difference: Difference) -> tuple[str, str]:
    return difference.path, difference.kind.value
