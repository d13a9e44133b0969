"""DeployHQ's rollback rules: who may be rolled back, refused with DeployHQ's exact messages.

Callers gather the facts (the target deployment, and per server: whether the config
still has it, its latest completed deployment, the target's stored end tree) and the
rules decide. One per-server check serves a single-server rollback; a group rollback is
composed from the same per-server pieces, in the order refusals are decided:

1. a config-files-only deployment (``ROLLBACK_CONFIG_FILES``);
2. a server (or group, then each member server) no longer in the config
   (``ROLLBACK_NO_SERVER``);
3. the latest completed deployment on the server (a group's: on every server)
   (``ROLLBACK_LATEST``);
4. anything else that makes it impossible: the target never completed, a server has
   nothing to roll back from, the snapshot is missing (``ROLLBACK_IMPOSSIBLE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import RollbackNotAllowedError
from ..records import Deployment, DeploymentStatus

ROLLBACK_CONFIG_FILES = "Cannot rollback a config files deployment"
ROLLBACK_NO_SERVER = "Deployment has no parent server"
ROLLBACK_LATEST = "Cannot rollback the latest deployment"
ROLLBACK_IMPOSSIBLE = "Deployment cannot be rolled back"

CONFIG_FILES_ONLY = "it deployed only config files"
SNAPSHOT_MISSING = "what it deployed is missing from the snapshot store"
NO_MEMBERS = "it has no per-server deployments"


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What a rollback of ``deployment`` (one server's) depends on, gathered by the caller."""

    deployment: Deployment  # the target, or a group target's member on this server
    configured: bool  # the config still has the server
    latest: Deployment | None  # the latest completed deployment on the server
    tree: str | None  # ``deployment``'s stored end tree (None: missing)

    @property
    def server(self) -> str:
        return self.deployment.server

    @property
    def is_latest(self) -> bool:
        return self.latest is not None and self.latest.identifier == self.deployment.identifier


def check_rollback(target: Deployment, facts: ServerFacts) -> str:
    """Refuse a rollback of single-server deployment ``target`` with DeployHQ's exact
    messages (and why); return its stored end tree."""
    refuse_config_files(target)
    refuse_unconfigured(facts)
    if facts.is_latest:
        latest = f"it is the latest completed deployment on server {facts.server!r}"
        raise RollbackNotAllowedError(ROLLBACK_LATEST, reason=latest)
    reason = not_completed(target) or cannot_roll_back_from(facts)
    if reason or facts.tree is None:
        raise RollbackNotAllowedError(ROLLBACK_IMPOSSIBLE, reason=reason or SNAPSHOT_MISSING)
    return facts.tree


def check_group_rollback(
    target: Deployment, *, group_configured: bool, members: Sequence[ServerFacts]
) -> dict[str, str]:
    """Refuse a rollback of group deployment ``target`` (``members``: one per server it
    deployed to) with DeployHQ's exact messages (and why); return each member server's
    stored end tree."""
    refuse_config_files(target)
    if not group_configured:
        unconfigured = not_in_config(target.server, "server group")
        raise RollbackNotAllowedError(ROLLBACK_NO_SERVER, reason=unconfigured)
    for member in members:
        refuse_unconfigured(member)
    if members and all(member.is_latest for member in members):
        latest = f"it is the latest completed deployment on every server of {target.server!r}"
        raise RollbackNotAllowedError(ROLLBACK_LATEST, reason=latest)
    reason = (
        not_completed(target)
        or ("" if members else NO_MEMBERS)
        or next(filter(None, map(cannot_roll_back_from, members)), None)
    )
    if reason:
        raise RollbackNotAllowedError(ROLLBACK_IMPOSSIBLE, reason=reason)
    return {m.server: m.tree for m in members if m.tree is not None}


def refuse_config_files(target: Deployment) -> None:
    if target.config_files_only:
        raise RollbackNotAllowedError(ROLLBACK_CONFIG_FILES, reason=CONFIG_FILES_ONLY)


def refuse_unconfigured(facts: ServerFacts) -> None:
    if not facts.configured:
        raise RollbackNotAllowedError(ROLLBACK_NO_SERVER, reason=not_in_config(facts.server))


def cannot_roll_back_from(facts: ServerFacts) -> str | None:
    """Why the server cannot go back to what ``facts.deployment`` put there (None: it can)."""
    if facts.latest is None:
        return f"server {facts.server!r} has no completed deployment to roll back from"
    if facts.tree is None:
        return SNAPSHOT_MISSING
    return None


def not_in_config(server: str, kind: str = "server") -> str:
    return f"its {kind} {server!r} is no longer in the config"


def not_completed(target: Deployment) -> str | None:
    """Why ``target`` never put anything on a server to go back to (None: it did)."""
    if target.is_preview:
        return "it is a preview: it deployed nothing"
    if target.status is DeploymentStatus.FAILED:
        return f"it {_failure(target)}"
    if target.status is not DeploymentStatus.COMPLETED:
        return f"it is still {target.status.value}"
    return None


def _failure(target: Deployment) -> str:
    """``failed: why`` from a failed deployment's error, on one line, without its own
    identifier or the advice to deploy again (see ``deployments._run_locked``'s message)."""
    lines = (target.error or "").strip().splitlines()
    error = lines[0] if lines else ""
    error = error.removeprefix(f"deployment {target.identifier}").lstrip(": ")
    error = error.partition("; the server marker was not moved")[0]
    if not error:
        return "failed"
    return error if error.startswith("failed ") else f"failed: {error}"
