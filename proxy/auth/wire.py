"""What the auth plugin reads from a request: the client's key and the output it may ask for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["client_secret", "requested_output_tokens"]

_OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
"""Chat Completions (new, old), Anthropic Messages and legacy completions, Responses API."""


def client_secret(headers: Mapping[str, str]) -> str | None:
    """The key where the client's SDK puts one: ``Authorization: Bearer ...`` (OpenAI) or
    ``x-api-key`` (Anthropic). A non-Bearer Authorization counts as no key."""
    auth = headers.get("Authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def requested_output_tokens(body: Mapping[str, Any] | None) -> int | None:
    """The request's output cap, or None when it sets none (the gate reserves its default)."""
    if not body:
        return None
    for field in _OUTPUT_FIELDS:
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None
