"""The official SDKs work through the proxy unchanged and see what they see directly."""

from __future__ import annotations

import anthropic
import openai
import pytest

from proxy.fake_upstream import FakeUpstream

MESSAGES = [{"role": "user", "content": "Say hello in three words"}]


@pytest.fixture
def clients(fake: FakeUpstream, proxy_url: str) -> dict[str, str]:
    return {"direct": fake.url, "proxy": proxy_url}  # type: ignore[attr-defined]


def openai_base(clients: dict[str, str], via: str) -> str:
    return clients[via] + ("/openai/v1" if via == "proxy" else "/v1")


def anthropic_base(clients: dict[str, str], via: str) -> str:
    return clients[via] + ("/anthropic" if via == "proxy" else "")


async def openai_async_results(base_url: str) -> dict[str, object]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    async with client:
        chat = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        streamed = [c.choices[0].delta.content async for c in stream if c.choices]
        emb = await client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        models = [m.id async for m in client.models.list()]
        resp = await client.responses.create(model="gpt-4o-mini", input="hello")
    return {
        "chat": chat.model_dump(),
        "stream": streamed,
        "embeddings": emb.model_dump(),
        "models": models,
        "responses": resp.output_text,
    }


async def test_openai_async_sdk_same_results_as_direct(
    clients: dict[str, str], fake: FakeUpstream
) -> None:
    direct = await openai_async_results(openai_base(clients, "direct"))
    fake.clear()
    proxied = await openai_async_results(openai_base(clients, "proxy"))
    assert direct == proxied
    assert proxied["chat"]["choices"][0]["message"]["content"]
    assert len(proxied["stream"]) > 1


def openai_sync_results(base_url: str) -> dict[str, object]:
    with openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0) as client:
        chat = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        streamed = [c.choices[0].delta.content for c in stream if c.choices]
        models = [m.id for m in client.models.list()]
    return {"chat": chat.model_dump(), "stream": streamed, "models": models}


async def test_openai_sync_sdk_same_results_as_direct(
    clients: dict[str, str], fake: FakeUpstream
) -> None:
    import asyncio

    direct = await asyncio.to_thread(openai_sync_results, openai_base(clients, "direct"))
    fake.clear()
    proxied = await asyncio.to_thread(openai_sync_results, openai_base(clients, "proxy"))
    assert direct == proxied


async def anthropic_results(base_url: str) -> dict[str, object]:
    client = anthropic.AsyncAnthropic(base_url=base_url, api_key="sk-ant-test", max_retries=0)
    async with client:
        msg = await client.messages.create(
            model="claude-opus-4-5", max_tokens=64, messages=MESSAGES
        )
        async with client.messages.stream(
            model="claude-opus-4-5", max_tokens=64, messages=MESSAGES
        ) as stream:
            text = [t async for t in stream.text_stream]
            final = await stream.get_final_message()
    return {"message": msg.model_dump(), "stream": text, "final": final.model_dump()}


async def test_anthropic_sdk_same_results_as_direct(
    clients: dict[str, str], fake: FakeUpstream
) -> None:
    direct = await anthropic_results(anthropic_base(clients, "direct"))
    fake.clear()
    proxied = await anthropic_results(anthropic_base(clients, "proxy"))
    assert direct == proxied
    assert proxied["final"]["usage"]["output_tokens"] == len(proxied["stream"])


async def test_openai_sdk_sees_provider_error_through_proxy(clients: dict[str, str]) -> None:
    """Upstream 4xx pass through untouched, so the SDK raises its usual exception."""
    client = openai.AsyncOpenAI(
        base_url=openai_base(clients, "proxy"), api_key="sk-test", max_retries=0
    )
    async with client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.post("/does-not-exist", cast_to=object, body={})
    assert info.value.status_code == 404
