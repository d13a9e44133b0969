"""A deployment's options: what it deploys (stored on it) and how this run goes.

:class:`DeployOptions` are part of a deployment (its ``config_files_only``,
``copy_config_files`` and ``run_build_commands``), chosen once by the face and kept in the
history, so a queue worker runs it as it was asked. :class:`RunOptions` belong to one run
of it (break a lock, override the marker, where progress and build output go).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from ..errors import ConfigError
from ..records import Deployment

ProgressCallback = Callable[[int, int, str], None]

OutputCallback = Callable[[str], None]  # a line of build output, as it comes


@dataclass(frozen=True, slots=True)
class DeployOptions:
    """What a deployment puts on the server: only the config files
    (``config_files_only``), the config files as configured or as the server holds them
    (``copy_config_files``), the build's output or the repository's files unbuilt
    (``run_build_commands``); ``repair`` (and ``delete_extra``) and ``full`` say how the
    changes are found (see :mod:`.repair`)."""

    config_files_only: bool = False
    copy_config_files: bool = True
    run_build_commands: bool = True
    repair: bool = False  # write back what verify finds different from the latest snapshot
    full: bool = False  # write every file whatever the server holds
    delete_extra: bool = False  # with ``repair``: delete what the snapshot does not have

    def for_rollback(self) -> DeployOptions:
        """What a rollback keeps of these: its config files and build choices only (it
        goes to a kept snapshot: no config-files-only, repair or full)."""
        return DeployOptions(
            copy_config_files=self.copy_config_files,
            run_build_commands=self.run_build_commands,
        )

    @classmethod
    def of(cls, deployment: Deployment) -> DeployOptions:
        """The options a recorded deployment was made with."""
        return cls(
            config_files_only=deployment.config_files_only,
            copy_config_files=deployment.copy_config_files,
            run_build_commands=deployment.run_build_commands,
            repair=deployment.repair,
            full=deployment.full,
            delete_extra=deployment.delete_extra,
        )


def deploy_options(
    config_files_only: bool,
    copy_config_files: bool,
    run_build_commands: bool,
    repair: bool = False,
    delete_extra: bool = False,
    full: bool = False,
) -> DeployOptions:
    """The options of a new deployment, refused (ConfigError) when they contradict."""
    if repair and (full or config_files_only):
        raise ConfigError("--repair cannot be combined with --full or --config-files-only")
    if full and config_files_only:
        raise ConfigError("--full cannot be combined with --config-files-only")
    if delete_extra and not repair:
        raise ConfigError("--delete-extra goes with --repair")
    return DeployOptions(
        config_files_only=config_files_only,
        copy_config_files=copy_config_files,
        run_build_commands=run_build_commands,
        repair=repair,
        full=full,
        delete_extra=delete_extra,
    )


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How one run of a deployment goes: ``break_lock`` takes the server's lock from
    another run, ``override_marker`` deploys over a marker the history disagrees with;
    ``on_progress`` hears file counts (and phases), ``on_output`` each build output line."""

    break_lock: bool = False
    override_marker: bool = False
    on_progress: ProgressCallback | None = None
    on_output: OutputCallback | None = None


class Phase(StrEnum):
    """What a running deployment is busy with, in order (building only with build commands)."""

    BUILDING = "building"
    CONNECTING = "connecting"
    PLANNING = "planning"
    UPLOADING = "uploading"


@runtime_checkable
class PhasedProgress(Protocol):
    """A progress callback that also hears each phase as it starts (the CLI's bar does;
    a plain callable hears the file counts only)."""

    def __call__(self, done: int, total: int, path: str) -> None: ...

    def phase(self, name: str) -> None: ...  # a Phase, or "<server>: <phase>" in a group


def report_phase(on_progress: ProgressCallback | None, name: str) -> None:
    if isinstance(on_progress, PhasedProgress):
        on_progress.phase(name)
