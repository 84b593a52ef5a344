"""The response head leaves with the body's first bytes when they came with the upstream's
head (one send, not two), and on its own, at once, when they did not (never delayed)."""

from __future__ import annotations

import asyncio
from unittest import mock

from aiohttp import HttpVersion, HttpVersion10, HttpVersion11
from aiohttp.http_writer import StreamWriter
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.exchange import Exchange
from proxy.relay import ready_bytes, relay, start_response

BODY = b'{"id":"chatcmpl-1","choices":[]}'


class _Body:
    """An upstream body: ``ready`` arrived with the head, ``later`` arrives on a read."""

    def __init__(self, ready: bytes, later: list[bytes], gate: asyncio.Event) -> None:
        self._ready = ready
        self._later = later
        self._gate = gate

    def read_nowait(self) -> bytes:
        ready, self._ready = self._ready, b""
        return ready

    async def readany(self) -> bytes:
        if self._ready:
            return self.read_nowait()
        await self._gate.wait()
        return self._later.pop(0) if self._later else b""


class _Upstream:
    def __init__(self, body: _Body, sized: int | None) -> None:
        headers = CIMultiDict({"Content-Type": "application/json"})
        if sized is not None:
            headers["Content-Length"] = str(sized)
        self.status = 200
        self.reason = "OK"
        self.headers = CIMultiDictProxy(headers)
        self.content_length = sized
        self.content = body

    def cut_short(self) -> str | None:
        return None


class _Wire:
    """A transport that records each send."""

    def __init__(self) -> None:
        self.sends: list[bytes] = []
        self.transport = mock.Mock()
        self.transport.is_closing.return_value = False
        self.transport.write.side_effect = self.sends.append
        self.transport.writelines.side_effect = lambda parts: self.sends.append(b"".join(parts))


async def _serve(
    body: _Body, sized: int | None, version: HttpVersion = HttpVersion11, wire: _Wire | None = None
) -> _Wire:
    wire = wire or _Wire()
    protocol = mock.Mock(transport=wire.transport, _reading_paused=False, _paused=False)
    loop = asyncio.get_running_loop()
    writer = StreamWriter(protocol, loop)
    request = make_mocked_request(
        "POST",
        "/v1/chat/completions",
        version=version,
        writer=writer,
        protocol=protocol,
        transport=wire.transport,
    )
    ex = Exchange(request)
    upstream = _Upstream(body, sized)
    first = ready_bytes(upstream)  # type: ignore[arg-type]
    client = await start_response(ex, upstream, first)  # type: ignore[arg-type]
    async with asyncio.timeout(5) as timer:
        await relay(ex, upstream, client, [], 5.0, timer, loop.time() + 5, first)  # type: ignore[arg-type]
    assert ex.bytes_out == len(BODY)
    return wire


async def test_a_body_that_came_with_the_head_leaves_in_one_send() -> None:
    gate = asyncio.Event()
    gate.set()
    wire = await _serve(_Body(BODY, [], gate), len(BODY))
    assert len(wire.sends) == 1
    head, _, body = wire.sends[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert f"Content-Length: {len(BODY)}".encode() in head
    assert body == BODY


async def test_a_chunked_body_that_came_with_the_head_leaves_with_it() -> None:
    gate = asyncio.Event()
    gate.set()
    wire = await _serve(_Body(BODY, [], gate), None)
    assert wire.sends[0].startswith(b"HTTP/1.1 200 OK")
    assert b"Transfer-Encoding: chunked" in wire.sends[0]
    assert wire.sends[0].endswith(b"%x\r\n%s\r\n" % (len(BODY), BODY))
    assert b"".join(wire.sends).endswith(b"0\r\n\r\n")


async def test_the_head_is_not_held_for_a_body_still_on_its_way() -> None:
    gate = asyncio.Event()
    body = _Body(b"", [BODY], gate)
    wire = _Wire()
    task = asyncio.create_task(_serve(body, len(BODY), wire=wire))
    await asyncio.sleep(0.05)
    assert not task.done()  # the relay waits for the body; the client has the head already
    assert len(wire.sends) == 1 and wire.sends[0].endswith(b"\r\n\r\n")
    gate.set()
    await task
    assert len(wire.sends) == 2
    assert wire.sends[0].startswith(b"HTTP/1.1 200 OK") and wire.sends[0].endswith(b"\r\n\r\n")
    assert wire.sends[1] == BODY


async def test_an_http10_client_without_a_length_gets_the_head_alone() -> None:
    gate = asyncio.Event()
    gate.set()
    wire = await _serve(_Body(BODY, [], gate), None, version=HttpVersion10)
    assert wire.sends[0].startswith(b"HTTP/1.0 200 OK")
    assert wire.sends[0].endswith(b"\r\n\r\n")
    assert b"chunked" not in wire.sends[0]
    assert b"".join(wire.sends[1:]) == BODY
