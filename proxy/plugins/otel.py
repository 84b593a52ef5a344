"""OpenTelemetry: one CLIENT span per request in the GenAI conventions, a child span per upstream
attempt, events for context trimming and holds, and the GenAI client metrics.

- ``on_request``: the request's trace ids are fixed (a child of the client's ``traceparent``
  when it sent one) and the sampling decided. This happens here rather than in ``on_report``
  because a route that injects trace context needs the span's id before the first attempt is
  sent: it goes into ``ex.outgoing_headers``, which every attempt carries.
- ``on_chunk`` (content capture only): a copy of the answer feeds a tap for the completion text.
- ``on_report``: every outcome is final. A sampled request becomes spans (built from the
  exchange's records with its own timestamps) handed to the export queue, and a model call
  is recorded in the GenAI histograms, sampled or not. A request refused before
  ``on_request`` ran (unknown route, body too large) gets its ids here.

The event loop only builds small records; encoding and sending happen on the export thread.
"""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..errorkind import error_kind
from ..exchange import Exchange
from ..otel import semconv
from ..otel.content import input_attributes, output_attributes
from ..otel.semconv import Attributes, GenAiCall
from ..otel.spans import Clock, request_spans
from ..otel.telemetry import Telemetry
from ..otel.tracecontext import TraceIds, trace_ids
from ..outcomes import SlotKey
from ..usage import UsageTap
from . import Plugin
from .usage import open_tap

_IDS: SlotKey[TraceIds] = SlotKey("otel_ids")
_OUTPUT: SlotKey[UsageTap | None] = SlotKey("otel_output_tap")
_NEW: Any = object()


class OtelPlugin(Plugin):
    """Traces and GenAI metrics for every request (see the module docstring for the phases)."""

    name = "otel"

    def __init__(self, telemetry: Telemetry, config: Config, logger: Any) -> None:
        self._telemetry = telemetry
        self._sampler = telemetry.sampler
        self._inject = {route.prefix: config.inject_context(route) for route in config.routes}
        self._log = logger

    def _ids(self, ex: Exchange) -> TraceIds:
        ids = trace_ids(ex.request.headers, self._sampler)
        ex.set_slot(_IDS, ids)
        return ids

    async def on_request(self, ex: Exchange) -> None:
        ids = self._ids(ex)
        assert ex.route is not None
        if self._inject.get(ex.route.config.prefix, False):
            ex.outgoing_headers["traceparent"] = ids.traceparent
            if ids.parent is not None and ids.parent.trace_state:
                ex.outgoing_headers["tracestate"] = ids.parent.trace_state
        return None

    def on_report(self, ex: Exchange) -> None:
        try:
            self._report(ex)
        except Exception as exc:  # a tracing bug must not cost the request its log line
            self._log.error("tracing failed", request_id=ex.request_id, error=repr(exc))

    def _report(self, ex: Exchange) -> None:
        clock = Clock()
        ids = ex.slot(_IDS) or self._ids(ex)
        error = error_kind(ex)
        call = semconv.describe(ex, error)
        if ids.sampled:
            content = self._content(ex, call) if call is not None else {}
            self._telemetry.submit(request_spans(ex, ids, call, clock, content, error))
        if call is not None:
            self._telemetry.record(call, clock.now - ex.t_start)

    def _content(self, ex: Exchange, call: GenAiCall) -> Attributes:
        """Message content: never recorded here (see ContentCapturingOtelPlugin)."""
        return {}


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

    def _content(self, ex: Exchange, call: GenAiCall) -> Attributes:
        attrs = input_attributes(ex.body)
        tap = ex.slot(_OUTPUT)
        if tap is not None:
            tap.finish()
            attrs.update(output_attributes(tap.completion_text, call.finish_reasons))
        return attrs


def otel_plugin(telemetry: Telemetry, config: Config, logger: Any) -> OtelPlugin:
    """The plugin for ``config``: with content capture only when the operator turned it on."""
    cls = ContentCapturingOtelPlugin if config.otel.capture_content else OtelPlugin
    return cls(telemetry, config, logger)
