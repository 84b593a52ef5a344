"""Complete responses between the families: content, stop reasons and usage (cached tokens
counted once, in the right field), model lists, and the plan's handling of odd bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.translate import ApiFamily, ClientApi, Endpoint, Translation, translation_for
from proxy.translate.anthropic_chat.common import anthropic_usage, chat_usage
from proxy.translate.anthropic_chat.response import anthropic_message, chat_completion
from proxy.translate.models import anthropic_model_list, openai_model_list


def completion(
    message: dict[str, Any], finish: str, usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    }


def message(
    content: list[dict[str, Any]], stop: str, usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 10, "output_tokens": 2},
    }


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ],
)
def test_chat_finish_reason_to_anthropic_stop_reason(finish: str, stop_reason: str) -> None:
    result = anthropic_message(completion({"role": "assistant", "content": "x"}, finish))
    assert stop_reason == result["stop_reason"]


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_anthropic_stop_reason_to_chat_finish_reason(stop_reason: str, finish: str) -> None:
    result = chat_completion(message([{"type": "text", "text": "x"}], stop_reason))
    assert finish == result["choices"][0]["finish_reason"]


@pytest.mark.parametrize(
    ("openai_usage", "anthropic"),
    [
        (
            {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107},
            {
                "input_tokens": 100,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 7,
            },
        ),
        (
            {
                "prompt_tokens": 100,
                "completion_tokens": 7,
                "total_tokens": 107,
                "prompt_tokens_details": {"cached_tokens": 60},
                "completion_tokens_details": {"reasoning_tokens": 3},
            },
            {
                "input_tokens": 40,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 60,
                "output_tokens": 7,
                "output_tokens_details": {"thinking_tokens": 3},
            },
        ),
    ],
    ids=["no-cache", "cached-subset-moves-out-of-input"],
)
def test_openai_usage_to_anthropic(openai_usage: dict[str, Any], anthropic: dict[str, Any]) -> None:
    assert anthropic == anthropic_usage(openai_usage)


@pytest.mark.parametrize(
    ("anthropic", "openai_usage"),
    [
        (
            {"input_tokens": 5, "output_tokens": 2},
            {
                "prompt_tokens": 5,
                "completion_tokens": 2,
                "total_tokens": 7,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        ),
        (
            {
                "input_tokens": 5,
                "cache_read_input_tokens": 300,
                "cache_creation_input_tokens": 20,
                "output_tokens": 2,
            },
            {
                "prompt_tokens": 325,
                "completion_tokens": 2,
                "total_tokens": 327,
                "prompt_tokens_details": {"cached_tokens": 300},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        ),
    ],
    ids=["no-cache", "reads-and-writes-join-the-prompt-reads-are-cached"],
)
def test_anthropic_usage_to_openai(anthropic: dict[str, Any], openai_usage: dict[str, Any]) -> None:
    assert openai_usage == chat_usage(anthropic)


def test_usage_round_trip_counts_each_token_once() -> None:
    original = {
        "input_tokens": 5,
        "cache_read_input_tokens": 300,
        "cache_creation_input_tokens": 0,
        "output_tokens": 2,
    }
    assert original == anthropic_usage(chat_usage(original))


def test_chat_completion_to_anthropic_message() -> None:
    chat = completion(
        {
            "role": "assistant",
            "content": "Let me check.",
            "reasoning_content": "thinking...",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"city":"P"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "t", "arguments": "{}"}},
            ],
        },
        "tool_calls",
    )
    assert [
        {"type": "thinking", "thinking": "thinking...", "signature": ""},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "w", "input": {"city": "P"}},
        {"type": "tool_use", "id": "call_2", "name": "t", "input": {}},
    ] == anthropic_message(chat)["content"]


def test_chat_refusal_becomes_anthropic_refusal() -> None:
    result = anthropic_message(
        completion({"role": "assistant", "content": None, "refusal": "No."}, "stop")
    )
    assert ([{"type": "text", "text": "No."}], "refusal") == (
        result["content"],
        result["stop_reason"],
    )


def test_anthropic_message_to_chat_completion() -> None:
    anthropic = message(
        [
            {"type": "thinking", "thinking": "hm", "signature": "sig"},
            {"type": "text", "text": "a"},
            {"type": "text", "text": "b"},
            {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"x": [1, 2]}},
        ],
        "tool_use",
    )
    choice = chat_completion(anthropic)["choices"][0]
    assert {
        "role": "assistant",
        "content": "ab",
        "refusal": None,
        "annotations": [],
        "reasoning_content": "hm",
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "w", "arguments": '{"x":[1,2]}'},
            }
        ],
    } == choice["message"]


def test_model_lists_both_ways() -> None:
    openai_list = {
        "object": "list",
        "data": [{"id": "gpt-4o", "object": "model", "created": 0, "owned_by": "x"}],
    }
    assert {
        "data": [
            {
                "type": "model",
                "id": "gpt-4o",
                "display_name": "gpt-4o",
                "created_at": "1970-01-01T00:00:00Z",
            }
        ],
        "has_more": False,
        "first_id": "gpt-4o",
        "last_id": "gpt-4o",
    } == anthropic_model_list(openai_list)
    anthropic_list = {
        "data": [
            {
                "type": "model",
                "id": "claude",
                "display_name": "C",
                "created_at": "2025-01-01T00:00:00Z",
            }
        ]
    }
    assert {
        "object": "list",
        "data": [
            {"id": "claude", "object": "model", "created": 1735689600, "owned_by": "anthropic"}
        ],
    } == openai_model_list(anthropic_list)


def anthropic_on_chat() -> Translation:
    plan = translation_for(ClientApi(ApiFamily.ANTHROPIC, Endpoint.GENERATE), ApiFamily.OPENAI_CHAT)
    assert isinstance(plan, Translation)
    return plan


@pytest.mark.parametrize(
    ("status", "body", "expected_status", "expected_type"),
    [
        (200, b"<html>oops</html>", 502, "api_error"),
        (200, b'{"error": {"message": "boom", "type": "server_error"}}', 500, "api_error"),
        (500, b"", 500, "api_error"),
    ],
    ids=["not-json", "error-inside-200", "empty-500"],
)
def test_odd_upstream_bodies_become_client_errors(
    status: int, body: bytes, expected_status: int, expected_type: str
) -> None:
    response = anthropic_on_chat().response(status, {}, body)
    parsed = json.loads(response.body)
    assert (expected_status, "error", expected_type) == (
        response.status,
        parsed["type"],
        parsed["error"]["type"],
    )


def test_response_headers_keep_rate_limits_and_request_id() -> None:
    headers = [
        ("x-request-id", "req_9"),
        ("x-ratelimit-remaining-requests", "5"),
        ("Content-Length", "999"),
        ("Content-Encoding", "gzip"),
        ("Content-Type", "application/json"),
    ]
    chat = json.dumps(completion({"role": "assistant", "content": "x"}, "stop")).encode()
    response = anthropic_on_chat().response(200, headers, chat)
    assert (
        ("x-request-id", "req_9"),
        ("x-ratelimit-remaining-requests", "5"),
        ("request-id", "req_9"),
        ("Content-Type", "application/json"),
    ) == response.headers
