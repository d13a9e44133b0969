"""Configuration: a TOML file plus ``DEPLOYHQ_LITE_*`` environment overrides.

The file is ``--config``, else ``$DEPLOYHQ_LITE_CONFIG``, else ``./deployhq-lite.toml``.
Nested keys are overridden with ``__``: ``DEPLOYHQ_LITE_PROJECTS__WEBSITE__BRANCH=live``.
Relative paths (``state_dir``, ``repository``, ``root``) are relative to the file.

``models`` (what each table holds), ``settings`` (the whole, and its lookups) and
``loading`` (file, environment, problems, paths).
"""

from .loading import (
    build_settings,
    find_config_path,
    load_settings,
)
from .models import (
    DEFAULT_CONFIG_NAME,
    ENV_PREFIX,
    ApiUserConfig,
    BuildCommandConfig,
    ByteSize,
    ConfigFileConfig,
    EnvironmentConfig,
    ProjectConfig,
    ServerConfig,
    ServerGroupConfig,
    SSHCommandConfig,
    StackConfig,
    Subdirectory,
    UserConfig,
    check_environment,
    check_optional_relative,
    check_relative,
    check_subdirectory,
    no_nul,
    parse_size,
    plain_relative,
)
from .settings import (
    STACK_PREFIX,
    Destination,
    Settings,
    project_identifier,
    server_identifier,
)

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "ENV_PREFIX",
    "STACK_PREFIX",
    "ApiUserConfig",
    "BuildCommandConfig",
    "ByteSize",
    "ConfigFileConfig",
    "Destination",
    "EnvironmentConfig",
    "ProjectConfig",
    "SSHCommandConfig",
    "ServerConfig",
    "ServerGroupConfig",
    "Settings",
    "StackConfig",
    "Subdirectory",
    "UserConfig",
    "build_settings",
    "check_environment",
    "check_optional_relative",
    "check_relative",
    "check_subdirectory",
    "find_config_path",
    "load_settings",
    "no_nul",
    "parse_size",
    "plain_relative",
    "project_identifier",
    "server_identifier",
]
