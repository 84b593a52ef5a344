"""Two proxies on one Redis continue the same Responses conversations and learn token counts
from each other's answers."""

from __future__ import annotations

import json
from typing import Any

import openai

from proxy.fake_upstream import FakeUpstream
from tests.conftest import LogCapture, base_config, fetch
from tests.redis_server import redis_server

__all__ = ["redis_server"]

JSON = {"Content-Type": "application/json"}


def shared(fake_url: str, redis_url: str) -> dict[str, Any]:
    raw = base_config(fake_url, state={"backend": "redis", "url": redis_url})
    raw["routes"].append(
        {
            "prefix": "/responses",
            "provider": "openai",
            "upstreams": [{"name": "chat", "base_url": fake_url, "api": "openai_chat"}],
        }
    )
    raw["context"] = {"models": {"house-model": 4096}}
    return raw


async def test_a_conversation_started_on_one_proxy_continues_on_the_other(
    fake: FakeUpstream, start_proxy: Any, redis_server: Any
) -> None:
    raw = shared(fake.url, redis_server.url)  # type: ignore[attr-defined]
    first, second = await start_proxy(raw), await start_proxy(raw)
    a = openai.AsyncOpenAI(base_url=first + "/responses/v1", api_key="sk-a")
    b = openai.AsyncOpenAI(base_url=second + "/responses/v1", api_key="sk-a")
    started = await a.responses.create(model="gpt-4o", input="hello")
    follow = await b.responses.create(
        model="gpt-4o", input="and then?", previous_response_id=started.id
    )
    assert follow.output_text
    history = fake.requests[-1].json()["messages"]
    assert ["user", "assistant", "user"] == [m["role"] for m in history]


async def test_token_counts_learned_on_one_proxy_serve_the_other(
    fake: FakeUpstream, start_proxy: Any, redis_server: Any, logs: LogCapture
) -> None:
    raw = shared(fake.url, redis_server.url)  # type: ignore[attr-defined]
    first, second = await start_proxy(raw), await start_proxy(raw)
    for turns in range(1, 22):
        words = " ".join(["budget"] * (40 + turns))
        body = {"model": "house-model", "messages": [{"role": "user", "content": words}] * turns}
        await fetch(
            "POST", first + "/openai/v1/chat/completions", data=json.dumps(body), headers=JSON
        )
    near = {"model": "house-model", "messages": [{"role": "user", "content": "budget " * 900}]}
    await fetch("POST", second + "/openai/v1/chat/completions", data=json.dumps(near), headers=JSON)
    line = await logs.last()
    assert "learned" == line["count_method"]
