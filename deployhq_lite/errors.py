"""The exception tree. Every error a user can see is one of these; ``str()`` is the message.

::

    DeployHQLiteError
    ├── ConfigError (ValueError)                 exit 2
    │   └── UnknownNameError (KeyError)
    ├── RepositoryError                          exit 1
    │   ├── RevisionNotFoundError
    │   └── UnsafePathError
    ├── RefusedError                             exit 3, nothing was written
    │   ├── DeploymentLockedError
    │   ├── MarkerMismatchError
    │   ├── StoreBusyError                       the snapshot store in use: no gc now
    │   ├── RollbackNotAllowedError              exact DeployHQ messages, a ``reason``
    │   └── ReleaseRefusedError                  carries an error ``code``
    │       └── ReleaseRollbackNotAllowedError
    ├── DeploymentError                          started and did not finish
    ├── TransportError                           carries ``server`` and ``path``
    │   ├── ConnectError
    │   │   ├── AuthenticationError
    │   │   └── HostKeyError
    │   ├── RemotePathError
    │   ├── PathOutsideRootError
    │   └── TransportStateError
    ├── StoreError
    └── ServeError                               exit 1
"""

from __future__ import annotations

from collections.abc import Iterable

from .names import shown


class DeployHQLiteError(Exception):
    """Root of every error deployhq_lite raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        message = shown(message)  # a name that is not UTF-8 is shown as \xNN bytes
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(DeployHQLiteError, ValueError):
    """The configuration file or environment is wrong: ``problems`` holds each problem's
    line (a config file with several says them all, one line each)."""

    exit_code = 2

    def __init__(self, message: str, *, problems: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems) or (message,)


class UnknownNameError(ConfigError, KeyError):
    """A project, server or deployment name that does not exist; lists the known ones,
    unless ``known`` is None (deployment identifiers are never listed)."""

    def __init__(
        self, kind: str, name: str, known: Iterable[str] | None, *, scope: str = ""
    ) -> None:
        names = sorted(known or ())
        listing = ", ".join(names) if names else "none"
        where = f" in {scope}" if scope else ""
        if known is None:
            super().__init__(f"{kind} {name} not found{where}")
        else:
            super().__init__(f"unknown {kind} {name!r}{where} (known: {listing})")
        self.kind = kind
        self.name = name
        self.known = tuple(names)

    def __str__(self) -> str:  # KeyError would add quotes
        return self.message


class RepositoryError(DeployHQLiteError):
    """The git repository cannot be read or holds something we refuse to deploy."""


class RevisionNotFoundError(RepositoryError):
    exit_code = 2  # a usage error: the revision asked for does not exist

    def __init__(self, spec: str, repository: str) -> None:
        super().__init__(f"revision {spec!r} not found in repository {repository}")
        self.spec = spec
        self.repository = repository


class BranchNotFoundError(RevisionNotFoundError):
    """The configured branch has no commits: an empty repository, or no such branch."""

    def __init__(self, branch: str, repository: str) -> None:
        RepositoryError.__init__(
            self, f"repository {repository} has no commits on branch {branch!r}"
        )
        self.spec = branch
        self.repository = repository


class UnsafePathError(RepositoryError):
    """A tree path that could escape the server root or clobber our own files."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"refusing to deploy unsafe path {path!r}: {reason}")
        self.path = path
        self.reason = reason


class RefusedError(DeployHQLiteError):
    """An expected refusal: the request was understood and nothing was written to a server.

    A deployment refused after it was recorded (server locked, marker disagrees) stays in
    the history as ``failed`` with this message, as DeployHQ shows refused runs."""

    exit_code = 3


class DeploymentLockedError(RefusedError):
    pass


class MarkerMismatchError(RefusedError):
    pass


class StoreBusyError(RefusedError):
    """The snapshot store is in use (a deployment queued, running or keeping its
    snapshot, or another gc): it is not collected now."""


class RollbackNotAllowedError(RefusedError):
    """Messages are DeployHQ's, exactly (see ``rules.ROLLBACK_*``); ``reason`` says
    why this deployment hit that rule (``it failed: connection lost``), shown beside it."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ReleaseRefusedError(RefusedError):
    """A release/entry rule refused the request; ``code`` is its stable error code
    (``release_not_deployed``, ``forbidden``, ``release_locked``, ``not_found``...)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class ReleaseRollbackNotAllowedError(ReleaseRefusedError):
    """A release cannot be rolled back (a rollback release, one the user has not
    deployed, or one whose rollback release was deleted and not deployed again since)."""


class DeploymentError(DeployHQLiteError):
    """A deployment started and did not finish; the server marker did not move."""

    def __init__(self, message: str, *, identifier: str, failed_path: str | None = None) -> None:
        super().__init__(message)
        self.identifier = identifier
        self.failed_path = failed_path


class TransportError(DeployHQLiteError):
    def __init__(self, message: str, *, server: str = "", path: str | None = None) -> None:
        super().__init__(message)
        self.server = server
        self.path = path


class ConnectError(TransportError):
    pass


class AuthenticationError(ConnectError):
    pass


class HostKeyError(ConnectError):
    pass


class RemotePathError(TransportError):
    pass


class PathOutsideRootError(TransportError):
    pass


class TransportStateError(TransportError):
    pass


class StoreError(DeployHQLiteError):
    pass


class ServeError(DeployHQLiteError):
    """The HTTP API cannot start: its address is taken, its certificate will not load."""
