"""Git plumbing, the only code that imports pygit2: ``repository`` (repositories, trees,
objects fetched and copied), ``disk`` (trees to and from directories), ``entries``
(modes and entries) and ``blobs`` (blob contents read for a deployment, on another
core)."""

from .blobs import BlobReader
from .entries import (
    EMPTY_TREE,
    MODE_EXECUTABLE,
    MODE_FILE,
    MODE_GITLINK,
    MODE_SYMLINK,
    MODE_TREE,
    RawDelta,
    RawEntry,
)
from .repository import Repository

__all__ = [
    "EMPTY_TREE",
    "MODE_EXECUTABLE",
    "MODE_FILE",
    "MODE_GITLINK",
    "MODE_SYMLINK",
    "MODE_TREE",
    "BlobReader",
    "RawDelta",
    "RawEntry",
    "Repository",
]
