"""The OpenTelemetry SDK pipeline: tracer and GenAI metric instruments, exporting over OTLP/HTTP.

Export never touches the event loop: ended spans go into a bounded queue that a background
thread sends in batches; when the collector is slow or down and the queue is full, new spans
are dropped and counted (``on_drop``), never waited for. Nothing is registered globally
(no ``set_tracer_provider``), so several apps (tests, reloads) never share a pipeline.
Every setting comes from :class:`~proxy.config.Otel`; none is left for the SDK to read from
the environment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import ConfigError, Otel
from . import semconv

try:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.metrics import Histogram
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from opentelemetry.trace import Tracer
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigError(
        "otel: OpenTelemetry is configured but its packages are missing: "
        f"pip install 'llm-proxy[otel]' ({exc})"
    ) from None

OnDrop = Callable[[str, int], None]
"""``on_drop(reason, spans)``: ``queue_full`` or ``export_failed``; called from any thread."""

SCOPE = "llm-proxy"


class _CountingExporter(SpanExporter):
    """Counts what leaves the queue (so the gate knows its length) and what failed to send."""

    def __init__(self, inner: SpanExporter, on_drop: OnDrop) -> None:
        self._inner = inner
        self._on_drop = on_drop
        self.taken = 0
        """Spans handed to export so far (written by the export thread only)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.taken += len(spans)
        result = self._inner.export(spans)
        if result is not SpanExportResult.SUCCESS:
            self._on_drop("export_failed", len(spans))
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _BoundedBatchProcessor(SpanProcessor):
    """A BatchSpanProcessor whose full queue drops the NEW span and counts it.

    The queue length is ``put - exporter.taken``: each counter is written by one thread only,
    so no lock is needed and the request path does one comparison and one addition.
    """

    def __init__(self, exporter: _CountingExporter, cfg: Otel, on_drop: OnDrop) -> None:
        self._exporter = exporter
        self._batch = BatchSpanProcessor(
            exporter,
            max_queue_size=cfg.max_queue_size,
            schedule_delay_millis=cfg.schedule_delay_s * 1000,
            max_export_batch_size=cfg.max_export_batch_size,
            export_timeout_millis=cfg.export_timeout_s * 1000,
        )
        self._max = cfg.max_queue_size
        self._on_drop = on_drop
        self._put = 0

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is None or not span.context.trace_flags.sampled:
            return
        if self._put - self._exporter.taken >= self._max:
            self._on_drop("queue_full", 1)
            return
        self._put += 1
        self._batch.on_end(span)

    def shutdown(self) -> None:
        self._batch.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batch.force_flush(timeout_millis)


@dataclass(frozen=True, slots=True)
class GenAiInstruments:
    duration: Histogram
    tokens: Histogram
    time_to_first_chunk: Histogram


def _instruments(provider: MeterProvider) -> GenAiInstruments:
    meter = provider.get_meter(SCOPE)
    return GenAiInstruments(
        duration=meter.create_histogram(
            semconv.DURATION_METRIC,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=semconv.DURATION_BUCKETS,
        ),
        tokens=meter.create_histogram(
            semconv.TOKEN_USAGE_METRIC,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=semconv.TOKEN_BUCKETS,
        ),
        time_to_first_chunk=meter.create_histogram(
            semconv.TTFC_METRIC,
            unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=semconv.DURATION_BUCKETS,
        ),
    )


class Telemetry:
    """One server's tracing and metrics pipeline; ``shutdown`` flushes what is queued."""

    def __init__(self, cfg: Otel, on_drop: OnDrop, version: str) -> None:
        self.config = cfg
        resource = Resource(
            {"service.name": cfg.service_name, "service.version": version}
            | dict(cfg.resource_attributes)
        )
        headers = dict(cfg.headers)
        compression = Compression(cfg.compression)
        spans = _CountingExporter(
            OTLPSpanExporter(
                endpoint=cfg.traces_url,
                headers=headers,
                timeout=cfg.export_timeout_s,
                compression=compression,
            ),
            on_drop,
        )
        self._traces = TracerProvider(
            resource=resource,
            sampler=ParentBased(TraceIdRatioBased(cfg.sample_ratio)),
            shutdown_on_exit=False,  # shutdown() is called by the app, in a thread
        )
        self._traces.add_span_processor(_BoundedBatchProcessor(spans, cfg, on_drop))
        self.tracer: Tracer = self._traces.get_tracer(SCOPE, version)
        self._meters: MeterProvider | None = None
        self.instruments: GenAiInstruments | None = None
        if cfg.metrics:
            reader = PeriodicExportingMetricReader(
                OTLPMetricExporter(
                    endpoint=cfg.metrics_url,
                    headers=headers,
                    timeout=cfg.export_timeout_s,
                    compression=compression,
                ),
                export_interval_millis=cfg.metrics_interval_s * 1000,
                export_timeout_millis=cfg.export_timeout_s * 1000,
            )
            self._meters = MeterProvider(
                resource=resource, metric_readers=[reader], shutdown_on_exit=False
            )
            self.instruments = _instruments(self._meters)

    def shutdown(self) -> None:
        """Blocking (call it in a thread): export what is queued, then stop the threads."""
        self._traces.shutdown()
        if self._meters is not None:
            self._meters.shutdown(timeout_millis=self.config.export_timeout_s * 1000)
