"""What the rest of the engine may ask of the store: one ``typing.Protocol`` per job.

Callers type against these, never against an implementation, so a second backend
(PostgreSQL) sits beside :mod:`.sqlite` without a caller changing. Each protocol is one
room of the history:

- :class:`DeploymentHistory`: deployments, their build commands' results and per-file
  outcomes;
- :class:`DeploymentQueue`: claiming queued deployments, failing abandoned ones, and the
  per-server locks;
- :class:`PublishCaptures`: the publish events stack deployments make, and what each
  environment therefore publishes;
- :class:`ReleaseHistory`: releases, their items, deploys and the states captured
  before them;
- :class:`SnapshotStorage`: every deployment's snapshot (a git tree under its own ref).

:class:`HistoryStore` is the history database as a whole: the first three rooms, and the
release history kept beside them in the same database.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .. import git
    from ..changeset import Changeset
    from ..records import (
        CommandResult,
        Deployment,
        DeploymentStatus,
        FileOutcome,
        OutcomeStatus,
        PublishEvent,
        Release,
        ReleaseItem,
        Verification,
    )


@dataclass(frozen=True, slots=True)
class LockRecord:
    """Who holds a server's lock (``server_key`` is ``project/server``), since when."""

    server_key: str
    deployment: str
    owner: str
    acquired_at: str


class DeploymentHistory(Protocol):
    """Deployments, the results of their commands and their per-file outcomes."""

    def add(self, deployment: Deployment) -> Deployment:
        """Record a new deployment; returns it with its ``seq``."""
        ...

    def update(self, deployment: Deployment, **changes: Any) -> Deployment:
        """Change fields of a recorded deployment; returns the changed value."""
        ...

    def find(self, identifier: str) -> Deployment | None: ...

    def query(
        self,
        project: str,
        server: str | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
        status: DeploymentStatus | None = None,
    ) -> list[Deployment]:
        """Newest first: one server's (or group's) deployments, or, without ``server``,
        the project's top-level ones; only those in ``status`` if given."""
        ...

    def count(
        self, project: str, server: str | None = None, *, status: DeploymentStatus | None = None
    ) -> int:
        """How many deployments :meth:`query` pages through."""
        ...

    def find_prefix(self, project: str, prefix: str) -> list[Deployment]:
        """Up to two deployments of ``project`` whose identifier starts with ``prefix``."""
        ...

    def members(self, group: str) -> list[Deployment]:
        """The per-server deployments of group deployment ``group``, in server order."""
        ...

    def find_latest_completed(self, project: str, server: str) -> Deployment | None:
        """The deployment whose files are on the server: latest completed, not a preview."""
        ...

    def unfinished_since(self, project: str, server: str, seq: int) -> list[Deployment]:
        """Queue deployments after ``seq`` that failed or never finished, oldest first."""
        ...

    def add_command_result(self, identifier: str, result: CommandResult) -> None: ...

    def command_results(self, identifier: str) -> list[CommandResult]: ...

    def record_changes(
        self, identifier: str, changeset: Changeset, statuses: Sequence[OutcomeStatus]
    ) -> None:
        """Replace the per-file outcomes of a deployment (one per change, in order)."""
        ...

    def outcomes(self, identifier: str, *, limit: int = -1) -> list[FileOutcome]:
        """Per-file outcomes in order (``limit`` -1: all of them)."""
        ...

    def change_counts(self, identifier: str) -> dict[str, int]:
        """How many paths were added, modified and deleted."""
        ...


class DeploymentQueue(Protocol):
    """Queued deployments, their claims by workers, and one lock per server."""

    def unfinished(self) -> list[str]:
        """The identifiers of deployments queued or running (any project), oldest first."""
        ...

    def claim_next(
        self, owner: str, *, projects: Collection[str] | None = None
    ) -> Deployment | None:
        """Claim for ``owner`` the oldest unclaimed top-level deployment that may run
        now (of ``projects``, if given), or None."""
        ...

    def recover_abandoned(self, is_gone: Callable[[str], bool]) -> list[Deployment]:
        """Fail what a stopped process left unfinished and free its locks; returns the
        deployments failed."""
        ...

    def interrupt(self, identifier: str, why: str, *, whole_group: bool) -> list[Deployment]:
        """Fail deployment ``identifier`` if it is unfinished and drop its locks (with
        ``whole_group``, its group's too); returns the deployment failed."""
        ...

    def try_lock(self, lock: LockRecord, *, steal: bool = False) -> tuple[bool, LockRecord | None]:
        """Take the lock (``steal`` takes it over); return whether we hold it and the holder."""
        ...

    def find_lock(self, server_key: str) -> LockRecord | None: ...

    def unlock(self, server_key: str, deployment: str) -> None: ...


class PublishCaptures(Protocol):
    """Publish events of stack deployments; they count once their deployment completed."""

    def add_publish_events(self, deployment: str, events: Sequence[PublishEvent]) -> None: ...

    def published(self, stack: str, environment: str) -> dict[tuple[str, str], PublishEvent]:
        """The latest completed event per (locale, uid): what the environment publishes
        (an event with version None is an unpublish)."""
        ...

    def published_versions_of(
        self, stack: str, environment: str, locale: str, uid: str
    ) -> list[int]:
        """Every version of a document ever published (and completed) in a locale."""
        ...


class ReleaseHistory(Protocol):
    """Releases, their items, deploys and captures. A deploy or capture counts once its
    deployment completed, like publish events."""

    def add(self, release: Release) -> Release: ...

    def set_items(self, uid: str, items: Sequence[ReleaseItem]) -> None: ...

    def update(self, uid: str, **changes: Any) -> None:
        """Change ``scheduled_at``, ``schedule``, ``schedule_status`` or ``deleted_at``."""
        ...

    def find(self, uid: str) -> Release | None: ...

    def query(self, stack: str, *, deleted: bool = False) -> list[Release]: ...

    def rollbacks_of(self, original: str, user: str) -> list[Release]: ...

    def due(self, now: str) -> list[Release]:
        """Releases scheduled at or before ``now`` and not run yet, soonest first."""
        ...

    def record_deploy(
        self,
        release: str,
        user: str,
        environment: str,
        deployment: str,
        captures: Sequence[tuple[str, str, int | None]],
    ) -> None:
        """A deploy of a release and the state it found, per (locale, uid) -> version."""
        ...

    def completed_deploys(
        self, release: str, user: str | None = None, since: str | None = None
    ) -> list[tuple[str, str, str]]:
        """(user, environment, completed_at) of the release's completed deploys."""
        ...

    def captures(
        self, release: str, user: str, environment: str
    ) -> dict[tuple[str, str], int | None]:
        """The first completed capture per (locale, uid): the state before the first
        deploy of the release by ``user`` in ``environment``."""
        ...


class VerificationHistory(Protocol):
    """What ``verify`` found on servers, and the verifications queued for a worker."""

    def add_verification(self, verification: Verification) -> Verification: ...

    def update_verification(self, verification: Verification, **changes: Any) -> Verification:
        """The verification with ``changes`` applied, stored."""

    def find_verification(self, identifier: str) -> Verification | None: ...

    def latest_verification(
        self, project: str, server: str, *, deployment: str | None = None
    ) -> Verification | None:
        """The last completed verification of a server (of one deployment's snapshot)."""

    def list_verifications(
        self, project: str, server: str, *, limit: int = 20
    ) -> list[Verification]:
        """A server's verifications, newest first (queued and failed ones too)."""

    def claim_verification(self, owner: str, *, projects: frozenset[str]) -> Verification | None:
        """The oldest queued verification of one of ``projects``, now running for ``owner``."""

    def recover_verifications(self, is_gone: Callable[[str], bool]) -> list[Verification]:
        """Fail the running verifications whose process is gone."""


class HistoryStore(
    DeploymentHistory, DeploymentQueue, PublishCaptures, VerificationHistory, Protocol
):
    """The history database: deployments, the queue and locks, publish events, and the
    release history beside them (sharing its connection)."""

    @property
    def releases(self) -> ReleaseHistory: ...

    def close(self) -> None: ...


class SnapshotStorage(Protocol):
    """Every deployment's end snapshot, kept under its own ref in a bare git repository."""

    @property
    def path(self) -> Path: ...

    @property
    def repo(self) -> git.Repository:
        """Reads the store's objects and its attached sources' (one libgit2 diff)."""
        ...

    def attach(self, source: git.Repository) -> None:
        """Make ``source``'s objects readable through :attr:`repo`."""
        ...

    def keep(
        self, identifier: str, tree: str, changeset: Changeset, source: git.Repository | None
    ) -> None:
        """Keep ``tree`` for a deployment; objects outside ``changeset`` are already here."""
        ...

    def find_tree(self, identifier: str) -> str | None: ...

    def close(self) -> None: ...
