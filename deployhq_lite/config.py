"""Configuration: a TOML file plus ``DEPLOYHQ_LITE_*`` environment overrides.

The file is ``--config``, else ``$DEPLOYHQ_LITE_CONFIG``, else ``./deployhq-lite.toml``.
Nested keys are overridden with ``__``: ``DEPLOYHQ_LITE_PROJECTS__WEBSITE__BRANCH=live``.
Relative paths (``state_dir``, ``repository``, ``root``) are relative to the file.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePath
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .errors import ConfigError, UnknownNameError
from .records import server_key

ENV_PREFIX = "DEPLOYHQ_LITE_"
DEFAULT_CONFIG_NAME = "deployhq-lite.toml"
_NAMESPACE = uuid.UUID("6f2b8c1e-4d0a-5b7e-9c3f-1a2b3c4d5e6f")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def no_nul(value: Any) -> Any:
    """A path holding NUL names no file: a config error here, not os's ValueError later."""
    if isinstance(value, PurePath) and "\0" in str(value):
        raise ValueError("a path cannot hold a NUL byte")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    _paths_without_nul = field_validator("*")(no_nul)


class ConfigFileConfig(_Model):
    """A file written to the server on every deployment (``copy_config_files``), kept
    in this config (``body``) or in a file on this machine (``body_file``), never in git.
    At project level, ``servers`` names the servers it goes to (default: all)."""

    path: str
    body: str | None = None
    body_file: Path | None = None
    servers: list[str] = Field(default_factory=list)

    @field_validator("path")
    @classmethod
    def _path_is_relative(cls, value: str) -> str:
        return plain_relative(value, "path").strip("/")

    @model_validator(mode="after")
    def _one_body(self) -> ConfigFileConfig:
        if (self.body is None) == (self.body_file is None):
            raise ValueError(f"config file {self.path!r} needs one of body or body_file")
        return self

    def read(self) -> bytes:
        if self.body is not None:
            return self.body.encode()
        assert self.body_file is not None
        try:
            return self.body_file.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"config file {self.path!r}: cannot read body_file {self.body_file}: {exc.strerror}"
            ) from None


class SSHCommandConfig(_Model):
    """A command run on the server (over SSH; in the root for local servers) before or
    after the file changes. It comes from this config only, never from a repository."""

    command: str = Field(min_length=1)
    when: Literal["before", "after"] = "after"
    halt_on_error: bool = True
    timeout: float = Field(default=300.0, gt=0)
    run: Literal["always", "first_deployment"] = "always"


def plain_relative(value: str, what: str) -> str:
    """``value`` if it is a relative path without ``.``, ``..``, empty parts or ``\\``."""
    parts = value.strip("/").split("/")
    if not value.strip("/") or any(p in ("", ".", "..") for p in parts) or "\\" in value:
        raise ValueError(f"{what} {value!r} must be a plain relative path")
    if "\0" in value:  # names no file
        raise ValueError(f"{what} {value!r} cannot hold a NUL byte")
    return value


def check_subdirectory(value: str | None) -> str | None:
    return None if value is None else plain_relative(value, "subdirectory")


Subdirectory = Annotated[str | None, AfterValidator(check_subdirectory)]


class ServerConfig(_Model):
    """A server: ``local`` (a directory here) or ``ssh`` (SFTP over OpenSSH).

    For ``ssh``, ``root`` is a path on the server; secrets are never in this file: they
    come from an environment variable (``*_env``) or a file (``*_file``).
    """

    name: str = ""
    protocol_type: Literal["local", "ssh"] = "local"
    root: Path
    host: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = None
    key_path: Path | None = None
    key_passphrase_env: str | None = None
    key_passphrase_file: Path | None = None
    password_env: str | None = None
    password_file: Path | None = None
    use_agent: bool = True
    known_hosts_path: Path | None = None
    host_key_fingerprint: str | None = Field(default=None, pattern=r"^SHA256:[A-Za-z0-9+/]+=*$")
    connect_timeout: float = Field(default=15.0, gt=0)
    subdirectory: Subdirectory = None  # deploy only this part of the repository
    excluded_files: list[str] = Field(default_factory=list)  # gitignore patterns
    config_files: list[ConfigFileConfig] = Field(default_factory=list)
    ssh_commands: list[SSHCommandConfig] = Field(default_factory=list)
    _key_path_configured: Path | None = PrivateAttr(default=None)

    @property
    def key_path_shown(self) -> str:
        """``key_path`` as the config wrote it (``k``, not the absolute path it names)."""
        return str(self._key_path_configured or self.key_path or "")

    @field_validator("root", mode="before")
    @classmethod
    def _root_is_not_empty(cls, value: Any) -> Any:
        # Path("") is ".": the config file's directory, beside state_dir, for a local root.
        if isinstance(value, str) and not value.strip():
            raise PydanticCustomError("empty_root", "must name a directory, not be empty")
        return value

    @field_validator("excluded_files")
    @classmethod
    def _patterns_parse(cls, patterns: list[str]) -> list[str]:
        if patterns:
            from pathspec import GitIgnoreSpec

            for pattern in patterns:
                try:
                    GitIgnoreSpec.from_lines([pattern])
                except ValueError:
                    raise ValueError(f"pattern {pattern!r} cannot parse") from None
        return patterns

    @model_validator(mode="after")
    def _ssh_needs_a_host(self) -> ServerConfig:
        if self.protocol_type == "ssh" and not (self.host and self.user):
            raise ValueError("an ssh server needs host and user")
        return self


class BuildCommandConfig(_Model):
    """A build command, run on this machine in an isolated checkout of the end revision
    (``/bin/sh -c``). It comes from this config only, never from a repository."""

    command: str = Field(min_length=1)
    timeout: float = Field(default=600.0, gt=0)


def check_relative(value: str) -> str:
    return plain_relative(value, "path").strip("/")


def check_optional_relative(value: str | None) -> str | None:
    return None if value is None else check_relative(value)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_environment(variables: dict[str, str]) -> dict[str, str]:
    for key in variables:
        if not _ENV_NAME.fullmatch(key):
            raise ValueError(f"{key!r} is not an environment variable name")
    return variables


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})


def parse_size(value: object) -> object:
    """A size in bytes from an integer or a string such as ``"2 GiB"`` or ``"500 MB"``."""
    if not isinstance(value, str):
        return value
    match = _SIZE.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not a size (bytes, or a number and B, KiB, MiB, GiB...)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "b").lower()])


ByteSize = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]


class ServerGroupConfig(_Model):
    """Servers deployed together as one deployment, one after another or all at once."""

    name: str = ""
    servers: list[str] = Field(min_length=1)
    transfer_order: Literal["parallel", "sequential"] = "parallel"

    @field_validator("servers")
    @classmethod
    def _listed_once(cls, servers: list[str]) -> list[str]:
        if len(set(servers)) != len(servers):
            raise ValueError("a server is listed twice")
        return servers


class ProjectConfig(_Model):
    name: str = ""
    repository: Path
    branch: str = "main"
    subdirectory: Subdirectory = None  # a server's own subdirectory wins
    config_files: list[ConfigFileConfig] = Field(default_factory=list)
    build_commands: list[BuildCommandConfig] = Field(default_factory=list)
    build_output: Annotated[str | None, AfterValidator(check_optional_relative)] = None
    build_cache: list[Annotated[str, AfterValidator(check_relative)]] = Field(default_factory=list)
    build_environment: Annotated[dict[str, str], AfterValidator(check_environment)] = Field(
        default_factory=dict
    )  # extra variables for the build commands
    servers: dict[str, ServerConfig] = Field(default_factory=dict)
    server_groups: dict[str, ServerGroupConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _groups_name_servers(self) -> ProjectConfig:
        for key, group in self.server_groups.items():
            if key in self.servers:
                raise ValueError(f"server group {key!r} has the name of a server")
            unknown = [s for s in group.servers if s not in self.servers]
            if unknown:
                raise ValueError(
                    f"server group {key!r} lists {', '.join(map(repr, unknown))}, "
                    f"not a server of this project (servers: {', '.join(self.servers) or 'none'})"
                )
        return self


class UserConfig(_Model):
    """Someone acting on stacks: ``admin`` may do everything, others deploy only to
    ``environments``."""

    role: str = "editor"
    environments: list[str] = Field(default_factory=list)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class ApiUserConfig(_Model):
    """Someone who may call the HTTP API: ``--user EMAIL:API_KEY``. Only the SHA-256 of
    the key is kept here (``deployhq-lite api-keys create EMAIL`` makes both)."""

    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class EnvironmentConfig(ServerConfig):
    """A stack's environment: its locales and its delivery target (a server's keys)."""

    locales: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _locales_are_names(self) -> EnvironmentConfig:
        for locale in self.locales:
            if not _NAME.fullmatch(locale):
                raise ValueError(f"locale {locale!r} must be letters, digits, '-' or '_'")
        if len(set(self.locales)) != len(self.locales):
            raise ValueError("locales are listed twice")
        return self


class StackConfig(_Model):
    """A content stack: documents in a git repository, published to environments."""

    name: str = ""
    repository: Path
    branch: str = "main"
    environments: dict[str, EnvironmentConfig] = Field(default_factory=dict)


# Deployments to a stack's environment are recorded under this "project" name.
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


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    from_env = os.environ.get(f"{ENV_PREFIX}CONFIG")
    return Path(from_env) if from_env else Path(DEFAULT_CONFIG_NAME)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read the TOML file and the environment; raise ``ConfigError`` with one clear line."""
    config_path = find_config_path(path)
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{config_path}: config file not found (pass --config FILE or set "
            f"{ENV_PREFIX}CONFIG; `deployhq-lite demo` needs none)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_path}: cannot read config file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: invalid TOML: {exc}") from None
    return build_settings(raw, config_path)


def build_settings(raw: dict[str, Any], config_path: Path | None = None) -> Settings:
    """Validate a config mapping (env overrides applied) and resolve relative paths."""
    where = str(config_path) if config_path else "config"
    env_only = {k: v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)}
    env_only.pop(f"{ENV_PREFIX}CONFIG", None)
    try:
        settings = Settings(**raw)
    except ValidationError as exc:
        raise _config_error(where, _describe(exc), bool(env_only)) from None
    base = config_path.resolve().parent if config_path else Path.cwd()
    resolved = _resolve_paths(settings, base, config_path)
    problems = _check_roots(resolved)
    if problems:
        raise _config_error(where, problems, bool(env_only))
    return resolved


def _check_roots(settings: Settings) -> list[str]:
    """Local roots that would deploy over our own state or into the repository deployed."""
    targets = [
        (f"projects.{key}.servers.{skey}", server, project.repository)
        for key, project in settings.projects.items()
        for skey, server in project.servers.items()
    ] + [
        (f"stacks.{key}.environments.{ekey}", environment, stack.repository)
        for key, stack in settings.stacks.items()
        for ekey, environment in stack.environments.items()
    ]
    problems = []
    state = _real(settings.state_dir)
    for where, server, repository in targets:
        root = _real(server.root) if server.protocol_type == "local" else None
        if root is None:  # a remote path, or one refused for its NUL
            continue
        shown = f"{where}.root: {server.root}"
        if state is not None and root == state:
            problems.append(f"{shown} is the state_dir")
        elif state is not None and state.is_relative_to(root):
            problems.append(f"{shown} contains the state_dir {settings.state_dir}")
        elif state is not None and root.is_relative_to(state):
            problems.append(f"{shown} is inside the state_dir {settings.state_dir}")
        source = _real(repository)
        if source is not None and root.is_relative_to(source):
            inside = "is" if root == source else "is inside"
            problems.append(f"{shown} {inside} the repository {repository}")
    return problems


def _real(path: Path) -> Path | None:
    """``path`` with symlinks resolved, for comparing (``None`` for a NUL: refused anyway)."""
    return None if "\0" in str(path) else Path(os.path.realpath(path))


def _config_error(where: str, problems: list[str], has_env: bool = False) -> ConfigError:
    """Every problem on a line of its own, each naming the file."""
    note = f"; {ENV_PREFIX}* environment overrides apply too" if has_env else ""
    lines = [f"{where}: {problem}{note}" for problem in problems]
    return ConfigError("\n".join(lines), problems=lines)


def _describe(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            text = f"unknown key {key!r}"
            nearest = difflib.get_close_matches(str(loc[-1]), _keys_beside(loc), n=1)
            if nearest:
                text += f" \N{EM DASH} did you mean {nearest[0]!r}?"
        elif kind == "missing":
            text = f"missing required key {key!r}"
        else:
            text = f"{key}: {err['msg']} (got {err.get('input')!r})"
        problems.append(text)
    return problems


def _keys_beside(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model holding ``loc``'s last part accepts (none if it is no model)."""
    node: Any = Settings
    for part in loc[:-1]:
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(str(part))
            node = field.annotation if field else None
        elif get_origin(node) in (dict, list):
            node = get_args(node)[-1]  # the value type: part is a key or an index
        else:
            return []
    node = _unwrap(node)
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _unwrap(annotation: Any) -> Any:
    """``X`` from ``Annotated[X, ...]`` and ``X | None``."""
    if get_origin(annotation) is Annotated:
        return _unwrap(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return _unwrap(members[0]) if len(members) == 1 else None
    return annotation


_S = TypeVar("_S", bound=ServerConfig)


def _resolve_server(server: _S, key: str, absolute: Any) -> _S:
    """Local paths become absolute (relative to the config file); a remote root stays."""
    update: dict[str, Any] = {"name": server.name or key}
    if server.protocol_type == "local":
        update["root"] = absolute(server.root)
    for field in ("key_path", "key_passphrase_file", "password_file", "known_hosts_path"):
        value = getattr(server, field)
        if value is not None:
            update[field] = absolute(value)
    update["config_files"] = _resolve_files(server.config_files, absolute)
    resolved = server.model_copy(update=update)
    resolved._key_path_configured = server._key_path_configured or server.key_path
    return resolved


def _resolve_files(files: list[ConfigFileConfig], absolute: Any) -> list[ConfigFileConfig]:
    return [
        f.model_copy(update={"body_file": absolute(f.body_file)}) if f.body_file else f
        for f in files
    ]


def _resolve_paths(settings: Settings, base: Path, config_path: Path | None) -> Settings:
    def absolute(p: Path) -> Path:
        p = p.expanduser()
        return p if p.is_absolute() else base / p

    projects = {
        key: project.model_copy(
            update={
                "name": project.name or key,
                "repository": absolute(project.repository),
                "config_files": _resolve_files(project.config_files, absolute),
                "servers": {
                    skey: _resolve_server(server, skey, absolute)
                    for skey, server in project.servers.items()
                },
                "server_groups": {
                    gkey: group.model_copy(update={"name": group.name or gkey})
                    for gkey, group in project.server_groups.items()
                },
            }
        )
        for key, project in settings.projects.items()
    }
    stacks = {
        key: stack.model_copy(
            update={
                "name": stack.name or key,
                "repository": absolute(stack.repository),
                "environments": {
                    ekey: _resolve_server(env, ekey, absolute)
                    for ekey, env in stack.environments.items()
                },
            }
        )
        for key, stack in settings.stacks.items()
    }
    resolved = settings.model_copy(
        update={
            "state_dir": absolute(settings.state_dir),
            "projects": projects,
            "stacks": stacks,
        }
    )
    resolved._config_path = config_path
    return resolved
