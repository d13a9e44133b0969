"""The snapshot store: a bare git repository, ``<state_dir>/snapshots.git``, holding
every deployment's end snapshot under ``refs/deployments/<identifier>``."""

from __future__ import annotations

from pathlib import Path

from .. import git
from ..changeset import Changeset
from ..errors import StoreError
from .gc import store_lock


class SnapshotStore:
    """A bare git repository holding every deployment's end snapshot under its own ref.

    ``repo`` also reads the source repositories' objects (alternates added in memory),
    so diffs between a stored snapshot and a new revision run in one libgit2 diff.
    ``keep()`` makes the store self-sufficient for a tree before a ref points at it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.repo = git.Repository.init_bare(path)  # reads sources' objects too
        self._own = git.Repository(path)  # only what the store really holds
        self._sources: set[str] = set()

    def attach(self, source: git.Repository) -> None:
        if source.path not in self._sources:
            self.repo.add_alternate(source)
            self._sources.add(source.path)

    def keep(
        self, identifier: str, tree: str, changeset: Changeset, source: git.Repository | None
    ) -> None:
        """Keep ``tree`` for a deployment; objects outside ``changeset`` are already here.

        Holds the store lock shared: a gc must not prune what is copied before the ref
        reaches it (see :mod:`.gc`)."""
        with store_lock(self.path, exclusive=False):
            if source is not None:
                self._own.import_packs(source)
                needed = self.repo.subtree_ids(tree, changeset.paths())
                needed.update(c.new.blob for c in changeset if c.new is not None)
                missing = self._own.missing_objects(needed)
                if missing:
                    self._own.copy_objects(missing, source)
            if self._own.missing_objects([tree]):
                raise StoreError(f"snapshot {tree} for deployment {identifier} is incomplete")
            commit = self._own.commit_tree(tree, f"deployment {identifier}\n")
            self._own.set_ref(f"refs/deployments/{identifier}", commit)

    def find_tree(self, identifier: str) -> str | None:
        commit = self._own.find_ref(f"refs/deployments/{identifier}")
        return None if commit is None else self._own.tree_of(commit)

    def close(self) -> None:
        self.repo.close()
        self._own.close()
