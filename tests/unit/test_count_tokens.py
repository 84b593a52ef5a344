"""Anthropic's count_tokens endpoint through AnthropicTokenCounter, against the fake upstream."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from proxy.context.count_tokens import AnthropicTokenCounter, CountTokensError
from proxy.fake_upstream import FakeUpstream, Fault, prompt_tokens

HEADERS = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01", "x-other": "dropped"}
BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 100,
    "stream": True,
    "system": "Be terse.",
    "messages": [{"role": "user", "content": "how many words are in here"}],
}


@pytest.fixture
async def served(aiohttp_server: Any) -> Any:
    fake = FakeUpstream()
    server = await aiohttp_server(fake.make_app())
    async with aiohttp.ClientSession() as session:
        url = str(server.make_url("/v1/messages/count_tokens"))
        yield fake, url, session


async def test_count_is_the_providers_and_is_cached_by_body(served: Any) -> None:
    fake, url, session = served
    counter = AnthropicTokenCounter(session)
    assert prompt_tokens(BODY) == await counter.count(url, HEADERS, BODY)
    assert prompt_tokens(BODY) == await counter.count(url, HEADERS, dict(BODY, max_tokens=5))
    assert 1 == len(fake.requests)
    sent = fake.requests[0]
    assert {"model", "system", "messages"} == set(json.loads(sent.body))
    assert ("sk-test", None) == (sent.headers.get("x-api-key"), sent.headers.get("x-other"))
    other = dict(BODY, messages=[{"role": "user", "content": "another question"}])
    assert prompt_tokens(other) == await counter.count(url, HEADERS, other)
    assert 2 == len(fake.requests)


async def test_expired_entries_are_asked_again(served: Any) -> None:
    fake, url, session = served
    now = [0.0]
    counter = AnthropicTokenCounter(session, ttl_s=10, clock=lambda: now[0])
    await counter.count(url, HEADERS, BODY)
    now[0] = 11.0
    await counter.count(url, HEADERS, BODY)
    assert 2 == len(fake.requests)


async def test_an_error_answer_raises_and_is_not_cached(served: Any) -> None:
    fake, url, session = served
    fake.enqueue(Fault(status=529))
    counter = AnthropicTokenCounter(session)
    with pytest.raises(CountTokensError):
        await counter.count(url, HEADERS, BODY)
    assert prompt_tokens(BODY) == await counter.count(url, HEADERS, BODY)
