"""Stream the upstream answer to the client chunk by chunk, as it arrives, never buffered whole."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import aiohttp
from aiohttp import web

from .exchange import Exchange
from .forward import UpstreamResponse, response_headers

ChunkTap = Callable[[Exchange, bytes], None]


class StreamAborted(Exception):
    """The stream could not be completed after bytes were sent; the client connection is cut."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def start_response(ex: Exchange, upstream: UpstreamResponse) -> web.StreamResponse:
    """Send the status line and headers: upstream's verbatim, plus the proxy's own."""
    headers = response_headers(upstream.headers)
    headers.setdefault("x-request-id", ex.request_id)
    headers["x-proxy-request-id"] = ex.request_id
    for name, value in ex.response_headers.items():
        headers[name] = value
    ctype = upstream.headers.get("Content-Type", "")
    ex.stream = ctype.startswith("text/event-stream")
    if ex.stream:
        headers.setdefault("X-Accel-Buffering", "no")
    resp = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    if upstream.content_length is not None and "Content-Length" in headers:
        resp.content_length = upstream.content_length
    ex.upstream_headers = upstream.headers
    ex.status = upstream.status
    await resp.prepare(ex.request)
    return resp


async def relay(
    ex: Exchange,
    upstream: UpstreamResponse,
    client: web.StreamResponse,
    taps: Sequence[ChunkTap],
    idle_s: float,
    timer: asyncio.Timeout,
    deadline: float,
) -> None:
    """Copy body chunks upstream -> client, showing each to the taps after it was written.

    ``timer`` is the request's timeout scope, kept at ``min(last chunk + idle_s, deadline)`` so
    one timer handles both idle gaps and the total budget. Moving a timer costs a heap
    operation, so it moves only when it would fall ``slack`` behind (a fraction of idle_s):
    a stream of small chunks does not pay for it on every chunk.
    """
    loop = asyncio.get_running_loop()
    read = upstream.content.readany
    write = client.write
    slack = min(1.0, idle_s / 10)
    scheduled = 0.0
    while True:
        now = loop.time()
        if scheduled < deadline and now + idle_s - scheduled > slack:
            scheduled = min(now + idle_s, deadline)
            timer.reschedule(scheduled)
        try:
            chunk = await read()
        except aiohttp.ClientPayloadError as exc:
            raise StreamAborted(f"upstream stream broke: {exc}") from None
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise StreamAborted(f"upstream connection lost: {type(exc).__name__}") from None
        if not chunk:
            break
        if ex.t_first_byte is None:
            ex.t_first_byte = time.monotonic()
        await write(chunk)
        ex.bytes_out += len(chunk)
        for tap in taps:
            tap(ex, chunk)
    broken = upstream.cut_short()
    if broken is not None:
        raise StreamAborted(broken)
    timer.reschedule(None)
    await client.write_eof()
