"""The fake upstream answers a forced ``tool_choice`` with tool calls, in each provider's
exact shapes, streaming and not (checked with the official SDKs); everything else keeps the
deterministic text answer."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from proxy.fake_upstream import FakeUpstream, fake_text, prompt_tokens
from proxy.fake_upstream.tool_calls import ToolCall, fake_arguments
from tests.translate_harness import sse_payloads

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "metric": {"type": "boolean"},
        "tags": {"type": "array"},
        "extra": {"type": "object"},
        "any": {},
    },
}
ARGS = {"city": "tok0", "days": 1, "metric": True, "tags": [], "extra": {}, "any": None}
OAI_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
CLAUDE_TOOLS = [
    {"name": "get_weather", "input_schema": SCHEMA},
    {"name": "get_time", "input_schema": {"type": "object"}},
]
USER = [{"role": "user", "content": "weather please"}]


def test_arguments_follow_the_schema() -> None:
    assert ARGS == fake_arguments(SCHEMA)


@pytest.mark.parametrize("chunks", [1, 3, 7, 500])
def test_argument_pieces_join_back_to_the_json(chunks: int) -> None:
    call = ToolCall(0, "get_weather", ARGS)
    pieces = call.pieces(chunks)
    assert (call.arguments_json, min(chunks, len(call.arguments_json))) == (
        "".join(pieces),
        len(pieces),
    )


@pytest.fixture
async def url(aiohttp_server: Any) -> str:
    server = await aiohttp_server(FakeUpstream().make_app())
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def oai(url: str) -> Any:
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client:
        yield client


@pytest.fixture
async def claude(url: str) -> Any:
    async with anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0) as client:
        yield client


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "names"),
    [
        ({"type": "function", "function": {"name": "get_weather"}}, True, ["get_weather"]),
        ("required", True, ["get_weather", "get_time"]),
        ("required", False, ["get_weather"]),
    ],
)
async def test_openai_forced_tool_calls(
    oai: Any, tool_choice: Any, parallel: bool, names: list[str]
) -> None:
    chat = await oai.chat.completions.create(
        model="m",
        messages=USER,
        tools=OAI_TOOLS,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
    )
    calls = chat.choices[0].message.tool_calls
    assert names == [c.function.name for c in calls]
    assert ["call_fake_"] * len(names) == [c.id[:10] for c in calls]
    assert ("tool_calls", None) == (chat.choices[0].finish_reason, chat.choices[0].message.content)
    assert ARGS == json.loads(calls[0].function.arguments)


async def test_openai_streamed_tool_calls_come_as_argument_pieces(oai: Any, url: str) -> None:
    async with oai.chat.completions.stream(
        model="m",
        messages=USER,
        tools=OAI_TOOLS,
        tool_choice="required",
        stream_options={"include_usage": True},
        extra_headers={"x-fake-chunks": "3"},
    ) as stream:
        final = await stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [ARGS, {}] == [json.loads(c.function.arguments) for c in calls]
    assert "tool_calls" == final.choices[0].finish_reason
    assert 3 + 2 == final.usage.completion_tokens  # "{}" is two characters: two pieces


async def test_openai_raw_stream_sends_name_once_then_pieces(oai: Any) -> None:
    raw = await oai.chat.completions.with_raw_response.create(
        model="m",
        messages=USER,
        tools=OAI_TOOLS[:1],
        tool_choice="required",
        stream=True,
        extra_headers={"x-fake-chunks": "4"},
    )
    body = b"".join([chunk async for chunk in raw.http_response.aiter_bytes()])
    deltas = [d["choices"][0]["delta"] for _, d in sse_payloads(body)[:-1]]
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert ["get_weather"] == [c["function"]["name"] for c in calls if "name" in c["function"]]
    assert 1 + 4 == len(calls)


@pytest.mark.parametrize(
    ("tool_choice", "names"),
    [
        ({"type": "tool", "name": "get_time"}, ["get_time"]),
        ({"type": "any"}, ["get_weather", "get_time"]),
        ({"type": "any", "disable_parallel_tool_use": True}, ["get_weather"]),
    ],
)
async def test_anthropic_forced_tool_use(claude: Any, tool_choice: Any, names: list[str]) -> None:
    msg = await claude.messages.create(
        model="c", max_tokens=100, messages=USER, tools=CLAUDE_TOOLS, tool_choice=tool_choice
    )
    assert names == [b.name for b in msg.content]
    assert ["toolu_fake_"] * len(names) == [b.id[:11] for b in msg.content]
    assert "tool_use" == msg.stop_reason


async def test_anthropic_streamed_tool_use_accumulates(claude: Any) -> None:
    async with claude.messages.stream(
        model="c",
        max_tokens=100,
        messages=USER,
        tools=CLAUDE_TOOLS,
        tool_choice={"type": "any"},
        extra_headers={"x-fake-chunks": "3"},
    ) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_message()
    assert [ARGS, {}] == [b.input for b in final.content]
    pieces = [e.delta.partial_json for e in events if e.type == "content_block_delta"]
    assert ["", *ToolCall(0, "w", ARGS).pieces(3), "", "{", "}"] == pieces
    assert ("tool_use", 5) == (final.stop_reason, final.usage.output_tokens)


@pytest.mark.parametrize("tool_choice", [None, "auto", "none"])
async def test_unforced_requests_keep_the_text_answer(oai: Any, tool_choice: str | None) -> None:
    extra = {} if tool_choice is None else {"tool_choice": tool_choice}
    chat = await oai.chat.completions.create(model="m", messages=USER, tools=OAI_TOOLS, **extra)
    assert (fake_text(5), None) == (
        chat.choices[0].message.content,
        chat.choices[0].message.tool_calls,
    )


async def test_tool_results_in_the_next_request_get_a_text_answer(claude: Any) -> None:
    first = await claude.messages.create(
        model="c",
        max_tokens=100,
        messages=USER,
        tools=CLAUDE_TOOLS,
        tool_choice={"type": "tool", "name": "get_time"},
    )
    messages = [
        *USER,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": first.content[0].id, "content": "noon sharp"}
            ],
        },
    ]
    second = await claude.messages.create(
        model="c", max_tokens=100, messages=messages, tools=CLAUDE_TOOLS
    )
    assert (fake_text(5), "end_turn") == (second.content[0].text, second.stop_reason)
    assert prompt_tokens({"messages": messages}) == second.usage.input_tokens
