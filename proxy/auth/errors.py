"""A refusal as the proxy's one error type, so the boundary renders it in the route's shape."""

from __future__ import annotations

from ..errors import ProxyError
from .gate import Refusal

__all__ = ["refusal_error"]


def refusal_error(refusal: Refusal) -> ProxyError:
    """The ProxyError to raise from ``on_request``: status, OpenAI type and code, Anthropic type,
    and the Retry-After / x-should-retry headers the refusal calls for."""
    error = ProxyError(refusal.message, headers=refusal.headers())
    error.status = refusal.status
    error.openai_type = refusal.openai_type
    error.anthropic_type = refusal.anthropic_type
    error.code = refusal.code
    return error
