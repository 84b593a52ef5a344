"""Shared fixtures: a real fake upstream on an ephemeral port, the real proxy in front of it,
and the proxy's log lines captured as parsed JSON."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from proxy import config as config_mod
from proxy.app import make_app
from proxy.fake_upstream import FakeUpstream


class LogCapture(io.StringIO):
    """The proxy's log stream; ``lines()`` parses what was written so far."""

    def isatty(self) -> bool:
        return False

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines() if line.strip()]

    def requests(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == "request"]

    async def settled(self, at_least: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The request lines once ``at_least`` exist and no more arrive for a moment.

        A request's line is written by its completion hooks, just after the client has seen
        the response end, so a test reads it after this rather than at once.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        seen = -1
        while asyncio.get_running_loop().time() < deadline:
            lines = self.requests()
            if len(lines) >= at_least and len(lines) == seen:
                return lines
            seen = len(lines)
            await asyncio.sleep(0.02)
        return self.requests()

    async def last(self) -> dict[str, Any]:
        return (await self.settled())[-1]


async def fetch(method: str, url: Any, **kwargs: Any) -> tuple[int, CIMultiDict[str], bytes]:
    """One request on a fresh session, nothing decompressed: status, headers, raw body."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.request(method, url, **kwargs) as resp:
            return resp.status, CIMultiDict(resp.headers), await resp.read()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def fake(aiohttp_server: Callable[..., Any]) -> FakeUpstream:
    upstream = FakeUpstream()
    server: TestServer = await aiohttp_server(upstream.make_app())
    upstream.url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    return upstream


def base_config(upstream_url: str, **overrides: Any) -> dict[str, Any]:
    """A config dict with an OpenAI and an Anthropic route, both aimed at ``upstream_url``."""
    raw: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 8080},  # in-process tests ignore it
        "routes": [
            {
                "prefix": "/openai",
                "provider": "openai",
                "upstreams": [{"name": "fake-openai", "base_url": upstream_url}],
            },
            {
                "prefix": "/anthropic",
                "provider": "anthropic",
                "upstreams": [{"name": "fake-anthropic", "base_url": upstream_url}],
            },
        ],
    }
    raw.update(overrides)
    return raw


@pytest.fixture
def logs() -> LogCapture:
    return LogCapture()


@pytest.fixture
def start_proxy(aiohttp_server: Callable[..., Any], logs: LogCapture) -> Callable[..., Any]:
    """``await start_proxy(raw_config_dict, **make_app_options)`` -> the proxy's base URL."""

    async def start(raw: dict[str, Any], **app_options: Any) -> str:
        cfg = config_mod.from_dict(raw, env={})
        # aiohttp's TestServer already enables handler_cancellation, as serve() does
        app = make_app(cfg, log_stream=logs, **app_options)
        server: TestServer = await aiohttp_server(app)
        return str(server.make_url("")).rstrip("/")

    return start


@pytest.fixture
async def proxy_url(fake: FakeUpstream, start_proxy: Callable[..., Any]) -> str:
    """The proxy with the default two routes in front of the fake upstream."""
    return await start_proxy(base_config(fake.url))  # type: ignore[attr-defined]
