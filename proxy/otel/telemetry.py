"""One server's OpenTelemetry pipeline: sampler, GenAI histograms, and the export task.

Built at startup when ``otel`` is configured and shut down (flushing what is queued) when
the server stops. Nothing is global, so several apps in one process (tests, reloads) never
share a pipeline. No OpenTelemetry package is needed at run time: spans and metrics are
encoded to OTLP by :mod:`proxy.otel.otlp` (see there for why), and every setting comes from
:class:`~proxy.config.Otel`, which the config read from the file and the ``OTEL_*`` variables.
"""

from __future__ import annotations

from ..config import Otel
from ..usage import Usage
from . import semconv
from .export import Exporter, OnDrop
from .histograms import MAX_SERIES, Histogram, Histograms, SeriesKey
from .otlp import Origin, SpanData
from .semconv import Attributes, Shape
from .tracecontext import Sampler

SCOPE = "llm-proxy"
_INPUT = (semconv.TOKEN_TYPE, "input")
_OUTPUT = (semconv.TOKEN_TYPE, "output")


class Telemetry:
    """What the OpenTelemetry plugin reports into; lives as long as the server."""

    def __init__(self, cfg: Otel, on_drop: OnDrop, version: str) -> None:
        self.config = cfg
        self.sampler = Sampler(cfg.sample_ratio)
        resource: Attributes = {
            "service.name": cfg.service_name,
            "service.version": version,
            "telemetry.sdk.name": SCOPE,
            "telemetry.sdk.language": "python",
            **cfg.resource_attributes,
        }
        self.duration = Histogram(
            semconv.DURATION_METRIC, "s", "GenAI operation duration.", semconv.DURATION_BUCKETS
        )
        self.tokens = Histogram(
            semconv.TOKEN_USAGE_METRIC,
            "{token}",
            "Number of input and output tokens used.",
            semconv.TOKEN_BUCKETS,
        )
        self.time_to_first_chunk = Histogram(
            semconv.TTFC_METRIC,
            "s",
            "Time to receive the first chunk of a streamed response.",
            semconv.DURATION_BUCKETS,
        )
        self.histograms = Histograms(self.duration, self.tokens, self.time_to_first_chunk)
        self.metrics_on = cfg.metrics
        histograms = self.histograms if cfg.metrics else None
        self._series: dict[Shape, tuple[SeriesKey, SeriesKey]] = {}
        self._exporter = Exporter(cfg, Origin.of(resource, SCOPE, version), histograms, on_drop)

    def submit(self, spans: list[SpanData]) -> None:
        self._exporter.submit(spans)

    def record(
        self, shape: Shape, usage: Usage | None, ttfc_s: float | None, duration_s: float
    ) -> None:
        """The GenAI client metrics of one finished model call (``shape.operation`` set)."""
        if not self.metrics_on:
            return
        series, tokens = self._series_of(shape)
        self.duration.record(duration_s, series)
        if ttfc_s is not None:
            self.time_to_first_chunk.record(ttfc_s, series)
        if usage is not None and usage.prompt_tokens is not None:
            self.tokens.record(usage.prompt_tokens, (*tokens, _INPUT))
        if usage is not None and usage.completion_tokens is not None:
            self.tokens.record(usage.completion_tokens, (*tokens, _OUTPUT))

    def _series_of(self, shape: Shape) -> tuple[SeriesKey, SeriesKey]:
        """The metric series of a shape, and the token usage series (no ``error.type``)."""
        cached = self._series.get(shape)
        if cached is None:
            series = tuple(semconv.metric_attributes(shape).items())
            tokens = tuple(kv for kv in series if kv[0] != semconv.ERROR_TYPE)
            cached = (series, tokens)
            if len(self._series) < MAX_SERIES:
                self._series[shape] = cached
        return cached

    def start(self) -> None:
        """Start exporting (on the running event loop)."""
        self._exporter.start()

    async def stop(self, timeout_s: float) -> None:
        """Send what is queued and the metrics once more, waiting at most ``timeout_s``."""
        await self._exporter.stop(timeout_s)
