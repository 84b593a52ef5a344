"""The dashboard through the real proxy and the real fake upstream, read with aiohttp: its JSON
after a scripted mix of requests, its access rules (loopback, admin token, cookie), and its
page and assets. The browser test is test_dashboard_browser.py."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy import config as config_mod
from proxy.app import make_app
from proxy.dashboard.web import COOKIE, session_value
from proxy.fake_upstream import FakeUpstream, Fault
from tests.conftest import LogCapture, base_config, fetch, free_port
from tests.process import ProxyProcess

CHAT = "/v1/chat/completions"
CHAT_BODY: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
TOKEN = "s3cret-admin-token-0123456789"
LONG_CHAT = {
    "model": "gpt-4o",
    "messages": [
        {"role": "user", "content": "old question " + "word " * 60},
        {"role": "assistant", "content": "old answer " + "word " * 60},
        {"role": "user", "content": "new question"},
    ],
}


def dashboard_config(fake_url: str, **overrides: Any) -> dict[str, Any]:
    """The two default routes, a route without pacing whose wait budget is shorter than a 30 s
    hint (so its scope stays cooling), and a route that trims to 120 tokens."""
    raw = base_config(fake_url, **overrides)
    raw["routes"] += [
        {
            "prefix": "/limited",
            "provider": "openai",
            "retry": {"max_wait_s": 1},
            "pacing": {"enabled": False},
            "upstreams": [{"name": "limited", "base_url": fake_url}],
        },
        {
            "prefix": "/trim",
            "provider": "openai",
            "context": {"max_input_tokens": 120},
            "upstreams": [{"name": "fake-trim", "base_url": fake_url}],
        },
    ]
    return raw


async def post(url: str, body: dict[str, Any]) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body) as resp:
            await resp.read()
            return resp.status


async def data(url: str, **headers: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/dashboard/data", headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)


async def counted(url: str, total: int, timeout_s: float = 10.0) -> Any:
    """The data once it counts ``total`` requests (a request is counted just after its
    response ended)."""
    async with asyncio.timeout(timeout_s):
        while True:
            status, got = await data(url)
            if status == 200 and got["requests"]["total"] >= total:
                return got
            await asyncio.sleep(0.05)


async def test_the_data_reflects_a_scripted_mix_of_requests(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    url = await start_proxy(dashboard_config(fake.url))
    assert 200 == await post(url + "/openai" + CHAT, CHAT_BODY)
    assert 200 == await post(url + "/openai" + CHAT, STREAM)
    fake.enqueue(Fault(status=429, headers={"retry-after": "30"}))
    assert 429 == await post(url + "/limited" + CHAT, CHAT_BODY)
    assert 404 == await post(url + "/nowhere" + CHAT, CHAT_BODY)
    assert 200 == await post(url + "/trim" + CHAT, LONG_CHAT)
    lines = await logs.settled(5)

    status, got = await data(url)
    assert 200 == status
    assert (1, 5, 2, 0) == (
        got["version"],
        got["requests"]["total"],
        got["requests"]["errors"],
        got["in_flight"],
    )
    assert 60 == len(got["requests"]["per_second"]) == len(got["requests"]["errors_per_second"])
    assert 5 == sum(got["requests"]["per_second"])  # all within the last minute
    assert [
        {"kind": "404", "total": 1, "last_60s": 1},
        {"kind": "429", "total": 1, "last_60s": 1},
    ] == got["errors"]
    assert (4, 1) == (got["latency_ms"]["count"], got["ttft_ms"]["count"])  # routed; streams
    assert got["latency_ms"]["p50"] <= got["latency_ms"]["p90"] <= got["latency_ms"]["p99"]
    priced = [line for line in lines if line["model"] == "gpt-4o"]
    assert [
        {
            "name": "gpt-4o",
            "requests": 4,
            "prompt_tokens": sum(line["prompt_tokens"] or 0 for line in priced),
            "completion_tokens": sum(line["completion_tokens"] or 0 for line in priced),
            "cached_tokens": sum(line["cached_tokens"] or 0 for line in priced),
            "cost_usd": round(sum(line["cost_usd"] or 0 for line in priced), 6),
            "unpriced": 0,
        }
    ] == got["models"]
    assert got["keys"] is None  # keys are not on
    [cooldown] = got["cooldowns"]
    assert ("limited", "limited:gpt-4o") == (cooldown["upstream"], cooldown["scope"])
    assert 25 < cooldown["remaining_s"] <= 30
    # the fake's 200s carry no rate-limit headers: no paced scope has a level to show
    assert {"available": True, "scopes": [], "recent_holds": []} == got["pacing"]
    trims = got["trims"]
    assert (1, 2) == (trims["requests"], trims["messages"])
    assert ("/trim", "gpt-4o", 2) == (
        trims["recent"][0]["route"],
        trims["recent"][0]["model"],
        trims["recent"][0]["removed"],
    )
    assert [line["request_id"] for line in reversed(lines)] == [
        r["request_id"] for r in got["recent"]
    ]
    shown = {k: v for k, v in got["recent"][0].items() if k != "duration_ms"}
    logged = {k: v for k, v in lines[-1].items() if k in shown}
    assert logged == shown  # the log line's fields (its duration is measured again)


async def test_recent_requests_are_bounded_and_carry_no_credentials(
    fake: FakeUpstream, start_proxy: Any
) -> None:
    url = await start_proxy(dashboard_config(fake.url, dashboard={"recent_requests": 3}))
    for _ in range(5):
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": "Bearer sk-client-secret-key"}
            async with session.post(url + "/openai" + CHAT, json=CHAT_BODY, headers=headers):
                pass
    got = await counted(url, 5)
    assert (3, 5) == (len(got["recent"]), got["requests"]["total"])
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/dashboard/data") as resp:
            assert b"sk-client-secret-key" not in await resp.read()


async def test_the_page_and_its_assets_ship_in_the_package_under_a_strict_policy(
    proxy_url: str,
) -> None:
    status, headers, page = await fetch("GET", proxy_url + "/dashboard")
    assert (200, "text/html; charset=utf-8") == (status, headers["Content-Type"])
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert ("nosniff", "no-store") == (headers["X-Content-Type-Options"], headers["Cache-Control"])
    assert b"/dashboard/static/dashboard.js" in page and b"://" not in page.replace(
        b"http://www.w3.org", b""
    )
    for name, ctype in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        status, headers, body = await fetch("GET", proxy_url + "/dashboard/static/" + name)
        assert (200, f"{ctype}; charset=utf-8") == (status, headers["Content-Type"])
        assert b"https://" not in body  # no CDN: it works offline
    assert 404 == (await fetch("GET", proxy_url + "/dashboard/static/../app.py"))[0]
    assert 404 == (await fetch("GET", proxy_url + "/dashboard/static/login"))[0]


async def test_with_an_admin_token_every_client_must_present_it(
    fake: FakeUpstream, start_proxy: Any
) -> None:
    url = await start_proxy(dashboard_config(fake.url, admin_token=TOKEN))
    status, headers, _ = await fetch("GET", url + "/dashboard", allow_redirects=False)
    assert (303, "/dashboard/login") == (status, headers["Location"])
    status, _, page = await fetch("GET", url + "/dashboard/login")
    assert (200, True) == (status, b'action="/dashboard/login"' in page)
    assert (401, {"error": "not authorized"}) == await data(url)
    assert 401 == (await data(url, Authorization="Bearer wrong-token-0123456789"))[0]
    assert 200 == (await data(url, Authorization=f"Bearer {TOKEN}"))[0]
    status, headers, _ = await fetch("GET", url + "/dashboard/data")
    assert 'Bearer realm="llm-proxy dashboard"' == headers["WWW-Authenticate"]


async def test_the_login_form_sets_a_strict_session_cookie_that_opens_the_data(
    fake: FakeUpstream, start_proxy: Any
) -> None:
    url = await start_proxy(dashboard_config(fake.url, admin_token=TOKEN))
    jar = aiohttp.CookieJar(unsafe=True)  # the proxy is at an IP address, not a host name
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        form = {"token": "not-the-token-0123456789"}
        async with session.post(url + "/dashboard/login", data=form) as resp:
            assert 401 == resp.status
        async with session.post(
            url + "/dashboard/login", data={"token": TOKEN}, allow_redirects=False
        ) as resp:
            assert (303, "/dashboard") == (resp.status, resp.headers["Location"])
            cookie = resp.cookies[COOKIE]
        assert (session_value(TOKEN), "/dashboard", True, "Strict") == (
            cookie.value,
            cookie["path"],
            bool(cookie["httponly"]),
            cookie["samesite"],
        )
        assert TOKEN not in cookie.value
        async with session.get(url + "/dashboard/data") as resp:  # the jar sends the cookie
            assert 200 == resp.status
        async with session.get(url + "/dashboard") as resp:
            assert (200, True) == (resp.status, "dashboard.js" in await resp.text())
        headers = {"Origin": "https://evil.example"}
        async with session.post(
            url + "/dashboard/login", data={"token": TOKEN}, headers=headers
        ) as resp:
            assert 403 == resp.status


def non_loopback_address() -> str | None:
    """An address of this machine other than loopback (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.mark.parametrize(("token", "expected"), [(None, 403), (TOKEN, 200)])
async def test_remote_clients_need_the_token(
    fake: FakeUpstream,
    aiohttp_server: Callable[..., Any],
    logs: LogCapture,
    token: str | None,
    expected: int,
) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    raw = dashboard_config(fake.url)
    if token is not None:
        raw["admin_token"] = token
    app = make_app(config_mod.from_dict(raw, env={}), log_stream=logs)
    server: TestServer = await aiohttp_server(app, host=address)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert expected == (await data(str(server.make_url("")).rstrip("/"), **headers))[0]


def test_the_admin_token_comes_from_the_environment_and_must_not_be_short() -> None:
    raw = base_config("http://127.0.0.1:9")
    assert TOKEN == config_mod.from_dict(raw, env={"LLM_PROXY_ADMIN_TOKEN": TOKEN}).admin_token
    with pytest.raises(config_mod.ConfigError, match="admin_token: must be at least 16"):
        config_mod.from_dict(raw, env={"LLM_PROXY_ADMIN_TOKEN": "short"})
    assert TOKEN not in repr(config_mod.from_dict(raw, env={"LLM_PROXY_ADMIN_TOKEN": TOKEN}))


async def test_the_dashboard_can_be_turned_off(fake: FakeUpstream, start_proxy: Any) -> None:
    url = await start_proxy(dashboard_config(fake.url, dashboard={"enabled": False}))
    status, _, body = await fetch("GET", url + "/dashboard/data")
    assert 404 == status  # the proxy's own route-not-found answer: nothing is served here
    assert b"no route for /dashboard/data" in body


async def test_with_metrics_on_their_own_port_the_dashboard_is_served_there_only(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    metrics_port = free_port()
    raw = dashboard_config(fake.url, metrics={"host": "127.0.0.1", "port": metrics_port})
    proc = ProxyProcess(raw, tmp_path, free_port())
    try:
        await proc.start()
        assert 200 == await post(proc.url + "/openai" + CHAT, CHAT_BODY)
        dashboard = f"http://127.0.0.1:{metrics_port}"
        assert 1 == (await counted(dashboard, 1))["requests"]["total"]
        assert 404 == (await data(proc.url))[0]  # the proxy's port: no route matches ...
        got = await counted(dashboard, 2)  # ... and that is a request like any other
        assert ["404", "200"] == [str(r["status"]) for r in got["recent"]]
        status, _, page = await fetch("GET", f"http://127.0.0.1:{metrics_port}/dashboard")
        assert (200, True) == (status, b"dashboard.js" in page)
    finally:
        proc.stop()
