"""The openai SDK's Responses API (``responses.create`` / ``responses.stream``) served from a
chat-completions upstream (and, chained, from an Anthropic one), through the translating
test server in front of the real fake."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from proxy.fake_upstream import FakeUpstream, Fault
from proxy.translate import ApiFamily
from tests.translate_harness import Harness, anthropic_stream_summary, chat_stream_summary

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
        "additionalProperties": False,
    },
}
TIME = {
    "type": "function",
    "name": "get_time",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
}


async def _client(
    upstream_family: ApiFamily, aiohttp_server: Any
) -> tuple[Harness, Any, FakeUpstream]:
    fake = FakeUpstream()
    fake_server = await aiohttp_server(fake.make_app())
    harness = Harness(str(fake_server.make_url("")).rstrip("/"), {"openai": upstream_family})
    server = await aiohttp_server(harness.make_app())
    base = str(server.make_url("/openai/v1"))
    return harness, openai.AsyncOpenAI(base_url=base, api_key="k", max_retries=0), fake


@pytest.fixture
async def on_chat(aiohttp_server: Any) -> Any:
    harness, client, fake = await _client(ApiFamily.OPENAI_CHAT, aiohttp_server)
    async with client:
        yield harness, client, fake


@pytest.fixture
async def on_anthropic(aiohttp_server: Any) -> Any:
    harness, client, fake = await _client(ApiFamily.ANTHROPIC, aiohttp_server)
    async with client:
        yield harness, client, fake


def chat_usage_as_responses(usage: dict[str, Any]) -> tuple[int, int, int, int]:
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    return usage["prompt_tokens"], cached, usage["completion_tokens"], usage["total_tokens"]


def usage_of(response: Any) -> tuple[int, int, int, int]:
    u = response.usage
    return u.input_tokens, u.input_tokens_details.cached_tokens, u.output_tokens, u.total_tokens


async def test_create_with_string_input(on_chat: Any) -> None:
    harness, client, _ = on_chat
    response = await client.responses.create(
        model="gpt-4o", input="say hi", instructions="be brief"
    )
    sent = harness.captured[-1].request
    assert [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "say hi"},
    ] == sent["messages"]
    upstream = json.loads(harness.captured[-1].body)
    assert upstream["choices"][0]["message"]["content"] == response.output_text
    assert ("completed", "be brief") == (response.status, response.instructions)
    assert chat_usage_as_responses(upstream["usage"]) == usage_of(response)


async def test_max_output_tokens_makes_it_incomplete(on_chat: Any) -> None:
    _, client, _ = on_chat
    response = await client.responses.create(model="gpt-4o", input="hi", max_output_tokens=2)
    assert ("incomplete", "max_output_tokens") == (
        response.status,
        response.incomplete_details.reason,
    )


async def test_stream_helper_accepts_the_event_sequence(on_chat: Any) -> None:
    harness, client, _ = on_chat
    async with client.responses.stream(model="gpt-4o", input="say hi") as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    text, _, usage = chat_stream_summary(harness.captured[-1].body)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert text == "".join(deltas) == final.output_text
    assert chat_usage_as_responses(usage) == usage_of(final)  # type: ignore[arg-type]
    numbers = [e.sequence_number for e in events]
    assert list(range(len(events))) == numbers
    assert ["response.created", "response.in_progress"] == [e.type for e in events[:2]]
    assert "response.completed" == events[-1].type


async def test_function_call_round_trip_with_previous_response_id(on_chat: Any) -> None:
    harness, client, _ = on_chat
    first = await client.responses.create(
        model="gpt-4o",
        input="weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
    )
    upstream_call = json.loads(harness.captured[-1].body)["choices"][0]["message"]["tool_calls"][0]
    (call,) = first.output
    assert ("function_call", upstream_call["id"]) == (call.type, call.call_id)
    assert upstream_call["function"]["arguments"] == call.arguments
    second = await client.responses.create(
        model="gpt-4o",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER],
    )
    sent = harness.captured[-1].request["messages"]
    assert [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [upstream_call]},
        {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"},
    ] == sent
    answer = json.loads(harness.captured[-1].body)["choices"][0]["message"]["content"]
    assert (answer, first.id) == (second.output_text, second.previous_response_id)


async def test_stream_parallel_function_calls(on_chat: Any) -> None:
    harness, client, _ = on_chat
    async with client.responses.stream(
        model="gpt-4o", input="both", tools=[WEATHER, TIME], tool_choice="required"
    ) as stream:
        final = await stream.get_final_response()
    _, calls, _ = chat_stream_summary(harness.captured[-1].body)
    expected = [(i, n, a) for i, n, a in calls.values()]
    assert expected == [(o.call_id, o.name, o.arguments) for o in final.output]


async def test_streamed_response_is_stored_for_the_next_turn(on_chat: Any) -> None:
    harness, client, _ = on_chat
    async with client.responses.stream(model="gpt-4o", input="remember me") as stream:
        first = await stream.get_final_response()
    await client.responses.create(model="gpt-4o", previous_response_id=first.id, input="and now?")
    assert [
        {"role": "user", "content": "remember me"},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "and now?"},
    ] == harness.captured[-1].request["messages"]


async def test_store_false_keeps_nothing(on_chat: Any) -> None:
    harness, client, _ = on_chat
    first = await client.responses.create(model="gpt-4o", input="forget me", store=False)
    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.create(model="gpt-4o", previous_response_id=first.id, input="x")
    assert "previous_response_not_found" == caught.value.code
    assert 0 == len(harness.store)
    assert 1 == len(harness.captured)


async def test_stream_error_ends_with_response_failed(on_chat: Any) -> None:
    _, client, fake = on_chat
    fake.enqueue(Fault(sse_error_after_chunks=3))
    async with client.responses.stream(model="gpt-4o", input="hi") as stream:
        events = [event async for event in stream]
    assert ["error", "response.failed"] == [e.type for e in events[-2:]]
    assert "failed" == events[-1].response.status
    with pytest.raises(RuntimeError):
        await stream.get_final_response()


async def test_upstream_error_keeps_openai_shape(on_chat: Any) -> None:
    _, client, _ = on_chat
    with pytest.raises(openai.RateLimitError) as caught:
        await client.responses.create(
            model="gpt-4o",
            input="hi",
            extra_headers={"x-fake-status": "429", "x-fake-retry-after": "2"},
        )
    assert ("2", "rate_limit_exceeded") == (
        caught.value.response.headers["retry-after"],
        caught.value.code,
    )


async def test_responses_on_anthropic_upstream_chained(on_anthropic: Any) -> None:
    harness, client, _ = on_anthropic
    response = await client.responses.create(
        model="claude-sonnet-4-5", input="hi", instructions="terse"
    )
    assert "/v1/messages" == harness.captured[-1].path
    assert "terse" == harness.captured[-1].request["system"]
    upstream = json.loads(harness.captured[-1].body)
    assert upstream["content"][0]["text"] == response.output_text
    async with client.responses.stream(
        model="claude-sonnet-4-5", input="both", tools=[WEATHER, TIME], tool_choice="required"
    ) as stream:
        final = await stream.get_final_response()
    _, calls, _ = anthropic_stream_summary(harness.captured[-1].body)
    assert calls == [(o.call_id, o.name, o.arguments) for o in final.output]
