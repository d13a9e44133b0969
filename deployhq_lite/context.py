"""The Context: what model code receives. It owns the settings, the stores, the source
repositories, the hooks and the transport factory, and imports no model module.

The Engine (the door) makes one and hands it down; a model function takes ``ctx`` and
never an Engine. The models do not import each other: the content model publishes
through :meth:`Context.deliver`, which the Engine wires to the DeployHQ model.

Tests inject a transport factory (like httpx's ``transport=``)::

    ctx = Context(settings, transport=lambda destination: MemoryTransport(...))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from . import git
from .errors import ConfigError, RepositoryError
from .log import get_logger
from .records import Deployment, HookEvent
from .store import History, SnapshotStore
from .transports import open_transport

if TYPE_CHECKING:
    from .config import Destination, Settings
    from .store import HistoryStore, ReleaseHistory, SnapshotStorage
    from .transports import Transport

Hook = Callable[[HookEvent], object]
Hooks = Mapping[str, Hook | Iterable[Hook]]
TransportFactory = Callable[["Destination"], "Transport"]


class Deliver(Protocol):
    """Deploys a tree made elsewhere to one destination now, as a deployment like any
    other (the DeployHQ model's ``deploy.deployments.deliver``; the Engine wires it)."""

    def __call__(
        self,
        ctx: Context,
        destination: Destination,
        *,
        end_revision: str,
        end_tree: str,
        before_run: Callable[[Deployment], None] | None = None,
    ) -> Deployment: ...


log = get_logger(__name__)


def default_transport(destination: Destination) -> Transport:
    """The transport for a destination's server config (local or SSH; not yet opened)."""
    return open_transport(destination.config, label=destination.key)


class Context:
    """Settings, stores, repositories, hooks and transports for model code; use it as a
    context manager (or call :meth:`close`). Its store connections belong to the thread
    that made it: give another thread :meth:`fork`."""

    def __init__(
        self,
        settings: Settings,
        *,
        hooks: Hooks | None = None,
        transport: TransportFactory | None = None,
        deliver: Deliver | None = None,
    ) -> None:
        self.settings = settings
        self.hooks: dict[str, list[Hook]] = {}
        for event, fns in (hooks or {}).items():
            self.hooks[event] = [fns] if callable(fns) else list(fns)
        self.transport: TransportFactory = transport or default_transport
        self._deliver = deliver
        self._sources: dict[str, git.Repository] = {}
        self.catalogs: dict[str, object] = {}  # stack -> its Catalog at a head (content/)

    def fork(self) -> Context:
        """Another Context on the same settings, hooks and transport factory, with its own
        connections and repositories, for use in another thread."""
        other = Context(self.settings, transport=self.transport, deliver=self._deliver)
        other.hooks = self.hooks
        return other

    def __enter__(self) -> Self:
        return self

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
        self.catalogs.clear()
        if "history" in self.__dict__:
            self.history.close()
        if "snapshots" in self.__dict__:
            self.snapshots.close()

    # -- stores -------------------------------------------------------------------------------

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
        return History(self.state_dir / "history.sqlite3")

    @cached_property
    def snapshots(self) -> SnapshotStorage:
        return SnapshotStore(self.state_dir / "snapshots.git")

    @property
    def releases(self) -> ReleaseHistory:
        return self.history.releases  # kept in the history's database

    # -- sources ------------------------------------------------------------------------------

    def source(self, project: str) -> git.Repository:
        """The git repository of a project (or a stack's, by ``Destination.stack_project``),
        opened once and attached to the snapshot store, which can then read its objects
        (a deployment's end tree names them until the deployment keeps its snapshot)."""
        if project not in self._sources:
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

    def deliver(
        self,
        destination: Destination,
        *,
        end_revision: str,
        end_tree: str,
        before_run: Callable[[Deployment], None] | None = None,
    ) -> Deployment:
        """Deploy ``end_tree`` to ``destination`` now (how the content model publishes:
        through the deployment machinery the Engine handed in, never by importing it)."""
        if self._deliver is None:
            raise RuntimeError("this Context was made without a deliver function")
        return self._deliver(
            self, destination, end_revision=end_revision, end_tree=end_tree, before_run=before_run
        )

    # -- hooks --------------------------------------------------------------------------------

    def emit(self, event: str, deployment: Deployment, **fields: Any) -> None:
        """Call the hooks of ``event``; a hook that raises is logged, never propagated."""
        for hook in self.hooks.get(event, ()):
            try:
                hook(HookEvent(event, deployment, **fields))
            except Exception as exc:  # a hook must not break a deployment
                log.warning("hook.failed", hook_event=event, error=repr(exc))
