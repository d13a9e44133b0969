"""What a deployment puts on a server: a part of the revision, minus excluded paths.

``subdirectory`` (the server's, else the project's) selects part of the repository;
paths on the server are relative to it. Exclusions are gitignore patterns: the server's
``excluded_files`` list plus the revision's own ``.deployignore`` (never deployed itself). The
result is one tree in the snapshot store, so a rollback restores exactly what a
deployment put there. Excluded paths are neither uploaded nor deleted on the server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from pathspec import GitIgnoreSpec

from .errors import ConfigError

if TYPE_CHECKING:
    from .git import RawEntry, Repository

DEPLOYIGNORE = ".deployignore"


def exclusion_spec(patterns: Iterable[str], *, where: str = "") -> GitIgnoreSpec | None:
    """The patterns compiled; a pattern that cannot parse is a ``ConfigError``."""
    lines = [p for p in patterns if p.strip() and not p.lstrip().startswith("#")]
    if not lines:
        return None
    try:
        return GitIgnoreSpec.from_lines(lines)
    except ValueError:
        for line in lines:
            try:
                GitIgnoreSpec.from_lines([line])
            except ValueError:
                raise ConfigError(
                    f"{where or 'excluded_files'}: pattern {line!r} cannot parse"
                ) from None
        raise


def select_tree(
    repo: Repository, tree: str, *, subdirectory: str | None, exclude: Iterable[str]
) -> str:
    """The tree to deploy from a revision's ``tree`` (written to ``repo`` if it differs)."""
    if subdirectory:
        sub = repo.subtree(tree, subdirectory.strip("/"))
        if sub is None:
            raise ConfigError(f"subdirectory {subdirectory!r} is not a directory in this revision")
        tree = sub
    own = deployignore_lines(repo, tree)
    exclusion_spec(own, where=DEPLOYIGNORE)  # say which file is wrong
    spec = exclusion_spec([*exclude, *own])
    if spec is None:
        return tree
    return repo.build_tree((p, e) for p, e in repo.walk_tree(tree) if not spec.match_file(p))


def deployignore_lines(repo: Repository, tree: str) -> list[str]:
    """The patterns of ``tree``'s own ``.deployignore``, and the file itself (never
    deployed); none when it has none."""
    ignore_file = repo.tree_entry(tree, DEPLOYIGNORE)
    if ignore_file is None:
        return []
    text = repo.read_blob(ignore_file.oid).decode("utf-8", "replace")
    return [*text.splitlines(), "/" + DEPLOYIGNORE]


def overlay(repo: Repository, tree: str | None, files: Mapping[str, RawEntry | None]) -> str:
    """``tree`` (None: empty) with ``files`` put in, None removing a path. A put file
    wins over what was in its way: a directory at its path, or a file at a parent."""
    entries = dict(repo.walk_tree(tree)) if tree else {}
    for path, entry in files.items():
        parents = {"/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)}
        entries = {
            p: e for p, e in entries.items() if p not in parents and not p.startswith(path + "/")
        }
        entries.pop(path, None)
        if entry is not None:
            entries[path] = entry
    return repo.build_tree(entries.items())
