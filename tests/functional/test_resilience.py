"""429s, overloads and outages: waits from the upstream's hints, shared cooldown, fallback.

Faults come from the fake upstream's controls; every assertion on time is a lower bound.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from proxy.fake_upstream import FakeUpstream, Fault
from tests.conftest import LogCapture, base_config, fetch, free_port
from tests.process import ProxyProcess
from tests.redis_server import redis_server

__all__ = ["redis_server"]

CHAT = "/v1/chat/completions"
BODY = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()
JSON = {"Content-Type": "application/json"}


async def post(url: str, body: bytes = BODY, **headers: str) -> tuple[int, Any, bytes]:
    return await fetch("POST", url, data=body, headers={**JSON, **headers})


def two_upstreams(fake_url: str, **second: Any) -> dict[str, Any]:
    raw = base_config(fake_url)
    raw["routes"][0]["upstreams"] = [
        {"name": "primary", "base_url": fake_url},
        {"name": "secondary", "base_url": fake_url, **second},
    ]
    return raw


async def test_retry_after_then_success(
    fake: FakeUpstream, proxy_url: str, logs: LogCapture
) -> None:
    fake.enqueue(Fault(status=429, headers={"Retry-After": "1"}))
    status, headers, _ = await post(proxy_url + "/openai" + CHAT)
    assert 200 == status
    first, second = fake.requests
    assert second.t - first.t >= 0.95  # the fake's 429 says 60 rpm with none left: ~1 s
    line = await logs.last()
    assert [429, 200] == [a["status"] for a in line["attempts"]]
    assert ("retryable_status", "retry-after") == (
        line["attempts"][0]["reason"],
        line["attempts"][0]["hint"],
    )
    assert line["retry_wait_ms"] + line["held_ms"] >= 950
    assert "requests" == line["held_for"]  # the pacer held it until the bucket refilled
    assert line["fallback"] is False
    assert ("fake-openai", "2") == (headers["x-proxy-upstream"], headers["x-proxy-attempts"])


async def test_retry_after_ms_wins_over_retry_after(
    fake: FakeUpstream, proxy_url: str, logs: LogCapture
) -> None:
    fake.enqueue(Fault(status=429, headers={"retry-after-ms": "150", "Retry-After": "30"}))
    status, _, _ = await post(proxy_url + "/openai" + CHAT)
    assert 200 == status
    assert fake.requests[1].t - fake.requests[0].t >= 0.15
    assert "retry-after-ms" == (await logs.last())["attempts"][0]["hint"]


async def test_overloaded_529_is_retried(
    fake: FakeUpstream, proxy_url: str, logs: LogCapture
) -> None:
    """The retry waits the overload's Retry-After only: the first attempt's 529 answered the
    model's pacing scope too, so the retry is not held as if a first request were still out."""
    fake.enqueue(Fault(status=529, headers={"retry-after": "0.2"}))
    status, _, body = await post(
        proxy_url + "/anthropic/v1/messages",
        body=b'{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}',
    )
    assert 200 == status
    assert json.loads(body)["type"] == "message"
    assert 2 == len(fake.requests)
    [line] = await logs.settled()
    assert (None, [529, 200]) == (line["held_for"], [a["status"] for a in line["attempts"]])


async def test_unparseable_hint_falls_back_to_backoff_and_is_logged(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    raw = base_config(
        fake.url, retry={"backoff_base_s": 0.05, "backoff_cap_s": 0.1}, pacing={"enabled": False}
    )
    url = await start_proxy(raw)
    fake.enqueue(
        Fault(
            status=429,
            headers={
                "Retry-After": "soon",
                "x-ratelimit-reset-requests": "??",
                "x-ratelimit-reset-tokens": "later",
            },
        )
    )
    status, _, _ = await post(url + "/openai" + CHAT)
    assert 200 == status
    assert "backoff" == (await logs.last())["attempts"][0]["hint"]
    warnings = [x for x in logs.lines() if x["event"] == "unparseable rate-limit header"]
    assert "retry-after: soon" in [w["header"] for w in warnings]


async def test_wait_beyond_budget_without_fallback_returns_upstream_429_unchanged(
    fake: FakeUpstream, proxy_url: str
) -> None:
    fault = Fault(status=429, headers={"Retry-After": "120"})
    fake.enqueue(fault)
    d_status, d_headers, direct = await post(fake.url + CHAT)
    fake.enqueue(fault)
    p_status, p_headers, proxied = await post(proxy_url + "/openai" + CHAT)
    assert (d_status, direct) == (p_status, proxied)
    for name in ("Retry-After", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"):
        assert d_headers[name] == p_headers[name]
    assert 2 == len(fake.requests)  # one direct, one through the proxy: no retry


async def test_client_opts_out_of_waiting(fake: FakeUpstream, proxy_url: str) -> None:
    fake.enqueue(Fault(status=429, headers={"Retry-After": "1"}))
    status, headers, _ = await post(proxy_url + "/openai" + CHAT, **{"x-proxy-max-wait": "0"})
    assert (429, "1") == (status, headers["Retry-After"])
    assert 1 == len(fake.requests)
    assert "x-proxy-max-wait" not in fake.requests[0].headers


async def test_fallback_serves_with_model_mapped(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    url = await start_proxy(two_upstreams(fake.url, models={"gpt-4o": "llama-3.3-70b-versatile"}))
    fake.enqueue(Fault(status=429, headers={"Retry-After": "120"}))
    status, headers, body = await post(url + "/openai" + CHAT)
    assert 200 == status
    assert "llama-3.3-70b-versatile" == json.loads(body)["model"]  # the fake echoes the model
    assert ("secondary", "2") == (headers["x-proxy-upstream"], headers["x-proxy-attempts"])
    first, second = fake.requests
    assert first.body == BODY  # no mapping for the primary: original bytes
    sent = json.loads(second.body)
    assert "llama-3.3-70b-versatile" == sent["model"]
    assert json.loads(BODY)["messages"] == sent["messages"]
    assert (await logs.last())["fallback"] is True


async def test_fallback_on_connect_error(fake: FakeUpstream, start_proxy: Any) -> None:
    raw = base_config(fake.url)
    raw["routes"][0]["upstreams"] = [
        {"name": "dead", "base_url": f"http://127.0.0.1:{free_port()}"},
        {"name": "alive", "base_url": fake.url},
    ]
    url = await start_proxy(raw)
    status, headers, _ = await post(url + "/openai" + CHAT)
    assert (200, "alive") == (status, headers["x-proxy-upstream"])


async def test_fallback_on_retryable_5xx(fake: FakeUpstream, start_proxy: Any) -> None:
    url = await start_proxy(two_upstreams(fake.url))
    fake.enqueue(Fault(status=503, headers={"Retry-After": "60"}))
    status, headers, _ = await post(url + "/openai" + CHAT)
    assert (200, "secondary") == (status, headers["x-proxy-upstream"])


async def test_cooling_upstream_is_skipped_for_fallback(
    fake: FakeUpstream, start_proxy: Any
) -> None:
    url = await start_proxy(two_upstreams(fake.url))
    fake.enqueue(Fault(status=429, headers={"Retry-After": "120"}))
    await post(url + "/openai" + CHAT)  # primary 429 -> secondary; primary now cooling
    fake.clear()
    status, headers, _ = await post(url + "/openai" + CHAT)
    assert (200, "secondary") == (status, headers["x-proxy-upstream"])
    assert 1 == len(fake.requests)  # nothing was sent into the primary's limit


async def test_quota_exhausted_is_not_retried(fake: FakeUpstream, proxy_url: str) -> None:
    error = {"message": "You exceeded your quota", "type": "insufficient_quota", "param": None}
    body = json.dumps({"error": {**error, "code": "insufficient_quota"}}).encode()
    fake.enqueue(Fault(status=429, body=body, headers={"Retry-After": "1"}))
    status, _, got = await post(proxy_url + "/openai" + CHAT)
    assert (429, body) == (status, got)
    assert 1 == len(fake.requests)


async def test_concurrent_requests_wait_for_shared_cooldown(
    fake: FakeUpstream, proxy_url: str
) -> None:
    """50 requests while the limit is exhausted: the upstream sees none of them until it
    refills (the 429 says 0 of 6,000 requests a minute left, and no request for 2 s).

    They ask for 16 tokens each: without ``max_tokens`` each would reserve the default
    output (4,096) from the fake's 150,000-token bucket, which its header-less 200s never
    correct, and the last dozen would be paced by tokens, 1.6 s apart."""
    exhausted = {
        "Retry-After": "2",
        "x-ratelimit-limit-requests": "6000",
        "x-ratelimit-remaining-requests": "0",
    }
    fake.enqueue(Fault(status=429, headers=exhausted))
    status, _, _ = await post(proxy_url + "/openai" + CHAT, **{"x-proxy-max-wait": "0"})
    assert 429 == status
    cooled_at = fake.requests[0].t
    small = json.dumps({**json.loads(BODY), "max_tokens": 16}).encode()
    results = await asyncio.gather(*(post(proxy_url + "/openai" + CHAT, small) for _ in range(50)))
    assert [200] * 50 == [r[0] for r in results]
    later = fake.requests[1:]
    assert 50 == len(later)
    assert min(r.t for r in later) - cooled_at >= 1.0


async def test_cooling_beyond_budget_gets_provider_shaped_429(
    fake: FakeUpstream, proxy_url: str
) -> None:
    fake.enqueue(Fault(status=429, headers={"Retry-After": "30"}))
    await post(proxy_url + "/anthropic/v1/messages", body=b"{}", **{"x-proxy-max-wait": "0"})
    status, headers, body = await post(
        proxy_url + "/anthropic/v1/messages", body=b"{}", **{"x-proxy-max-wait": "1"}
    )
    assert 429 == status
    assert 28 <= int(headers["retry-after"]) <= 30
    assert int(headers["retry-after-ms"]) > 27000
    assert "rate_limit_error" == json.loads(body)["error"]["type"]
    assert 1 == len(fake.requests)


async def test_client_disconnect_aborts_the_wait(
    fake: FakeUpstream, proxy_url: str, logs: LogCapture
) -> None:
    fake.enqueue(Fault(status=429, headers={"Retry-After": "20"}))
    with pytest.raises(asyncio.TimeoutError):
        async with asyncio.timeout(0.5):
            await post(proxy_url + "/openai" + CHAT)
    for _ in range(100):
        if logs.requests():
            break
        await asyncio.sleep(0.02)
    line = await logs.last()
    assert "client disconnected" == line["error"]
    assert [429] == [a["status"] for a in line["attempts"]]
    assert 1 == len(fake.requests)


async def test_stream_failing_midway_is_not_retried(fake: FakeUpstream, proxy_url: str) -> None:
    fake.enqueue(Fault(cut_after_chunks=2))
    body = json.dumps(
        {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    )
    async with aiohttp.ClientSession() as session:
        async with session.post(proxy_url + "/openai" + CHAT, data=body, headers=JSON) as resp:
            assert 200 == resp.status
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    assert 1 == len(fake.requests)


async def test_openai_sdk_without_retries_succeeds_through_absorbed_429(
    fake: FakeUpstream, proxy_url: str
) -> None:
    fake.enqueue(Fault(status=429, headers={"Retry-After": "0.3"}))
    client = openai.AsyncOpenAI(base_url=proxy_url + "/openai/v1", api_key="sk-x", max_retries=0)
    async with client:
        chat = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert chat.choices[0].message.content
    assert 2 == len(fake.requests)


async def test_two_processes_share_cooldown_through_redis(
    fake: FakeUpstream, tmp_path: Path, redis_server: Any
) -> None:
    raw = base_config(fake.url, state={"backend": "redis", "url": redis_server.url})
    a = ProxyProcess(raw, tmp_path / "a", free_port())
    b = ProxyProcess(raw, tmp_path / "b", free_port())
    try:
        await asyncio.gather(a.start(), b.start())
        fake.enqueue(Fault(status=429, headers={"Retry-After": "30"}))
        status, _, _ = await post(a.url + "/openai" + CHAT, **{"x-proxy-max-wait": "0"})
        assert 429 == status
        status, headers, _ = await post(b.url + "/openai" + CHAT, **{"x-proxy-max-wait": "0"})
        assert 429 == status
        assert int(headers["retry-after"]) >= 28  # b knew of a's cooldown ...
        assert 1 == len(fake.requests)  # ... and sent nothing upstream
    finally:
        a.stop()
        b.stop()


async def test_success_with_empty_bucket_cools_upstream_proactively(
    fake: FakeUpstream, start_proxy: Any
) -> None:
    """A 200 saying x-ratelimit-remaining-requests: 0 sends the next request elsewhere."""
    url = await start_proxy(two_upstreams(fake.url))
    empty = {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "20s",
    }
    fake.enqueue(Fault(status=200, headers=empty))
    first = await post(url + "/openai" + CHAT)
    second = await post(url + "/openai" + CHAT)
    assert (200, "primary") == (first[0], first[1]["x-proxy-upstream"])
    assert (200, "secondary") == (second[0], second[1]["x-proxy-upstream"])


async def test_success_with_tokens_left_does_not_cool(fake: FakeUpstream, start_proxy: Any) -> None:
    url = await start_proxy(two_upstreams(fake.url))
    fake.enqueue(
        Fault(
            status=200,
            headers={"x-ratelimit-remaining-requests": "10", "x-ratelimit-reset-requests": "20s"},
        )
    )
    await post(url + "/openai" + CHAT)
    status, headers, _ = await post(url + "/openai" + CHAT)
    assert (200, "primary") == (status, headers["x-proxy-upstream"])
