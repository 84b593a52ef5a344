"""Send one case over a raw TCP connection and read what comes back, as h11 parses it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass
from enum import StrEnum

import h11

from . import FuzzCase
from .wire import Ending

_READ = 1 << 16
_KEEP_RAW = 1 << 16
"""Raw bytes kept per connection, for the report and the secret check (bodies are kept whole
in the parsed response)."""


class Outcome(StrEnum):
    ANSWERED = "answered"
    CLOSED = "closed"
    """The proxy closed (FIN or RST) before any response byte."""
    TIMED_OUT = "timed_out"
    """Neither an answer nor a close within the timeout."""
    MALFORMED = "malformed"
    """Bytes came back that are not one complete HTTP/1.x response."""
    ABORTED = "aborted"
    """The client closed right after sending: nothing to read."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: tuple[tuple[str, str], ...]
    """Names lower-cased, values decoded as latin-1 (byte for byte)."""
    body: bytes

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)


@dataclass(frozen=True, slots=True)
class Reply:
    """What came back on one connection."""

    outcome: Outcome
    response: Response | None = None
    raw: bytes = b""
    """The first bytes received, for reports and the secret check."""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Result:
    case: FuzzCase
    reply: Reply


async def send(case: FuzzCase, host: str, port: int, timeout: float) -> Result:
    """Send one case, ending the connection as the case says (every other abort with an RST)."""
    reset = case.index % 2 == 0
    return Result(case, await roundtrip(host, port, case.data, timeout, case.ending, reset=reset))


async def roundtrip(
    host: str,
    port: int,
    data: bytes,
    timeout: float,
    ending: Ending = Ending.WAIT,
    *,
    reset: bool = False,
) -> Reply:
    """Connect, send ``data`` while reading, end the client side as ``ending`` says (an abort
    closes with an RST when ``reset``, else a FIN), and read one response."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        async with asyncio.timeout(timeout):
            if ending is Ending.ABORT:
                await _write(writer, data)
                _abort(writer, reset=reset)
                return Reply(Outcome.ABORTED)
            sending = asyncio.create_task(_write(writer, data, ending))
            try:
                return await _read(reader)
            finally:
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sending
    except TimeoutError:
        return Reply(Outcome.TIMED_OUT)
    finally:
        writer.close()


async def _write(writer: asyncio.StreamWriter, data: bytes, ending: Ending = Ending.WAIT) -> None:
    """Send everything; the proxy may answer and close before the end (then stop quietly)."""
    with contextlib.suppress(ConnectionError):
        writer.write(data)
        await writer.drain()
        if ending is Ending.HALF_CLOSE:
            writer.write_eof()


def _abort(writer: asyncio.StreamWriter, *, reset: bool) -> None:
    """Close at once: with an RST (linger 0) or a plain FIN."""
    sock = writer.get_extra_info("socket")
    if reset and sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort() if reset else writer.close()


async def _read(reader: asyncio.StreamReader) -> Reply:
    """Until one complete response (interim 1xx answers skipped), or the connection ends."""
    parser = h11.Connection(h11.CLIENT, max_incomplete_event_size=1 << 20)
    parser.send(h11.Request(method="POST", target="/", headers=[("Host", "fuzz")]))
    raw = bytearray()
    head: h11.Response | None = None
    body = bytearray()
    while True:
        try:
            data = await reader.read(_READ)
        except ConnectionError:
            data = b""
        if len(raw) < _KEEP_RAW:
            raw += data[: _KEEP_RAW - len(raw)]
        if not data and not raw:
            return Reply(Outcome.CLOSED)
        parser.receive_data(data)
        try:
            event = parser.next_event()
            while event is not h11.NEED_DATA:
                if isinstance(event, h11.Response):
                    head = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage) and head is not None:
                    return Reply(Outcome.ANSWERED, _response(head, body), bytes(raw))
                elif isinstance(event, h11.ConnectionClosed):
                    raise h11.RemoteProtocolError("connection closed mid-response")
                event = parser.next_event()
        except h11.RemoteProtocolError as exc:
            return Reply(Outcome.MALFORMED, raw=bytes(raw), detail=str(exc))
        if not data:
            return Reply(Outcome.MALFORMED, raw=bytes(raw), detail="connection closed mid-response")


def _response(head: h11.Response, body: bytearray) -> Response:
    headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers)
    return Response(status=head.status_code, headers=headers, body=bytes(body))
