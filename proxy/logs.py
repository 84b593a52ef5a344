"""structlog setup: one JSON line per request, secrets redacted before anything is written."""

from __future__ import annotations

import re
import sys
from collections.abc import MutableMapping
from typing import IO, Any

import structlog

from .config import Logging

_SECRET_KEYS = frozenset(
    {
        "authorization",
        "api_key",
        "api-key",
        "x-api-key",
        "proxy-authorization",
        "password",
        "secret",
    }
)
_SECRET_VALUE = re.compile(r"(Bearer\s+|sk-|sk-ant-)[A-Za-z0-9._~+/=-]{6,}")


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _SECRET_VALUE.sub(lambda m: m.group(1) + "[REDACTED]", value)
    if isinstance(value, dict):
        return {
            k: "[REDACTED]" if str(k).lower() in _SECRET_KEYS else _redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Last line of defence: credential-named keys and credential-looking strings are masked."""
    for key, value in list(event.items()):
        if key.lower() in _SECRET_KEYS:
            event[key] = "[REDACTED]"
        elif isinstance(value, str | dict | list | tuple):
            event[key] = _redact_value(value)
    return event


def make_logger(cfg: Logging, stream: IO[str] | None = None) -> Any:
    """A logger bound to ``stream`` (stdout by default); no global structlog state is touched."""
    out = stream if stream is not None else sys.stdout
    console = cfg.format == "console" or (cfg.format == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if console
        else structlog.processors.JSONRenderer()
    )
    return structlog.wrap_logger(
        structlog.WriteLogger(out),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[cfg.level]),
        cache_logger_on_first_use=True,
    )


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
