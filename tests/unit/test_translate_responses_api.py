"""The Responses API on a chat upstream: request items, the response object, and the
conversation store behind ``previous_response_id``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.translate import (
    ApiFamily,
    ClientApi,
    Endpoint,
    LocalAnswer,
    MemoryResponseStore,
    StoredConversation,
    TranslatedRequest,
    Translation,
    TranslationOptions,
    translation_for,
)
from proxy.translate.responses_chat.request import chat_request
from proxy.translate.responses_chat.response import ResponseContext, response_from_chat

OPTIONS = TranslationOptions()
RESPONSES = ClientApi(ApiFamily.OPENAI_RESPONSES, Endpoint.GENERATE)
TOOL = {
    "type": "function",
    "name": "w",
    "description": "weather",
    "parameters": {"type": "object"},
    "strict": True,
}


@pytest.mark.parametrize(
    ("body", "messages"),
    [
        ({"model": "m", "input": "hi"}, [{"role": "user", "content": "hi"}]),
        (
            {
                "model": "m",
                "instructions": "sys",
                "input": [{"role": "developer", "content": "dev"}],
            },
            [{"role": "system", "content": "sys"}, {"role": "system", "content": "dev"}],
        ),
        (
            {
                "model": "m",
                "input": [
                    {
                        "type": "message",
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "see"},
                            {
                                "type": "input_image",
                                "image_url": "https://x/a.png",
                                "detail": "low",
                            },
                        ],
                    },
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [
                            {"type": "output_text", "text": "ok, "},
                            {"type": "output_text", "text": "calling"},
                        ],
                    },
                    {
                        "type": "function_call",
                        "call_id": "call_1",
                        "name": "w",
                        "arguments": '{"a":1}',
                    },
                    {"type": "function_call", "call_id": "call_2", "name": "t", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                    {
                        "type": "function_call_output",
                        "call_id": "call_2",
                        "output": [{"type": "input_text", "text": "noon"}],
                    },
                ],
            },
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "see"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://x/a.png", "detail": "low"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": "ok, calling",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"a":1}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "t", "arguments": "{}"},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "noon"}],
                },
            ],
        ),
    ],
    ids=["string-input", "instructions-and-developer", "items-calls-outputs"],
)
def test_input_items_to_messages(body: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    assert messages == chat_request(body, (), OPTIONS).body["messages"]  # type: ignore[index]


def test_request_fields() -> None:
    body = {
        "model": "m",
        "input": "x",
        "max_output_tokens": 50,
        "temperature": 0.3,
        "top_p": 0.8,
        "tools": [TOOL, {"type": "web_search"}],
        "tool_choice": {"type": "function", "name": "w"},
        "parallel_tool_calls": False,
        "text": {
            "format": {
                "type": "json_schema",
                "name": "out",
                "schema": {"type": "object"},
                "strict": True,
            }
        },
        "reasoning": {"effort": "low", "summary": "auto"},
        "stream": True,
        "user": "u",
        "store": False,
        "truncation": "disabled",
        "include": ["reasoning.encrypted_content"],
    }
    translated = chat_request(body, (), OPTIONS)
    assert {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 50,
        "temperature": 0.3,
        "top_p": 0.8,
        "user": "u",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "w",
                    "description": "weather",
                    "parameters": {"type": "object"},
                    "strict": True,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "w"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
        },
        "reasoning_effort": "low",
        "stream": True,
        "stream_options": {"include_usage": True},
    } == translated.body
    assert ("include", "tools[].web_search", "reasoning.summary") == translated.dropped


def test_response_object_from_chat_completion() -> None:
    ctx = ResponseContext(
        {"model": "m", "instructions": "be brief", "store": False},
        response_id="resp_ab",
        created_at=5,
    )
    completion = {
        "model": "m-2024",
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "checking",
                    "tool_calls": [
                        {
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "w", "arguments": "{}"},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 20,
            "completion_tokens": 4,
            "total_tokens": 24,
            "prompt_tokens_details": {"cached_tokens": 8},
        },
    }
    response = response_from_chat(ctx, completion)
    assert ("resp_ab", 5, "completed", "m-2024", "be brief", False) == (
        response["id"],
        response["created_at"],
        response["status"],
        response["model"],
        response["instructions"],
        response["store"],
    )
    assert [
        {
            "id": "msg_ab",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [
                {"type": "output_text", "text": "checking", "annotations": [], "logprobs": []}
            ],
        },
        {
            "id": "fc_ab_0",
            "type": "function_call",
            "call_id": "call_9",
            "name": "w",
            "arguments": "{}",
            "status": "completed",
        },
    ] == response["output"]
    assert {
        "input_tokens": 20,
        "input_tokens_details": {"cached_tokens": 8},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 24,
    } == response["usage"]


def chat_answer(text: str) -> bytes:
    return json.dumps(
        {
            "model": "m",
            "choices": [
                {"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


async def one_turn(
    store: MemoryResponseStore | None, body: dict[str, Any], answer: str
) -> tuple[Any, dict[str, Any]]:
    plan = translation_for(RESPONSES, ApiFamily.OPENAI_CHAT, store=store)
    assert isinstance(plan, Translation)
    request = await plan.request(body)
    if isinstance(request, LocalAnswer):
        return request, {}
    response = json.loads(plan.response(200, {}, chat_answer(answer)).body)
    await plan.settle()
    return request, response


async def test_previous_response_id_continues_the_conversation() -> None:
    store = MemoryResponseStore()
    _, first = await one_turn(store, {"model": "m", "input": "one", "instructions": "sys"}, "two")
    request, _ = await one_turn(
        store, {"model": "m", "input": "three", "previous_response_id": first["id"]}, "four"
    )
    assert isinstance(request, TranslatedRequest)
    assert [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ] == request.body["messages"]  # type: ignore[index]


@pytest.mark.parametrize("store", [MemoryResponseStore(), None], ids=["unknown-id", "no-store"])
async def test_unknown_previous_response_is_a_404(store: MemoryResponseStore | None) -> None:
    answer, _ = await one_turn(
        store, {"model": "m", "input": "x", "previous_response_id": "resp_gone"}, ""
    )
    assert isinstance(answer, LocalAnswer)
    assert (404, "previous_response_not_found", "previous_response_id") == (
        answer.response.status,
        json.loads(answer.response.body)["error"]["code"],
        json.loads(answer.response.body)["error"]["param"],
    )


async def test_store_false_stores_nothing() -> None:
    store = MemoryResponseStore()
    await one_turn(store, {"model": "m", "input": "x", "store": False}, "y")
    assert 0 == len(store)


async def test_store_entries_expire_after_the_ttl() -> None:
    now = [0.0]
    store = MemoryResponseStore(ttl_s=10, clock=lambda: now[0])
    item = {"role": "user", "content": "1"}
    await store.put("resp_a", [item])
    now[0] = 9.9
    assert StoredConversation((item,)) == await store.get("resp_a")
    now[0] = 10
    assert None is await store.get("resp_a")


async def test_store_evicts_the_oldest_beyond_max_entries() -> None:
    store = MemoryResponseStore(max_entries=2)
    for response_id in ("resp_a", "resp_b", "resp_c"):
        await store.put(response_id, [])
    found = [await store.get(r) is not None for r in ("resp_a", "resp_b", "resp_c")]
    assert [False, True, True] == found
