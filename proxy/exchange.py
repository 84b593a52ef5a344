"""One object per request: what plugins read and write, and what the log line prints."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from .config import Upstream
from .errors import BadRequest
from .routing import RouteTarget

_UNSET: Any = object()


class Exchange:
    """The state of one proxied request, from arrival to the log line.

    ``body`` is what goes upstream: the client's bytes unless a plugin called ``replace_body``.
    ``log`` collects fields for the request's one log line; ``response_headers`` are added to
    the client response (they must be known before the first byte is sent).
    """

    __slots__ = (
        "_json",
        "attempts",
        "body",
        "body_replaced",
        "bytes_out",
        "error",
        "log",
        "original_body",
        "request",
        "request_id",
        "response_headers",
        "route",
        "status",
        "stream",
        "t_first_byte",
        "t_first_token",
        "t_start",
        "tail",
        "upstream",
        "upstream_headers",
    )

    def __init__(
        self,
        request: web.Request,
        route: RouteTarget,
        tail: str,
        body: bytes,
        request_id: str,
        t_start: float | None = None,
    ) -> None:
        self.t_start = time.monotonic() if t_start is None else t_start
        self.request = request
        self.route = route
        self.tail = tail
        self.body = body
        self.original_body = body
        self.body_replaced = False
        self.request_id = request_id
        self._json: Any = _UNSET
        self.attempts: list[dict[str, Any]] = []
        self.log: dict[str, Any] = {}
        self.response_headers: dict[str, str] = {}
        self.upstream: Upstream | None = None
        self.upstream_headers: Any = None
        self.status: int | None = None
        self.stream = False
        self.bytes_out = 0
        self.t_first_byte: float | None = None
        self.t_first_token: float | None = None
        self.error: str | None = None

    def json(self) -> Any:
        """The request body parsed once, on first use; only features that need it pay for it."""
        if self._json is _UNSET:
            try:
                self._json = json.loads(self.original_body) if self.original_body else None
            except (ValueError, UnicodeDecodeError) as exc:
                raise BadRequest(f"request body is not valid JSON: {exc}") from None
        return self._json

    def json_object(self) -> dict[str, Any] | None:
        """The body when it is a JSON object, else None (binary uploads, GETs)."""
        ctype = self.request.headers.get("Content-Type", "")
        if not self.original_body or "json" not in ctype:
            return None
        data = self.json()
        return data if isinstance(data, dict) else None

    def replace_body(self, new_body: bytes) -> None:
        """The one way to rewrite what goes upstream; Content-Length follows the new bytes."""
        self.body = new_body
        self.body_replaced = True

    def elapsed_ms(self, t: float | None = None) -> float:
        return round(((t if t is not None else time.monotonic()) - self.t_start) * 1000, 3)
