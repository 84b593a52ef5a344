"""The worst case a request is admitted with: never below what a provider can bill for it."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pytest

from proxy.auth.reserve import BodyUnreadable, WorstCase, decode_body, parse_object, worst_case
from proxy.context.images import MAX_MEDIA_TOKENS
from proxy.context.tokens import ANTHROPIC_TOOL_PROMPT_TOKENS, count_request

CHAT = "/v1/chat/completions"


def body_of(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def case(data: dict[str, Any], tail: str = CHAT) -> WorstCase:
    raw = body_of(data)
    return worst_case(raw, parse_object(raw), tail)


def message(text: str) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}


@pytest.mark.parametrize(
    ("data", "tail", "output"),
    [
        ({**message("hi"), "max_tokens": 100}, CHAT, 100),
        ({**message("hi"), "max_completion_tokens": 50, "n": 3}, CHAT, 150),
        (message("hi"), CHAT, None),  # no cap: the gate reserves its default
        ({"model": "text-embedding-3-small", "input": ["a", "b"]}, "/v1/embeddings", 0),
        ({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": []}, "/v1/messages", 64),
    ],
)
def test_output_is_the_cap_times_the_choices(data: dict[str, Any], tail: str, output: int) -> None:
    assert output == case(data, tail).max_output_tokens


@pytest.mark.parametrize(
    "text",
    ["hello " * 500, "日本語のテキスト" * 300, "a" * 5000, "🙂" * 1000, "x = [1, 2, 3]\n" * 200],
)
def test_input_bound_is_never_below_the_exact_count(text: str) -> None:
    data = message(text)
    exact = count_request(data, "openai", 1.0).tokens  # gpt-4o: tiktoken, exact
    got = case(data)
    assert "gpt-4o" == got.model
    assert exact <= got.input_tokens
    assert len(body_of(data)) + ANTHROPIC_TOOL_PROMPT_TOKENS == got.input_tokens


def test_media_and_escaped_markers_are_counted() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}
    data = {"model": "gpt-4o", "messages": [{"role": "user", "content": [image, image]}]}
    plain = body_of(data)
    markers = plain.count(b'"image_url"')  # the part type and its key: 2 per image
    expected = len(plain) + markers * MAX_MEDIA_TOKENS + ANTHROPIC_TOOL_PROMPT_TOKENS
    assert expected == case(data).input_tokens
    hidden = plain.replace(b'"image_url"', b'"\\u0069mage_url"')  # the same JSON, escaped
    got = worst_case(hidden, parse_object(hidden), CHAT)
    assert 2 * MAX_MEDIA_TOKENS < got.input_tokens


def test_a_body_that_is_not_json_names_no_model() -> None:
    assert WorstCase(None, 11 + ANTHROPIC_TOOL_PROMPT_TOKENS, None) == worst_case(
        b"not json \x00\x01", None, CHAT
    )


def test_compressed_bodies_are_decoded_within_the_limit() -> None:
    raw = body_of(message("hello " * 100))
    assert raw == decode_body(gzip.compress(raw), "gzip", 1 << 20)
    assert raw == decode_body(zlib.compress(raw), "deflate", 1 << 20)
    assert raw == decode_body(raw, "identity", 1 << 20)
    bomb = gzip.compress(b"0" * (10 << 20))
    with pytest.raises(BodyUnreadable, match="exceeds"):
        decode_body(bomb, "gzip", 1 << 20)
    with pytest.raises(BodyUnreadable, match="truncated"):
        decode_body(gzip.compress(raw)[:-20], "gzip", 1 << 20)
    with pytest.raises(BodyUnreadable, match="unsupported"):
        decode_body(raw, "br", 1 << 20)
