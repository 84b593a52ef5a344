"""JSON and SSE encoding shared by the translators, plus the response-header rules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..jsonbytes import compact_json, loads_json
from .families import Provider

__all__ = [
    "JSON_BODY_HEADERS",
    "JSON_TYPE",
    "SSE_TYPE",
    "as_object",
    "dumps",
    "loads_object",
    "response_headers",
    "sse",
]

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"
JSON_BODY_HEADERS = {"content-type": JSON_TYPE, "accept-encoding": "identity"}
"""Set on every translated upstream request: translators read the answer's bytes, so the
upstream must not compress them (a client's ``Accept-Encoding: gzip`` must not pass)."""

dumps = compact_json


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE event with its terminating blank line."""
    if event is None:
        return b"data: " + dumps(data) + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + dumps(data) + b"\n\n"


def loads_object(raw: bytes | str) -> dict[str, Any] | None:
    """A JSON object, or None for anything else (bad JSON, a list, a number)."""
    try:
        value = loads_json(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def as_object(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (tolerant field access)."""
    return value if isinstance(value, dict) else {}


_BODY_HEADERS = frozenset(
    {"content-length", "content-encoding", "content-type", "transfer-encoding"}
)
_REQUEST_ID = {"openai": "x-request-id", "anthropic": "request-id"}


def response_headers(
    upstream: Mapping[str, str] | Iterable[tuple[str, str]], client: Provider, content_type: str
) -> tuple[tuple[str, str], ...]:
    """Upstream headers for a translated body: the body-describing ones replaced, the rest
    kept (``retry-after``, ``retry-after-ms``, rate-limit headers, request ids), and the
    upstream's request id also under the name the client's SDK reads."""
    pairs = list(upstream.items() if isinstance(upstream, Mapping) else upstream)
    kept = [(k, v) for k, v in pairs if k.lower() not in _BODY_HEADERS]
    names = {k.lower() for k, _ in kept}
    wanted = _REQUEST_ID[client]
    if wanted not in names:
        for other in _REQUEST_ID.values():
            value = next((v for k, v in kept if k.lower() == other), None)
            if value is not None:
                kept.append((wanted, value))
                break
    kept.append(("Content-Type", content_type))
    return tuple(kept)
