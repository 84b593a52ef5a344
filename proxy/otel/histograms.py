"""Cumulative histograms for the GenAI client metrics, aggregated in the proxy.

Recording is a dict lookup, a bisect and four additions under a lock (a few microseconds),
where the OpenTelemetry SDK's instruments hash and sort the attributes on every call. The
export thread reads a snapshot. Distinct attribute sets are capped per metric, as the SDK's
cardinality limit does; the rest are summed under ``otel.metric.overflow=true``.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from .otlp import HistogramData, HistogramPoint
from .semconv import Attributes, AttributeValue

MAX_SERIES = 2000
SeriesKey = tuple[tuple[str, AttributeValue], ...]
_OVERFLOW: SeriesKey = (("otel.metric.overflow", True),)


@dataclass(slots=True)
class _Series:
    counts: list[int]
    count: int = 0
    sum: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")


class Histogram:
    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float]) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.bounds = tuple(bounds)
        self._series: dict[SeriesKey, _Series] = {}
        self._lock = threading.Lock()

    def record(self, value: float, attributes: Attributes) -> None:
        self.record_series(value, tuple(attributes.items()))

    def record_series(self, value: float, key: SeriesKey) -> None:
        """``record`` with the attributes already as a tuple of pairs (the series key)."""
        index = bisect.bisect_left(self.bounds, value)  # buckets are (previous, bound]
        with self._lock:
            series = self._series.get(key)
            if series is None:
                if len(self._series) >= MAX_SERIES:
                    key = _OVERFLOW
                empty = _Series([0] * (len(self.bounds) + 1))
                series = self._series.setdefault(key, empty)
            series.counts[index] += 1
            series.count += 1
            series.sum += value
            series.min = min(series.min, value)
            series.max = max(series.max, value)

    def snapshot(self) -> HistogramData:
        with self._lock:
            points = [
                HistogramPoint(dict(key), s.count, s.sum, tuple(s.counts), s.min, s.max)
                for key, s in self._series.items()
            ]
        return HistogramData(self.name, self.description, self.unit, self.bounds, points)
