"""The context plugin's budget arithmetic and its parse-free peek."""

from __future__ import annotations

import json

from proxy.config import Context
from proxy.plugins.context_budget import ContextBudget, budget_for, is_chat_endpoint, peek_budget


def test_budget_is_window_minus_reserve_minus_margin() -> None:
    ctx = Context(reserve_output_tokens=4000, safety_margin=100)
    assert 128000 - 500 - 100 == budget_for(ctx, 128000, 500).tokens  # type: ignore[union-attr]
    assert 128000 - 4000 - 100 == budget_for(ctx, 128000, None).tokens  # type: ignore[union-attr]


def test_route_cap_lowers_budget() -> None:
    ctx = Context(max_input_tokens=2000)
    assert 2000 == budget_for(ctx, 128000, None).tokens  # type: ignore[union-attr]
    assert 2000 == budget_for(ctx, None, None).tokens  # type: ignore[union-attr]


def test_unknown_model_without_cap_has_no_budget() -> None:
    assert budget_for(Context(), None, None) is None


def test_peek_reads_model_and_reserve_without_parsing() -> None:
    plugin = ContextBudget()
    body = json.dumps({"model": "gpt-4", "max_tokens": 1000, "messages": []}).encode()
    peeked = peek_budget(Context(safety_margin=0), body, plugin.window_of)
    assert peeked is not None and 8192 - 1000 == peeked.tokens


def test_peek_takes_the_smallest_budget_when_nested_keys_match() -> None:
    """A tool schema may carry its own "model" key: the peek must stay a lower bound."""
    plugin = ContextBudget()
    body = json.dumps(
        {
            "model": "gpt-4o",
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {"type": "object", "properties": {}, "model": "gpt-4"},
                    },
                }
            ],
            "messages": [],
        }
    ).encode()
    peeked = peek_budget(Context(safety_margin=0, reserve_output_tokens=0), body, plugin.window_of)
    assert peeked is not None and 8192 == peeked.tokens


def test_peek_without_model_says_unknown() -> None:
    assert peek_budget(Context(), b'{"messages": []}', ContextBudget().window_of) is None


def test_chat_endpoints() -> None:
    assert is_chat_endpoint("openai", "/v1/chat/completions")
    assert is_chat_endpoint("anthropic", "/v1/messages")
    assert not is_chat_endpoint("anthropic", "/v1/messages/count_tokens")
    assert not is_chat_endpoint("openai", "/v1/embeddings")
