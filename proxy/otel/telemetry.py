"""One server's OpenTelemetry pipeline: sampler, GenAI histograms, and the export thread.

Built at startup when ``otel`` is configured and shut down (flushing what is queued) when
the server stops. Nothing is global, so several apps in one process (tests, reloads) never
share a pipeline. No OpenTelemetry package is needed at run time: spans and metrics are
encoded to OTLP by :mod:`proxy.otel.otlp` (see there for why), and every setting comes from
:class:`~proxy.config.Otel`, which the config read from the file and the ``OTEL_*`` variables.
"""

from __future__ import annotations

from ..config import Otel
from . import semconv
from .export import Exporter, OnDrop
from .histograms import Histogram
from .otlp import Origin, SpanData
from .semconv import Attributes
from .tracecontext import Sampler

SCOPE = "llm-proxy"
_INPUT = (semconv.TOKEN_TYPE, "input")
_OUTPUT = (semconv.TOKEN_TYPE, "output")


class Telemetry:
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
        histograms = (self.duration, self.tokens, self.time_to_first_chunk) if cfg.metrics else ()
        self.metrics_on = bool(histograms)
        self._exporter = Exporter(cfg, Origin.of(resource, SCOPE, version), histograms, on_drop)

    def submit(self, spans: list[SpanData]) -> None:
        self._exporter.submit(spans)

    def record(self, call: semconv.GenAiCall, duration_s: float) -> None:
        """The GenAI client metrics of one finished model call."""
        if not self.metrics_on:
            return
        attrs = call.metric_attributes()
        series = tuple(attrs.items())
        self.duration.record_series(duration_s, series)
        if call.time_to_first_chunk_s is not None:
            self.time_to_first_chunk.record_series(call.time_to_first_chunk_s, series)
        usage = call.usage
        if usage is None:
            return
        if call.error_type is not None:  # not an attribute of token usage
            series = tuple(kv for kv in series if kv[0] != semconv.ERROR_TYPE)
        if usage.prompt_tokens is not None:
            self.tokens.record_series(usage.prompt_tokens, (*series, _INPUT))
        if usage.completion_tokens is not None:
            self.tokens.record_series(usage.completion_tokens, (*series, _OUTPUT))

    def shutdown(self, timeout_s: float) -> None:
        """Blocking (call it off the loop): flush queued spans and the metrics."""
        self._exporter.shutdown(timeout_s)
