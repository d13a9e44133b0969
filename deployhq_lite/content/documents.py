"""The documents of a content stack, read from its git repository.

Entries live at ``entries/<content_type>/<uid>.json`` and assets at
``assets/<uid>/<any file>``; the uid is the file stem (entries) or the directory name
(assets). A document's version N is the Nth commit, along the first-parent history of
the stack's branch, that changed its path: history is git history. A version that
deleted the document exists but has no content and cannot be published.

Published documents are delivered as ``<locale>/<the path in the repository>``: one
tree per environment holding every locale (see :func:`delivery_tree`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ..config import Destination
from ..errors import RepositoryError, UnknownNameError

if TYPE_CHECKING:
    from ..context import Context
    from ..git import RawEntry, Repository

_ENTRY = re.compile(r"entries/(?P<type>[^/]+)/(?P<uid>[^/]+)\.json")
_ASSET = re.compile(r"assets/(?P<uid>[^/]+)/.+")

DocumentKind = Literal["entry", "asset"]


@dataclass(frozen=True, slots=True)
class Version:
    number: int
    commit: str
    tree: str  # the commit's tree
    path: str | None  # the entry's file or the asset's directory; None once deleted


@dataclass(slots=True)
class Document:
    uid: str
    kind: DocumentKind
    versions: list[Version] = field(default_factory=list)

    @property
    def latest(self) -> int:
        return len(self.versions)

    @property
    def content_type(self) -> str | None:
        for version in reversed(self.versions):
            match = _ENTRY.fullmatch(version.path or "")
            if match:
                return match["type"]
        return None

    def version(self, number: int) -> Version:
        if not 1 <= number <= len(self.versions):
            raise UnknownNameError(
                "version",
                str(number),
                [str(v.number) for v in self.versions],
                scope=f"document {self.uid!r}",
            )
        return self.versions[number - 1]


def stack_catalog(ctx: Context, stack: str) -> Catalog:
    """The stack's documents at its branch head (read again when the head moves)."""
    repo = ctx.source(Destination.stack_project(stack))
    head = repo.resolve(ctx.settings.get_stack(stack).branch)
    cached = ctx.catalogs.get(stack)
    if not isinstance(cached, Catalog) or cached.head != head:
        cached = ctx.catalogs[stack] = Catalog(repo, head)
    return cached


class Catalog:
    """Every document of a stack's branch, with its versions (read once)."""

    def __init__(self, repo: Repository, revision: str) -> None:
        self.repo = repo
        self.head = repo.resolve(revision)
        self.documents: dict[str, Document] = {}
        for commit, tree, changed in repo.first_parent_history(self.head):
            touched: dict[str, tuple[DocumentKind, list[str]]] = {}
            for path in changed:
                found = _document_of(path)
                if found is not None:
                    touched.setdefault(found[0], (found[1], []))[1].append(path)
            for uid, (kind, paths) in touched.items():
                doc = self.documents.setdefault(uid, Document(uid, kind))
                if doc.kind != kind:
                    raise RepositoryError(
                        f"{repo.path}: document uid {uid!r} is both an entry and an asset "
                        f"(at commit {commit[:12]})"
                    )
                where = self._locate(tree, uid, kind, paths)
                doc.versions.append(Version(len(doc.versions) + 1, commit, tree, where))

    def get(self, uid: str) -> Document:
        try:
            return self.documents[uid]
        except KeyError:
            raise UnknownNameError("document", uid, self.documents) from None

    def files(self, uid: str, number: int) -> list[tuple[str, RawEntry]]:
        """The repository paths and blobs of a document at a version."""
        version = self.get(uid).version(number)
        if version.path is None:
            raise RepositoryError(f"document {uid!r} has no content at version {number}")
        entry = self.repo.tree_entry(version.tree, version.path)
        if entry is not None:
            return [(version.path, entry)]
        directory = self.repo.subtree(version.tree, version.path)  # an asset's files
        if directory is None:
            return []
        return [(f"{version.path}/{p}", e) for p, e in self.repo.walk_tree(directory)]

    def references(self, uid: str, number: int) -> list[str]:
        """The uids listed under ``_references`` in an entry's JSON (none for assets)."""
        files = self.files(uid, number)
        if self.get(uid).kind != "entry" or not files:
            return []
        try:
            data = json.loads(self.repo.read_blob(files[0][1].oid))
        except (ValueError, UnicodeDecodeError):
            return []
        refs = data.get("_references", []) if isinstance(data, dict) else []
        return [r for r in refs if isinstance(r, str)]

    def _locate(self, tree: str, uid: str, kind: DocumentKind, changed: list[str]) -> str | None:
        if kind == "asset":
            directory = f"assets/{uid}"
            return directory if self.repo.has_path(tree, directory) else None
        return next((p for p in changed if self.repo.has_path(tree, p)), None)


def _document_of(path: str) -> tuple[str, DocumentKind] | None:
    match = _ENTRY.fullmatch(path)
    if match:
        return match["uid"], "entry"
    match = _ASSET.fullmatch(path)
    if match:
        return match["uid"], "asset"
    return None


def delivery_tree(
    catalog: Catalog, published: Mapping[tuple[str, str], int]
) -> list[tuple[str, RawEntry]]:
    """The files an environment delivers: ``<locale>/<path>`` for every published
    (locale, uid) -> version."""
    out: list[tuple[str, RawEntry]] = []
    for (locale, uid), number in sorted(published.items()):
        out.extend((f"{locale}/{path}", entry) for path, entry in catalog.files(uid, number))
    return out
