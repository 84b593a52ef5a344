"""One object per request, from arrival to the log line: what every component reads and writes.

It exists before routing, so a request refused for an unknown route, a bad path or an
oversized body takes the same pipeline and leaves the same log line as a proxied one. What
happened is kept in typed fields (see :mod:`proxy.outcomes`); reporters derive the log line
and the metrics from them.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, TypeVar, cast

from aiohttp import web
from multidict import CIMultiDictProxy

from .config import Upstream
from .jsonbytes import loads_body
from .outcomes import (
    Attempt,
    ClientKeyOutcome,
    ContextOutcome,
    RetryOutcome,
    SlotKey,
    TranslationOutcome,
    UsageOutcome,
)
from .routing import RouteTarget

T = TypeVar("T")

_UNPARSED: Any = object()
_CLIENT_ID = re.compile(r"[!-~]{1,128}")
"""A client's own request id is used only when it is short and printable ASCII."""


def request_id_for(request: web.BaseRequest) -> str:
    """The client's ``x-request-id`` when it is safe to echo and log, else a fresh one."""
    given = request.headers.get("x-request-id")
    if given is not None and _CLIENT_ID.fullmatch(given):
        return given
    return os.urandom(16).hex()  # 128 random bits like uuid4, without building a UUID (~6x)


class Exchange:
    """The state of one request. ``body`` is what goes upstream: the client's bytes unless a
    plugin called :meth:`replace_body`. ``response_headers`` are the proxy's own headers for
    the client response (they must be known before the first byte is sent)."""

    __slots__ = (
        "_json",
        "attempts",
        "body",
        "body_replaced",
        "bytes_out",
        "client_key",
        "context",
        "error",
        "json_error",
        "original_body",
        "outgoing_headers",
        "plugin_errors",
        "request",
        "request_id",
        "response_headers",
        "retry",
        "route",
        "slots",
        "status",
        "stream",
        "t_commit",
        "t_first_byte",
        "t_first_token",
        "t_start",
        "tail",
        "translation",
        "upstream",
        "upstream_headers",
        "usage",
    )

    def __init__(self, request: web.Request, t_start: float | None = None) -> None:
        self.t_start = time.monotonic() if t_start is None else t_start
        self.request = request
        self.request_id = request_id_for(request)
        self.route: RouteTarget | None = None
        self.tail = ""
        self.body = b""
        self.original_body = b""
        self.body_replaced = False
        self._json: Any = _UNPARSED
        self.json_error: str | None = None
        self.attempts: list[Attempt] = []
        self.retry = RetryOutcome()
        self.usage: UsageOutcome | None = None
        self.context: ContextOutcome | None = None
        self.translation: TranslationOutcome | None = None
        self.client_key: ClientKeyOutcome | None = None
        """Keys mode only: the client's proxy key and the gate's verdict."""
        self.response_headers: dict[str, str] = {}
        self.outgoing_headers: dict[str, str] = {}
        """Headers a plugin adds to every upstream attempt (e.g. a trace context)."""
        self.upstream: Upstream | None = None
        self.upstream_headers: CIMultiDictProxy[str] | None = None
        self.status: int | None = None
        self.stream = False
        self.bytes_out = 0
        self.t_first_byte: float | None = None
        self.t_commit: float | None = None
        """When a held stream head was released (streams under the commit point only)."""
        self.t_first_token: float | None = None
        self.error: str | None = None
        self.plugin_errors: list[str] = []
        self.slots: dict[SlotKey[Any], Any] = {}

    def routed(self, route: RouteTarget, tail: str) -> None:
        self.route = route
        self.tail = tail

    def received(self, body: bytes) -> None:
        self.body = self.original_body = body

    def json(self) -> Any:
        """The request body parsed once, on first use; None when it is not JSON.

        A body the proxy cannot parse is not the proxy's to refuse: features that need it
        step aside, the client's bytes go upstream untouched and the upstream answers.
        ``json_error`` says why parsing failed, for the log line.
        """
        if self._json is _UNPARSED:
            self._json = None
            if self.original_body:
                try:
                    self._json = loads_body(self.original_body)
                except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                    self.json_error = _short_reason(exc)
        return self._json

    def json_object(self) -> dict[str, Any] | None:
        """The body when it is a JSON object, else None (binary uploads, GETs, bad JSON)."""
        ctype = self.request.headers.get("Content-Type", "")
        if not self.original_body or "json" not in ctype:
            return None
        data = self.json()
        return data if isinstance(data, dict) else None

    def replace_body(self, new_body: bytes) -> None:
        """The one way to rewrite what goes upstream; Content-Length follows the new bytes."""
        self.body = new_body
        self.body_replaced = True

    def slot(self, key: SlotKey[T]) -> T | None:
        """A plugin's private per-request state, or None before it set any."""
        return cast("T | None", self.slots.get(key))

    def set_slot(self, key: SlotKey[T], value: T) -> None:
        self.slots[key] = value

    def elapsed_ms(self, t: float | None = None) -> float:
        return round(((t if t is not None else time.monotonic()) - self.t_start) * 1000, 3)


def _short_reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply to parse"
    return f"invalid JSON: {str(exc)[:200]}"
