"""Value objects for history: deployments and their per-file outcomes (frozen, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class DeploymentStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    PREVIEW_PENDING = "preview_pending"
    PREVIEWED = "previewed"


# a deployment in one of these may still change (a worker or a run holds it, or will)
UNFINISHED = frozenset(
    {DeploymentStatus.PENDING, DeploymentStatus.RUNNING, DeploymentStatus.PREVIEW_PENDING}
)


class DeploymentMode(StrEnum):
    QUEUE = "queue"
    PREVIEW = "preview"


GROUP = "group"  # the protocol_type of a deployment to a server group


class ChangeKind(StrEnum):
    """What a changeset does to a path (and what the history keeps of it)."""

    ADDED = "added"
    DELETED = "deleted"
    MODIFIED = "modified"


class OutcomeStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    PREVIEWED = "previewed"


@dataclass(frozen=True, slots=True)
class FileOutcome:
    path: str  # escaped when not UTF-8 (names.escape_path), as the history keeps it
    change: ChangeKind
    status: OutcomeStatus = OutcomeStatus.PENDING
    error: str | None = None
    server: str | None = None  # set in a group deployment's combined list

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "change": self.change.value}
        if self.server is not None:
            out["server"] = self.server
        if self.status is not OutcomeStatus.PREVIEWED:
            out["status"] = self.status.value
        if self.error:
            out["error"] = self.error
        return out


def server_key(project: str, server: str) -> str:
    """``project/server``: a server's lock key and its name in messages (one spelling, for
    the config's destinations and the store's lock rows alike)."""
    return f"{project}/{server}"


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Deployment:
    """One deployment run (a rollback is one too), as kept in the history."""

    identifier: str
    project: str
    project_name: str
    server: str
    server_name: str
    server_identifier: str
    protocol_type: str
    end_revision: str
    branch: str
    status: DeploymentStatus
    mode: DeploymentMode = DeploymentMode.QUEUE
    start_revision: str | None = None
    start_deployment: str | None = None
    end_tree: str | None = None
    copy_config_files: bool = True
    run_build_commands: bool = True
    config_files_only: bool = False
    rollback_of: str | None = None
    repair: bool = False  # writes back what verify found different (``deploy --repair``)
    full: bool = False  # writes every file whatever the server holds (``deploy --full``)
    delete_extra: bool = False  # a repair that also deletes what the snapshot lacks
    adopted: bool = False  # recorded by ``servers adopt``: what another tool deployed
    queued_at: str = field(default_factory=utcnow)
    started_at: str | None = None
    completed_at: str | None = None
    error: str | None = None
    group: str | None = None  # the group deployment this per-server one is part of
    claimed_by: str | None = None  # the worker running it from the queue (see queue.py)
    seq: int = 0

    @property
    def is_rollback(self) -> bool:
        return self.rollback_of is not None

    @property
    def is_group(self) -> bool:
        """A deployment to a server group: one per-server deployment per member."""
        return self.protocol_type == GROUP

    @property
    def is_preview(self) -> bool:
        return self.mode is DeploymentMode.PREVIEW

    def to_json(self, members: Sequence[Deployment] = ()) -> dict[str, Any]:
        """DeployHQ's response shape (plus ``rollback_of`` and ``error``); a group
        deployment lists its ``members`` (per-server deployments) under ``servers``."""
        servers = [m.server_json() for m in members] if self.is_group else [self.server_json()]
        return {
            "identifier": self.identifier,
            "status": self.status.value,
            "start_revision": self.start_revision,
            "end_revision": self.end_revision,
            "branch": self.branch,
            "configuration": {
                "copy_config_files": self.copy_config_files,
                "run_build_commands": self.run_build_commands,
            },
            "timestamps": {
                "queued_at": _api_time(self.queued_at),
                "started_at": _api_time(self.started_at),
                "completed_at": _api_time(self.completed_at),
            },
            "servers": servers,
            "project": {"name": self.project_name, "permalink": self.project},
            "rollback_of": self.rollback_of,
            "error": self.error,
            **(
                {"server_group": self.server, "group_name": self.server_name}
                if self.is_group
                else {}
            ),
            **{flag: True for flag in ("repair", "full", "adopted") if getattr(self, flag)},
        }

    def server_json(self) -> dict[str, Any]:
        """This deployment's server, as listed under ``servers``."""
        out: dict[str, Any] = {
            "name": self.server_name,
            "identifier": self.server_identifier,
            "protocol_type": self.protocol_type,
        }
        if self.group is not None:  # its own run inside a group deployment
            out.update(
                server=self.server,
                deployment=self.identifier,
                status=self.status.value,
                start_revision=self.start_revision,
                end_revision=self.end_revision,
                error=self.error,
            )
        return out


def _api_time(value: str | None) -> str | None:
    """``2025-10-27T10:00:00Z``: seconds precision as in DeployHQ's API."""
    return None if value is None else value[:19] + "Z"


@dataclass(frozen=True, slots=True)
class HookEvent:
    """What a hook receives: the event name (``deployment.started``...), the deployment,
    and for file events the path and, when it failed, the error message."""

    name: str
    deployment: Deployment
    path: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Preview:
    """A deployment in preview mode and the file changes it would make."""

    deployment: Deployment
    changes: tuple[FileOutcome, ...]
    members: tuple[Deployment, ...] = ()  # a group deployment's per-server deployments

    def to_json(self) -> dict[str, Any]:
        return {
            **self.deployment.to_json(self.members),
            "changes": [c.to_json() for c in self.changes],
        }


@dataclass(frozen=True, slots=True)
class PublishEvent:
    """One document published (``version``) or unpublished (None) in an environment's
    locale, by a stack deployment; it counts once that deployment completed."""

    stack: str
    environment: str
    locale: str
    uid: str
    version: int | None
    user: str
    origin: str  # "entry", "release" or "rollback"
    release: str | None = None
    created_at: str = field(default_factory=utcnow)
    seq: int = 0
    deployment: str = ""


class ItemAction(StrEnum):
    """What a release item does to its document."""

    PUBLISH = "publish"
    UNPUBLISH = "unpublish"


class ItemOutcome(StrEnum):
    """What deploying a release item did to its document in one locale."""

    PUBLISHED = "published"
    UNPUBLISHED = "unpublished"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class ReleaseItem:
    """A document in a release: its version (resolved when added), the locales it
    applies to (empty: every locale the release is deployed to) and the action."""

    uid: str
    version: int | None  # None for an unpublish item
    action: ItemAction = ItemAction.PUBLISH
    locales: tuple[str, ...] = ()
    reference: bool = False  # came in through another item's _references

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "version": self.version,
            "action": self.action.value,
            "locales": list(self.locales),
            "reference": self.reference,
        }


@dataclass(frozen=True, slots=True)
class Release:
    uid: str
    stack: str
    name: str
    creator: str
    kind: str = "release"  # or "rollback": system-made, read-only
    rollback_of: str | None = None
    created_at: str = field(default_factory=utcnow)
    scheduled_at: str | None = None
    schedule: str | None = None  # JSON: environment, locales, user of the scheduled deploy
    schedule_status: str | None = None  # "pending", "done", "failed"
    deleted_at: str | None = None
    items: tuple[ReleaseItem, ...] = ()
    deployed: bool = False  # a deploy of it completed (by anyone)

    @property
    def is_rollback(self) -> bool:
        return self.kind == "rollback"

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "stack": self.stack,
            "name": self.name,
            "creator": self.creator,
            "kind": self.kind,
            "rollback_of": self.rollback_of,
            "read_only": self.is_rollback,
            "created_at": self.created_at,
            "scheduled_at": self.scheduled_at,
            "schedule_status": self.schedule_status,
            "deployed": self.deployed,
            "items": [item.to_json() for item in self.items],
        }


@dataclass(frozen=True, slots=True)
class CommandResult:
    """An SSH command a deployment ran: its exit status (None if it timed out) and the
    last of its output (stdout and stderr together)."""

    command: str
    when: str  # "before" or "after"
    exit_status: int | None
    output: str
    duration: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "when": self.when,
            "exit_status": self.exit_status,
            "timed_out": self.timed_out,
            "duration": round(self.duration, 3),
            "output": self.output,
        }


class DifferenceKind(StrEnum):
    """How a server differs from the snapshot of its latest deployment at one path."""

    MISSING = "missing"  # in the snapshot, not on the server
    MODIFIED = "modified"  # the content differs
    MODE = "mode"  # the exec bit differs
    TYPE = "type"  # file, symlink and directory swapped, or a symlink's target changed
    EXTRA = "extra"  # on the server, not in the snapshot


@dataclass(frozen=True, slots=True)
class Difference:
    path: str
    kind: DifferenceKind
    expected: str | None  # what the snapshot has there (None: nothing)
    found: str | None  # what the server has there (None: nothing)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind.value,
            "expected": self.expected,
            "found": self.found,
        }


class VerificationStatus(StrEnum):
    PENDING = "pending"  # queued for a worker
    RUNNING = "running"
    COMPLETED = "completed"  # compared: ``in_sync`` says the result
    FAILED = "failed"  # could not compare (``error`` says why)


@dataclass(frozen=True, slots=True)
class Verification:
    """One comparison of a server with the snapshot of its latest completed deployment."""

    identifier: str
    project: str
    server: str
    status: VerificationStatus = VerificationStatus.PENDING
    fast: bool = False
    deployment: str | None = None  # the deployment whose snapshot it was compared with
    revision: str | None = None
    in_sync: bool | None = None
    differences: tuple[Difference, ...] = ()
    checked: int = 0  # paths compared
    method: str | None = None  # git-hash-object | sha1sum | sftp-read | fast
    queued_at: str = field(default_factory=utcnow)
    completed_at: str | None = None
    error: str | None = None
    claimed_by: str | None = None
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "identifier": self.identifier,
            "project": self.project,
            "server": self.server,
            "status": self.status.value,
            "deployment": self.deployment,
            "revision": self.revision,
            "in_sync": self.in_sync,
            "differences": [d.to_json() for d in self.differences],
            "checked": self.checked,
            "method": self.method,
            "queued_at": _api_time(self.queued_at),
            "completed_at": _api_time(self.completed_at),
            "error": self.error,
        }

    def summary(self) -> dict[str, Any]:
        """What ``deployments show`` tells of the server's last verification."""
        counts: dict[str, int] = {}
        for difference in self.differences:
            counts[difference.kind.value] = counts.get(difference.kind.value, 0) + 1
        return {
            "identifier": self.identifier,
            "verified_at": _api_time(self.completed_at),
            "in_sync": self.in_sync,
            "differences": counts,
            "method": self.method,
        }
