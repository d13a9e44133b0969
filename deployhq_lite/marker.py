"""The server marker ``.deployhq-lite/revision``: written last, the commit point of a
deployment; read first, to tell whether the server holds what the history says."""

from __future__ import annotations

import json

from .errors import MarkerMismatchError
from .log import get_logger
from .records import Deployment, utcnow
from .transports import Transport

MARKER_PATH = ".deployhq-lite/revision"

log = get_logger(__name__)


def read_marker(transport: Transport) -> dict[str, str] | None:
    raw = transport.read_file(MARKER_PATH)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return {"revision": "?", "deployment": "?"}
    return data if isinstance(data, dict) else {"revision": "?", "deployment": "?"}


def check_marker(
    marker: dict[str, str] | None,
    deployment: Deployment,
    start: Deployment | None,
    *,
    override: bool,
) -> None:
    """Refuse when the server's marker disagrees with the history (someone else deployed)."""
    if marker is None and start is None:
        return
    if marker is not None and start is not None and marker.get("deployment") == start.identifier:
        return
    server = f"{deployment.project}/{deployment.server}"
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
    raise MarkerMismatchError(
        f"{problem}; check what is deployed there, then re-run with --override-marker "
        "to deploy over it"
    )


def write_marker(transport: Transport, deployment: Deployment) -> None:
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
