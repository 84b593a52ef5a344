"""OpenTelemetry: one CLIENT span per request in the GenAI conventions, a child span per upstream
attempt, events for context trimming and holds, and the GenAI client metrics.

- ``on_request``: the request's span starts, back-dated to the exchange's arrival, as a child of
  the client's ``traceparent`` when it sent one. It starts here rather than in ``on_report``
  because a route that injects trace context needs the span's id before the first attempt is
  sent: it goes into ``ex.outgoing_headers``, which every attempt carries.
- ``on_chunk`` (content capture only): a copy of the answer feeds a tap for the completion text.
- ``on_report``: every outcome is final; the span gets its name and attributes, the attempts
  become child spans with their own start and end times, trims and holds become events, the
  metrics are recorded, and the span ends. A request refused before ``on_request`` ran (unknown
  route, body too large) gets its whole span here.

All timestamps come from the exchange's monotonic clock, converted to epoch nanoseconds once
per report, so a span's timing is the request's, not the time the report ran.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.propagators.textmap import DefaultGetter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..config import Config
from ..errorkind import error_kind
from ..exchange import Exchange
from ..otel import semconv
from ..otel.content import input_attributes, output_attributes
from ..otel.semconv import GenAiCall
from ..otel.telemetry import GenAiInstruments, Telemetry
from ..outcomes import AttemptReason, SlotKey
from ..usage import UsageTap
from . import Plugin
from .usage import open_tap

_SPAN: SlotKey[Span] = SlotKey("otel_span")
_OUTPUT: SlotKey[UsageTap | None] = SlotKey("otel_output_tap")
_NEW: Any = object()
_PROPAGATOR = TraceContextTextMapPropagator()
_GETTER: DefaultGetter = DefaultGetter()  # type: ignore[type-arg]


class _Clock:
    """Monotonic instants as epoch nanoseconds, with one offset for a whole report."""

    __slots__ = ("now", "offset")

    def __init__(self) -> None:
        self.now = time.monotonic()
        self.offset = time.time_ns() - int(self.now * 1e9)

    def ns(self, t: float) -> int:
        return int(t * 1e9) + self.offset


class OtelPlugin(Plugin):
    """Traces and GenAI metrics for every request (see the module docstring for the phases)."""

    name = "otel"

    def __init__(self, telemetry: Telemetry, config: Config, logger: Any) -> None:
        self._tracer = telemetry.tracer
        self._instruments: GenAiInstruments | None = telemetry.instruments
        self._inject = {route.prefix: config.inject_context(route) for route in config.routes}
        self._log = logger

    def _start(self, ex: Exchange, clock: _Clock | None = None) -> Span:
        headers = ex.request.headers
        parent = _PROPAGATOR.extract(headers, getter=_GETTER) if "traceparent" in headers else None
        clock = clock or _Clock()
        span = self._tracer.start_span(
            "request", context=parent, kind=SpanKind.CLIENT, start_time=clock.ns(ex.t_start)
        )
        ex.set_slot(_SPAN, span)
        return span

    async def on_request(self, ex: Exchange) -> None:
        span = self._start(ex)
        assert ex.route is not None
        if self._inject.get(ex.route.config.prefix, False):
            _PROPAGATOR.inject(ex.outgoing_headers, context=set_span_in_context(span))
        return None

    def on_report(self, ex: Exchange) -> None:
        try:
            self._report(ex)
        except Exception as exc:  # a tracing bug must not cost the request its log line
            self._log.error("tracing failed", request_id=ex.request_id, error=repr(exc))

    def _report(self, ex: Exchange) -> None:
        clock = _Clock()
        span = ex.slot(_SPAN) or self._start(ex, clock)
        call = semconv.describe(ex)
        if span.is_recording():
            span.update_name(semconv.span_name(ex, call))
            span.set_attributes(semconv.request_attributes(ex))
            if call is not None:
                span.set_attributes(call.span_attributes())
                self._content(span, ex, call)
            self._events(span, ex, clock)
            self._attempts(span, ex, clock)
            error = error_kind(ex)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, (ex.error or error)[:200]))
        span.end(end_time=clock.ns(clock.now))
        if call is not None and self._instruments is not None:
            _record(self._instruments, call, clock.now - ex.t_start)

    def _content(self, span: Span, ex: Exchange, call: GenAiCall) -> None:
        """Message content: never recorded here (see ContentCapturingOtelPlugin)."""

    def _events(self, span: Span, ex: Exchange, clock: _Clock) -> None:
        context = ex.context
        if context is not None and context.trimmed_messages > 0:
            started = [a.started for a in ex.attempts if a.started is not None]
            span.add_event(
                semconv.COMPACTED_EVENT,
                {
                    "llm_proxy.context.trimmed_messages": context.trimmed_messages,
                    "llm_proxy.context.budget": context.budget,
                    "llm_proxy.context.prompt_tokens_est": context.prompt_tokens_est,
                    "llm_proxy.context.count_method": context.count_method,
                },
                timestamp=clock.ns(started[0] if started else ex.t_start),
            )
        for hold in ex.retry.holds:
            span.add_event(
                semconv.HOLD_EVENT,
                {
                    "llm_proxy.hold.kind": hold.kind.value,
                    "llm_proxy.hold.scope": hold.scope,
                    "llm_proxy.hold.waited_s": round(hold.waited_s, 6),
                },
                timestamp=clock.ns(hold.started),
            )

    def _attempts(self, span: Span, ex: Exchange, clock: _Clock) -> None:
        """One child span per attempt sent; an upstream skipped while cooling down is an event.

        The attempt that answered lasts until the response ended (its body was relayed);
        a failed one ends with its failure.
        """
        parent = set_span_in_context(span)
        sent = [i for i, a in enumerate(ex.attempts) if a.started is not None]
        answered = ex.upstream.name if ex.upstream is not None else None
        cursor = ex.t_start
        for i, attempt in enumerate(ex.attempts):
            if attempt.started is None:
                attrs = {
                    "llm_proxy.upstream": attempt.upstream,
                    "llm_proxy.attempt.reason": attempt.reason.value,
                }
                span.add_event(semconv.SKIPPED_EVENT, attrs, timestamp=clock.ns(cursor))
                continue
            end = attempt.started + attempt.duration_s
            last = i == sent[-1]
            if last and attempt.reason is AttemptReason.ANSWERED and attempt.upstream == answered:
                end = clock.now
            child = self._tracer.start_span(
                f"{ex.request.method} {attempt.upstream}",
                context=parent,
                kind=SpanKind.CLIENT,
                attributes=semconv.attempt_attributes(ex, attempt, i + 1),
                start_time=clock.ns(attempt.started),
            )
            error = semconv.attempt_error(attempt)
            if error is not None:
                child.set_status(Status(StatusCode.ERROR, attempt.detail or error))
            child.end(end_time=clock.ns(end))
            cursor = end + attempt.waited_s


def _record(instruments: GenAiInstruments, call: GenAiCall, duration_s: float) -> None:
    attrs = call.metric_attributes()
    instruments.duration.record(duration_s, attrs)
    if call.time_to_first_chunk_s is not None:
        instruments.time_to_first_chunk.record(call.time_to_first_chunk_s, attrs)
    attrs.pop(semconv.ERROR_TYPE, None)  # not an attribute of token usage
    for kind, count in semconv.token_points(call).items():
        instruments.tokens.record(count, {**attrs, semconv.TOKEN_TYPE: kind})


class ContentCapturingOtelPlugin(OtelPlugin):
    """``otel.capture_content: true``: prompts and completions go on the spans too.

    A separate class so that without capture the pipeline has no ``on_chunk`` of ours to call.
    """

    def on_chunk(self, ex: Exchange, chunk: bytes) -> None:
        tap = ex.slots.get(_OUTPUT, _NEW)
        if tap is _NEW:
            tap = ex.slots[_OUTPUT] = open_tap(ex)
        if tap is not None:
            tap.feed(chunk)

    def _content(self, span: Span, ex: Exchange, call: GenAiCall) -> None:
        span.set_attributes(input_attributes(ex.body))
        tap = ex.slot(_OUTPUT)
        if tap is not None:
            tap.finish()
            span.set_attributes(output_attributes(tap.completion_text, call.finish_reasons))


def otel_plugin(telemetry: Telemetry, config: Config, logger: Any) -> OtelPlugin:
    """The plugin for ``config``: with content capture only when the operator turned it on."""
    cls = ContentCapturingOtelPlugin if config.otel.capture_content else OtelPlugin
    return cls(telemetry, config, logger)
