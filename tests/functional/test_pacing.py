"""Rate limits done right, through the proxy against a fake that rate-limits for real:
scoped by credential and model, honest Retry-After, no retry storms, no resent timeouts,
and pacing shared by two proxy processes through Redis."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestServer

from proxy.fake_upstream import FakeUpstream, Fault, Limits
from tests.conftest import LogCapture, base_config, fetch, free_port
from tests.process import ProxyProcess
from tests.redis_server import redis_server

__all__ = ["redis_server"]

CHAT = "/v1/chat/completions"
JSON = {"Content-Type": "application/json"}


def chat(model: str = "gpt-4o", max_tokens: int = 5) -> bytes:
    return json.dumps(
        {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()


async def limited_fake(aiohttp_server: Any, **limits: Any) -> FakeUpstream:
    fake = FakeUpstream(limits=Limits(**limits))
    server: TestServer = await aiohttp_server(fake.make_app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


async def post(url: str, key: str, body: bytes, **headers: str) -> tuple[int, Any, bytes]:
    return await fetch(
        "POST", url + CHAT, data=body, headers={**JSON, "Authorization": f"Bearer {key}", **headers}
    )


async def test_key_a_exhausted_does_not_hold_key_b_back(
    aiohttp_server: Any, start_proxy: Any
) -> None:
    fake = await limited_fake(aiohttp_server, rpm=3)
    raw = base_config(fake.url, pacing={"target_utilisation": 1.0})  # type: ignore[arg-type]
    url = await start_proxy(raw) + "/openai"
    for _ in range(3):
        assert 200 == (await post(url, "sk-key-a", chat(), **{"x-proxy-max-wait": "0"}))[0]
    status, headers, _ = await post(url, "sk-key-a", chat(), **{"x-proxy-max-wait": "0"})
    assert (429, "model") == (status, headers["x-proxy-ratelimited"])
    assert 200 == (await post(url, "sk-key-b", chat(), **{"x-proxy-max-wait": "0"}))[0]
    assert 0 == fake.limiter.counts().limited  # the provider never had to say 429


async def test_a_limited_model_leaves_another_model_alone(
    aiohttp_server: Any, start_proxy: Any
) -> None:
    fake = await limited_fake(aiohttp_server, rpm=2)
    raw = base_config(fake.url, pacing={"target_utilisation": 1.0})  # type: ignore[arg-type]
    url = await start_proxy(raw) + "/openai"
    wait0 = {"x-proxy-max-wait": "0"}
    for _ in range(2):
        await post(url, "sk-a", chat("gpt-4o"), **wait0)
    assert 429 == (await post(url, "sk-a", chat("gpt-4o"), **wait0))[0]
    assert 200 == (await post(url, "sk-a", chat("gpt-4o-mini"), **wait0))[0]


async def test_the_proxy_made_retry_after_is_the_next_admission_time(
    aiohttp_server: Any, start_proxy: Any, logs: LogCapture
) -> None:
    """6 rpm refill one request every 10 s: after the bucket is empty the proxy answers at
    once with the time until the next request fits, not a full refill (60 s)."""
    fake = await limited_fake(aiohttp_server, rpm=6)
    url = await start_proxy(base_config(fake.url, pacing={"target_utilisation": 1.0}))  # type: ignore[arg-type]
    url += "/openai"
    for _ in range(6):
        assert 200 == (await post(url, "sk-a", chat()))[0]
    sent = time.monotonic()
    status, headers, body = await post(url, "sk-a", chat(), **{"x-proxy-max-wait": "1"})
    answered = time.monotonic()
    assert 429 == status
    refill_at = fake.requests[0].t + 10.0  # the bucket's first request back (monotonic)
    told = int(headers["retry-after-ms"]) / 1000
    # the proxy reserves when it sends, the fake counts when it receives: on a loaded machine
    # these differ by more than a few ms, so the window allows half a second (a full refill
    # would be 60 s)
    assert refill_at - answered - 0.5 <= told <= refill_at - sent + 0.5
    assert 6 == len(fake.requests)  # not sent: the provider would have said the same
    assert "rate_limit_error" == json.loads(body)["error"]["type"]
    line = await logs.last()
    assert ("model", 429) == (line["ratelimited"], line["status"])


async def test_a_persistent_429_costs_the_proxys_attempts_and_the_sdk_does_not_retry(
    fake: FakeUpstream, start_proxy: Any
) -> None:
    raw = base_config(fake.url, retry={"max_attempts": 3})  # type: ignore[attr-defined]
    url = await start_proxy(raw)
    always = Fault(status=429, headers={"retry-after-ms": "10", "x-ratelimit-limit-requests": "-1"})
    fake.enqueue(*[always] * 20)
    client = openai.AsyncOpenAI(base_url=url + "/openai/v1", api_key="sk-a")  # max_retries=2
    t0 = time.monotonic()
    with pytest.raises(openai.RateLimitError) as raised:
        await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert 3 == len(fake.requests)  # the proxy's 3 attempts, not 3 x (1 + 2 SDK retries)
    assert "false" == raised.value.response.headers["x-should-retry"]
    assert time.monotonic() - t0 < 5.0


async def test_a_timed_out_request_is_not_resent(fake: FakeUpstream, start_proxy: Any) -> None:
    raw = base_config(fake.url, timeouts={"first_byte_s": 0.3})  # type: ignore[attr-defined]
    url = await start_proxy(raw)
    fake.enqueue(Fault(first_byte_delay_s=2.0))
    status, _, _ = await post(url + "/openai", "sk-a", chat())
    assert 504 == status
    assert 1 == len(fake.requests)


async def test_a_timed_out_request_is_resent_when_the_route_says_so(
    fake: FakeUpstream, start_proxy: Any
) -> None:
    raw = base_config(fake.url, timeouts={"first_byte_s": 0.3}, retry={"on_timeout": True})  # type: ignore[attr-defined]
    url = await start_proxy(raw)
    fake.enqueue(Fault(first_byte_delay_s=2.0))
    status, _, _ = await post(url + "/openai", "sk-a", chat())
    assert 200 == status
    assert 2 == len(fake.requests)


async def test_two_proxy_processes_sharing_redis_pace_as_one(
    aiohttp_server: Any, redis_server: Any, tmp_path: Path
) -> None:
    """30 requests split over two processes against 10 rpm: together they send no more than
    the limit allows, and the provider never answers 429. (One request first: a scope nobody
    has heard from yet lets its first burst through rather than hold it, see pacing.py.)

    Two processes' requests may reach the provider in another order than they were reserved
    in, and an answer then stands for one that has not arrived yet: ``target_utilisation`` is
    the room for that. At 10 rpm the default 5 % is half a request, so this test leaves 20 %."""
    fake = await limited_fake(aiohttp_server, rpm=10)
    raw = base_config(fake.url, state={"backend": "redis", "url": redis_server.url})  # type: ignore[arg-type]
    raw["pacing"] = {"max_queue_wait_s": 0, "target_utilisation": 0.8}
    procs = [ProxyProcess(raw, tmp_path / f"p{i}", free_port()) for i in range(2)]
    try:
        await asyncio.gather(*(p.start() for p in procs))
        results = [await post(procs[0].url + "/openai", "sk-shared", chat())]
        results += await asyncio.gather(
            *(post(procs[i % 2].url + "/openai", "sk-shared", chat()) for i in range(29))
        )
    finally:
        for p in procs:
            p.stop()
    statuses = [r[0] for r in results]
    assert 0 == fake.limiter.counts().limited
    assert 10 >= statuses.count(200) >= 8  # the limit less the room, not twice it
    assert ["model"] * statuses.count(429) == [
        r[1]["x-proxy-ratelimited"] for r in results if r[0] == 429
    ]


async def test_pacing_shows_in_the_metrics(aiohttp_server: Any, start_proxy: Any) -> None:
    fake = await limited_fake(aiohttp_server, rpm=2)
    raw = base_config(fake.url, pacing={"target_utilisation": 1.0})  # type: ignore[arg-type]
    url = await start_proxy(raw)
    for _ in range(3):
        await post(url + "/openai", "sk-a", chat(), **{"x-proxy-max-wait": "0"})
    text = (await fetch("GET", url + "/metrics"))[2].decode()
    assert 'llm_proxy_rate_limited_total{kind="model",route="/openai"} 1.0' in text
    assert (
        'llm_proxy_pacing_remaining{bucket="requests",model="gpt-4o",upstream="fake-openai"}'
        in text
    )
    assert 'llm_proxy_pacing_queue{model="gpt-4o",upstream="fake-openai"} 0.0' in text
