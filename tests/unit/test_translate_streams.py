"""Stream translators: the same output whatever the chunking of the upstream bytes, the
exact client grammar, content equal to the upstream's, and failures as in-stream errors.
Upstream streams come from the fake upstream's own builders."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.fake_upstream import anthropic_api, openai_api
from proxy.fake_upstream.calls import Call
from proxy.fake_upstream.faults import stream_error_event
from proxy.translate.anthropic_chat.stream_to_anthropic import ChatToAnthropicStream
from proxy.translate.anthropic_chat.stream_to_chat import AnthropicToChatStream
from proxy.translate.records import StreamTranslator
from proxy.translate.responses_chat.response import ResponseContext
from proxy.translate.responses_chat.stream import ChatToResponsesStream
from tests.translate_harness import anthropic_stream_summary, chat_stream_summary, sse_payloads

USER = [{"role": "user", "content": "weather and time please"}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}
OPENAI_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}},
    {"type": "function", "function": {"name": "get_time", "parameters": SCHEMA}},
]
ANTHROPIC_TOOLS = [
    {"name": "get_weather", "input_schema": SCHEMA},
    {"name": "get_time", "input_schema": SCHEMA},
]


def chat_upstream(chunks: int = 3, tools: bool = False) -> list[bytes]:
    payload: dict[str, Any] = {
        "model": "m",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if tools:
        payload |= {"tools": OPENAI_TOOLS, "tool_choice": "required"}
    return list(
        openai_api.chat_completions(Call(payload=payload, chunks=chunks, seq=1, key="k")).events
        or ()
    )


def anthropic_upstream(chunks: int = 3, tools: bool = False) -> list[bytes]:
    payload: dict[str, Any] = {"model": "m", "max_tokens": 100, "messages": USER, "stream": True}
    if tools:
        payload |= {"tools": ANTHROPIC_TOOLS, "tool_choice": {"type": "any"}}
    call = Call(payload=payload, chunks=chunks, seq=1, key="k", provider="anthropic")
    return list(anthropic_api.messages(call).events or ())


def to_anthropic() -> StreamTranslator:
    return ChatToAnthropicStream({})


def to_chat() -> StreamTranslator:
    return AnthropicToChatStream({}, include_usage=True, created=1)


def to_responses() -> StreamTranslator:
    return ChatToResponsesStream(
        ResponseContext({"model": "m"}, response_id="resp_t", created_at=1), {}
    )


CASES = {
    "chat-text->anthropic": (to_anthropic, chat_upstream()),
    "chat-tools->anthropic": (to_anthropic, chat_upstream(tools=True)),
    "anthropic-text->chat": (to_chat, anthropic_upstream()),
    "anthropic-tools->chat": (to_chat, anthropic_upstream(tools=True)),
    "chat-text->responses": (to_responses, chat_upstream()),
    "chat-tools->responses": (to_responses, chat_upstream(tools=True)),
}


def run(make: Callable[[], StreamTranslator], pieces: list[bytes]) -> bytes:
    translator = make()
    return b"".join([translator.feed(p) for p in pieces] + [translator.finish()])


@pytest.mark.parametrize("case", CASES)
def test_every_two_way_split_gives_the_same_output(case: str) -> None:
    make, events = CASES[case]
    raw = b"".join(events)
    whole = run(make, [raw])
    for cut in range(1, len(raw)):
        assert whole == run(make, [raw[:cut], raw[cut:]]), f"split at byte {cut}"
    assert whole == run(make, [raw[i : i + 1] for i in range(len(raw))])


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(sorted(CASES)),
    st.lists(st.integers(1, 5000), max_size=25),
)
def test_random_splits_of_long_streams_give_the_same_output(case: str, cuts: list[int]) -> None:
    make, _ = CASES[case]
    upstream = chat_upstream if case.startswith("chat") else anthropic_upstream
    raw = b"".join(upstream(chunks=40, tools="tools" in case))
    points = sorted({c % len(raw) for c in cuts} | {0, len(raw)})
    pieces = [raw[a:b] for a, b in itertools.pairwise(points)]
    assert run(make, [raw]) == run(make, pieces)


def carries_content(event: bytes) -> bool:
    """Text or tool-argument pieces (chat delta or Anthropic content_block_delta)."""
    ((_, data),) = sse_payloads(event)
    if data == "[DONE]":
        return False
    if data.get("type") == "content_block_delta":
        delta = data["delta"]
        return bool(delta.get("text") or delta.get("partial_json"))
    for choice in data.get("choices") or ():
        delta = choice["delta"]
        pieces = [c.get("function", {}).get("arguments") for c in delta.get("tool_calls") or ()]
        if delta.get("content") or any(pieces):
            return True
    return False


@pytest.mark.parametrize("case", CASES)
def test_each_content_event_is_translated_when_it_arrives(case: str) -> None:
    """Fed event by event, every upstream event with content yields client bytes at once
    (only the closing events wait, for the usage that follows the finish)."""
    make, events = CASES[case]
    translator = make()
    outputs = [(carries_content(event), translator.feed(event)) for event in events]
    assert [] != [out for content, out in outputs if content]
    assert all(out for content, out in outputs if content)


def check_anthropic_grammar(raw: bytes) -> None:
    events = sse_payloads(raw)
    assert all(name == data["type"] for name, data in events)
    names = [name for name, _ in events]
    assert ("message_start", ["message_delta", "message_stop"]) == (names[0], names[-2:])
    open_block, opened = None, 0
    for name, data in events[1:-2]:
        if name == "content_block_start":
            assert (None, opened) == (open_block, data["index"])
            open_block, opened = opened, opened + 1
        elif name == "content_block_delta":
            assert data["index"] < opened
        elif name == "content_block_stop":
            assert open_block == data["index"]
            open_block = None
        else:
            assert "ping" == name
    assert open_block is None


def check_chat_grammar(raw: bytes) -> None:
    events = sse_payloads(raw)
    *chunks, done = [data for _, data in events]
    assert "[DONE]" == done
    assert {"chat.completion.chunk"} == {c["object"] for c in chunks}
    assert "assistant" == chunks[0]["choices"][0]["delta"]["role"]
    finishes = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert 1 == len(finishes)
    assert ([], True) == (chunks[-1]["choices"], "usage" in chunks[-1])


def check_responses_grammar(raw: bytes) -> None:
    events = sse_payloads(raw)
    assert all(name == data["type"] for name, data in events)
    assert list(range(len(events))) == [data["sequence_number"] for _, data in events]
    names = [name for name, _ in events]
    assert ["response.created", "response.in_progress"] == names[:2]
    assert "response.completed" == names[-1]
    added = [d["output_index"] for n, d in events if n == "response.output_item.added"]
    done = [d["output_index"] for n, d in events if n == "response.output_item.done"]
    assert (list(range(len(added))), sorted(added)) == (sorted(done), added)
    final = events[-1][1]["response"]
    assert [d["item"] for n, d in events if n == "response.output_item.done"] == final["output"]


@pytest.mark.parametrize("case", CASES)
def test_output_follows_the_client_grammar_and_keeps_the_content(case: str) -> None:
    make, events = CASES[case]
    raw = b"".join(events)
    out = run(make, [raw])
    if case.endswith("anthropic"):
        check_anthropic_grammar(out)
        text, calls, _ = chat_stream_summary(raw)
        assert (text, list(calls.values())) == anthropic_stream_summary(out)[:2]
    elif case.endswith("->chat"):
        check_chat_grammar(out)
        text, calls, _ = anthropic_stream_summary(raw)
        got_text, got_calls, _ = chat_stream_summary(out)
        assert (text, calls) == (got_text, list(got_calls.values()))
    else:
        check_responses_grammar(out)
        text, calls, usage = chat_stream_summary(raw)
        final = sse_payloads(out)[-1][1]["response"]
        messages = [i for i in final["output"] if i["type"] == "message"]
        assert text == "".join(p["text"] for m in messages for p in m["content"])
        got = [
            (i["call_id"], i["name"], i["arguments"])
            for i in final["output"]
            if i["type"] == "function_call"
        ]
        assert list(calls.values()) == got
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (  # type: ignore[index]
            final["usage"]["input_tokens"],
            final["usage"]["output_tokens"],
        )


def test_chat_usage_reaches_the_anthropic_message_delta() -> None:
    out = run(to_anthropic, chat_upstream())
    _, _, usage = chat_stream_summary(b"".join(chat_upstream()))
    delta = next(d for n, d in sse_payloads(out) if n == "message_delta")
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (  # type: ignore[index]
        delta["usage"]["input_tokens"],
        delta["usage"]["output_tokens"],
    )


def test_no_usage_chunk_unless_the_openai_client_asked() -> None:
    translator = AnthropicToChatStream({}, include_usage=False, created=1)
    out = translator.feed(b"".join(anthropic_upstream())) + translator.finish()
    chunks = [d for _, d in sse_payloads(out)][:-1]
    assert all(c["choices"] for c in chunks)


ERRORS = {
    "chat->anthropic": (
        to_anthropic,
        chat_upstream(),
        stream_error_event("openai", "/v1/chat/completions"),
        (
            "error",
            {
                "type": "error",
                "error": {"type": "api_error", "message": "The server is overloaded (fake)."},
            },
        ),
    ),
    "anthropic->chat": (
        to_chat,
        anthropic_upstream(),
        stream_error_event("anthropic", "/v1/messages"),
        (
            "message",
            {
                "error": {
                    "message": "Overloaded",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            },
        ),
    ),
}


@pytest.mark.parametrize("case", ERRORS)
def test_in_stream_error_becomes_the_clients_error_event(case: str) -> None:
    make, events, error, expected = ERRORS[case]
    translator = make()
    out = translator.feed(b"".join(events[:3]) + error)
    assert expected == sse_payloads(out)[-1]
    assert b"" == translator.feed(b"".join(events[3:])) + translator.finish()


CUT_MESSAGE = "The upstream stream ended before it was complete."


@pytest.mark.parametrize(
    ("make", "events", "expected"),
    [
        (
            to_anthropic,
            chat_upstream(),
            ("error", {"type": "error", "error": {"type": "api_error", "message": CUT_MESSAGE}}),
        ),
        (
            to_chat,
            anthropic_upstream(),
            (
                "message",
                {
                    "error": {
                        "message": CUT_MESSAGE,
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
            ),
        ),
    ],
    ids=["to-anthropic", "to-chat"],
)
def test_cut_stream_ends_with_an_error_not_a_clean_end(
    make: Callable[[], StreamTranslator], events: list[bytes], expected: tuple[str, Any]
) -> None:
    translator = make()
    out = translator.feed(b"".join(events[:4])) + translator.finish()
    names = [name for name, _ in sse_payloads(out)]
    assert expected == sse_payloads(out)[-1]
    assert "message_stop" not in names and b"[DONE]" not in out


def test_cut_responses_stream_ends_with_error_and_response_failed() -> None:
    translator = to_responses()
    out = translator.feed(b"".join(chat_upstream()[:3])) + translator.abort("idle timeout")
    (_, error), (_, failed) = sse_payloads(out)[-2:]
    assert ("error", "idle timeout") == (error["type"], error["message"])
    assert ("failed", {"code": "server_error", "message": "idle timeout"}) == (
        failed["response"]["status"],
        failed["response"]["error"],
    )


def test_finish_after_the_finish_reason_is_a_clean_end_without_done() -> None:
    """Some servers end the body after the finish chunk without ``[DONE]``."""
    events = [e for e in chat_upstream() if e != openai_api.DONE]
    out = run(to_anthropic, [b"".join(events)])
    assert "message_stop" == sse_payloads(out)[-1][0]


def test_anthropic_thinking_becomes_reasoning_content() -> None:
    events = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "model": "c",
                "usage": {"input_tokens": 3, "output_tokens": 1},
            },
        },
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "hmm"},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "s"},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 4},
        },
        {"type": "message_stop"},
    ]
    raw = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)
    chunks = [d for _, d in sse_payloads(run(to_chat, [raw]))]
    assert [{"reasoning_content": "hmm"}] == [
        c["choices"][0]["delta"]
        for c in chunks
        if c != "[DONE]" and c["choices"] and "reasoning_content" in c["choices"][0]["delta"]
    ]


def test_chat_reasoning_becomes_an_anthropic_thinking_block() -> None:
    raw = (
        chat_chunk({"role": "assistant", "reasoning_content": "let me see"})
        + chat_chunk({"content": "42"})
        + chat_chunk({}, "stop")
    )
    out = run(to_anthropic, [raw + b"data: [DONE]\n\n"])
    blocks = [
        d["content_block"]["type"] for n, d in sse_payloads(out) if n == "content_block_start"
    ]
    deltas = [d["delta"] for n, d in sse_payloads(out) if n == "content_block_delta"]
    assert ["thinking", "text"] == blocks
    assert [
        {"type": "thinking_delta", "thinking": "let me see"},
        {"type": "text_delta", "text": "42"},
    ] == deltas
    check_anthropic_grammar(out)


def chat_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "c1",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def test_tool_calls_without_index_are_told_apart_by_their_ids() -> None:
    """Some servers send each whole call in its own chunk, without ``index``."""
    calls = [("call_a", "w", '{"city":"P"}'), ("call_b", "t", "{}")]
    raw = b"".join(
        chat_chunk(
            {"tool_calls": [{"id": i, "type": "function", "function": {"name": n, "arguments": a}}]}
        )
        for i, n, a in calls
    )
    raw += chat_chunk({}, "tool_calls") + b"data: [DONE]\n\n"
    anthropic_out = run(to_anthropic, [raw])
    assert calls == anthropic_stream_summary(anthropic_out)[1]
    final = sse_payloads(run(to_responses, [raw]))[-1][1]["response"]
    assert calls == [(o["call_id"], o["name"], o["arguments"]) for o in final["output"]]
