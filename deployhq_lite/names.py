"""Names on a server: which are git's or ours whatever the server's file system makes
of them, the temp names files are written to, and how names that are not UTF-8 are shown.

A server may fold case and normalise (macOS: HFS+, APFS), drop trailing dots and
spaces and read ``name:stream`` as a stream of ``name`` (Windows: NTFS), or ignore some
code points altogether (HFS+). :func:`fold` gives the name such a server sees; every
reserved name (``.git``, our ``.deployhq-lite`` directory, our temp names) is matched
on it, as git matches ``.git`` since CVE-2014-9390 (``is_hfs_dotgit``, ``is_ntfs_dotgit``).

POSIX file names are bytes. A name that is not UTF-8 is held as a ``str`` with its
undecodable bytes as lone surrogates (``os.fsdecode``, as pygit2 gives it), turned back
into the same bytes at the server (``os.fsencode``), and shown, in the history, logs and
JSON, in the lossless escaped form of :func:`escape_path`.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata

# Files are written to ``.<name>.dhq-tmp`` beside ``<name>`` and renamed over it; tree
# paths with such names are refused (they would be clobbered mid-deploy).
TEMP_SUFFIX = ".dhq-tmp"


def temp_name(name: str) -> str:
    """The temp name for ``name`` in the same directory (stable, so re-runs reuse it);
    ``name`` may hold bytes that are not UTF-8 (see the module docstring)."""
    tmp = f".{name}{TEMP_SUFFIX}"
    if len(os.fsencode(tmp)) <= 255:
        return tmp
    return f".{hashlib.sha256(os.fsencode(name)).hexdigest()[:32]}{TEMP_SUFFIX}"


def temp_path(path: str) -> str:
    """The temp name of the (relative) ``path``, in its own directory."""
    parent, slash, name = path.rpartition("/")
    return f"{parent}{slash}{temp_name(name)}"


# Our own files on a server live here; a repository may not write into it.
RESERVED_DIR = ".deployhq-lite"

# Code points HFS+ leaves out of a name when it compares names (git's next_hfs_char).
_HFS_IGNORED = dict.fromkeys(
    [0x200C, 0x200D, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF]
)
_GIT = (".git", "git~1")  # and git's NTFS short name
_RESERVED_SHORT = re.compile(r"deploy~[0-9]+")  # NTFS short names of .deployhq-lite
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def fold(name: str) -> str:
    """``name`` as a case-insensitive, normalising server may see it: HFS+'s ignored
    code points left out, NFKC and case folded, an NTFS stream suffix (``:...``) cut
    off, trailing dots and spaces stripped."""
    name = name.translate(_HFS_IGNORED)
    name = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return name.partition(":")[0].rstrip(". ")


def is_git_name(name: str) -> bool:
    """Whether some server would take ``name`` for ``.git``."""
    return fold(name) in _GIT


def is_temp_name(name: str) -> bool:
    """Whether some server would take ``name`` for one of our temp files."""
    folded = fold(name)
    return folded.startswith(".") and folded.endswith(TEMP_SUFFIX)


def is_reserved_dir(name: str) -> bool:
    """Whether some server would take the top-level ``name`` for our own directory."""
    folded = fold(name)
    return folded == RESERVED_DIR or _RESERVED_SHORT.fullmatch(folded) is not None


def has_control(name: str) -> bool:
    """C0 and C1 controls, DEL, and the Unicode line and paragraph separators."""
    return _CONTROL.search(name) is not None


def component_problem(part: str) -> str | None:
    """Why a path component may not be written to a server, or None."""
    if part in ("", ".", ".."):
        return f"path component {part!r}"
    if is_git_name(part):
        return "a .git component"
    if has_control(part):
        return "control character in path"
    if is_temp_name(part):
        return f"names ending {TEMP_SUFFIX} are deployhq-lite temp files"
    return None


# -- names that are not UTF-8 ---------------------------------------------------------------

_ESCAPES = re.compile(r"\\x([0-9a-f]{2})|\\\\")


def escape_path(path: str) -> str:
    """``path`` with each byte that is not UTF-8 as ``\\xNN`` and a backslash doubled:
    valid text that :func:`unescape_path` turns back into the same path."""
    if path.isascii() and "\\" not in path:
        return path
    raw = path.replace("\\", "\\\\").encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


def shown(text: str) -> str:
    """``text`` (a message that may hold such names) fit to print and store: the bytes
    that are not UTF-8 as ``\\xNN``. Readable, not lossless (see :func:`escape_path`)."""
    if text.isascii():
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate os.fsdecode never makes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def unescape_path(text: str) -> str:
    """The path :func:`escape_path` made ``text`` from."""
    if "\\" not in text:
        return text
    return _ESCAPES.sub(
        lambda m: "\\" if m.group(1) is None else chr(0xDC00 + int(m.group(1), 16)), text
    )
