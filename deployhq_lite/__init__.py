"""deployhq_lite: a git-backed file deployment engine with DeployHQ-style rollback.

>>> import deployhq_lite as dhq                                   # doctest: +SKIP
>>> done = dhq.deploy("website", "production", config="deployhq-lite.toml")
>>> dhq.rollback("website", earlier.identifier, config="deployhq-lite.toml")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .api import deploy, deploy_release, preview, rollback, rollback_release
from .errors import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    DeployHQLiteError,
    DeploymentError,
    DeploymentLockedError,
    HostKeyError,
    MarkerMismatchError,
    PathOutsideRootError,
    RefusedError,
    ReleaseRefusedError,
    ReleaseRollbackNotAllowedError,
    RemotePathError,
    RepositoryError,
    RevisionNotFoundError,
    RollbackNotAllowedError,
    StoreError,
    TransportError,
    TransportStateError,
    UnknownNameError,
    UnsafePathError,
)
from .records import (
    Deployment,
    DeploymentMode,
    DeploymentStatus,
    FileOutcome,
    HookEvent,
    OutcomeStatus,
    Preview,
    Release,
    ReleaseItem,
)

if TYPE_CHECKING:
    from .config import Settings, load_settings
    from .engine import Engine

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "ConnectError",
    "DeployHQLiteError",
    "Deployment",
    "DeploymentError",
    "DeploymentLockedError",
    "DeploymentMode",
    "DeploymentStatus",
    "Engine",
    "FileOutcome",
    "HookEvent",
    "HostKeyError",
    "MarkerMismatchError",
    "OutcomeStatus",
    "PathOutsideRootError",
    "Preview",
    "RefusedError",
    "Release",
    "ReleaseItem",
    "ReleaseRefusedError",
    "ReleaseRollbackNotAllowedError",
    "RemotePathError",
    "RepositoryError",
    "RevisionNotFoundError",
    "RollbackNotAllowedError",
    "Settings",
    "StoreError",
    "TransportError",
    "TransportStateError",
    "UnknownNameError",
    "UnsafePathError",
    "__version__",
    "deploy",
    "deploy_release",
    "load_settings",
    "preview",
    "rollback",
    "rollback_release",
]

_LAZY = {"Engine": "engine", "Settings": "config", "load_settings": "config"}


def __getattr__(name: str) -> Any:
    """Heavy pieces (pygit2, pydantic) load on first use, keeping start-up fast."""
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
