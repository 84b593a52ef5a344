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


def ready_bytes(upstream: UpstreamResponse) -> bytes:
    """The body bytes that arrived with the head, if any; a broken body offers none here
    and breaks on the relay's first read, where it is reported."""
    try:
        return upstream.content.read_nowait()
    except (aiohttp.ClientError, OSError):
        return b""


async def start_response(
    ex: Exchange, upstream: UpstreamResponse, first: bytes
) -> web.StreamResponse:
    """Prepare the status line and headers: upstream's verbatim, plus the proxy's own.

    When the body's first bytes are already here (``first``), the head is held back and
    leaves with them in one write (aiohttp's ``Response`` buffers its head until the first
    body write): one send instead of two, and the head is not delayed, since the bytes are
    written at once. Without them the head goes out now, as the upstream's did.
    """
    headers = response_headers(upstream.headers)
    headers.setdefault("x-request-id", ex.request_id)
    headers["x-proxy-request-id"] = ex.request_id
    for name, value in ex.response_headers.items():
        headers[name] = value
    ctype = upstream.headers.get("Content-Type", "")
    ex.stream = ctype.startswith("text/event-stream")
    if ex.stream:
        headers.setdefault("X-Accel-Buffering", "no")
    sized = upstream.content_length is not None and "Content-Length" in headers
    resp: web.StreamResponse
    if first and (sized or ex.request.version >= aiohttp.HttpVersion11):
        resp = web.Response(status=upstream.status, reason=upstream.reason, headers=headers)
        if not sized:
            resp.enable_chunked_encoding()
    else:
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        if sized:
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
    first: bytes = b"",
) -> None:
    """Copy body chunks upstream -> client, showing each to the taps after it was written;
    ``first`` is what :func:`start_response` was given, the first chunk.

    ``timer`` is the request's timeout scope, kept at ``min(last chunk + idle_s, deadline)`` so
    one timer handles both idle gaps and the total budget. Moving a timer costs a heap
    operation, so it moves only when it would fall ``slack`` behind (a fraction of idle_s):
    a stream of small chunks does not pay for it on every chunk, and a sized body that has
    all arrived does not pay for it at all (its last read cannot wait).
    """
    loop = asyncio.get_running_loop()
    end = upstream.content_length
    read = upstream.content.readany
    write = client.write
    slack = min(1.0, idle_s / 10)
    scheduled = 0.0
    chunk = first
    while True:
        if chunk:
            if ex.t_first_byte is None:
                ex.t_first_byte = time.monotonic()
            await write(chunk)
            ex.bytes_out += len(chunk)
            for tap in taps:
                tap(ex, chunk)
        now = loop.time()
        if end is not None and ex.bytes_out >= end:
            pass
        elif scheduled < deadline and now + idle_s - scheduled > slack:
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
    broken = upstream.cut_short()
    if broken is not None:
        raise StreamAborted(broken)
    timer.reschedule(None)
    await client.write_eof()
