"""``Settings``, the whole validated config, and its lookups: a project, a server, a
group, a stack's environment, resolved into a ``Destination``."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import (
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ..errors import ConfigError, UnknownNameError
from ..records import server_key
from .models import (
    _NAMESPACE,
    ENV_PREFIX,
    ApiUserConfig,
    ByteSize,
    ConfigFileConfig,
    EnvironmentConfig,
    ProjectConfig,
    ServerConfig,
    ServerGroupConfig,
    StackConfig,
    UserConfig,
    no_nul,
)

STACK_PREFIX = "stack:"


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a deployment goes: a project's server or a stack's environment, resolved
    once by :meth:`Settings.destination`. ``project`` is the name the history stores
    (``stack:<key>`` for a stack: only :meth:`stack_project` builds it and only
    :meth:`stack_of` reads it back); ``key`` (``project/server``) names the server in
    locks, transports and messages."""

    project: str
    server: str
    config: ServerConfig
    project_name: str
    repository: Path
    branch: str
    stack: str | None = None

    @staticmethod
    def stack_project(stack: str) -> str:
        """The project name a stack's deployments are stored under."""
        return STACK_PREFIX + stack

    @staticmethod
    def stack_of(project: str) -> str | None:
        """The stack a stored project name stands for (None: a plain project)."""
        return project.removeprefix(STACK_PREFIX) if project.startswith(STACK_PREFIX) else None

    @property
    def is_stack(self) -> bool:
        """Whether this is a stack's environment rather than a project's server."""
        return self.stack is not None

    @property
    def key(self) -> str:
        """``project/server``: the lock key, the transport label, the name in messages."""
        return server_key(self.project, self.server)

    @property
    def identifier(self) -> str:
        return server_identifier(self.project, self.server)

    @property
    def server_name(self) -> str:
        return self.config.name


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    state_dir: Path = Path(".deployhq-lite")
    # the worker collects the snapshot store when it has grown by this much (0: never)
    snapshot_store_gc_size: ByteSize = 2 * 2**30
    projects: dict[str, ProjectConfig] = Field(default_factory=dict)
    stacks: dict[str, StackConfig] = Field(default_factory=dict)
    users: dict[str, UserConfig] = Field(default_factory=dict)
    api_users: dict[str, ApiUserConfig] = Field(default_factory=dict)
    _config_path: Path | None = PrivateAttr(default=None)
    _state_dir_without_nul = field_validator("state_dir")(no_nul)

    @model_validator(mode="after")
    def _names_are_plain(self) -> Settings:
        for key in self.projects:
            if Destination.stack_of(key) is not None:
                raise ValueError(f"project {key!r}: names starting {STACK_PREFIX!r} are reserved")
        return self

    @property
    def config_path(self) -> Path | None:
        """The file these settings were read from, if any."""
        return self._config_path

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file (the file arrives as init kwargs).
        return (env_settings, init_settings)

    def get_project(self, permalink: str) -> ProjectConfig:
        return _lookup("project", self.projects, permalink)

    def get_server(self, project: str, server: str) -> ServerConfig:
        servers = self.get_project(project).servers
        return _lookup("server", servers, server, scope=f"project {project!r}")

    def find_server(self, project: str, server: str) -> ServerConfig | None:
        """A project's server or a stack's environment (``project`` is then
        ``stack:<key>``); None when the config does not have it."""
        key = Destination.stack_of(project)
        if key is not None:
            stack = self.stacks.get(key)
            return stack.environments.get(server) if stack else None
        found = self.projects.get(project)
        return found.servers.get(server) if found else None

    def config_files(self, project: str, server: str) -> list[ConfigFileConfig]:
        """The config files a server gets: its own, then the project's that name it (or
        name no server); a later one for the same path wins."""
        found = self.projects.get(project)
        target = found.servers.get(server) if found else None
        if found is None or target is None:
            return []
        shared = [f for f in found.config_files if not f.servers or server in f.servers]
        return list({f.path: f for f in [*shared, *target.config_files]}.values())

    def destination(self, project: str, server: str) -> Destination:
        """A project's server or a stack's environment (``project`` is then
        ``stack:<key>``), resolved; ``UnknownNameError`` names what is missing."""
        key = Destination.stack_of(project)
        found: ProjectConfig | StackConfig
        config: ServerConfig
        if key is not None:
            found, config = self.get_stack(key), self.get_environment(key, server)
        else:
            found, config = self.get_project(project), self.get_server(project, server)
        return Destination(
            project, server, config, found.name, found.repository, found.branch, stack=key
        )

    def get_repository(self, project: str) -> tuple[Path, str]:
        """The git repository of a project or a stack (``stack:<key>``), and the config
        section naming it (for messages)."""
        key = Destination.stack_of(project)
        if key is not None:
            return self.get_stack(key).repository, f"stacks.{key}"
        return self.get_project(project).repository, f"projects.{project}"

    def find_group(self, project: str, key: str) -> ServerGroupConfig | None:
        found = self.projects.get(project)
        return found.server_groups.get(key) if found else None

    def check_destination(self, project: str, name: str) -> None:
        """Refuse ``name`` unless it is a server or a server group of ``project``."""
        config = self.get_project(project)
        if name not in config.servers and name not in config.server_groups:
            known = [*config.servers, *config.server_groups]
            raise UnknownNameError(
                "server or server group", name, known, scope=f"project {project!r}"
            )

    def get_stack(self, key: str) -> StackConfig:
        return _lookup("stack", self.stacks, key)

    def get_environment(self, stack: str, environment: str) -> EnvironmentConfig:
        environments = self.get_stack(stack).environments
        return _lookup("environment", environments, environment, scope=f"stack {stack!r}")

    def get_user(self, name: str | None) -> tuple[str, UserConfig]:
        """The acting user: ``name``, else ``$DEPLOYHQ_LITE_USER``."""
        name = name or os.environ.get(f"{ENV_PREFIX}USER")
        if not name:
            raise ConfigError(f"say who you are: --user NAME or {ENV_PREFIX}USER")
        return name, _lookup("user", self.users, name)


_V = TypeVar("_V")


def _lookup(kind: str, mapping: dict[str, _V], key: str, *, scope: str = "") -> _V:
    try:
        return mapping[key]
    except KeyError:
        raise UnknownNameError(kind, key, mapping, scope=scope) from None


def project_identifier(permalink: str) -> str:
    """A stable UUID for a project, derived from its permalink."""
    return str(uuid.uuid5(_NAMESPACE, f"project/{permalink}"))


def server_identifier(project: str, server: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"server/{project}/{server}"))
