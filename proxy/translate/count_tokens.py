"""Anthropic ``count_tokens`` answered locally when the upstream speaks OpenAI (which has no
such endpoint): the request is translated as it would be sent, then counted the way the
proxy's context budget counts OpenAI chat bodies, i.e. in the upstream model's terms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.context.tokens import count_request

from .anthropic_chat.request_to_chat import chat_request
from .records import TranslationOptions
from .wire import dumps

__all__ = ["count_tokens_body"]


def count_tokens_body(
    body: Mapping[str, Any], options: TranslationOptions, safety_factor: float = 1.2
) -> bytes:
    """The Anthropic ``{"input_tokens": N}`` answer for a count_tokens request body."""
    translated = chat_request({**body, "max_tokens": 1}, options).body or {}
    count = count_request(translated, "openai", safety_factor=safety_factor)
    return dumps({"input_tokens": count.tokens})
