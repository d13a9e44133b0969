"""The server marker ``.deployhq-lite/revision``: written last, the commit point of a
deployment; read first, to tell whether the server holds what the history says."""

from __future__ import annotations

import json
from typing import Protocol

from .errors import MarkerMismatchError
from .log import get_logger
from .records import Deployment, utcnow

MARKER_PATH = ".deployhq-lite/revision"


class MarkerTarget(Protocol):
    """What the marker needs of a server: every ``Transport`` is one (the core imports
    nothing from the transports)."""

    def read_file(self, path: str) -> bytes | None: ...
    def put_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None: ...
    def sync(self) -> None: ...


log = get_logger(__name__)


def read_marker(transport: MarkerTarget) -> dict[str, str] | None:
    raw = transport.read_file(MARKER_PATH)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return {"revision": "?", "deployment": "?"}
    return data if isinstance(data, dict) else {"revision": "?", "deployment": "?"}


def marker_agrees(marker: dict[str, str] | None, start: Deployment | None) -> bool:
    """Whether the server's marker names what the history says is there."""
    if marker is None or start is None:
        return marker is None and start is None
    return marker.get("deployment") == start.identifier


def check_marker(
    marker: dict[str, str] | None,
    deployment: Deployment,
    start: Deployment | None,
    *,
    server: str,
    override: bool,
    held: str | None = None,
) -> None:
    """Refuse when the server's marker disagrees with the history (someone else deployed,
    or the root was wiped), saying what ``--override-marker`` does then: deploy the
    changes from ``held`` (the marker's revision, when we have its snapshot) or, without
    it, write every file as if the server were empty. ``server`` names the server in
    the message (``project/server``)."""
    if marker_agrees(marker, start):
        return
    if marker is None:
        assert start is not None
        problem = (
            f"server {server} has no deployhq-lite marker, but the history says deployment "
            f"{start.identifier} (revision {start.end_revision[:12]}) is there"
        )
    elif start is None:
        problem = (
            f"server {server} already holds revision {str(marker.get('revision'))[:12]} from "
            f"deployment {marker.get('deployment')}, which this history does not know"
        )
    else:
        problem = (
            f"server {server} holds revision {str(marker.get('revision'))[:12]} "
            f"(deployment {marker.get('deployment')}), but the history expects revision "
            f"{start.end_revision[:12]} (deployment {start.identifier})"
        )
    if override:
        log.warning("marker.overridden", deployment=deployment.identifier, problem=problem)
        return
    end = deployment.end_revision[:12]
    if held is not None:
        does = f"to deploy the changes from revision {held[:12]} to revision {end}"
    elif marker is None:
        does = f"to write every file of revision {end} (the server is treated as empty)"
    else:
        does = (
            f"to write every file of revision {end} (its revision is unknown here: the "
            "server is treated as empty and nothing on it is deleted)"
        )
    advice = f"{problem}; check what is deployed there, then re-run with --override-marker {does}"
    if marker is None:
        project, _, name = server.partition("/")
        advice += (
            f". Or see what the server holds: `deployhq-lite verify {project} --server {name}` "
            "lists what differs from that deployment; `deploy --repair` writes back only "
            "what differs (and the marker); `deploy --full` writes every file of the "
            "revision whatever the server holds"
        )
    raise MarkerMismatchError(advice)


def write_marker(transport: MarkerTarget, deployment: Deployment) -> None:
    """Make every change durable, then commit the deployment by writing the marker."""
    transport.sync()
    body = {
        "revision": deployment.end_revision,
        "deployment": deployment.identifier,
        "project": deployment.project,
        "server": deployment.server,
        "deployed_at": utcnow(),
    }
    transport.put_file(MARKER_PATH, json.dumps(body, indent=2).encode() + b"\n", mode=0o644)
    transport.sync()
    log.info("marker.written", deployment=deployment.identifier, revision=deployment.end_revision)
