"""The seam between the HTTP plumbing (app.py) and the provider shapes (*_api.py).

A builder is a pure function ``Call -> Reply``: it never touches aiohttp, so delays,
faults, gzip and streaming live in one place and every endpoint gets them for free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .caching import NO_CACHE, CacheUse
from .content import output_limit
from .faults import Fault, Provider


@dataclass(frozen=True)
class Call:
    """What a builder needs to know about one request."""

    payload: dict[str, Any]
    chunks: int
    """Content chunks asked for (``x-fake-chunks`` or the fake's default)."""
    seq: int
    """Per-fake request number, for the request-id header (``req_fake_7``)."""
    key: str = "0"
    """Hash of the request body, for object ids: the same request gets the same answer."""
    provider: Provider = "openai"
    path: str = ""
    query: Mapping[str, str] = field(default_factory=dict)
    match: Mapping[str, str] = field(default_factory=dict)
    credential: str = ""
    """Digest of the request's credential header (whose prompt cache, ``caching.py``)."""
    cache: CacheUse = NO_CACHE
    """Prompt tokens this request read from (and, Anthropic, wrote to) the fake's cache."""

    @property
    def model(self) -> str:
        model = self.payload.get("model")
        return model if isinstance(model, str) else "fake-model"

    @property
    def stream(self) -> bool:
        return self.payload.get("stream") is True

    @property
    def content_chunks(self) -> int:
        """Chunks actually produced: the request's output cap wins when lower."""
        limit = output_limit(self.payload)
        return self.chunks if limit is None else min(self.chunks, limit)

    @property
    def truncated(self) -> bool:
        return self.content_chunks < self.chunks


@dataclass(frozen=True)
class Reply:
    """A complete answer: a body (non-streaming) or SSE events (streaming, one write each)."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/json"
    events: Sequence[bytes] | None = None


Builder = Callable[[Call], Reply]


@dataclass(frozen=True)
class Plan:
    """How to deliver one answer: the fault in force plus per-request pacing."""

    fault: Fault
    chunks: int
    chunk_delay_s: float = 0.0
    gzip: bool = False


def _number(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"header {name}: not a number: {raw!r}") from None
    if value < 0:
        raise ValueError(f"header {name}: must be >= 0, got {raw!r}")
    return value


def header_fault(headers: Mapping[str, str]) -> Fault:
    """The fault asked for by ``x-fake-status``, ``-retry-after``, ``-first-byte-delay-ms``."""
    status = _number(headers, "x-fake-status")
    retry_after = headers.get("x-fake-retry-after")
    return Fault(
        status=None if status is None else int(status),
        headers={} if retry_after is None else {"retry-after": retry_after},
        first_byte_delay_s=(_number(headers, "x-fake-first-byte-delay-ms") or 0.0) / 1000,
    )


def make_plan(
    headers: Mapping[str, str], queued: Fault | None, default_chunks: int, default_delay_s: float
) -> Plan:
    """A queued fault wins over the ``x-fake-*`` fault headers; pacing headers always apply.

    Raises ValueError (answered with 400) for malformed ``x-fake-*`` values.
    """
    chunks = _number(headers, "x-fake-chunks")
    delay_ms = _number(headers, "x-fake-chunk-delay-ms")
    fault = queued if queued is not None else header_fault(headers)
    return Plan(
        fault=fault,
        chunks=default_chunks if chunks is None else int(chunks),
        chunk_delay_s=default_delay_s if delay_ms is None else delay_ms / 1000,
        gzip=headers.get("x-fake-gzip") == "1" and "gzip" in headers.get("accept-encoding", ""),
    )
