"""What a deployment did, read from the history: its JSON, per-file outcomes and counts.

A group deployment holds no outcomes of its own: its servers' deployments do, so what it
did is theirs, each outcome with its ``server`` set. The Engine answers with these
(``engine.describe(...)`` and friends); they read the history and nothing else.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .errors import UnknownNameError
from .records import Deployment, FileOutcome, Preview

if TYPE_CHECKING:
    from .store import DeploymentHistory, HistoryStore


def find_deployment(history: DeploymentHistory, project: str, identifier: str) -> Deployment:
    """A deployment of ``project`` by identifier (or a unique prefix of at least 6)."""
    found = history.find(identifier)
    if found is None and len(identifier) >= 6:
        matches = history.find_prefix(project, identifier)
        found = matches[0] if len(matches) == 1 else None
    if found is None or found.project != project:  # its name only: never list others
        raise UnknownNameError("deployment", identifier, None, scope=f"project {project}")
    return found


def preview(history: DeploymentHistory, deployment: Deployment) -> Preview:
    """A preview deployment with the changes it found (a group's: its servers')."""
    return Preview(
        deployment,
        tuple(file_changes(history, deployment.identifier)),
        tuple(members(history, deployment)),
    )


def members(history: DeploymentHistory, deployment: Deployment) -> list[Deployment]:
    """A group deployment's per-server deployments (none for any other)."""
    return history.members(deployment.identifier) if deployment.is_group else []


def describe(history: HistoryStore, deployment: Deployment) -> dict[str, Any]:
    """A deployment as JSON (DeployHQ's shape) with its per-file ``changes`` and the
    ``commands`` it ran and the last ``verify`` against it (``last_verified``); a group
    deployment's ``servers`` carry each server's too."""
    servers = members(history, deployment)
    data = deployment.to_json(servers)
    pairs = [(data, deployment)]
    if not servers:
        data["changes"] = [c.to_json() for c in history.outcomes(deployment.identifier)]
    else:  # each member's outcomes read once: under its server, and in the whole list
        combined: list[dict[str, Any]] = []
        for server, member in zip(data["servers"], servers, strict=True):
            outcomes = history.outcomes(member.identifier)
            server["changes"] = [c.to_json() for c in outcomes]
            combined += [dataclasses.replace(c, server=member.server).to_json() for c in outcomes]
            pairs.append((server, member))
        data["changes"] = combined
    for where, d in pairs:
        commands = history.command_results(d.identifier)
        if commands:
            where["commands"] = [c.to_json() for c in commands]
        verified = history.latest_verification(d.project, d.server, deployment=d.identifier)
        if verified is not None:
            where["last_verified"] = verified.summary()
    return data


def file_changes(
    history: DeploymentHistory, identifier: str, *, limit: int = -1
) -> list[FileOutcome]:
    """Per-file outcomes; a group deployment's are its servers' (``server`` set)."""
    found = history.find(identifier)
    if found is None or not found.is_group:
        return history.outcomes(identifier, limit=limit)
    combined: list[FileOutcome] = []
    for member in history.members(identifier):
        left = -1 if limit < 0 else limit - len(combined)
        if left == 0:
            break
        combined.extend(
            dataclasses.replace(c, server=member.server)
            for c in history.outcomes(member.identifier, limit=left)
        )
    return combined


def change_counts(history: DeploymentHistory, identifier: str) -> dict[str, int]:
    """How many files each kind of change touched; a group deployment's: its servers' sum."""
    found = history.find(identifier)
    if found is None or not found.is_group:
        return history.change_counts(identifier)
    total: dict[str, int] = {}
    for member in history.members(identifier):
        for kind, n in history.change_counts(member.identifier).items():
            total[kind] = total.get(kind, 0) + n
    return total
