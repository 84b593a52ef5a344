"""OpenTelemetry: one CLIENT span per request in the GenAI conventions, a child span per upstream
attempt, events for context trimming and holds, and the GenAI client metrics.

- ``on_request`` (only when some route injects trace context): the request's trace ids are
  fixed (a child of the client's ``traceparent`` when it sent one) and the sampling decided,
  because injection needs the span's id before the first attempt is sent: it goes into
  ``ex.outgoing_headers``, which every attempt carries. Otherwise the ids are made in
  ``on_report``.
- ``on_chunk`` (content capture only): a copy of the answer feeds a tap for the completion text.
- ``on_report``: every outcome is final. A sampled request becomes spans (built from the
  exchange's records with its own timestamps) handed to the export queue, and a model call
  is recorded in the GenAI histograms, sampled or not.

Spans are encoded on the loop (see :mod:`proxy.otel.export` for why) and
sent by the export task.
"""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..errorkind import error_kind
from ..exchange import Exchange
from ..otel import semconv
from ..otel.content import input_attributes, output_attributes
from ..otel.semconv import Attributes, Shape
from ..otel.spans import Clock, ShapeBlocks, request_spans
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
    """Traces and GenAI metrics for every request (see the module docstring for the phases).

    This base class reports only; :func:`otel_plugin` adds ``on_request`` when some route
    injects trace context and ``on_chunk`` when content is captured, so a proxy that needs
    neither pays for neither (the pipeline calls only the phases a plugin overrides).
    """

    name = "otel"

    def __init__(self, telemetry: Telemetry, config: Config, logger: Any) -> None:
        self._telemetry = telemetry
        self._sampler = telemetry.sampler
        self._blocks = ShapeBlocks()
        self._inject = {route.prefix: config.inject_context(route) for route in config.routes}
        self._log = logger

    def _ids(self, ex: Exchange) -> TraceIds:
        ids = trace_ids(ex.request.headers, self._sampler)
        ex.set_slot(_IDS, ids)
        return ids

    async def on_report(self, ex: Exchange) -> None:
        try:
            self._report(ex)
        except Exception as exc:  # a tracing bug must not cost the request its log line
            self._log.error("tracing failed", request_id=ex.request_id, error=repr(exc))

    def _report(self, ex: Exchange) -> None:
        clock = Clock()
        ids = ex.slot(_IDS) or self._ids(ex)
        shape = semconv.shape_of(ex, error_kind(ex))
        if ids.sampled:
            content = self._content(ex, shape) if shape.operation is not None else {}
            spans = request_spans(ex, ids, shape, clock, self._blocks, content)
            self._telemetry.submit(spans)
        if shape.operation is not None:
            usage = ex.usage.usage if ex.usage is not None else None
            ttfc = semconv.time_to_first_chunk(ex, shape)
            self._telemetry.record(shape, usage, ttfc, clock.now - ex.t_start)

    def _content(self, ex: Exchange, shape: Shape) -> Attributes:
        """Message content: never recorded here (see _Capturing)."""
        return {}


class _Injecting(OtelPlugin):
    async def on_request(self, ex: Exchange) -> None:
        """Fix the ids before the first attempt and send them upstream if the route says so."""
        ids = self._ids(ex)
        assert ex.route is not None
        if self._inject.get(ex.route.config.prefix, False):
            ex.outgoing_headers["traceparent"] = ids.traceparent
            if ids.parent is not None and ids.parent.trace_state:
                ex.outgoing_headers["tracestate"] = ids.parent.trace_state
        return None


class _Capturing(OtelPlugin):
    """``otel.capture_content: true``: prompts and completions go on the spans too."""

    def on_chunk(self, ex: Exchange, chunk: bytes) -> None:
        tap = ex.slots.get(_OUTPUT, _NEW)
        if tap is _NEW:
            tap = ex.slots[_OUTPUT] = open_tap(ex)
        if tap is not None:
            tap.feed(chunk)

    def _content(self, ex: Exchange, shape: Shape) -> Attributes:
        attrs = input_attributes(ex.body)
        tap = ex.slot(_OUTPUT)
        if tap is not None:
            tap.finish()
            attrs.update(output_attributes(tap.completion_text, shape.finish_reasons))
        return attrs


class _InjectingCapturing(_Injecting, _Capturing):
    pass


def otel_plugin(telemetry: Telemetry, config: Config, logger: Any) -> OtelPlugin:
    """The plugin for ``config``, with only the phases it needs."""
    inject = any(config.inject_context(route) for route in config.routes)
    capture = config.otel.capture_content
    classes: dict[tuple[bool, bool], type[OtelPlugin]] = {
        (False, False): OtelPlugin,
        (True, False): _Injecting,
        (False, True): _Capturing,
        (True, True): _InjectingCapturing,
    }
    return classes[(inject, capture)](telemetry, config, logger)
