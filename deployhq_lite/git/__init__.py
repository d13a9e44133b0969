"""Git plumbing, the only code that imports pygit2: ``repository`` (repositories, trees,
their entries, objects fetched and copied) and ``blobs`` (blob contents read for a
deployment, on another core)."""

from .blobs import BlobReader
from .repository import (
    EMPTY_TREE,
    MODE_EXECUTABLE,
    MODE_FILE,
    MODE_GITLINK,
    MODE_SYMLINK,
    MODE_TREE,
    RawDelta,
    RawEntry,
    Repository,
)

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
