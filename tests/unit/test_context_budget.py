"""The context plugin's parse-free peek: a lower bound on the budget from the raw bytes."""

from __future__ import annotations

import json

from proxy.config import Context
from proxy.models import DEFAULT_REGISTRY
from proxy.plugins.context_budget import peek_budget


def test_peek_reads_model_and_reserve_without_parsing() -> None:
    body = json.dumps({"model": "gpt-4", "max_tokens": 1000, "messages": []}).encode()
    peeked = peek_budget(body, Context(safety_margin=0), DEFAULT_REGISTRY)
    assert peeked is not None and ("gpt-4", 8192 - 1000) == (peeked[0], peeked[1].tokens)


def test_peek_takes_the_smallest_budget_when_nested_keys_match() -> None:
    """A tool schema may carry its own "model" key: the peek must stay a lower bound."""
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
            "max_tokens": 0,
        }
    ).encode()
    peeked = peek_budget(body, Context(safety_margin=0), DEFAULT_REGISTRY)
    assert peeked is not None and 8192 == peeked[1].tokens


def test_peek_without_model_or_with_an_unknown_one_says_unknown() -> None:
    assert peek_budget(b'{"messages": []}', Context(), DEFAULT_REGISTRY) is None
    body = b'{"model": "my-own-model", "messages": []}'
    assert peek_budget(body, Context(), DEFAULT_REGISTRY) is None
