"""A finished request as spans: the request's CLIENT span, one child per upstream attempt,
events for context trimming, holds and upstreams skipped while cooling down.

It reads the exchange's settled records and the ids fixed when the request started, and
returns :class:`~proxy.otel.otlp.SpanData` with epoch-nanosecond times converted from the
exchange's monotonic clock, so a span's timing is the request's, not the time of the report.
The attributes that follow from a span's shape are encoded once per shape and reused
(:class:`ShapeBlocks`); only the varying ones are left to encode per span.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import NamedTuple, TypeVar

from ..exchange import Exchange
from ..outcomes import Attempt, AttemptReason
from . import semconv
from .otlp import (
    FLAG_HAS_REMOTE_INFO,
    FLAG_REMOTE_PARENT,
    FLAG_SAMPLED,
    Event,
    SpanData,
    encode_attributes,
)
from .semconv import Attributes, Shape
from .tracecontext import TraceIds, new_span_id

MAX_SHAPES = 4096
S = TypeVar("S", bound=Hashable)


class Clock:
    """Monotonic instants as epoch nanoseconds, with one offset for a whole report."""

    __slots__ = ("now", "offset")

    def __init__(self) -> None:
        self.now = time.monotonic()
        self.offset = time.time_ns() - int(self.now * 1e9)

    def ns(self, t: float) -> int:
        return int(t * 1e9) + self.offset


class AttemptFace(NamedTuple):
    """What an attempt's child span takes from its shape: name, attributes, error type."""

    name: str
    block: bytes
    error: str | None


class ShapeBlocks:
    """Encoded attribute blocks by shape, at most ``limit`` (then encoded each time).
    Used from the event loop only."""

    def __init__(self, limit: int = MAX_SHAPES) -> None:
        self._blocks: dict[Hashable, bytes] = {}
        self._faces: dict[tuple[object, ...], AttemptFace] = {}
        self._limit = limit

    def attempt(self, ex: Exchange, attempt: Attempt, number: int) -> AttemptFace:
        """The face of an attempt, looked up by the raw facts its shape is made of (so the
        common case does not even build the shape)."""
        route = ex.route.config.prefix if ex.route is not None else None
        key = (
            route,
            ex.request.method,
            number,
            attempt.upstream,
            attempt.reason,
            attempt.status,
            attempt.hint,
            attempt.stream_failure,
            attempt.event_type,
        )
        face = self._faces.get(key)
        if face is None:
            shape = semconv.attempt_shape(ex, attempt, number)
            block = encode_attributes(semconv.attempt_attributes(shape))
            face = AttemptFace(f"{shape.method} {shape.upstream}", block, shape.error)
            if len(self._faces) < self._limit:
                self._faces[key] = face
        return face

    def get(self, shape: S, attributes: Callable[[S], Attributes]) -> bytes:
        """The encoded ``attributes(shape)``."""
        block = self._blocks.get(shape)
        if block is None:
            block = encode_attributes(attributes(shape))
            if len(self._blocks) < self._limit:
                self._blocks[shape] = block
        return block


def request_spans(
    ex: Exchange,
    ids: TraceIds,
    shape: Shape,
    clock: Clock,
    blocks: ShapeBlocks,
    content: Attributes,
) -> list[SpanData]:
    """The request span first, then its attempt children."""
    parent = ids.parent
    flags = FLAG_SAMPLED | FLAG_HAS_REMOTE_INFO | (FLAG_REMOTE_PARENT if parent else 0)
    attrs = semconv.varying_attributes(ex, shape)
    if content:
        attrs.update(content)
    root = SpanData(
        trace_id=ids.trace_id,
        span_id=ids.span_id,
        parent_span_id=parent.span_id if parent is not None else b"",
        name=shape.span_name,
        start_ns=clock.ns(ex.t_start),
        end_ns=clock.ns(clock.now),
        attributes=attrs,
        encoded_attributes=blocks.get(shape, semconv.shape_attributes),
        events=_events(ex, clock),
        error=None if shape.error is None else (ex.error or shape.error)[:200],
        trace_state=parent.trace_state if parent is not None else "",
        flags=flags,
    )
    return [root, *_attempts(ex, root, clock, blocks)]


def _events(ex: Exchange, clock: Clock) -> list[Event]:
    events = []
    context = ex.context
    if context is not None and context.trimmed_messages > 0:
        started = [a.started for a in ex.attempts if a.started is not None]
        attrs: Attributes = {
            "llm_proxy.context.trimmed_messages": context.trimmed_messages,
            "llm_proxy.context.budget": context.budget,
            "llm_proxy.context.prompt_tokens_est": context.prompt_tokens_est,
            "llm_proxy.context.count_method": context.count_method,
        }
        at = started[0] if started else ex.t_start
        events.append(Event(semconv.COMPACTED_EVENT, clock.ns(at), attrs))
    for hold in ex.retry.holds:
        attrs = {
            "llm_proxy.hold.kind": hold.kind.value,
            "llm_proxy.hold.scope": hold.scope,
            "llm_proxy.hold.waited_s": round(hold.waited_s, 6),
        }
        events.append(Event(semconv.HOLD_EVENT, clock.ns(hold.started), attrs))
    cursor = ex.t_start
    for attempt in ex.attempts:  # an upstream skipped while cooling down sent nothing
        if attempt.started is None:
            attrs = {
                "llm_proxy.upstream": attempt.upstream,
                "llm_proxy.attempt.reason": attempt.reason.value,
            }
            events.append(Event(semconv.SKIPPED_EVENT, clock.ns(cursor), attrs))
        else:
            cursor = attempt.started + attempt.duration_s + attempt.waited_s
    if len(events) > 1:
        events.sort(key=lambda e: e.time_ns)
    return events


def _attempts(ex: Exchange, root: SpanData, clock: Clock, blocks: ShapeBlocks) -> list[SpanData]:
    """One child per attempt sent. The attempt that answered lasts until the response ended
    (its body was relayed); a failed one ends with its failure."""
    sent = [i for i, a in enumerate(ex.attempts) if a.started is not None]
    answered = ex.upstream.name if ex.upstream is not None else None
    children = []
    for i in sent:
        attempt = ex.attempts[i]
        assert attempt.started is not None
        end = attempt.started + attempt.duration_s
        if i == sent[-1] and attempt.reason is AttemptReason.ANSWERED:
            end = clock.now if attempt.upstream == answered else end
        face = blocks.attempt(ex, attempt, i + 1)
        waited: Attributes = {}
        if attempt.waited_s > 0:
            waited["llm_proxy.attempt.waited_s"] = round(attempt.waited_s, 6)
        children.append(
            SpanData(
                root.trace_id,
                new_span_id(),
                root.span_id,
                face.name,
                clock.ns(attempt.started),
                clock.ns(end),
                waited,
                face.block,
                [],
                None if face.error is None else (attempt.detail or face.error)[:200],
                root.trace_state,
                FLAG_SAMPLED | FLAG_HAS_REMOTE_INFO,
            )
        )
    return children
