"""Client connections: how many, how slow, how idle, and what a malformed request gets.

aiohttp 3.14's server already offers, and the proxy uses as is (``ConnectionLimits.runner_kwargs``
go to ``web.AppRunner``): ``keepalive_timeout`` (its timer runs from a connection's start or its
last response until the next request's head is complete, so it closes idle connections and also
bounds a head sent slowly), ``max_line_size``/``max_field_size``/``max_headers``, and a
``logger`` for what it logs. It lacks a head timeout shorter than the idle one, any bound on a
request body's arrival, a bound on open connections, and a malformed request's answer that
neither echoes the bad header (it may hold a key) nor logs a traceback. Those are added here by
the least intrusive means it allows: one protocol factory (:class:`ConnectionGuard`, handed to
the listening sockets by listeners.SocketSite) that builds a :class:`RequestHandler` subclass
with the same arguments the app's ``web.Server`` would use, and that wraps the server's public
``request_handler`` to learn when a request starts and ends. Two aiohttp internals are read:
``Server._kwargs`` (to build the same handler) and ``RequestHandler._request_count`` (to see a
parse error inside a body, which aiohttp's C parser would otherwise leave waiting forever).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from .config import Listen, Route
from .logline import unparsed_request_fields
from .providers import PROVIDERS, ProviderSpec, guess_provider

FD_RESERVE = 64
"""File descriptors kept out of the default connection bound: logs, Redis, listening sockets."""
_HEAD_KEEP = 2048
"""Bytes of a request's head kept until it is parsed, to find its path if it fails to parse."""

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What a client connection may cost; from ``listen:`` (see config.Listen)."""

    max_connections: int
    header_timeout_s: float
    body_timeout_s: float
    idle_timeout_s: float
    max_header_bytes: int
    max_headers: int

    @classmethod
    def from_listen(cls, listen: Listen, fd_limit: int | None) -> ConnectionLimits:
        """``max_connections`` unset: half the descriptors (each proxied request also holds an
        upstream connection), less a reserve."""
        default = max(16, (fd_limit - FD_RESERVE) // 2) if fd_limit else 10_000
        return cls(
            max_connections=listen.max_connections or default,
            header_timeout_s=listen.header_timeout_s,
            body_timeout_s=listen.body_timeout_s,
            idle_timeout_s=listen.idle_timeout_s,
            max_header_bytes=listen.max_header_bytes,
            max_headers=listen.max_headers,
        )

    def runner_kwargs(self) -> dict[str, Any]:
        """What aiohttp's own RequestHandler enforces, as ``web.AppRunner`` keyword arguments."""
        return {
            "keepalive_timeout": self.idle_timeout_s,
            "max_line_size": self.max_header_bytes,
            "max_field_size": self.max_header_bytes,
            "max_headers": self.max_headers,
        }


class Shape:
    """Which provider's error shape a path gets, from the routes of the running config."""

    def __init__(self, routes: Callable[[], tuple[Route, ...]]) -> None:
        self._routes = routes

    def __call__(self, path: str) -> tuple[ProviderSpec, str | None]:
        """The provider, and the route's name (its prefix, ``/`` for the empty one) or None."""
        best: Route | None = None
        for route in self._routes():
            prefix = route.prefix
            if (not prefix or path == prefix or path.startswith(prefix + "/")) and (
                best is None or len(prefix) > len(best.prefix)
            ):
                best = route
        if best is None:
            return guess_provider(path), None
        return PROVIDERS[best.provider], best.prefix or "/"


class ConnectionGuard:
    """The protocol factory for the proxy's listening sockets (see the module docstring).

    One per serving process, shared by all its sockets, so ``max_connections`` bounds the
    process. Over the bound a new connection is closed at once; that is logged once when it
    starts happening and once when it stops, never per connection.
    """

    def __init__(
        self,
        server: web.Server,
        limits: ConnectionLimits,
        logger: Any,
        shape: Callable[[str], tuple[ProviderSpec, str | None]],
        metrics: Any = None,
    ) -> None:
        self.server = server
        self.limits = limits
        self.logger = logger
        self.shape = shape
        self.metrics = metrics
        self.loop = asyncio.get_running_loop()
        self._kwargs = dict(getattr(server, "_kwargs", {}))
        self._live: set[GuardedRequestHandler] = set()
        self._refused = 0
        self._refusing = False
        self._resume_at = limits.max_connections - max(1, limits.max_connections // 10)
        server.request_handler = self._observe(server.request_handler)

    @property
    def open(self) -> int:
        return len(self._live)

    def __call__(self) -> asyncio.Protocol:
        if len(self._live) >= self.limits.max_connections:
            self._refuse()
            return _Refused()
        return GuardedRequestHandler(self, self.server, loop=self.loop, **self._kwargs)

    def _refuse(self) -> None:
        self._refused += 1
        if self.metrics is not None:
            self.metrics.connections_refused.inc()
        if not self._refusing:
            self._refusing = True
            self.logger.warning(
                "connection limit reached, closing new connections",
                max_connections=self.limits.max_connections,
                open=len(self._live),
            )

    def opened(self, conn: GuardedRequestHandler) -> None:
        self._live.add(conn)

    def closed(self, conn: GuardedRequestHandler) -> None:
        self._live.discard(conn)
        if self._refusing and len(self._live) <= self._resume_at:
            self.logger.info(
                "connection limit no longer reached",
                refused=self._refused,
                open=len(self._live),
                max_connections=self.limits.max_connections,
            )
            self._refusing, self._refused = False, 0

    def timed_out(self, phase: str, conn: GuardedRequestHandler) -> None:
        if self.metrics is not None:
            self.metrics.client_timeouts.labels(phase).inc()
        self.logger.debug("client connection timed out", phase=phase, client=conn.client)

    def _observe(self, handler: Handler) -> Handler:
        """The server's request handler, telling the connection when a request starts and
        ends (so its head and body timers know what is running)."""

        async def observed(request: web.BaseRequest) -> web.StreamResponse:
            conn = request.protocol
            if not isinstance(conn, GuardedRequestHandler):  # served by another site
                return await handler(request)
            conn.request_started(request.content)
            try:
                return await handler(request)
            finally:
                conn.request_ended()

        return observed

    def malformed(self, conn: GuardedRequestHandler, exc: HttpProcessingError) -> web.Response:
        """A request aiohttp's parser refused: a provider-shaped 400 that echoes nothing it
        sent, and one log line naming only the kind of error."""
        request_id = uuid.uuid4().hex
        method, path = request_line(conn.head)
        provider, route = self.shape(path)
        reason = describe_parse_error(exc, self.limits.max_header_bytes)
        body = provider.error_body(
            "invalid_request_error", f"malformed HTTP request: {reason}", "malformed_request"
        )
        self.logger.info(
            "request",
            **unparsed_request_fields(
                request_id=request_id,
                route=route,
                method=method,
                path=path,
                status=400,
                error=f"malformed request: {reason}",
                client=conn.client,
            ),
        )
        if self.metrics is not None:
            self.metrics.count_refused(route, 400)
        response = web.Response(
            status=400,
            body=body,
            content_type="application/json",
            headers={"x-proxy-request-id": request_id},
        )
        response.force_close()
        return response


class GuardedRequestHandler(RequestHandler):
    """aiohttp's HTTP/1 protocol with a head timer, a body timer and a quiet 400."""

    __slots__ = ("_body", "_body_timer", "_busy", "_guard", "_head_timer", "head")

    def __init__(self, guard: ConnectionGuard, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._busy = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None
        self.head = b""
        """The start of the request being received (its line first), kept until it parsed."""

    @property
    def client(self) -> str | None:
        peer = self.peername
        return peer[0] if isinstance(peer, tuple) else peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._guard.opened(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel(self._head_timer)
        self._cancel(self._body_timer)
        self._head_timer = self._body_timer = None
        self._guard.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            if self._head_timer is None:  # the first bytes of a request's head
                self.head = b""
                timeout = self._guard.limits.header_timeout_s
                self._head_timer = self._loop.call_later(timeout, self._head_timeout)
            if len(self.head) < _HEAD_KEEP and b"\n" not in self.head:
                self.head += data[:_HEAD_KEEP]
        body, parsed = self._body, self._request_count
        super().data_received(data)
        if body is not None and self._request_count != parsed and not body.is_eof():
            # A message can only follow the body's end, so this is a parse error inside it:
            # fail the read the handler waits on, and answer nothing more on this connection.
            body.set_exception(RequestPayloadError("malformed request body"))
            body.feed_eof()
            self.close()

    def request_started(self, body: StreamReader) -> None:
        self._busy = True
        self._cancel(self._head_timer)
        self._head_timer = None
        if not body.is_eof():
            self._body = body
            timeout = self._guard.limits.body_timeout_s
            self._body_timer = self._loop.call_later(timeout, self._body_timeout)

    def request_ended(self) -> None:
        self._busy = False
        self._cancel(self._body_timer)
        self._body_timer, self._body = None, None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if not self._busy and self.transport is not None:
            self._guard.timed_out("header", self)
            self.force_close()

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self._body is not None and not self._body.is_eof() and self.transport is not None:
            self._guard.timed_out("body", self)
            self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status == 400 and isinstance(exc, HttpProcessingError):
            return self._guard.malformed(self, exc)
        return super().handle_error(request, status, exc, message)

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


class _Refused(asyncio.Protocol):
    """A connection over the bound: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


_PRINTABLE = re.compile(rb"[\x21-\x7e]{1,512}")
_LLHTTP_REASON = re.compile(r"([A-Z][a-z]+(?: [a-z]+){0,8}):\n")
"""llhttp's own description heading aiohttp's message ("Invalid header value char:\n\n  b'...'"):
plain lowercase words, so no header name or value can pass for one."""


def request_line(head: bytes) -> tuple[str, str]:
    """Method and path (no query) of a request's first line, when they are printable ASCII;
    ``?`` and ``""`` otherwise (they only go to the log, never into a response)."""
    parts = head.split(b"\n", 1)[0].split(b" ")
    method = parts[0].decode() if _PRINTABLE.fullmatch(parts[0]) else "?"
    target = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""
    if target.startswith((b"http://", b"https://")):  # absolute form
        target = b"/" + target.split(b"/", 3)[-1] if target.count(b"/") >= 3 else b"/"
    path = target.decode() if _PRINTABLE.fullmatch(target) else ""
    return method, path


def describe_parse_error(exc: HttpProcessingError, max_header_bytes: int) -> str:
    """What kind of error, in words that carry none of the request's bytes."""
    if isinstance(exc, LineTooLong):
        return f"a request line or header is longer than {max_header_bytes} bytes"
    if isinstance(exc, BadHttpMethod):
        return "bad HTTP method (TLS sent to a plain HTTP port?)"
    if isinstance(exc, InvalidURLError):
        return "invalid request target"
    if isinstance(exc, BadStatusLine):
        return "malformed request line"
    found = _LLHTTP_REASON.match(exc.message) if isinstance(exc.message, str) else None
    if found is not None:
        return found.group(1).lower()
    return "malformed headers or framing"
