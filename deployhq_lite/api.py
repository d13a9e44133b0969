"""Library entry points: one call, one Engine. Use :class:`Engine` for several calls.

Each function takes ``config`` (a path to a TOML file, a ``Settings``, or None for
``$DEPLOYHQ_LITE_CONFIG`` / ``./deployhq-lite.toml``) and ``hooks``, a mapping from
event name (``deployment.started``, ``deployment.finished``, ``deployment.failed``,
``file.uploaded``, ``file.deleted``, ``file.failed``) to callables taking a
``HookEvent``. Results are frozen dataclasses; failures raise ``DeployHQLiteError``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .records import Deployment, DeploymentMode, Preview, Release

if TYPE_CHECKING:
    from .config import Settings
    from .content.publish import PublishResult
    from .engine import Hooks


def _engine(config: Settings | str | os.PathLike[str] | None, hooks: Hooks | None) -> Engine:
    from .engine import Engine  # pygit2 and the store load on first use, not on import

    return Engine(config, hooks=hooks)


def deploy(
    project: str,
    server: str,
    *,
    revision: str | None = None,
    config: Settings | str | os.PathLike[str] | None = None,
    hooks: Hooks | None = None,
    break_lock: bool = False,
    override_marker: bool = False,
) -> Deployment:
    """Deploy ``revision`` (default: the project's branch head) to ``server``."""
    with _engine(config, hooks) as engine:
        return engine.deploy(
            project,
            server,
            revision=revision,
            break_lock=break_lock,
            override_marker=override_marker,
        )


def preview(
    project: str,
    server: str,
    *,
    revision: str | None = None,
    config: Settings | str | os.PathLike[str] | None = None,
) -> Preview:
    """The changes deploying ``revision`` to ``server`` would make; nothing is written."""
    with _engine(config, None) as engine:
        return engine.preview(project, server, revision=revision)


def rollback(
    project: str,
    deployment: str,
    *,
    mode: str | DeploymentMode = DeploymentMode.QUEUE,
    copy_config_files: bool = True,
    run_build_commands: bool = True,
    config: Settings | str | os.PathLike[str] | None = None,
    hooks: Hooks | None = None,
    break_lock: bool = False,
    override_marker: bool = False,
) -> Deployment:
    """Roll ``deployment``'s server back to it (DeployHQ's rules and messages)."""
    with _engine(config, hooks) as engine:
        return engine.rollback(
            project,
            deployment,
            mode=mode,
            copy_config_files=copy_config_files,
            run_build_commands=run_build_commands,
            break_lock=break_lock,
            override_marker=override_marker,
        )


if TYPE_CHECKING:
    from .engine import Engine


def deploy_release(
    stack: str,
    release: str,
    *,
    environment: str,
    user: str | None = None,
    locales: list[str] | None = None,
    schedule_at: str | None = None,
    config: Settings | str | os.PathLike[str] | None = None,
    hooks: Hooks | None = None,
) -> PublishResult | Release:
    """Deploy a release of ``stack`` to ``environment`` (or schedule it); a rollback
    release restores what the original found where nothing changed since."""
    with _engine(config, hooks) as engine:
        return engine.deploy_release(
            stack,
            release,
            environment=environment,
            user=user,
            locales=locales,
            schedule_at=schedule_at,
        )


def rollback_release(
    stack: str,
    release: str,
    *,
    user: str | None = None,
    config: Settings | str | os.PathLike[str] | None = None,
) -> Release:
    """Create (or return) ``user``'s rollback release of a deployed release."""
    with _engine(config, None) as engine:
        return engine.rollback_release(stack, release, user=user)
