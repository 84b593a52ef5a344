"""Upstream errors rendered in the client family's shape and status, hints kept."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.translate import translate_error

ANTHROPIC_529 = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
OPENAI_429 = {
    "error": {
        "message": "Rate limit reached for requests",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


def anthropic_error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def openai_error(
    kind: str, message: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@pytest.mark.parametrize(
    ("status", "body", "client", "expected_status", "expected"),
    [
        pytest.param(
            529,
            ANTHROPIC_529,
            "openai",
            503,
            openai_error("server_error", "Overloaded"),
            id="529-to-openai-503",
        ),
        pytest.param(
            429,
            anthropic_error("rate_limit_error", "slow down"),
            "openai",
            429,
            openai_error("requests", "slow down", "rate_limit_exceeded"),
            id="anthropic-429",
        ),
        pytest.param(
            401,
            anthropic_error("authentication_error", "bad key"),
            "openai",
            401,
            openai_error("invalid_request_error", "bad key", "invalid_api_key"),
            id="anthropic-401",
        ),
        pytest.param(
            400,
            anthropic_error(
                "invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum"
            ),
            "openai",
            400,
            openai_error(
                "invalid_request_error",
                "This model's maximum context length is 200000 tokens. However, your messages "
                "resulted in 250000 tokens. Please reduce the length of the messages.",
                "context_length_exceeded",
            ),
            id="anthropic-context-to-openai-wording",
        ),
        pytest.param(
            429,
            OPENAI_429,
            "anthropic",
            429,
            anthropic_error("rate_limit_error", "Rate limit reached for requests"),
            id="openai-429",
        ),
        pytest.param(
            503,
            openai_error("server_error", "The engine is currently overloaded"),
            "anthropic",
            529,
            anthropic_error("overloaded_error", "The engine is currently overloaded"),
            id="openai-503-to-anthropic-529",
        ),
        pytest.param(
            404,
            openai_error("invalid_request_error", "The model does not exist", "model_not_found"),
            "anthropic",
            404,
            anthropic_error("not_found_error", "The model does not exist"),
            id="openai-404",
        ),
        pytest.param(
            400,
            openai_error(
                "invalid_request_error",
                "This model's maximum context length is 128000 tokens. However, your messages "
                "resulted in 130000 tokens.",
                "context_length_exceeded",
                "messages",
            ),
            "anthropic",
            400,
            anthropic_error(
                "invalid_request_error", "prompt is too long: 130000 tokens > 128000 maximum"
            ),
            id="openai-context-to-anthropic-wording",
        ),
        pytest.param(
            400,
            {
                "error": {
                    "code": 400,
                    "message": "the request exceeds the available context size",
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": 5000,
                    "n_ctx": 4096,
                }
            },
            "anthropic",
            400,
            anthropic_error(
                "invalid_request_error", "prompt is too long: 5000 tokens > 4096 maximum"
            ),
            id="llama-cpp-context",
        ),
        pytest.param(
            400,
            {
                "object": "error",
                "message": "This model's maximum context length is 8192 tokens. However, you "
                "requested 9000 tokens (8000 in the messages, 1000 in the completion).",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            },
            "anthropic",
            400,
            anthropic_error(
                "invalid_request_error", "prompt is too long: 9000 tokens > 8192 maximum"
            ),
            id="vllm-flat-context",
        ),
        pytest.param(
            500,
            {"error": "model runner crashed"},
            "anthropic",
            500,
            anthropic_error("api_error", "model runner crashed"),
            id="ollama-string-error",
        ),
        pytest.param(
            429,
            openai_error(
                "insufficient_quota", "You exceeded your current quota", "insufficient_quota"
            ),
            "anthropic",
            429,
            anthropic_error("rate_limit_error", "You exceeded your current quota"),
            id="openai-quota",
        ),
    ],
)
def test_error_translation(
    status: int, body: dict[str, Any], client: str, expected_status: int, expected: dict[str, Any]
) -> None:
    translated = translate_error(status, {}, json.dumps(body).encode(), client)  # type: ignore[arg-type]
    assert (expected_status, expected) == (translated.status, json.loads(translated.body))


@pytest.mark.parametrize(
    ("status", "body", "client", "expected"),
    [
        (
            502,
            b"<html>Bad Gateway</html>",
            "openai",
            openai_error("server_error", "Upstream returned HTTP 502: <html>Bad Gateway</html>"),
        ),
        (
            403,
            b"",
            "anthropic",
            anthropic_error("permission_error", "Upstream returned HTTP 403: (empty body)"),
        ),
    ],
)
def test_unrecognised_bodies_are_wrapped_with_their_status(
    status: int, body: bytes, client: str, expected: dict[str, Any]
) -> None:
    translated = translate_error(status, {}, body, client)  # type: ignore[arg-type]
    assert (status, expected) == (translated.status, json.loads(translated.body))


def test_wait_hints_and_rate_limit_headers_survive() -> None:
    headers = {
        "retry-after": "12",
        "retry-after-ms": "12000",
        "anthropic-ratelimit-requests-remaining": "0",
        "request-id": "req_1",
        "content-length": "80",
        "content-type": "application/json",
    }
    translated = translate_error(529, headers, json.dumps(ANTHROPIC_529).encode(), "openai")
    assert [
        ("retry-after", "12"),
        ("retry-after-ms", "12000"),
        ("anthropic-ratelimit-requests-remaining", "0"),
        ("request-id", "req_1"),
        ("x-request-id", "req_1"),
        ("Content-Type", "application/json"),
    ] == list(translated.headers)
