"""The Engine: owns settings, the history, the snapshot store, repositories and transports.

>>> with Engine("deployhq-lite.toml") as engine:          # doctest: +SKIP
...     done = engine.deploy("website", "production")
...     engine.rollback("website", done.identifier, mode="preview")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from . import config as config_module
from . import readmodel
from .config import Destination
from .errors import ConfigError, RepositoryError, UnknownNameError
from .log import get_logger
from .records import (
    Deployment,
    DeploymentMode,
    FileOutcome,
    HookEvent,
    ItemAction,
    Preview,
    Release,
    server_key,
)

if TYPE_CHECKING:
    from . import git
    from .config import Settings
    from .deployments import OutputCallback, ProgressCallback
    from .documents import Catalog
    from .records import DeploymentStatus
    from .releases import PublishResult
    from .store import HistoryStore, ReleaseHistory, SnapshotStorage
    from .store.gc import GcReport
    from .transports import Transport

Hook = Callable[[HookEvent], object]
Hooks = Mapping[str, Hook | Iterable[Hook]]

log = get_logger(__name__)


class Engine:
    """Use as a context manager; every method may raise a ``DeployHQLiteError``."""

    def __init__(
        self,
        settings: Settings | str | os.PathLike[str] | None = None,
        *,
        hooks: Hooks | None = None,
    ) -> None:
        if settings is None or isinstance(settings, str | os.PathLike):
            settings = config_module.load_settings(settings)
        self.settings: Settings = settings
        self._hooks: dict[str, list[Hook]] = {}
        for event, fns in (hooks or {}).items():
            self._hooks[event] = [fns] if callable(fns) else list(fns)
        self._sources: dict[str, git.Repository] = {}
        self._catalogs: dict[str, Catalog] = {}

    def __enter__(self) -> Self:
        return self

    def fork(self) -> Engine:
        """Another Engine on the same settings and hooks, for use in another thread."""
        other = Engine(self.settings)
        other._hooks = self._hooks
        return other

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for repo in self._sources.values():
            repo.close()
        self._sources.clear()
        if "history" in self.__dict__:
            self.history.close()
        if "snapshots" in self.__dict__:
            self.snapshots.close()

    # -- owned resources ---------------------------------------------------------------------

    @cached_property
    def state_dir(self) -> Path:
        path = self.settings.state_dir
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            where = self.settings.config_path or "config"
            raise ConfigError(
                f"{where}: state_dir {path}: cannot create it ({exc.strerror})"
            ) from None
        return path

    @cached_property
    def history(self) -> HistoryStore:
        from .store import History

        return History(self.state_dir / "history.sqlite3")

    @cached_property
    def snapshots(self) -> SnapshotStorage:
        from .store import SnapshotStore

        return SnapshotStore(self.state_dir / "snapshots.git")

    def collect_snapshots(self, *, dry_run: bool = False) -> GcReport:
        """Repack the snapshot store from its refs and drop what none reaches (every
        deployment's snapshot is kept); with ``dry_run`` only report what it would
        reclaim. Refused (StoreBusyError) while a deployment is queued or running."""
        from .store.gc import collect  # not at the top: start-up stays fast

        return collect(self.snapshots.path, in_flight=self.history.unfinished, dry_run=dry_run)

    def source(self, project: str) -> git.Repository:
        """The git repository of a project or a stack (``stack:<key>``), opened once and
        readable from the snapshot store."""
        if project not in self._sources:
            from . import git

            path, section = self.settings.get_repository(project)
            try:
                repo = git.Repository(path)
            except RepositoryError:
                where = self.settings.config_path or "config"
                raise ConfigError(
                    f"{where}: {section}.repository: {path} is not a git repository"
                ) from None
            self.snapshots.attach(repo)
            self._sources[project] = repo
        return self._sources[project]

    @cached_property
    def releases(self) -> ReleaseHistory:
        return self.history.releases  # kept in the history's database

    def catalog(self, stack: str) -> Catalog:
        """The stack's documents at its branch head (read again when the head moves)."""
        from .documents import Catalog

        repo = self.source(Destination.stack_project(stack))
        head = repo.resolve(self.settings.get_stack(stack).branch)
        cached = self._catalogs.get(stack)
        if cached is None or cached.head != head:
            cached = self._catalogs[stack] = Catalog(repo, head)
        return cached

    def publish_entry(
        self,
        stack: str,
        uid: str,
        *,
        environment: str,
        user: str | None,
        locales: list[str] | None = None,
        version: int | None = None,
        unpublish: bool = False,
        rollback_to: int | None = None,
    ) -> PublishResult:
        """Publish (``version``, default latest), unpublish, or roll back to a version
        published before, one document in an environment's locales (default all)."""
        from .releases import entry_change

        target: int | Literal["latest"] | None = (
            None if unpublish else rollback_to or version or "latest"
        )
        return entry_change(
            self,
            stack,
            uid,
            environment=environment,
            locales=list(locales or []),
            version=target,
            user=user,
            rollback=rollback_to is not None,
        )

    def published(self, stack: str, environment: str, locale: str | None = None) -> dict[str, int]:
        """uid -> published version in one locale (default: the environment's first)."""
        from .releases import locales_of, published_versions

        wanted = locales_of(self, stack, environment, [locale] if locale else [])[0]
        return {
            uid: version
            for (loc, uid), version in sorted(published_versions(self, stack, environment).items())
            if loc == wanted
        }

    def deploy_release(
        self,
        stack: str,
        release: str,
        *,
        environment: str,
        user: str | None = None,
        locales: list[str] | None = None,
        schedule_at: str | None = None,
    ) -> PublishResult | Release:
        """Deploy a release to an environment's locales (default all), or schedule it."""
        from .releases import deploy_release

        return deploy_release(
            self,
            stack,
            release,
            environment=environment,
            user=user,
            locales=locales,
            schedule_at=schedule_at,
        )

    def rollback_release(self, stack: str, release: str, *, user: str | None = None) -> Release:
        """The user's rollback release of a deployed release (created once)."""
        from .releases import rollback_release

        return rollback_release(self, stack, release, user)

    def create_release(self, stack: str, name: str, *, user: str | None = None) -> Release:
        """A new, empty release of ``stack``."""
        from .releases import create_release

        return create_release(self, stack, name, user)

    def list_releases(self, stack: str, *, user: str | None = None) -> list[Release]:
        """The releases ``user`` may see (rollback releases: their own), oldest first."""
        from .releases import list_releases

        return list_releases(self, stack, user)

    def get_release(self, stack: str, release: str, *, user: str | None = None) -> Release:
        from .releases import get_release

        return get_release(self, stack, release, user)

    def add_release_item(
        self,
        stack: str,
        release: str,
        uid: str,
        *,
        user: str | None = None,
        version: int | None = None,
        locales: list[str] | None = None,
        action: str = ItemAction.PUBLISH,
        with_references: bool = False,
    ) -> Release:
        """Add a document (default: its latest version, now), with its references if
        asked; refused once the release was deployed."""
        from .releases import add_item

        return add_item(
            self,
            stack,
            release,
            uid,
            user=user,
            version=version,
            locales=locales,
            action=action,
            with_references=with_references,
        )

    def delete_release(self, stack: str, release: str, *, user: str | None = None) -> Release:
        """Delete a release; what it published stays live."""
        from .releases import delete_release

        return delete_release(self, stack, release, user)

    def transport(self, destination: Destination) -> Transport:
        from .transports import open_transport

        return open_transport(destination.config, label=destination.key)

    def server_identifier(self, project: str, server: str) -> str:
        return config_module.server_identifier(project, server)

    def emit(self, event: str, deployment: Deployment, **fields: Any) -> None:
        for hook in self._hooks.get(event, ()):
            try:
                hook(HookEvent(event, deployment, **fields))
            except Exception as exc:  # a hook must not break a deployment
                log.warning("hook.failed", hook_event=event, error=repr(exc))

    # -- history ------------------------------------------------------------------------------

    def get_deployment(self, project: str, identifier: str) -> Deployment:
        """A deployment of ``project`` by identifier (or a unique prefix of at least 6)."""
        self.settings.get_project(project)
        found = self.history.find(identifier)
        if found is None and len(identifier) >= 6:
            matches = self.history.find_prefix(project, identifier)
            found = matches[0] if len(matches) == 1 else None
        if found is None or found.project != project:  # its name only: never list others
            raise UnknownNameError("deployment", identifier, None, scope=f"project {project}")
        return found

    def list_deployments(
        self,
        project: str,
        server: str | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
        status: DeploymentStatus | None = None,
    ) -> list[Deployment]:
        self.settings.get_project(project)
        if server is not None:
            self.settings.check_destination(project, server)
        return self.history.query(project, server, limit=limit, offset=offset, status=status)

    def describe(self, deployment: Deployment) -> dict[str, Any]:
        """A deployment as JSON with its changes and commands (see :mod:`readmodel`)."""
        return readmodel.describe(self.history, deployment)

    def members(self, deployment: Deployment) -> list[Deployment]:
        """A group deployment's per-server deployments (none for any other)."""
        return readmodel.members(self.history, deployment)

    def file_changes(self, identifier: str, *, limit: int = -1) -> list[FileOutcome]:
        """Per-file outcomes; a group deployment's are its servers' (``server`` set)."""
        return readmodel.file_changes(self.history, identifier, limit=limit)

    def change_counts(self, identifier: str) -> dict[str, int]:
        """Files per kind of change; a group deployment's: its servers' sum."""
        return readmodel.change_counts(self.history, identifier)

    # -- the DeployHQ model ----------------------------------------------------------------------

    def deploy(
        self,
        project: str,
        server: str,
        *,
        revision: str | None = None,
        break_lock: bool = False,
        override_marker: bool = False,
        on_progress: ProgressCallback | None = None,
        config_files_only: bool = False,
        copy_config_files: bool = True,
        run_build_commands: bool = True,
        on_output: OutputCallback | None = None,
    ) -> Deployment:
        """Deploy ``revision`` (default: the branch head) to a server or server group and
        wait for it to finish; ``config_files_only`` writes only the config files,
        ``copy_config_files=False`` leaves the server's as they are,
        ``run_build_commands=False`` deploys the repository's files unbuilt;
        ``on_output`` gets each line the build commands print."""
        from . import deployments

        if not break_lock:  # a refusal records nothing
            self._check_unlocked(project, server)
        deployment = deployments.create_deployment(
            self,
            project,
            server,
            revision=revision,
            config_files_only=config_files_only,
            copy_config_files=copy_config_files,
            run_build_commands=run_build_commands,
            claimed_by=_here(),  # run here and now, not by a queue worker
        )
        return deployments.run_deployment(
            self,
            deployment,
            break_lock=break_lock,
            override_marker=override_marker,
            on_progress=on_progress,
            on_output=on_output,
        )

    def preview(
        self,
        project: str,
        server: str,
        *,
        revision: str | None = None,
        on_output: OutputCallback | None = None,
    ) -> Preview:
        """The file changes deploying ``revision`` would make; nothing is written."""
        from . import deployments

        deployment = deployments.create_deployment(
            self,
            project,
            server,
            revision=revision,
            mode=DeploymentMode.PREVIEW,
            claimed_by=_here(),
        )
        return deployments.run_preview(self, deployment, on_output=on_output)

    def rollback(
        self,
        project: str,
        deployment: str,
        *,
        mode: str | DeploymentMode = DeploymentMode.QUEUE,
        copy_config_files: bool = True,
        run_build_commands: bool = True,
        break_lock: bool = False,
        override_marker: bool = False,
        on_progress: ProgressCallback | None = None,
        on_output: OutputCallback | None = None,
    ) -> Deployment:
        """Roll the server back to ``deployment``; ``mode="preview"`` only lists the changes."""
        from . import deployments

        mode = DeploymentMode(mode)
        if mode is DeploymentMode.QUEUE and not break_lock:  # a refusal records nothing
            self._check_unlocked(project, self.get_deployment(project, deployment).server)
        created = deployments.create_rollback(
            self,
            project,
            deployment,
            mode=mode,
            copy_config_files=copy_config_files,
            run_build_commands=run_build_commands,
            claimed_by=_here(),
        )
        if mode is DeploymentMode.PREVIEW:
            return deployments.run_preview(self, created, on_output=on_output).deployment
        return deployments.run_deployment(
            self,
            created,
            break_lock=break_lock,
            override_marker=override_marker,
            on_progress=on_progress,
            on_output=on_output,
        )

    def queue_deployment(
        self,
        project: str,
        server: str,
        *,
        revision: str | None = None,
        mode: str | DeploymentMode = DeploymentMode.QUEUE,
        config_files_only: bool = False,
        copy_config_files: bool = True,
        run_build_commands: bool = True,
    ) -> Deployment:
        """Record a deployment (or a preview) for a queue worker to run; returns at once."""
        from . import deployments

        return deployments.create_deployment(
            self,
            project,
            server,
            revision=revision,
            mode=DeploymentMode(mode),
            config_files_only=config_files_only,
            copy_config_files=copy_config_files,
            run_build_commands=run_build_commands,
        )

    def queue_rollback(
        self,
        project: str,
        deployment: str,
        *,
        mode: str | DeploymentMode = DeploymentMode.QUEUE,
        copy_config_files: bool = True,
        run_build_commands: bool = True,
    ) -> Deployment:
        """Record a rollback to ``deployment`` (DeployHQ's rules checked now) for a queue
        worker to run; returns at once."""
        from . import deployments

        return deployments.create_rollback(
            self,
            project,
            deployment,
            mode=DeploymentMode(mode),
            copy_config_files=copy_config_files,
            run_build_commands=run_build_commands,
        )

    def _check_unlocked(self, project: str, server: str) -> None:
        """Refuse now if the server (a group's: any member) is locked by another run."""
        from .locking import check_unlocked

        group = self.settings.find_group(project, server)
        servers = group.servers if group is not None else [server]
        check_unlocked(self.history, [server_key(project, name) for name in servers])

    def get_preview(self, project: str, identifier: str) -> Preview:
        deployment = self.get_deployment(project, identifier)
        return Preview(
            deployment,
            tuple(self.file_changes(deployment.identifier)),
            tuple(self.members(deployment)),
        )


def _here() -> str:
    from .locking import owner_label

    return owner_label()
