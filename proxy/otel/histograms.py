"""Cumulative histograms for the GenAI client metrics, aggregated in the proxy.

Recording is a dict lookup, a bisect and four additions (a few microseconds), where the
OpenTelemetry SDK's instruments hash and sort the attributes on every call. Recording and the
export task's snapshots both run on the event loop, so no lock is needed. Distinct attribute
sets are capped per metric, as the SDK's cardinality limit does; the rest are summed under
``otel.metric.overflow=true``.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from .otlp import HistogramData, HistogramPoint
from .semconv import AttributeValue

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
    """One metric's series."""

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float]) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.bounds = tuple(bounds)
        self._series: dict[SeriesKey, _Series] = {}

    def record(self, value: float, key: SeriesKey) -> None:
        """One value for the series of ``key`` (the attributes as a tuple of pairs)."""
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= MAX_SERIES:
                key = _OVERFLOW
            series = self._series.setdefault(key, _Series([0] * (len(self.bounds) + 1)))
        series.counts[bisect.bisect_left(self.bounds, value)] += 1  # buckets: (prev, bound]
        series.count += 1
        series.sum += value
        if value < series.min:
            series.min = value
        if value > series.max:
            series.max = value

    def snapshot(self) -> HistogramData:
        points = [
            HistogramPoint(dict(key), s.count, s.sum, tuple(s.counts), s.min, s.max)
            for key, s in self._series.items()
        ]
        return HistogramData(self.name, self.description, self.unit, self.bounds, points)


class Histograms:
    """The histograms one export sends together."""

    def __init__(self, *histograms: Histogram) -> None:
        self.all = histograms

    def snapshot(self) -> list[HistogramData]:
        return [h.snapshot() for h in self.all]
