"""A finished request as spans: the request's CLIENT span, one child per upstream attempt,
events for context trimming, holds and upstreams skipped while cooling down.

Pure: it reads the exchange's settled records and the ids fixed when the request started, and
returns :class:`~proxy.otel.otlp.SpanData` with epoch-nanosecond times converted from the
exchange's monotonic clock, so a span's timing is the request's, not the time of the report.
"""

from __future__ import annotations

import time

from ..exchange import Exchange
from ..outcomes import AttemptReason
from . import semconv
from .otlp import FLAG_HAS_REMOTE_INFO, FLAG_REMOTE_PARENT, FLAG_SAMPLED, Event, SpanData
from .semconv import Attributes, GenAiCall
from .tracecontext import TraceIds, new_span_id


class Clock:
    """Monotonic instants as epoch nanoseconds, with one offset for a whole report."""

    __slots__ = ("now", "offset")

    def __init__(self) -> None:
        self.now = time.monotonic()
        self.offset = time.time_ns() - int(self.now * 1e9)

    def ns(self, t: float) -> int:
        return int(t * 1e9) + self.offset


def request_spans(
    ex: Exchange,
    ids: TraceIds,
    call: GenAiCall | None,
    clock: Clock,
    content: Attributes,
    error: str | None,
) -> list[SpanData]:
    """The request span first, then its attempt children (``error``: the ``error_kind``)."""
    attrs = semconv.request_attributes(ex, error)
    if call is not None:
        attrs.update(call.span_attributes())
        attrs.update(content)
    parent = ids.parent
    flags = FLAG_SAMPLED | FLAG_HAS_REMOTE_INFO | (FLAG_REMOTE_PARENT if parent else 0)
    root = SpanData(
        trace_id=ids.trace_id,
        span_id=ids.span_id,
        parent_span_id=parent.span_id if parent is not None else b"",
        name=semconv.span_name(ex, call),
        start_ns=clock.ns(ex.t_start),
        end_ns=clock.ns(clock.now),
        attributes=attrs,
        events=_events(ex, clock),
        error=None if error is None else (ex.error or error)[:200],
        trace_state=parent.trace_state if parent is not None else "",
        flags=flags,
    )
    return [root, *_attempts(ex, root, clock)]


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
    return sorted(events, key=lambda e: e.time_ns)


def _attempts(ex: Exchange, root: SpanData, clock: Clock) -> list[SpanData]:
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
        error = semconv.attempt_error(attempt)
        children.append(
            SpanData(
                trace_id=root.trace_id,
                span_id=new_span_id(),
                parent_span_id=root.span_id,
                name=f"{ex.request.method} {attempt.upstream}",
                start_ns=clock.ns(attempt.started),
                end_ns=clock.ns(end),
                attributes=semconv.attempt_attributes(ex, attempt, i + 1),
                error=None if error is None else (attempt.detail or error)[:200],
                trace_state=root.trace_state,
                flags=FLAG_SAMPLED | FLAG_HAS_REMOTE_INFO,
            )
        )
    return children
