"""The Engine: owns settings, the history, the snapshot store, repositories and transports.

>>> with Engine("deployhq-lite.toml") as engine:          # doctest: +SKIP
...     done = engine.deploy("website", "production")
...     engine.rollback("website", done.identifier, mode="preview")
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from . import config as config_module
from . import readmodel
from .context import Context, Hooks, TransportFactory
from .deployments import adopt, entry, recovery, verify
from .deployments.options import DeployOptions, RunOptions, deploy_options
from .errors import DeployHQLiteError, UnknownNameError
from .locking import check_unlocked, looks_stale, owner_label
from .log import get_logger
from .records import (
    Deployment,
    DeploymentMode,
    FileOutcome,
    ItemAction,
    Preview,
    Release,
    Verification,
    server_key,
)

if TYPE_CHECKING:
    from .config import Destination, Settings
    from .content.documents import Catalog
    from .content.publish import PublishResult
    from .deployments.adopt import Adoption
    from .deployments.options import OutputCallback, ProgressCallback
    from .records import DeploymentStatus
    from .store import HistoryStore, SnapshotStorage
    from .store.gc import GcReport
    from .transports import Transport

__all__ = ["Engine", "Hooks"]

log = get_logger(__name__)


class Engine:
    """Use as a context manager; every method may raise a ``DeployHQLiteError``.

    ``transport`` replaces how a server's transport is made (a callable taking a
    :class:`~deployhq_lite.config.Destination`), for tests and embedders.
    """

    def __init__(
        self,
        settings: Settings | str | os.PathLike[str] | None = None,
        *,
        hooks: Hooks | None = None,
        transport: TransportFactory | None = None,
    ) -> None:
        if settings is None or isinstance(settings, str | os.PathLike):
            settings = config_module.load_settings(settings)
        self.context = Context(settings, hooks=hooks, transport=transport, deliver=entry.deliver)

    @classmethod
    def _on(cls, context: Context) -> Engine:
        engine = cls.__new__(cls)
        engine.context = context
        return engine

    def __enter__(self) -> Self:
        return self

    def fork(self) -> Engine:
        """Another Engine on the same settings, hooks and transports, for another thread."""
        return Engine._on(self.context.fork())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.context.close()

    # -- what the faces read -----------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self.context.settings

    @property
    def history(self) -> HistoryStore:
        return self.context.history

    @property
    def snapshots(self) -> SnapshotStorage:
        return self.context.snapshots

    def collect_snapshots(self, *, dry_run: bool = False) -> GcReport:
        """Repack the snapshot store from its refs and drop what none reaches (every
        deployment's snapshot is kept); with ``dry_run`` only report what it would
        reclaim. Refused (StoreBusyError) while a deployment is queued or running."""
        from .store.gc import collect  # not at the top: start-up stays fast

        return collect(self.snapshots.path, in_flight=self.history.unfinished, dry_run=dry_run)

    def catalog(self, stack: str) -> Catalog:
        """The stack's documents at its branch head (read again when the head moves)."""
        from .content import documents  # lazy: a deploy skips ~20 ms

        return documents.stack_catalog(self.context, stack)

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
        from .content import publish  # lazy: a deploy skips ~20 ms

        target: int | Literal["latest"] | None = (
            None if unpublish else rollback_to or version or "latest"
        )
        return publish.entry_change(
            self.context,
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
        from .content import publish  # lazy: a deploy skips ~20 ms

        asked = [locale] if locale else []
        wanted = publish.locales_of(self.context, stack, environment, asked)[0]
        return {
            uid: version
            for (loc, uid), version in sorted(
                publish.published_versions(self.context, stack, environment).items()
            )
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
        from .content import releases  # lazy: a deploy skips ~20 ms

        return releases.deploy_release(
            self.context,
            stack,
            release,
            environment=environment,
            user=user,
            locales=locales,
            schedule_at=schedule_at,
        )

    def rollback_release(self, stack: str, release: str, *, user: str | None = None) -> Release:
        """The user's rollback release of a deployed release (created once)."""
        from .content import releases  # lazy: a deploy skips ~20 ms

        return releases.rollback_release(self.context, stack, release, user)

    def create_release(self, stack: str, name: str, *, user: str | None = None) -> Release:
        """A new, empty release of ``stack``."""
        from .content import releases  # lazy: a deploy skips ~20 ms

        return releases.create_release(self.context, stack, name, user)

    def list_releases(self, stack: str, *, user: str | None = None) -> list[Release]:
        """The releases ``user`` may see (rollback releases: their own), oldest first."""
        from .content import releases  # lazy: a deploy skips ~20 ms

        return releases.list_releases(self.context, stack, user)

    def get_release(self, stack: str, release: str, *, user: str | None = None) -> Release:
        from .content import releases  # lazy: a deploy skips ~20 ms

        return releases.get_release(self.context, stack, release, user)

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
        from .content import releases  # lazy: a deploy skips ~20 ms

        return releases.add_item(
            self.context,
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
        from .content import releases  # lazy: a deploy skips ~20 ms

        return releases.delete_release(self.context, stack, release, user)

    def transport(self, destination: Destination) -> Transport:
        """The (unopened) transport of a resolved destination, as deployments get it."""
        return self.context.transport(destination)

    def server_identifier(self, project: str, server: str) -> str:
        return config_module.server_identifier(project, server)

    # -- history ------------------------------------------------------------------------------

    def get_deployment(self, project: str, identifier: str) -> Deployment:
        """A deployment of ``project`` by identifier (or a unique prefix of at least 6)."""
        self.settings.get_project(project)
        return readmodel.find_deployment(self.history, project, identifier)

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
        repair: bool = False,
        delete_extra: bool = False,
        full: bool = False,
    ) -> Deployment:
        """Deploy ``revision`` (default: the branch head) to a server or server group and
        wait for it to finish; ``config_files_only`` writes only the config files,
        ``copy_config_files=False`` leaves the server's as they are,
        ``run_build_commands=False`` deploys the repository's files unbuilt;
        ``on_output`` gets each line the build commands print. ``repair`` writes back
        what the server holds differently from its latest deployment (``delete_extra``:
        and deletes what that lacks); ``full`` writes every file whatever it holds."""
        if not break_lock:  # a refusal records nothing
            self._check_unlocked(project, server)
        options = deploy_options(
            config_files_only, copy_config_files, run_build_commands, repair, delete_extra, full
        )
        created = entry.create(
            self.context, project, server, options, revision=revision, claimed_by=_here()
        )
        run = RunOptions(break_lock, override_marker, on_progress, on_output)
        return entry.execute(self.context, created, run)

    def preview(
        self,
        project: str,
        server: str,
        *,
        revision: str | None = None,
        on_output: OutputCallback | None = None,
        repair: bool = False,
        delete_extra: bool = False,
        full: bool = False,
    ) -> Preview:
        """The file changes deploying ``revision`` would make; nothing is written (a
        repair's are found on the server, read only)."""
        created = entry.create(
            self.context,
            project,
            server,
            deploy_options(False, True, True, repair, delete_extra, full),
            revision=revision,
            mode=DeploymentMode.PREVIEW,
            claimed_by=_here(),
        )
        return entry.preview(self.context, created, on_output=on_output)

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
        mode = DeploymentMode(mode)
        if mode is DeploymentMode.QUEUE and not break_lock:  # a refusal records nothing
            self._check_unlocked(project, self.get_deployment(project, deployment).server)
        options = DeployOptions(
            copy_config_files=copy_config_files, run_build_commands=run_build_commands
        )
        created = entry.create_rollback(
            self.context, project, deployment, options, mode=mode, claimed_by=_here()
        )
        if mode is DeploymentMode.PREVIEW:
            return entry.preview(self.context, created, on_output=on_output).deployment
        run = RunOptions(break_lock, override_marker, on_progress, on_output)
        return entry.execute(self.context, created, run)

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
        repair: bool = False,
        delete_extra: bool = False,
        full: bool = False,
    ) -> Deployment:
        """Record a deployment (or a preview) for a queue worker to run; returns at once."""
        options = deploy_options(
            config_files_only, copy_config_files, run_build_commands, repair, delete_extra, full
        )
        return entry.create(
            self.context, project, server, options, revision=revision, mode=DeploymentMode(mode)
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
        options = DeployOptions(
            copy_config_files=copy_config_files, run_build_commands=run_build_commands
        )
        return entry.create_rollback(
            self.context, project, deployment, options, mode=DeploymentMode(mode)
        )

    def _check_unlocked(self, project: str, server: str) -> None:
        """Refuse now if the server (a group's: any member) is locked by another run."""
        group = self.settings.find_group(project, server)
        servers = group.servers if group is not None else [server]
        check_unlocked(self.history, [server_key(project, name) for name in servers])

    def get_preview(self, project: str, identifier: str) -> Preview:
        return readmodel.preview(self.history, self.get_deployment(project, identifier))

    # -- server truth ------------------------------------------------------------------------

    def verify(self, project: str, server: str, *, fast: bool = False) -> list[Verification]:
        """Compare a server (a group: each member) with the snapshot of its latest
        completed deployment; each result is recorded. One server's failure raises; a
        group member's is its verification's ``error`` (the others still run)."""
        self.settings.check_destination(project, server)
        group = self.settings.find_group(project, server)
        if group is None:
            return [self._verify_now(project, server, fast, raises=True)]
        return [self._verify_now(project, m, fast, raises=False) for m in group.servers]

    def _verify_now(self, project: str, server: str, fast: bool, *, raises: bool) -> Verification:
        queued = verify.new_verification(self.context, project, server, fast=fast)
        try:
            return verify.run_verification(self.context, queued)
        except DeployHQLiteError:
            if raises:
                raise
            return self.history.find_verification(queued.identifier) or queued

    def adopt(
        self, project: str, server: str, *, revision: str | None = None, check: bool = False
    ) -> Adoption:
        """Take over a server another tool deployed: record the revision it holds
        (``revision``, else git-ftp's/PHPloy's/dandelion's record there) as an adopted
        deployment and write our marker; ``check`` compares the server with it first."""
        return adopt.adopt(self.context, project, server, revision=revision, check=check)

    def queue_verification(self, project: str, server: str, *, fast: bool = False) -> Verification:
        """Record a verification of one server for a queue worker; returns at once."""
        self.settings.get_project(project)
        return verify.new_verification(self.context, project, server, fast=fast)

    def get_verification(self, project: str, identifier: str) -> Verification:
        found = self.history.find_verification(identifier)
        if found is None or found.project != project:
            raise UnknownNameError("verification", identifier, None, scope=f"project {project}")
        return found

    # -- the queue worker's door ---------------------------------------------------------------

    def run_claimed_verification(self, verification: Verification) -> Verification:
        """Run a verification a worker claimed; a failure is recorded on it, not raised."""
        try:
            return verify.run_verification(self.context, verification)
        except DeployHQLiteError as exc:
            log.warning("verify.failed", verification=verification.identifier, error=str(exc))
            return self.history.find_verification(verification.identifier) or verification

    def run_claimed(self, deployment: Deployment) -> Deployment:
        """Run (or preview) a deployment a worker claimed; a failure is recorded on it."""
        return entry.run_claimed(self.context, deployment)

    def recover_abandoned(self) -> list[Deployment]:
        """Fail what stopped processes on this host left unfinished (a deployment whose
        marker is on its server completed, and is recorded so) and fail the
        verifications they were running; returns the deployments as they are now."""
        for failed in self.history.recover_verifications(looks_stale):
            log.warning("verify.interrupted", verification=failed.identifier)
        return recovery.recover(self.context)

    def run_due_releases(self, *, now: str | None = None) -> list[tuple[Release, str]]:
        """Deploy every scheduled release that is due: (release, outcome) for each."""
        from .content import schedule  # lazy: a deploy skips ~20 ms

        return schedule.run_due(self.context, now=now)


def _here() -> str:
    return owner_label()
