"""The config file's models: projects, servers, groups, builds, stacks, users, each
validated as it is read."""

from __future__ import annotations

import re
import uuid
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..errors import ConfigError

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
            from pathspec import GitIgnoreSpec  # loads only when patterns are configured

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
