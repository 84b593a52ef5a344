"""A bare TCP server playing an upstream, for what the shipped fake cannot do: record a request's
exact bytes (the fake's aiohttp decodes bodies and headers before it sees them) and answer with
exactly the bytes a test scripts (a malformed status line, a body cut by a TCP reset)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RawRequest:
    head: bytes
    """Request line and header lines as received, up to and without the blank line."""
    body: bytes

    @property
    def path(self) -> bytes:
        return self.head.split(b" ", 2)[1]

    def header(self, name: bytes) -> bytes | None:
        """The first header ``name`` (case-insensitive), its value byte for byte."""
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower():
                return value.strip(b" \t")
        return None


Script = Callable[[RawRequest, asyncio.StreamWriter], Awaitable[None]]
"""Writes the answer to one request; the connection is closed (FIN) once it returns."""


def reply(data: bytes) -> Script:
    """Answer every request with ``data``, byte for byte."""

    async def script(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()

    return script


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST instead of a FIN (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class RawUpstream:
    """Records each request in ``requests`` and answers it with ``script``; ``url`` is set
    once serving (see :func:`raw_upstream`)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[RawRequest] = []
        self.url = ""
        self.connections: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections[writer] = task
        try:
            request = await read_request(reader)
            if request is None:
                return
            self.requests.append(request)
            await self.script(request, writer)
        except ConnectionError:
            pass
        finally:
            writer.close()
            del self.connections[writer]

    async def close(self) -> None:
        """End connections still open (the proxy's idle keep-alives, a script still waiting):
        their handlers see the end of input and return."""
        for writer in list(self.connections):
            writer.close()
        if self.connections:
            await asyncio.wait(set(self.connections.values()), timeout=5)


async def read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    """One request framed by Content-Length or chunked (what the proxy's client sends)."""
    try:
        head = (await reader.readuntil(b"\r\n\r\n"))[:-4]
    except asyncio.IncompleteReadError:
        return None
    request = RawRequest(head, b"")
    length = request.header(b"content-length")
    if length is not None:
        return RawRequest(head, await reader.readexactly(int(length)))
    if (request.header(b"transfer-encoding") or b"").lower() == b"chunked":
        return RawRequest(head, await _read_chunks(reader))
    return request


async def _read_chunks(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        body += await reader.readexactly(size)
        await reader.readexactly(2)
    await reader.readuntil(b"\r\n")  # no trailers from the proxy's client
    return body


@contextlib.asynccontextmanager
async def raw_upstream(script: Script) -> AsyncIterator[RawUpstream]:
    """A :class:`RawUpstream` on an ephemeral port for the ``async with`` block."""
    upstream = RawUpstream(script)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        try:
            yield upstream
        finally:
            await upstream.close()
