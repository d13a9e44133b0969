"""Logging: structlog key-value events, secrets redacted.

``get_logger()`` returns a light proxy so that importing the engine does not import
structlog (about 0.15 s of start-up). When the CLI has set a threshold with
:func:`configure` and an event is below it, structlog is never imported. In a library
(no :func:`configure`), events go to structlog once the application has configured it
(``structlog.configure()``, ``structlog.testing.capture_logs()``); before that only
warnings and errors do.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

from .names import escape_path, shown

SECRET_KEYS = frozenset(
    {"password", "passphrase", "key_passphrase", "api_key", "secret", "token", "authorization"}
)
REDACTED = "[redacted]"

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "off": 100}
_threshold: int | None = None
_format: str | None = None  # set by configure(); structlog is set up on first use


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: blank out values whose key names a secret."""
    for key in list(event_dict):
        if key.lower() in SECRET_KEYS or key.lower().endswith(("_password", "_secret")):
            event_dict[key] = REDACTED
    return event_dict


def escape_names(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: a name that is not UTF-8 as the history keeps it (a ``path``,
    escaped losslessly) or as messages show it (any other text), never a lone surrogate."""
    for key, value in event_dict.items():
        if isinstance(value, str) and not value.isascii():
            event_dict[key] = escape_path(value) if key == "path" else shown(value)
    return event_dict


class _Logger:
    __slots__ = ("_bound", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._bound: Any = None

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if _LEVELS[level] < (_threshold or _library_threshold()):
            return
        if self._bound is None:
            self._bound = _structlog().get_logger(self._name)
        getattr(self._bound, level)(event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)


def _library_threshold() -> int:
    """Without the CLI: everything once the application configured structlog, else
    warnings only (structlog's default would print every event to stdout)."""
    structlog = sys.modules.get("structlog")
    if structlog is not None and structlog.is_configured():
        return 0
    return _LEVELS["warning"]


def get_logger(name: str = "deployhq_lite") -> _Logger:
    return _Logger(name)


def configure(*, level: str = "warning", fmt: str = "console") -> None:
    """Called by the CLI only: events at ``level`` and above go to stderr, secrets redacted."""
    global _threshold, _format
    _threshold = _LEVELS[level]
    _format = fmt
    if "structlog" in sys.modules:
        _apply_config(sys.modules["structlog"])


def _structlog() -> Any:
    import structlog  # loads on the first log line: --help is fast without it

    if _format is not None and not getattr(structlog, "_dhq_configured", False):
        _apply_config(structlog)
    return structlog


def _apply_config(structlog: Any) -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if _format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            escape_names,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            min(_threshold or logging.INFO, logging.CRITICAL)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog._dhq_configured = True
