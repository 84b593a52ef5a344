"""Writing SSE one event per ``write()``, with pacing, hold/release, cuts and disconnects."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Protocol

from aiohttp import web

from .calls import Plan, Reply
from .faults import Provider, stream_error_event

_POLL_S = 0.02
"""How often a paused response checks that its client is still there."""


class Paused(ConnectionResetError):
    """The client went away while the fake was waiting."""


class StreamState(Protocol):
    hold_after_chunk: int | None
    release: asyncio.Event
    stream_disconnected: asyncio.Event
    chunks_sent: int


def _gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def cut(request: web.BaseRequest) -> None:
    """Drop the connection: bytes already written are flushed, then FIN, no terminator."""
    if request.transport is not None:
        request.transport.close()


async def pause(
    request: web.BaseRequest, *, seconds: float = 0.0, until: asyncio.Event | None = None
) -> None:
    """Sleep ``seconds`` or wait for ``until``, raising Paused as soon as the client leaves.

    Polling (rather than relying on handler cancellation) makes disconnects visible even
    when the app runs under a runner started without ``handler_cancellation``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        if _gone(request):
            raise Paused("client went away")
        if until is not None:
            if until.is_set():
                return
            try:
                await asyncio.wait_for(until.wait(), _POLL_S)
            except TimeoutError:
                continue
            return
        left = deadline - loop.time()
        if left <= 0:
            return
        await asyncio.sleep(min(left, _POLL_S))


async def write_stream(
    state: StreamState,
    request: web.Request,
    reply: Reply,
    plan: Plan,
    headers: Mapping[str, str],
    provider: Provider,
    on_write: Callable[[bytes], None] | None = None,
) -> web.StreamResponse:
    """Send ``reply.events`` one ``write()`` each; ``plan.fault`` may cut or error mid-way.
    ``on_write`` sees each event after its write succeeded (billing.py)."""
    resp = web.StreamResponse(status=reply.status, headers=headers)
    resp.headers["Cache-Control"] = "no-cache"
    events = reply.events or ()
    fault = plan.fault
    try:
        await resp.prepare(request)
        for sent in range(len(events) + 1):
            if fault.cut_after_chunks == sent:
                cut(request)
                return resp
            if fault.end_after_chunks == sent:
                return resp
            if fault.sse_error_after_chunks == sent:
                error = stream_error_event(provider, request.path)
                await resp.write(error)
                state.chunks_sent += 1
                if on_write is not None:
                    on_write(error)
                return resp
            if sent == len(events):
                break
            if sent and plan.chunk_delay_s > 0:
                await pause(request, seconds=plan.chunk_delay_s)
            await resp.write(events[sent])
            state.chunks_sent += 1
            if on_write is not None:
                on_write(events[sent])
            if state.hold_after_chunk == sent + 1:
                await pause(request, until=state.release)
    except ConnectionResetError:
        state.stream_disconnected.set()
    except asyncio.CancelledError:
        state.stream_disconnected.set()
        raise
    return resp
