"""The official SDKs accept translated answers: each SDK talks to a small translating server
(tests/translate_harness.py, not the proxy core) in front of the real fake upstream of the
other family, and what the SDK parsed matches what the upstream produced."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import openai
import pytest

from proxy.context.tokens import count_request
from proxy.fake_upstream import FakeUpstream, Fault, fake_text
from proxy.fake_upstream.content import chunk_text
from proxy.translate import ApiFamily, TranslationOptions
from proxy.translate.anthropic_chat.request_to_chat import chat_request
from tests.translate_harness import (
    Harness,
    anthropic_stream_summary,
    chat_stream_summary,
)

USER_HI = [{"role": "user", "content": "hello there"}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}
TIME = {
    "name": "get_time",
    "description": "Local time in a city.",
    "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}},
}


def openai_tool(tool: dict[str, Any]) -> dict[str, Any]:
    fn = {
        "name": tool["name"],
        "description": tool["description"],
        "parameters": tool["input_schema"],
    }
    return {"type": "function", "function": fn}


@pytest.fixture
async def fake(aiohttp_server: Any) -> tuple[FakeUpstream, str]:
    upstream = FakeUpstream()
    server = await aiohttp_server(upstream.make_app())
    return upstream, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def harness(fake: tuple[FakeUpstream, str], aiohttp_server: Any) -> Harness:
    families = {"anthropic": ApiFamily.OPENAI_CHAT, "openai": ApiFamily.ANTHROPIC}
    h = Harness(fake[1], families)
    server = await aiohttp_server(h.make_app())
    h.url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    return h


@pytest.fixture
async def claude(harness: Harness) -> Any:
    base = f"{harness.url}/anthropic"  # type: ignore[attr-defined]
    async with anthropic.AsyncAnthropic(base_url=base, api_key="k", max_retries=0) as client:
        yield client


@pytest.fixture
async def oai(harness: Harness) -> Any:
    base = f"{harness.url}/openai/v1"  # type: ignore[attr-defined]
    async with openai.AsyncOpenAI(base_url=base, api_key="k", max_retries=0) as client:
        yield client


def anthropic_usage_of(chat_usage: dict[str, Any]) -> tuple[int, int, int]:
    """(input, cache read, output) an Anthropic client must see for a chat upstream's usage."""
    cached = chat_usage["prompt_tokens_details"]["cached_tokens"]
    return chat_usage["prompt_tokens"] - cached, cached, chat_usage["completion_tokens"]


# ---- anthropic SDK -> OpenAI chat upstream ---------------------------------------------


async def test_anthropic_create_on_chat_upstream(claude: Any, harness: Harness) -> None:
    msg = await claude.messages.create(model="gpt-4o", max_tokens=100, messages=USER_HI)
    upstream = json.loads(harness.captured[-1].body)
    assert "/v1/chat/completions" == harness.captured[-1].path
    assert upstream["choices"][0]["message"]["content"] == msg.content[0].text
    assert "end_turn" == msg.stop_reason
    usage = (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens)
    assert anthropic_usage_of(upstream["usage"]) == usage


async def test_anthropic_max_tokens_stop_reason(claude: Any) -> None:
    msg = await claude.messages.create(model="gpt-4o", max_tokens=2, messages=USER_HI)
    assert ("max_tokens", 2) == (msg.stop_reason, msg.usage.output_tokens)


async def test_anthropic_stream_accumulator_on_chat_upstream(claude: Any, harness: Harness) -> None:
    async with claude.messages.stream(model="gpt-4o", max_tokens=100, messages=USER_HI) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    text, _, usage = chat_stream_summary(harness.captured[-1].body)
    assert text == "".join(pieces) == final.content[0].text
    assert "end_turn" == final.stop_reason
    got = (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens)
    assert anthropic_usage_of(usage) == got  # type: ignore[arg-type]
    assert {"include_usage": True} == harness.captured[-1].request["stream_options"]  # type: ignore[index]


async def test_anthropic_tool_use_round_trip(claude: Any, harness: Harness) -> None:
    first = await claude.messages.create(
        model="gpt-4o",
        max_tokens=100,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    call = json.loads(harness.captured[-1].body)["choices"][0]["message"]["tool_calls"][0]
    (block,) = first.content
    assert ("tool_use", "tool_use") == (first.stop_reason, block.type)
    assert (call["id"], "get_weather") == (block.id, block.name)
    assert json.loads(call["function"]["arguments"]) == block.input
    second = await claude.messages.create(
        model="gpt-4o",
        max_tokens=100,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": [block.model_dump(exclude_none=True)]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}],
            },
        ],
    )
    sent = harness.captured[-1].request["messages"]  # type: ignore[index]
    assert {"role": "tool", "tool_call_id": block.id, "content": "sunny"} == sent[-1]
    assert block.id == sent[-2]["tool_calls"][0]["id"]
    answer = json.loads(harness.captured[-1].body)["choices"][0]["message"]["content"]
    assert ("end_turn", answer) == (second.stop_reason, second.content[0].text)


async def test_anthropic_stream_parallel_tool_calls(claude: Any, harness: Harness) -> None:
    async with claude.messages.stream(
        model="gpt-4o",
        max_tokens=100,
        messages=[{"role": "user", "content": "weather and time"}],
        tools=[WEATHER, TIME],
        tool_choice={"type": "any"},
    ) as stream:
        final = await stream.get_final_message()
    _, calls, _ = chat_stream_summary(harness.captured[-1].body)
    expected = [(i, n, json.loads(a)) for i, n, a in calls.values()]
    assert expected == [(b.id, b.name, b.input) for b in final.content]
    assert "tool_use" == final.stop_reason


async def test_anthropic_count_tokens_answered_locally(claude: Any, harness: Harness) -> None:
    counted = await claude.messages.count_tokens(
        model="gpt-4o", messages=USER_HI, system="be brief"
    )
    body = {"model": "gpt-4o", "messages": USER_HI, "system": "be brief", "max_tokens": 1}
    translated = chat_request(body, TranslationOptions()).body
    assert count_request(translated, "openai").tokens == counted.input_tokens  # type: ignore[arg-type]
    assert [] == harness.captured


async def test_anthropic_models_list_from_openai_upstream(claude: Any, harness: Harness) -> None:
    models = [m async for m in claude.models.list()]
    upstream = json.loads(harness.captured[-1].body)
    assert [m["id"] for m in upstream["data"]] == [m.id for m in models]


@pytest.mark.parametrize(
    ("status", "error_class", "client_status"),
    [
        (429, anthropic.RateLimitError, 429),
        (503, anthropic.OverloadedError, 529),
        (400, anthropic.BadRequestError, 400),
        (401, anthropic.AuthenticationError, 401),
    ],
)
async def test_anthropic_errors_from_openai_upstream(
    claude: Any, status: int, error_class: type, client_status: int
) -> None:
    headers = {"x-fake-status": str(status), "x-fake-retry-after": "7"}
    with pytest.raises(error_class) as caught:
        await claude.messages.create(
            model="gpt-4o", max_tokens=10, messages=USER_HI, extra_headers=headers
        )
    assert client_status == caught.value.status_code
    assert "error" == caught.value.body["type"]
    assert "7" == caught.value.response.headers["retry-after"]


@pytest.mark.parametrize(
    "fault",
    [Fault(sse_error_after_chunks=3), Fault(cut_after_chunks=3)],
    ids=["in-stream-error", "cut"],
)
async def test_anthropic_stream_failure_is_an_error_event(
    claude: Any, fake: tuple[FakeUpstream, str], fault: Fault
) -> None:
    fake[0].enqueue(fault)
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with claude.messages.stream(model="gpt-4o", max_tokens=100, messages=USER_HI) as s:
            await s.get_final_message()
    assert "error" == caught.value.body["type"]


# ---- openai SDK -> Anthropic upstream ------------------------------------------------


async def test_openai_chat_on_anthropic_upstream(oai: Any, harness: Harness) -> None:
    chat = await oai.chat.completions.create(model="claude-sonnet-4-5", messages=USER_HI)
    upstream = json.loads(harness.captured[-1].body)
    assert "/v1/messages" == harness.captured[-1].path
    assert upstream["content"][0]["text"] == chat.choices[0].message.content
    assert "stop" == chat.choices[0].finish_reason
    u = upstream["usage"]
    prompt = u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"]
    assert (prompt, u["output_tokens"]) == (chat.usage.prompt_tokens, chat.usage.completion_tokens)
    assert u["cache_read_input_tokens"] == chat.usage.prompt_tokens_details.cached_tokens
    assert 4096 == harness.captured[-1].request["max_tokens"]  # type: ignore[index]


async def test_openai_stream_with_usage_on_anthropic_upstream(oai: Any, harness: Harness) -> None:
    stream = await oai.chat.completions.create(
        model="claude-sonnet-4-5",
        messages=USER_HI,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text, _, usage = anthropic_stream_summary(harness.captured[-1].body)
    assert text == "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "stop" == chunks[-2].choices[0].finish_reason
    assert [] == chunks[-1].choices
    expected = usage["input_tokens"] + usage["cache_read_input_tokens"], usage["output_tokens"]
    assert expected == (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens)


async def test_openai_stream_helper_with_tools_on_anthropic(oai: Any, harness: Harness) -> None:
    async with oai.chat.completions.stream(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": "weather and time"}],
        tools=[openai_tool(WEATHER), openai_tool(TIME)],
        tool_choice="required",
    ) as stream:
        final = await stream.get_final_completion()
    _, calls, _ = anthropic_stream_summary(harness.captured[-1].body)
    got = [
        (c.id, c.function.name, c.function.arguments) for c in final.choices[0].message.tool_calls
    ]
    assert calls == got
    assert "tool_calls" == final.choices[0].finish_reason


async def test_openai_tool_round_trip_on_anthropic(oai: Any, harness: Harness) -> None:
    tools = [openai_tool(WEATHER)]
    first = await oai.chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": "weather?"}],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    block = json.loads(harness.captured[-1].body)["content"][0]
    (call,) = first.choices[0].message.tool_calls
    assert (block["id"], block["input"]) == (call.id, json.loads(call.function.arguments))
    await oai.chat.completions.create(
        model="claude-sonnet-4-5",
        tools=tools,
        messages=[
            {"role": "user", "content": "weather?"},
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
    )
    sent = harness.captured[-1].request["messages"]  # type: ignore[index]
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}
    assert {"role": "user", "content": [result]} == sent[-1]


@pytest.mark.parametrize(
    ("status", "error_class", "client_status"),
    [(529, openai.InternalServerError, 503), (429, openai.RateLimitError, 429)],
)
async def test_openai_errors_from_anthropic_upstream(
    oai: Any, status: int, error_class: type, client_status: int
) -> None:
    headers = {"x-fake-status": str(status), "x-fake-retry-after": "3"}
    with pytest.raises(error_class) as caught:
        await oai.chat.completions.create(
            model="claude-sonnet-4-5", messages=USER_HI, extra_headers=headers
        )
    assert client_status == caught.value.status_code
    assert "3" == caught.value.response.headers["retry-after"]
    assert {"message", "type", "param", "code"} == set(caught.value.body)


async def test_openai_stream_error_event_from_anthropic(
    oai: Any, fake: tuple[FakeUpstream, str]
) -> None:
    fake[0].enqueue(Fault(sse_error_after_chunks=4))
    stream = await oai.chat.completions.create(model="c", messages=USER_HI, stream=True)
    with pytest.raises(openai.APIError) as caught:
        [chunk async for chunk in stream]
    assert "Overloaded" == caught.value.message


async def test_openai_models_list_from_anthropic_upstream(oai: Any, harness: Harness) -> None:
    models = [m async for m in oai.models.list()]
    upstream = json.loads(harness.captured[-1].body)
    assert [m["id"] for m in upstream["data"]] == [m.id for m in models]
    assert {"model"} == {m.object for m in models}


# ---- translation does not buffer ----------------------------------------------------------


async def test_translated_stream_reaches_the_client_while_upstream_holds(
    claude: Any, fake: tuple[FakeUpstream, str]
) -> None:
    """The fake holds its stream after the first content chunk until the client has seen
    that text: a translator that waited for more would never let the test finish."""
    upstream = fake[0]
    upstream.hold_after_chunk = 2  # the role chunk and the first content chunk

    async def consume() -> tuple[str, str]:
        first, texts = "", []
        stream = await claude.messages.create(
            model="gpt-4o", max_tokens=100, messages=USER_HI, stream=True
        )
        async for event in stream:
            if event.type == "content_block_delta":
                if not upstream.release.is_set():
                    first = event.delta.text
                    upstream.release.set()
                texts.append(event.delta.text)
        return first, "".join(texts)

    first, whole = await asyncio.wait_for(consume(), timeout=30)
    assert (chunk_text(0), fake_text(5)) == (first, whole)
