"""Client connections against the real proxy process: slow and idle connections are closed by
their timeouts while real requests are served, connections over the bound are closed and logged
once, malformed HTTP gets a provider-shaped 400 that echoes nothing, and the backlog is set."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.fake_upstream import FakeUpstream
from tests.conftest import base_config, free_port
from tests.functional.service_support import CHAT, ServiceProcess, eventually, post


async def metric(url: str, name: str, **labels: str) -> float:
    """The sum of one metric's samples with ``labels`` from /metrics."""
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/metrics", headers={"Connection": "close"}) as resp:
            text = await resp.text()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = 20.0) -> bytes:
    """Everything the proxy sends until it closes the connection (with a FIN, or a reset when
    it closed with our bytes unread); a bounded wait."""
    received = b""

    async def read_all() -> None:
        nonlocal received
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                received += chunk

    await asyncio.wait_for(read_all(), timeout)
    return received


async def raw_exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read until the proxy closes: status, headers (lower-case), body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        response = await read_until_closed(reader)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


async def trickle(writer: asyncio.StreamWriter, byte: bytes = b"x", every_s: float = 0.2) -> None:
    """Send one byte at a time until the proxy closes the connection."""
    with contextlib.suppress(ConnectionError):
        while not writer.is_closing():
            writer.write(byte)
            await writer.drain()
            await asyncio.sleep(every_s)


@pytest.fixture
async def guarded(fake: FakeUpstream, tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    """The proxy with one-second head and body timeouts and a 1.5 s idle timeout."""
    listen = {
        "host": "127.0.0.1",
        "port": 8080,
        "header_timeout_s": 1,
        "body_timeout_s": 1,
        "idle_timeout_s": 1.5,
    }
    proxy = ServiceProcess(base_config(fake.url, listen=listen), tmp_path, free_port())
    await proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


async def test_slow_and_idle_connections_are_closed_while_real_requests_are_served(
    guarded: ServiceProcess,
) -> None:
    proxy = guarded
    idle = await asyncio.open_connection("127.0.0.1", proxy.port)
    slow_head = await asyncio.open_connection("127.0.0.1", proxy.port)
    slow_head[1].write(b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: p\r\nX-Slow: ")
    slow_body = await asyncio.open_connection("127.0.0.1", proxy.port)
    slow_body[1].write(
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: p\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
    )
    trickles = [asyncio.create_task(trickle(w)) for _, w in (slow_head, slow_body)]
    try:
        for _ in range(5):  # served while the three are open
            assert 200 == (await post(proxy.url + CHAT))[0]
        answers = [await read_until_closed(r) for r, _ in (idle, slow_head, slow_body)]
        assert [b"", b"", b""] == answers  # closed without a response
        assert 200 == (await post(proxy.url + CHAT))[0]
    finally:
        for task in trickles:
            task.cancel()
        for _, writer in (idle, slow_head, slow_body):
            writer.close()
    timeouts = {
        phase: await metric(proxy.url, "llm_proxy_client_timeouts_total", phase=phase)
        for phase in ("header", "body")
    }
    assert {"header": 1.0, "body": 1.0} == timeouts
    assert "Traceback" not in proxy.output()


async def test_connections_over_the_bound_are_closed_and_logged_once(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    listen = {"host": "127.0.0.1", "port": 8080, "max_connections": 3}
    proxy = ServiceProcess(base_config(fake.url, listen=listen), tmp_path, free_port())
    await proxy.start()
    health = b"GET /healthz HTTP/1.1\r\nHost: p\r\n\r\n"
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:

        async def hold_one() -> bool:
            """A keep-alive connection the proxy accepted (it answered a request on it)."""
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(health)
            if (await reader.read(12)).startswith(b"HTTP/1.1 200"):
                held.append((reader, writer))
                return True
            writer.close()  # the start-up health checks may still hold a slot for a moment
            return False

        for _ in range(3):
            await eventually(hold_one)
        for _ in range(4):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(health)
            assert b"" == await read_until_closed(reader)
            writer.close()
        for _, writer in held:
            writer.close()
        await eventually(lambda: proxy.events("connection limit no longer reached"))
        assert 200 == (await post(proxy.url + CHAT))[0]
        reached = proxy.events("connection limit reached, closing new connections")
        assert [(3, 3)] == [(e["max_connections"], e["open"]) for e in reached]
        cleared = proxy.events("connection limit no longer reached")
        assert [4] == [e["refused"] for e in cleared]
        assert 4.0 == await metric(proxy.url, "llm_proxy_connections_refused_total")
    finally:
        proxy.stop()


SECRET = b"sk-ant-api03-secretvalue"
MALFORMED = [
    pytest.param(
        b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: p\r\nx-api-key: "
        + SECRET
        + b"\x00\r\n\r\n",
        "anthropic",
        id="NUL in a header value",
    ),
    pytest.param(
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer "
        + SECRET
        + b"A" * 9000
        + b"\r\n\r\n",
        "openai",
        id="over-long header",
    ),
    pytest.param(
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: p\r\nX-Api\x01Key: "
        + SECRET
        + b"\r\n\r\n",
        "openai",
        id="bad byte in a header name",
    ),
    pytest.param(
        b"POST /anthropic/v1/messages HTTP/1.1\r\nHost: p\r\nx-api-key: " + SECRET + b"\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + SECRET + b"\r\n0\r\n\r\n",
        "anthropic",
        id="bad chunked encoding",
    ),
    pytest.param(
        b"POST /v1/messages HTTP/1.1\r\nHost: p\r\nx-api-key: " + SECRET + b"\x7f\r\n\r\n",
        "anthropic",
        id="unrouted Anthropic path",
    ),
]


def provider_shape(body: dict[str, Any]) -> str:
    if body.get("type") == "error" and set(body["error"]) == {"type", "message"}:
        return "anthropic"
    assert {"message", "type", "param", "code"} == set(body["error"])
    return "openai"


@pytest.fixture
async def plain(fake: FakeUpstream, tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    """The proxy with the default connection settings."""
    proxy = ServiceProcess(base_config(fake.url), tmp_path, free_port())
    await proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.mark.parametrize(("request_bytes", "provider"), MALFORMED)
async def test_malformed_http_gets_a_provider_shaped_400_that_echoes_nothing(
    plain: ServiceProcess, request_bytes: bytes, provider: str
) -> None:
    proxy = plain
    status, headers, raw_body = await raw_exchange(proxy.port, request_bytes)
    body = json.loads(raw_body)
    assert (400, "application/json", provider) == (
        status,
        headers["content-type"].split(";")[0],
        provider_shape(body),
    )
    assert body["error"]["message"].startswith("malformed HTTP request: ")
    for leak in (SECRET, b"x-api-key", b"Authorization", b"AAAA", b"zz"):
        assert leak not in raw_body and leak.decode() not in str(headers)
    request_id = headers["x-proxy-request-id"]
    lines = await eventually(lambda: proxy.events("request"))
    assert [(request_id, 400)] == [(x["request_id"], x["status"]) for x in lines]
    assert 200 == (await post(proxy.url + CHAT))[0]  # still serving
    output = proxy.output()
    assert "Traceback" not in output and SECRET.decode() not in output
    assert [] == [line for line in output.splitlines() if not line.startswith("{")]


def listen_backlogs(port: int) -> list[int]:
    """The accept-queue sizes (``ss``'s Send-Q for a listening socket) on ``port``."""
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return [int(line.split()[2]) for line in out.splitlines() if line.strip()]


@pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) not installed")
@pytest.mark.parametrize(("workers", "backlog"), [(1, 200), (2, 300), (1, None)])
async def test_listen_backlog_is_configurable_and_set_on_every_worker(
    fake: FakeUpstream, tmp_path: Path, workers: int, backlog: int | None
) -> None:
    listen: dict[str, Any] = {"host": "127.0.0.1", "port": 8080}
    if backlog is not None:
        listen["backlog"] = backlog
    raw = base_config(fake.url, listen=listen)
    proxy = ServiceProcess(raw, tmp_path, free_port(), "--workers", str(workers))
    await proxy.start()
    try:
        if workers > 1:
            await proxy.all_workers_ready()
        cap = int(await asyncio.to_thread(Path("/proc/sys/net/core/somaxconn").read_text))
        expected = min(backlog or 1024, cap)
        assert [expected] * workers == listen_backlogs(proxy.port)
    finally:
        proxy.stop()
