"""structlog setup: one JSON line per request, secrets redacted before anything is written."""

from __future__ import annotations

import atexit
import json
import re
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import MutableMapping
from typing import IO, Any, TextIO, cast

import structlog
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from .config import Logging
from .jsonbytes import orjson

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


def _mask(match: re.Match[str]) -> str:
    return match.group(1) + "[REDACTED]"


def _redact_value(value: Any) -> Any:
    """Masked copy of ``value``; plain strings without a credential marker cost one scan."""
    kind = type(value)
    if kind is str:
        if "sk-" in value or "earer" in value:
            return _SECRET_VALUE.sub(_mask, value)
        return value
    if kind is dict:
        return {
            k: "[REDACTED]" if str(k).lower() in _SECRET_KEYS else _redact_value(v)
            for k, v in value.items()
        }
    if kind is list or kind is tuple:
        return [_redact_value(v) for v in value]
    return value


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Last line of defence: credential-named keys and credential-looking strings are masked."""
    for key, value in event.items():
        if type(value) in _SCALARS:
            continue
        if key.lower() in _SECRET_KEYS:
            event[key] = "[REDACTED]"
        else:
            event[key] = _redact_value(value)
    for key in _SECRET_KEYS.intersection(event):
        event[key] = "[REDACTED]"
    return event


_SCALARS = frozenset({int, float, bool, type(None)})
_MARKERS = ("sk-", "earer", *_SECRET_KEYS)
"""Lower-cased text that every event needing redaction shows once encoded: a secret key's
name, or a credential value's prefix (JSON escapes never touch these ASCII letters)."""


def _repr(obj: object) -> str:
    return repr(obj)


def _dumps(event: MutableMapping[str, Any]) -> str:
    """Compact ASCII JSON: orjson when installed (~10x faster), else the standard library.
    Lines orjson cannot encode as ASCII (non-ASCII text, huge integers) take the slow path,
    so a line reads the same whichever encoded it."""
    if orjson is not None:
        try:
            line = orjson.dumps(event, default=_repr, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # orjson.JSONEncodeError: out-of-range integers, lone surrogates
            pass
        else:
            if line.isascii():
                return line
    return json.dumps(event, separators=(",", ":"), default=_repr)


def render_json(logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
    """structlog's last processor in JSON mode: redaction and encoding in one pass.

    Redacting first walked every field of every line (the request line's attempts list
    included) although credentials almost never occur; the encoded text shows every marker
    redaction reacts to, so only a line that shows one is redacted and encoded again.
    """
    line = _dumps(event)
    lowered = line.lower()
    for marker in _MARKERS:
        if marker in lowered:
            return _dumps(redact_secrets(logger, method, event))
    return line


class QueuedLineWriter:
    """structlog's final logger for stdout: lines go into a bounded buffer that a thread writes.

    The event loop never blocks on a slow pipe (journald, a full terminal); under sustained
    overload the oldest unwritten lines are dropped and counted rather than memory growing.
    Once woken, the thread lets ``batch_s`` pass before it writes: under load one wake-up and
    one write carry many lines instead of one each (a wake-up costs the loop an Event.set and
    hands the GIL to this thread).
    """

    def __init__(self, out: IO[str], max_lines: int = 10_000, batch_s: float = 0.02) -> None:
        self._out = out
        self._batch_s = batch_s
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._wake = threading.Event()
        self._closed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def msg(self, message: str) -> None:
        lines = self._lines
        if len(lines) == lines.maxlen:
            self.dropped += 1
        lines.append(message)
        if not self._wake.is_set():
            self._wake.set()

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg

    def _run(self) -> None:
        while not self._closed or self._lines:
            self._wake.wait(0.5)
            if not self._closed:
                time.sleep(self._batch_s)  # the wake stays set meanwhile: msg() only reads it
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        batch = []
        while self._lines:
            batch.append(self._lines.popleft())
        if self.dropped:
            batch.append(f'{{"event":"log lines dropped","count":{self.dropped}}}')
            self.dropped = 0
        if batch:
            try:
                self._out.write("\n".join(batch) + "\n")
                self._out.flush()
            except (OSError, ValueError):
                pass  # stdout went away; nothing better to do with a log line

    def close(self) -> None:
        """Write what is buffered and stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=2)
        self._drain()


def make_logger(cfg: Logging, stream: IO[str] | None = None) -> Any:
    """A logger bound to ``stream`` (stdout by default); no global structlog state is touched.

    stdout is written by a background thread through a bounded buffer; any other stream (tests
    pass a StringIO) is written synchronously, so a line is there when the request ends.
    """
    out = stream if stream is not None else sys.stdout
    console = cfg.format == "console" or (cfg.format == "auto" and out.isatty())
    finish: list[Any] = (
        [redact_secrets, structlog.dev.ConsoleRenderer(colors=False)] if console else [render_json]
    )
    sink: Any = (
        QueuedLineWriter(out) if stream is None else structlog.WriteLogger(cast(TextIO, out))
    )
    return structlog.wrap_logger(
        sink,
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *finish,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[cfg.level]),
        cache_logger_on_first_use=True,
    )


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


_CLIENT_ERRORS = (HttpProcessingError, RequestPayloadError, ConnectionError)


class ServerLog:
    """Stands in for aiohttp's ``aiohttp.server`` logger (``RequestHandler(logger=...)``).

    Unconfigured, that logger's records reach stderr through ``logging.lastResort`` as a
    traceback. Here each record is one structured line instead: the exception's type always,
    its text and traceback only for what a client did not cause (a parse error's text quotes
    the client's bytes, a header with its key included). Parse errors aiohttp answers itself
    are rendered by connections.py and never get here; this keeps any other path as quiet.
    """

    def __init__(self, target: Any = None) -> None:
        self.target = target
        """The structlog logger; set once the app's logger exists (nothing logs before)."""

    def _emit(self, level: str, msg: object, args: tuple[Any, ...], exc: Any) -> None:
        if self.target is None:
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = str(msg)
        fields: dict[str, Any] = {"source": "aiohttp.server"}
        if isinstance(exc, BaseException):
            fields["error_type"] = type(exc).__name__
            if not isinstance(exc, _CLIENT_ERRORS):
                fields["error"] = str(exc)
                fields["traceback"] = "".join(traceback.format_exception(exc)).rstrip()
        getattr(self.target, level)(text, **fields)

    def debug(self, msg: object, *args: Any, exc_info: Any = None, **_: Any) -> None:
        self._emit("debug", msg, args, exc_info)

    def info(self, msg: object, *args: Any, exc_info: Any = None, **_: Any) -> None:
        self._emit("info", msg, args, exc_info)

    def warning(self, msg: object, *args: Any, exc_info: Any = None, **_: Any) -> None:
        self._emit("warning", msg, args, exc_info)

    def error(self, msg: object, *args: Any, exc_info: Any = None, **_: Any) -> None:
        self._emit("error", msg, args, exc_info)

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **_: Any) -> None:
        if exc_info is True:
            exc_info = sys.exc_info()[1]
        self._emit("error", msg, args, exc_info)
