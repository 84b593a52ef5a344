"""Context-length errors read into figures, and the error-driven retry's budget."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from proxy.context.overflow import (
    ContextOverflow,
    OverflowSource,
    RetryBudget,
    parse_overflow,
    retry_budget,
)
from proxy.fake_upstream.faults import error_body

OAI, A, L, V = (
    OverflowSource.OPENAI,
    OverflowSource.ANTHROPIC,
    OverflowSource.LLAMA_CPP,
    OverflowSource.VLLM,
)


def openai(message: str, code: str | None = "context_length_exceeded") -> bytes:
    err = {"message": message, "type": "invalid_request_error", "param": "messages", "code": code}
    return json.dumps({"error": err}).encode()


def anthropic(message: str) -> bytes:
    return json.dumps(
        {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    ).encode()


LLAMA = json.dumps(
    {
        "error": {
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 2314,
            "n_ctx": 2048,
        }
    }
).encode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            openai(
                "This model's maximum context length is 128000 tokens. However, your messages "
                "resulted in 130512 tokens. Please reduce the length of the messages."
            ),
            ContextOverflow(OAI, 128000, 130512, None, None),
        ),
        (
            openai(
                "This model's maximum context length is 8192 tokens. However, you requested "
                "9000 tokens (8000 in the messages, 1000 in the completion). Please reduce the "
                "length of the messages or completion."
            ),
            ContextOverflow(OAI, 8192, 8000, 1000, 9000),
        ),
        (
            openai(
                "Your input exceeds the context window of this model. Please adjust your "
                "input and try again."
            ),
            ContextOverflow(OAI, None, None, None, None),
        ),
        (
            anthropic("prompt is too long: 210,345 tokens > 200000 maximum"),
            ContextOverflow(A, 200000, 210345, None, None),
        ),
        (
            anthropic(
                "input length and `max_tokens` exceed context limit: 195000 + 8192 > 200000, "
                "decrease input length or `max_tokens` and try again"
            ),
            ContextOverflow(A, 200000, 195000, 8192, 203192),
        ),
        (LLAMA, ContextOverflow(L, 2048, 2314, None, 2314)),
        (
            json.dumps(
                {
                    "object": "error",
                    "message": "This model's maximum context length is 4096 tokens. However, "
                    "you requested 4200 tokens (3900 in the messages, 300 in the completion). "
                    "Please reduce the length of the messages or completion.",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                }
            ).encode(),
            ContextOverflow(V, 4096, 3900, 300, 4200),
        ),
        (
            openai(
                "This model's maximum context length is 1536 tokens. However, your request has "
                "4176 input tokens. Please reduce the length of the input messages.",
                code=None,
            ),
            ContextOverflow(V, 1536, 4176, None, None),
        ),
        (
            openai(
                "'max_tokens' or 'max_completion_tokens' is too large: 8000. This model's "
                "maximum context length is 4096 tokens and your request has 2778 input tokens "
                "(8000 > 4096 - 2778). None",
                code=None,
            ),
            ContextOverflow(V, 4096, 2778, 8000, 10778),
        ),
        (
            openai("the input length exceeds the context length", code=None),
            ContextOverflow(OverflowSource.OLLAMA, None, None, None, None),
        ),
    ],
)
def test_each_server_shape_is_read_into_its_figures(body: bytes, expected: Any) -> None:
    assert expected == parse_overflow(400, body)


def test_gzip_compressed_error_body_is_read() -> None:
    assert ContextOverflow(L, 2048, 2314, None, 2314) == parse_overflow(
        400, gzip.compress(LLAMA), "gzip"
    )


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, error_body("openai", 400)),
        (400, error_body("anthropic", 400, "max_tokens: Field required")),
        (429, openai("This model's maximum context length is 10 tokens.")),
        (400, b"not json"),
        (400, b"\x1f\x8bgarbage"),
        (400, b"[]"),
    ],
)
def test_other_errors_are_not_overflows(status: int, body: bytes) -> None:
    assert None is parse_overflow(status, body)


def test_retry_budget_scales_the_server_budget_by_the_measured_ratio() -> None:
    """llama.cpp counted 2314 where the proxy counted 1900: the target is 2048 minus the
    output reserve share minus 3% headroom, in proxy units."""
    rec = ContextOverflow(L, 2048, 2314, None, 2314)
    got = retry_budget(rec, sent_estimate=1900, reserve=None)
    server = 2048 - 512 - 62
    assert RetryBudget(int(server / (2314 / 1900)), server, 2314 / 1900) == got


def test_retry_budget_uses_stated_completion_then_max_tokens() -> None:
    rec = ContextOverflow(OAI, 8192, 8000, 1000, 9000)
    assert 8192 - 1000 - 246 == retry_budget(rec, sent_estimate=8000, reserve=50).server_budget
    rec = ContextOverflow(A, 200000, 210000, None, None)
    assert (
        200000 - 4096 - 6000 == retry_budget(rec, sent_estimate=150000, reserve=4096).server_budget
    )


def test_retry_budget_without_figures_shrinks_what_failed() -> None:
    rec = ContextOverflow(OAI, None, None, None, None)
    assert RetryBudget(700, None, None) == retry_budget(rec, sent_estimate=1000, reserve=None)
    got = retry_budget(rec, sent_estimate=1000, reserve=100, known_window=600)
    assert RetryBudget(600 - 100 - 18, 482, None) == got


@pytest.mark.parametrize(
    "rec",
    [
        ContextOverflow(V, 4096, 2778, 8000, 10778),  # max_tokens alone overflows
        ContextOverflow(OAI, 100000, 900, None, None),  # the target is not below what was sent
    ],
)
def test_retry_budget_is_none_when_trimming_cannot_fix_it(rec: ContextOverflow) -> None:
    assert None is retry_budget(rec, sent_estimate=1000, reserve=None)
