"""The one request handler. Reads top to bottom like the request's life:

route -> body -> plugins' on_request -> dispatcher (attempts, upstreams) -> relay -> on_complete.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
from aiohttp import web

from .errors import BadRequest, BodyTooLarge, ProxyError, RouteNotFound, UpstreamTimeout
from .exchange import Exchange
from .providers import guess_provider
from .relay import StreamAborted, relay, start_response
from .routing import escapes_base
from .state import AppState


def new_request_id() -> str:
    return uuid.uuid4().hex


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole request body, refused early (by Content-Length) or as soon as it grows too big."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise BodyTooLarge(f"request body of {length} bytes exceeds the limit of {max_bytes}")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"request body exceeds the limit of {max_bytes} bytes") from None


async def handle(request: web.Request, state: AppState) -> web.StreamResponse:
    """Serve one request on ``state``, the config generation it started under."""
    t_start = time.monotonic()  # arrival: timings include reading the body
    request_id = request.headers.get("x-request-id") or new_request_id()
    path = request.rel_url.raw_path
    match = state.router.match(path)
    if match is None:
        error = RouteNotFound(f"no route for {path}; configured prefixes: {state.prefixes}")
        state.log_unrouted(request, request_id, error)
        return error.render(guess_provider(path), request_id)
    route, tail = match
    if escapes_base(tail):
        error = BadRequest(f"path segments '.' and '..' are not allowed: {path}")
        state.log_unrouted(request, request_id, error)
        return error.render(route.provider, request_id)
    try:
        body = await read_body(request, state.config.limits.max_body_bytes)
    except ProxyError as error:
        state.log_unrouted(request, request_id, error)
        return error.render(route.provider, request_id)
    ex = Exchange(request, route, tail, body, request_id, t_start)
    try:
        return await _serve(state, ex)
    except asyncio.CancelledError:
        reason = "cancelled by shutdown" if state.draining else "client disconnected"
        ex.error = ex.error or reason
        raise
    finally:
        await state.pipeline.complete(ex)


async def _serve(state: AppState, ex: Exchange) -> web.StreamResponse:
    """Answer the exchange; proxy errors become provider-shaped responses before any byte."""
    loop = asyncio.get_running_loop()
    timeouts = state.config.timeouts
    deadline = loop.time() + timeouts.total_s
    client: web.StreamResponse | None = None
    try:
        async with asyncio.timeout_at(deadline) as timer:
            answer = await state.pipeline.on_request(ex)
            if answer is not None:
                ex.status = answer.status
                return answer
            upstream = await state.dispatcher.open(ex)
            try:
                client = await start_response(ex, upstream)
                await relay(
                    ex,
                    upstream,
                    client,
                    state.pipeline.chunk_taps,
                    timeouts.idle_s,
                    timer,
                    deadline,
                )
            except BaseException:
                upstream.close()
                raise
            upstream.release()
            return client
    except ProxyError as error:  # plugins and the dispatcher raise these before any byte
        ex.status, ex.error = error.status, error.message
        return error.render(ex.route.provider, ex.request_id)
    except TimeoutError:
        if client is None:
            error = UpstreamTimeout(f"request exceeded the total timeout of {timeouts.total_s:g}s")
            ex.status, ex.error = error.status, error.message
            return error.render(ex.route.provider, ex.request_id)
        ex.error = "upstream idle timeout" if loop.time() < deadline else "total timeout"
        return _abort(ex, client)
    except StreamAborted as exc:  # only relay() raises it, so the response has started
        ex.error = exc.reason
        assert client is not None
        return _abort(ex, client)
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        ex.error = "client disconnected"
        return client if client is not None else web.Response(status=499)


def _abort(ex: Exchange, client: web.StreamResponse) -> web.StreamResponse:
    """Cut the client connection so it sees an incomplete response, never a faked clean end."""
    transport = ex.request.transport
    if transport is not None:
        transport.close()
    return client
