"""Across API families through the real proxy: the official SDKs of one family against an
upstream of the other, streaming and not, tools, errors and a cross-family fallback."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from proxy.fake_upstream import FakeUpstream, Fault, prompt_tokens
from tests.conftest import LogCapture, fetch

WEATHER_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
WEATHER_ANTHROPIC = {
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": WEATHER_OPENAI["function"]["parameters"],  # type: ignore[index]
}


def crossed(fake_url: str, **fallback: Any) -> dict[str, Any]:
    """/anthropic served by a chat-completions upstream, /openai by an Anthropic one."""
    chat = {"name": "chat-upstream", "base_url": fake_url, "api": "openai_chat"}
    claude = {"name": "claude-upstream", "base_url": fake_url, "api": "anthropic"}
    return {
        "listen": {"host": "127.0.0.1", "port": 8080},
        "routes": [
            {"prefix": "/anthropic", "provider": "anthropic", "upstreams": [chat]},
            {"prefix": "/openai", "provider": "openai", "upstreams": [claude]},
            {"prefix": "/responses", "provider": "openai", "upstreams": [chat]},
        ],
    }


@pytest.fixture
async def url(fake: FakeUpstream, start_proxy: Any) -> str:
    return await start_proxy(crossed(fake.url))  # type: ignore[attr-defined]


async def test_anthropic_sdk_create_against_a_chat_upstream(
    fake: FakeUpstream, url: str, logs: LogCapture
) -> None:
    client = anthropic.AsyncAnthropic(base_url=url + "/anthropic", api_key="sk-ant-client")
    message = await client.messages.create(
        model="gpt-4o", max_tokens=50, messages=[{"role": "user", "content": "hi there"}]
    )
    assert ("tok0 tok1 tok2 tok3 tok4 ", "end_turn") == (
        message.content[0].text,  # type: ignore[union-attr]
        message.stop_reason,
    )
    sent = fake.requests[-1]
    assert "/v1/chat/completions" == sent.path
    assert "sk-ant-client" not in str(dict(sent.headers))  # never to another family
    assert prompt_tokens(sent.json()) == message.usage.input_tokens  # the upstream's count
    line = await logs.last()
    assert {"client": "anthropic", "upstream": "openai_chat"} == {
        k: line["translation"][k] for k in ("client", "upstream")
    }


async def test_anthropic_sdk_stream_helper_and_tool_round_trip(
    fake: FakeUpstream, url: str
) -> None:
    client = anthropic.AsyncAnthropic(base_url=url + "/anthropic", api_key="sk-ant-client")
    async with client.messages.stream(
        model="gpt-4o",
        max_tokens=50,
        tools=[WEATHER_ANTHROPIC],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "weather in Paris?"}],
    ) as stream:
        final = await stream.get_final_message()
    assert "tool_use" == final.stop_reason
    call = final.content[-1]
    assert ("tool_use", "get_weather") == (call.type, call.name)  # type: ignore[union-attr]
    follow = await client.messages.create(
        model="gpt-4o",
        max_tokens=50,
        tools=[WEATHER_ANTHROPIC],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": [c.model_dump() for c in final.content]},  # type: ignore[misc]
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}  # type: ignore[union-attr]
                ],
            },
        ],
    )
    assert "end_turn" == follow.stop_reason
    sent = fake.requests[-1].json()
    assert ["user", "assistant", "tool"] == [m["role"] for m in sent["messages"]]
    assert call.id == sent["messages"][2]["tool_call_id"]  # type: ignore[union-attr]


async def test_openai_sdk_chat_stream_and_tools_against_an_anthropic_upstream(
    fake: FakeUpstream, url: str
) -> None:
    client = openai.AsyncOpenAI(base_url=url + "/openai/v1", api_key="sk-client")
    completion = await client.chat.completions.create(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}]
    )
    assert "tok0 tok1 tok2 tok3 tok4 " == completion.choices[0].message.content
    assert "/v1/messages" == fake.requests[-1].path
    async with client.chat.completions.stream(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER_OPENAI],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    ) as stream:
        final = await stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert ["get_weather"] == [c.function.name for c in calls]  # type: ignore[union-attr]
    assert "tool_calls" == final.choices[0].finish_reason


async def test_openai_responses_against_a_chat_only_upstream(fake: FakeUpstream, url: str) -> None:
    client = openai.AsyncOpenAI(base_url=url + "/responses/v1", api_key="sk-client")
    response = await client.responses.create(model="gpt-4o", input="hello")
    assert "tok0 tok1 tok2 tok3 tok4 " == response.output_text
    assert "/v1/chat/completions" == fake.requests[-1].path
    async with client.responses.stream(model="gpt-4o", input="hello again") as stream:
        final = await stream.get_final_response()
    assert "tok0 tok1 tok2 tok3 tok4 " == final.output_text
    follow = await client.responses.create(
        model="gpt-4o", input="and then?", previous_response_id=response.id
    )
    assert follow.output_text
    history = fake.requests[-1].json()["messages"]
    assert ["user", "assistant", "user"] == [m["role"] for m in history]


async def test_other_paths_on_a_cross_family_upstream_are_a_provider_shaped_404(
    fake: FakeUpstream, url: str
) -> None:
    status, _, body = await fetch(
        "POST",
        url + "/openai/v1/embeddings",
        data=json.dumps({"model": "x", "input": "hi"}),
        headers={"Content-Type": "application/json"},
    )
    assert 404 == status
    assert "not available" in json.loads(body)["error"]["message"]
    assert [] == fake.requests


async def test_upstream_errors_come_back_in_the_clients_shape(fake: FakeUpstream, url: str) -> None:
    fake.enqueue(*[Fault(status=529, headers={"retry-after": "0"}) for _ in range(3)])
    client = openai.AsyncOpenAI(base_url=url + "/openai/v1", api_key="sk", max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        await client.chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}]
        )
    assert 503 == raised.value.status_code
    assert isinstance(raised.value.body, dict) and "message" in raised.value.body


async def test_cross_family_fallback_serves_an_openai_client_from_claude(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    raw = crossed(fake.url)  # type: ignore[attr-defined]
    raw["routes"][1]["upstreams"] = [
        {"name": "openai", "base_url": fake.url},  # type: ignore[attr-defined]
        {"name": "claude", "base_url": fake.url, "api": "anthropic", "api_key": "sk-ant-proxy"},  # type: ignore[attr-defined]
    ]
    url = await start_proxy(raw)
    fake.enqueue(Fault(status=429, headers={"retry-after": "120"}, path="/v1/chat/completions"))
    client = openai.AsyncOpenAI(base_url=url + "/openai/v1", api_key="sk-client")
    raw_response = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    completion = raw_response.parse()
    assert "chat.completion" == completion.object
    assert "tok0 tok1 tok2 tok3 tok4 " == completion.choices[0].message.content
    assert ("claude", "openai_chat->anthropic") == (
        raw_response.headers["x-proxy-upstream"],
        raw_response.headers["x-proxy-translated"],
    )
    first, second = fake.requests
    assert "Bearer sk-client" == first.headers["Authorization"]
    assert ("sk-ant-proxy", None) == (
        second.headers["x-api-key"],
        second.headers.get("Authorization"),
    )
    line = await logs.last()
    assert line["fallback"] is True
