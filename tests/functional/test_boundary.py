"""One exchange from arrival, one error boundary, one log-line shape; the security wiring."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from proxy.app import default_plugins
from proxy.config import Config
from proxy.exchange import Exchange
from proxy.fake_upstream import FakeUpstream, Fault
from proxy.plugins import Plugin
from proxy.reload import Resources
from tests.conftest import LogCapture, base_config, fetch

CHAT = "/v1/chat/completions"
BODY = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()
JSON = {"Content-Type": "application/json"}


class Broken(Plugin):
    """A plugin with a bug in the phase the test names."""

    def __init__(self, phase: str) -> None:
        self.phase = phase

    async def on_request(self, ex: Exchange) -> None:
        if self.phase == "request":
            raise KeyError("a plugin bug")
        return None

    def on_chunk(self, ex: Exchange, chunk: bytes) -> None:
        if self.phase == "chunk":
            raise ZeroDivisionError("a tap bug")


def with_broken(phase: str) -> Callable[[Config, Resources], list[Plugin]]:
    return lambda config, res: [Broken(phase), *default_plugins(config, res)]


@pytest.mark.parametrize("route", ["/openai", "/anthropic"])
async def test_a_plugin_bug_is_a_provider_shaped_500_with_the_request_id(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture, route: str
) -> None:
    url = await start_proxy(base_config(fake.url), plugins=with_broken("request"))
    path = CHAT if route == "/openai" else "/v1/messages"
    status, headers, body = await fetch("POST", url + route + path, data=BODY, headers=JSON)
    rid = headers["x-proxy-request-id"]
    error = json.loads(body)
    assert (500, "application/json") == (status, headers["Content-Type"].split(";")[0])
    if route == "/openai":
        assert "server_error" == error["error"]["type"]
        assert rid in error["error"]["message"]
    else:
        assert ("error", "api_error") == (error["type"], error["error"]["type"])
    assert [] == fake.requests
    line = await logs.last()
    assert (500, rid) == (line["status"], line["request_id"])
    assert line["error"].startswith("internal error: KeyError")
    assert "error" == line["level"]
    assert "Traceback" not in logs.getvalue()


async def test_a_bug_after_the_response_started_cuts_the_stream_and_is_logged(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    url = await start_proxy(base_config(fake.url), plugins=with_broken("chunk"))
    body = json.dumps({"model": "gpt-4o", "stream": True, "messages": []}).encode()
    with pytest.raises(Exception):  # noqa: B017 - any client-side error: the body is cut
        await fetch("POST", url + "/openai" + CHAT, data=body, headers=JSON)
    line = await logs.last()
    assert (200, True) == (line["status"], line["stream"])
    assert line["error"].startswith("internal error: ZeroDivisionError")


REFUSED = [
    ("GET", "/nowhere", b"", 404),
    ("GET", "/openaix/v1/models", b"", 404),
    ("POST", "/openai/v1/%2e%2e/admin", b"", 400),
    ("POST", "/openai" + CHAT, b"x" * 2048, 413),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), REFUSED)
async def test_refused_requests_leave_the_same_log_line_as_proxied_ones(
    fake: FakeUpstream,
    start_proxy: Any,
    logs: LogCapture,
    method: str,
    path: str,
    body: bytes,
    status: int,
) -> None:
    url = await start_proxy(base_config(fake.url, limits={"max_body_bytes": 1024}))
    await fetch("POST", url + "/openai" + CHAT, data=BODY, headers=JSON)
    got, headers, payload = await fetch(
        method, URL(url + path, encoded=True), data=body, headers=JSON
    )
    assert status == got
    assert headers["x-proxy-request-id"] == headers["x-request-id"]
    assert "error" in json.loads(payload)
    lines = await logs.settled(2)
    refused = next(x for x in lines if x["request_id"] == headers["x-proxy-request-id"])
    proxied = next(x for x in lines if x is not refused)
    assert list(proxied) == list(refused)
    assert (status, headers["x-proxy-request-id"]) == (refused["status"], refused["request_id"])
    assert 1 == len(fake.requests)


async def fake_at(aiohttp_server: Any) -> FakeUpstream:
    upstream = FakeUpstream()
    server: TestServer = await aiohttp_server(upstream.make_app())
    upstream.url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    return upstream


async def test_a_replayed_error_names_the_upstream_that_sent_it(
    aiohttp_server: Any, start_proxy: Any, logs: LogCapture
) -> None:
    """The primary's 429 is what the client gets when the fallback is cooling down: headers,
    log line and metrics must name the primary, not the upstream tried last."""
    primary, secondary = await fake_at(aiohttp_server), await fake_at(aiohttp_server)
    raw = base_config(primary.url)  # type: ignore[attr-defined]
    raw["routes"][0]["upstreams"] = [
        {"name": "primary", "base_url": primary.url},  # type: ignore[attr-defined]
        {"name": "secondary", "base_url": secondary.url},  # type: ignore[attr-defined]
    ]
    url = await start_proxy(raw)
    # request 1: the primary fails asking for a long wait; the secondary serves, says it is empty
    primary.enqueue(Fault(status=500, headers={"retry-after": "100"}))
    empty = {
        "x-ratelimit-limit-requests": "1",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "100s",
    }
    secondary.enqueue(Fault(status=200, headers=empty))
    status, headers, _ = await fetch("POST", url + "/openai" + CHAT, data=BODY, headers=JSON)
    assert (200, "secondary") == (status, headers["x-proxy-upstream"])
    # request 2: the primary answers 429 beyond the budget, the secondary is cooling
    primary.clear()
    primary.enqueue(Fault(status=429, headers={"retry-after": "100"}))
    status, headers, body = await fetch("POST", url + "/openai" + CHAT, data=BODY, headers=JSON)
    assert (429, "primary") == (status, headers["x-proxy-upstream"])
    assert "Rate limit reached" in json.loads(body)["error"]["message"]  # the fake's own body
    line = (await logs.settled(2))[-1]
    assert "primary" == line["upstream"]
    assert [
        ("primary", "retryable_status"),
        ("primary", "cooling_down"),  # its retry is held back: the provider said 100 s
        ("secondary", "cooling_down"),
    ] == [(a["upstream"], a["reason"]) for a in line["attempts"]]


async def test_the_upstream_session_keeps_no_cookies(fake: FakeUpstream, start_proxy: Any) -> None:
    """One client's cookie must never reach another client's request."""
    url = await start_proxy(base_config(fake.url.replace("127.0.0.1", "localhost")))
    fake.enqueue(Fault(headers={"Set-Cookie": "session=client-a-secret; Path=/"}))
    for _ in range(2):
        await fetch("POST", url + "/openai" + CHAT, data=BODY, headers=JSON)
    assert [None, None] == [r.headers.get("Cookie") for r in fake.requests]


async def test_secrets_in_logged_upstream_values_are_redacted(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    url = await start_proxy(base_config(fake.url))
    leaked = "sk-proj-abcdefghijklmnop1234"
    fake.enqueue(Fault(status=429, headers={"x-ratelimit-reset-requests": leaked}))
    await fetch("POST", url + "/openai" + CHAT, data=BODY, headers=JSON)
    await logs.settled()
    warnings = [x for x in logs.lines() if x["event"] == "unparseable rate-limit header"]
    assert ["x-ratelimit-reset-requests: sk-[REDACTED]"] == [w["header"] for w in warnings]
    assert leaked not in logs.getvalue()
