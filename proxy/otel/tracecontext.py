"""W3C Trace Context (``traceparent``/``tracestate``), ids and the sampling decision.

The proxy's span is the child of a client's ``traceparent``; without one it starts a trace.
Sampling is ``ParentBased(TraceIdRatioBased(ratio))`` as the OpenTelemetry SDK defines it: a
parent's sampled flag is followed, a new trace is kept when the low 64 bits of its id fall
under ``ratio * 2**64`` (so every service with the same ratio keeps the same traces).
"""

from __future__ import annotations

import random
import re
from typing import NamedTuple

from multidict import CIMultiDictProxy

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_MAX_TRACESTATE = 512
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_BOUND = 1 << 64


class Parent(NamedTuple):
    """A caller's span context, from its ``traceparent``."""

    trace_id: bytes
    span_id: bytes
    sampled: bool
    trace_state: str


def parse_traceparent(value: str | None, tracestate: str | None = None) -> Parent | None:
    """The parent a ``traceparent`` names, or None for a missing or invalid one (a new trace
    starts then, as the W3C spec says). Future versions are read by their version-00 prefix."""
    if not value:
        return None
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None:
        return None
    version, trace_hex, span_hex, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or _ZERO_TRACE == trace_hex:
        return None
    if span_hex == _ZERO_SPAN:
        return None
    state = (tracestate or "").strip()
    return Parent(
        bytes.fromhex(trace_hex),
        bytes.fromhex(span_hex),
        bool(int(flags, 16) & 1),
        state if len(state) <= _MAX_TRACESTATE else "",
    )


def parent_of(headers: CIMultiDictProxy[str]) -> Parent | None:
    if "traceparent" not in headers:
        return None
    return parse_traceparent(headers.get("traceparent"), headers.get("tracestate"))


def new_trace_id() -> bytes:
    value = random.getrandbits(128)
    return value.to_bytes(16, "big") if value else new_trace_id()


def new_span_id() -> bytes:
    value = random.getrandbits(64)
    return value.to_bytes(8, "big") if value else new_span_id()


def format_traceparent(trace_id: bytes, span_id: bytes, sampled: bool) -> str:
    return f"00-{trace_id.hex()}-{span_id.hex()}-{'01' if sampled else '00'}"


class Sampler:
    """ParentBased(TraceIdRatioBased(ratio))."""

    def __init__(self, ratio: float) -> None:
        self._bound = round(ratio * _BOUND)

    def sampled(self, trace_id: bytes, parent: Parent | None) -> bool:
        if parent is not None:
            return parent.sampled
        return int.from_bytes(trace_id[8:], "big") < self._bound


class TraceIds(NamedTuple):
    """The ids of one request's span (fixed when the request starts if injection needs them)."""

    trace_id: bytes
    span_id: bytes
    parent: Parent | None
    sampled: bool

    @property
    def traceparent(self) -> str:
        return format_traceparent(self.trace_id, self.span_id, self.sampled)


def trace_ids(headers: CIMultiDictProxy[str], sampler: Sampler) -> TraceIds:
    parent = parent_of(headers)
    trace_id = parent.trace_id if parent is not None else new_trace_id()
    return TraceIds(trace_id, new_span_id(), parent, sampler.sampled(trace_id, parent))
