"""Read models for the faces: the JSON shapes the CLI (``--json``) and the HTTP API share.

DeployHQ's shapes: a page of a list is ``{"pagination": {...}, "records": [...]}``; a
project and its servers as DeployHQ's API shows them (what the config holds is plain
lists: every project, every server of one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import config as config_module
from .errors import ConfigError, DeployHQLiteError, ReleaseRefusedError, RollbackNotAllowedError

if TYPE_CHECKING:
    from .engine import Engine


def error_body(exc: DeployHQLiteError) -> dict[str, Any]:
    """An error as ``--json`` prints it and the HTTP API answers it: ``{"error": ...}``,
    with a release refusal's ``error_code``, a rollback refusal's ``reason`` and a config
    file's ``problems`` when it has several (each a line of ``error``)."""
    body: dict[str, Any] = {"error": str(exc)}
    if isinstance(exc, ReleaseRefusedError):
        body["error_code"] = exc.code
    if isinstance(exc, RollbackNotAllowedError) and exc.reason:
        body["reason"] = exc.reason
    if isinstance(exc, ConfigError) and len(exc.problems) > 1:
        body["problems"] = list(exc.problems)
    return body


def page_of(records: Sequence[Any], *, page: int, per_page: int, total: int) -> dict[str, Any]:
    """``records`` (page ``page``, counting from 1, of ``total`` records) with DeployHQ's
    ``pagination`` object beside them."""
    return {
        "pagination": {
            "current_page": page,
            "total_pages": max(1, -(-total // per_page)),
            "total_records": total,
            "offset": (page - 1) * per_page,
            "per_page": per_page,
        },
        "records": list(records),
    }


def projects_view(engine: Engine) -> list[dict[str, Any]]:
    """Every project, by permalink (DeployHQ's ``GET /projects``)."""
    return [project_view(engine, key) for key in sorted(engine.settings.projects)]


def project_view(engine: Engine, key: str) -> dict[str, Any]:
    """A project as DeployHQ shows one, with its servers and server groups."""
    config = engine.settings.get_project(key)
    return {
        "identifier": config_module.project_identifier(key),
        "name": config.name or key,
        "permalink": key,
        "branch": config.branch,
        "repository": {"scm_type": "git", "url": str(config.repository), "branch": config.branch},
        "servers": servers_view(engine, key),
        "server_groups": groups_view(engine, key),
    }


def servers_view(engine: Engine, project: str) -> list[dict[str, Any]]:
    """A project's servers as DeployHQ shows them (no credentials), in config order."""
    config = engine.settings.get_project(project)
    group_of = {s: g for g, group in config.server_groups.items() for s in group.servers}
    return [
        {
            "identifier": config_module.server_identifier(project, key),
            "name": server.name or key,
            "permalink": key,
            "protocol_type": server.protocol_type,
            "server_path": str(server.root),
            "hostname": server.host,
            "username": server.user,
            "port": server.port if server.protocol_type == "ssh" else None,
            "last_revision": _last_revision(engine, project, key),
            "preferred_branch": config.branch,
            "enabled": True,
            "server_group_identifier": (
                config_module.server_identifier(project, group_of[key]) if key in group_of else None
            ),
        }
        for key, server in config.servers.items()
    ]


def groups_view(engine: Engine, project: str) -> list[dict[str, Any]]:
    """A project's server groups, each naming its servers by identifier."""
    config = engine.settings.get_project(project)
    return [
        {
            "identifier": config_module.server_identifier(project, key),
            "name": group.name or key,
            "permalink": key,
            "transfer_order": group.transfer_order,
            "last_revision": _last_revision(engine, project, key),
            "preferred_branch": config.branch,
            "servers": [
                {"identifier": config_module.server_identifier(project, s), "permalink": s}
                for s in group.servers
            ],
        }
        for key, group in config.server_groups.items()
    ]


def _last_revision(engine: Engine, project: str, server: str) -> str | None:
    latest = engine.history.find_latest_completed(project, server)
    return latest.end_revision if latest else None
