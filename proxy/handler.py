"""The one request handler. Reads top to bottom like the request's life:

arrival -> route -> body -> plugins' on_request -> attempt loop -> relay -> on_complete.

Every request gets an Exchange on arrival and ends in ``pipeline.complete`` (one log line),
whatever happens. Failures are rendered once, here: a ProxyError in the route's provider
shape, anything unexpected as a provider-shaped 500 that the log line records.
"""

from __future__ import annotations

import asyncio
import time
import traceback

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .errors import (
    BadRequest,
    BodyTooLarge,
    InternalError,
    ProxyError,
    RouteNotFound,
    UpstreamTimeout,
)
from .exchange import Exchange
from .providers import ProviderSpec, guess_provider
from .relay import StreamAborted, ready_bytes, relay, start_response
from .resilience.attempts import GiveUp
from .routing import escapes_base
from .state import AppState, StateHolder


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole request body, refused early (by Content-Length) or as soon as it grows too big."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise BodyTooLarge(f"request body of {length} bytes exceeds the limit of {max_bytes}")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"request body exceeds the limit of {max_bytes} bytes") from None


def unforwardable_header(request: web.Request) -> str | None:
    """The name of a header whose value is not valid UTF-8: it could not go upstream
    byte-for-byte, and the proxy never alters what it forwards."""
    for name, value in request.headers.items():
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return name
    return None


async def handle(request: web.Request, state: AppState) -> web.StreamResponse:
    """Serve one request on ``state``, the config generation it started under."""
    ex = Exchange(request, time.monotonic())  # arrival: timings include reading the body
    try:
        return await _Serving(state, ex).run()
    except asyncio.CancelledError:
        reason = "cancelled by shutdown" if state.draining else "client disconnected"
        ex.error = ex.error or reason
        raise
    finally:
        await state.pipeline.complete(ex)


class _Serving:
    """One request's path through the proxy, and the one place its failures are rendered."""

    def __init__(self, state: AppState, ex: Exchange) -> None:
        self.state = state
        self.ex = ex
        self.client: web.StreamResponse | None = None
        self.deadline = 0.0

    @property
    def provider(self) -> ProviderSpec:
        route = self.ex.route
        return route.provider if route is not None else guess_provider(self.ex.request.path)

    async def run(self) -> web.StreamResponse:
        try:
            return await self._proxy()
        except ProxyError as error:  # raised before any byte went to the client
            return self._render(error)
        except TimeoutError:
            return self._timed_out()
        except StreamAborted as exc:  # only relay() raises it, so the response has started
            self.ex.error = exc.reason
            return self._abort()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            self.ex.error = "client disconnected"
            return self.client if self.client is not None else web.Response(status=499)
        except Exception as exc:  # a bug: provider-shaped 500, recorded, no traceback out
            return self._unexpected(exc)

    async def _proxy(self) -> web.StreamResponse:
        state, ex = self.state, self.ex
        path = ex.request.rel_url.raw_path
        match = state.router.match(path)
        if match is None:
            raise RouteNotFound(f"no route for {path}; configured prefixes: {state.prefixes}")
        ex.routed(*match)
        if escapes_base(ex.tail):
            raise BadRequest("the path must not contain '.' or '..' segments, in any encoding")
        bad = unforwardable_header(ex.request)
        if bad is not None:
            raise BadRequest(f"header {bad!r} is not valid UTF-8 and cannot be forwarded")
        ex.received(await read_body(ex.request, state.config.limits.max_body_bytes))
        timeouts = state.config.timeouts
        self.deadline = deadline = asyncio.get_running_loop().time() + timeouts.total_s
        async with asyncio.timeout_at(deadline) as timer:
            answer = await state.pipeline.on_request(ex)
            if answer is not None:
                ex.status = answer.status
                return answer
            result = await state.dispatcher.dispatch(ex)
            self._note_attempts()
            if isinstance(result, GiveUp):
                raise result.error
            ex.upstream = result.upstream
            ex.response_headers["x-proxy-upstream"] = result.upstream.name
            if result.translation is not None:
                ex.translation = result.translation
                crossing = f"{result.translation.client}->{result.translation.upstream}"
                ex.response_headers["x-proxy-translated"] = crossing
            upstream = result.response
            try:
                first = ready_bytes(upstream)
                self.client = await start_response(ex, upstream, first)
                taps = state.pipeline.chunk_taps
                await relay(
                    ex, upstream, self.client, taps, timeouts.idle_s, timer, deadline, first
                )
            except BaseException:
                upstream.close()
                raise
            upstream.release()
            if result.settle is not None:
                await result.settle()
            return self.client

    def _note_attempts(self) -> None:
        """The proxy's own response headers about what the attempt loop did."""
        ex = self.ex
        ex.response_headers["x-proxy-attempts"] = str(sum(1 for a in ex.attempts if a.sent))
        if ex.retry.exhausted:
            ex.response_headers["x-should-retry"] = "false"

    def _render(self, error: ProxyError) -> web.StreamResponse:
        ex = self.ex
        if self.client is not None:  # cannot happen by construction; never send twice
            ex.error = ex.error or error.message
            return self._abort()
        ex.status, ex.error = error.status, error.message
        return error.render(self.provider, ex.request_id, ex.response_headers)

    def _timed_out(self) -> web.StreamResponse:
        if self.client is None:
            total = self.state.config.timeouts.total_s
            return self._render(
                UpstreamTimeout(f"request exceeded the total timeout of {total:g}s")
            )
        idle = asyncio.get_running_loop().time() < self.deadline
        self.ex.error = "upstream idle timeout" if idle else "total timeout"
        return self._abort()

    def _unexpected(self, exc: Exception) -> web.StreamResponse:
        ex = self.ex
        where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        origin = f" at {where[0].name}:{where[0].lineno}" if where else ""
        ex.error = f"internal error: {type(exc).__name__}{origin}: {str(exc)[:200]}"
        if self.client is not None:
            return self._abort()
        error = InternalError(f"the proxy failed to handle this request (id {ex.request_id})")
        response = error.render(self.provider, ex.request_id, ex.response_headers)
        ex.status = error.status
        return response

    def _abort(self) -> web.StreamResponse:
        """Cut the client connection so it sees an incomplete response, never a faked end."""
        transport = self.ex.request.transport
        if transport is not None:
            transport.close()
        assert self.client is not None
        return self.client


class HttpRefusal(ProxyError):
    """What aiohttp itself refuses before the handler runs (no route for ``OPTIONS *``, an
    ``Expect`` it does not know), rendered like every other error of the proxy."""

    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    code = "invalid_request"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def http_errors(holder: StateHolder) -> Middleware:
    """aiohttp's own 4xx answers (plain text) become provider-shaped, with a log line."""

    @web.middleware
    async def provider_shaped(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            state = holder.current
            ex = Exchange(request)
            error = HttpRefusal(exc.status, exc.text or exc.reason)
            ex.status, ex.error = error.status, error.message
            response = error.render(guess_provider(request.path), ex.request_id)
            await state.pipeline.complete(ex)
            return response

    return provider_shaped


async def expect_continue(request: web.Request) -> None:
    """``Expect: 100-continue`` is answered as aiohttp does; any other expectation is
    ignored (RFC 9110 allows it) rather than refused in plain text before the handler."""
    if request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
