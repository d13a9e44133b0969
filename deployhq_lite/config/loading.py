"""Reading the config: the file, the environment, every problem in one report, and paths
made absolute against the file's directory."""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ValidationError,
)

from ..errors import ConfigError
from .models import DEFAULT_CONFIG_NAME, ENV_PREFIX, ConfigFileConfig, ServerConfig
from .settings import Settings


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
