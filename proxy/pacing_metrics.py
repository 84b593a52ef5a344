"""Pacing as Prometheus sees it: per scope, each bucket's level and the queue, read from the
pacer at scrape time (no per-request cost); held time and 429s, counted per request."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from .resilience.pacer import Pacer
from .resilience.scope import LimitKind, Scope

Labeler = Callable[[str | None], str]


class PacingCollector:
    """``llm_proxy_pacing_remaining{upstream, model, bucket}`` and
    ``llm_proxy_pacing_queue{upstream, model}``: this process's view (no credential in any
    label: scopes of several keys for one model are summed)."""

    def __init__(self, pacer: Pacer, model_label: Labeler) -> None:
        self._pacer = pacer
        self._label = model_label

    def collect(self) -> Iterator[Metric]:
        remaining = GaugeMetricFamily(
            "llm_proxy_pacing_remaining",
            "What is left in each rate-limit bucket now, as the pacer models it.",
            labels=["upstream", "model", "bucket"],
        )
        queue = GaugeMetricFamily(
            "llm_proxy_pacing_queue",
            "Requests waiting in the fair queue for their scope to refill.",
            labels=["upstream", "model"],
        )
        levels: dict[tuple[str, str, str], float] = {}
        queued: dict[tuple[str, str], int] = {}
        for key in self._pacer.store.local_keys():
            scope = Scope.from_key(key)
            if scope is None or scope.kind is not LimitKind.MODEL:
                continue
            labels = (scope.upstream, self._label(scope.model))
            for bucket, level in self._pacer.remaining(scope).items():
                at = (*labels, bucket.value)
                levels[at] = levels.get(at, 0.0) + max(0.0, level)
            queued[labels] = queued.get(labels, 0) + self._pacer.queue_length(scope)
        for at, level in levels.items():
            remaining.add_metric(list(at), level)
        for labels, n in queued.items():
            queue.add_metric(list(labels), n)
        yield remaining
        yield queue


class PacingCounters:
    """Per request: time held for a scope, 429s received from upstreams, 429s the proxy made."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.held = Counter(
            "llm_proxy_pacing_held_seconds",
            "Time requests were held before sending until their scope had room.",
            ["route", "upstream"],
            registry=registry,
        )
        self.upstream_429 = Counter(
            "llm_proxy_upstream_rate_limited",
            "429 answers received from upstreams (before any retry).",
            ["route", "upstream"],
            registry=registry,
        )
        self.proxy_429 = Counter(
            "llm_proxy_rate_limited",
            "429 answers the proxy made itself: a scope would not admit the request within "
            "its budget (kind: model or upstream).",
            ["route", "kind"],
            registry=registry,
        )
