"""Prometheus accounting of each finished request, from the exchange's typed outcome records.

It reports in ``on_report``, after every plugin settled its outcome, so its place in the plugin
list does not matter. It never raises into the pipeline: a bug here must not cost the request
its log line.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ..exchange import Exchange
from ..metrics import NONE, Metrics, ModelLabels, status_class
from ..outcomes import AttemptReason, UsageOutcome
from . import Plugin


class MetricsPlugin(Plugin):
    """Counts, times and gauges requests from the exchange's settled outcome records."""

    name = "metrics"

    def __init__(self, metrics: Metrics, models: Iterable[str], logger: Any) -> None:
        self._m = metrics
        self._model_label = ModelLabels(models)
        self._log = logger
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, memoised: label lookups take a lock and hash each time.
        Label values are bounded (see ModelLabels), so the memo is too."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    async def on_request(self, ex: Exchange) -> None:
        self._m.track(ex)
        return None

    async def on_report(self, ex: Exchange) -> None:
        self._m.untrack(ex)
        try:
            self.observe(ex)
        except Exception as exc:  # counted wrong is better than no log line
            self._log.error("metrics failed", request_id=ex.request_id, error=repr(exc))

    def observe(self, ex: Exchange) -> None:
        m = self._m
        route = ex.route.name if ex.route is not None else NONE
        upstream = ex.upstream.name if ex.upstream is not None else NONE
        model = self._model_label(ex.usage.model if ex.usage is not None else None)
        labels = (route, upstream, model)
        self._child(m.requests, *labels, status_class(ex.status)).inc()
        if ex.route is None:
            return  # refused before routing: nothing else happened
        self._child(m.duration, *labels, "true" if ex.stream else "false").observe(
            time.monotonic() - ex.t_start
        )
        if ex.stream and ex.t_first_token is not None:
            self._child(m.ttft, *labels).observe(ex.t_first_token - ex.t_start)
        if ex.usage is not None:
            self._tokens(labels, ex.usage)
        self._attempts(route, ex)
        trimmed = ex.context.trimmed_messages if ex.context is not None else 0
        if trimmed > 0:
            self._child(m.trims, route, model).inc()
            self._child(m.trimmed_messages, route, model).inc(trimmed)
        if ex.error is not None and ex.status is not None and ex.status < 400:
            reason = "client" if ex.error == "client disconnected" else "upstream"
            self._child(m.incomplete, route, upstream, reason).inc()

    def _tokens(self, labels: tuple[str, str, str], outcome: UsageOutcome) -> None:
        usage = outcome.usage
        if usage.source == "none":
            return
        m = self._m
        if usage.prompt_tokens is not None:
            self._child(m.prompt_tokens, *labels, usage.source).inc(usage.prompt_tokens)
        if usage.completion_tokens is not None:
            self._child(m.completion_tokens, *labels, usage.source).inc(usage.completion_tokens)
        if usage.cached_tokens is not None:
            self._child(m.cached_tokens, *labels).inc(usage.cached_tokens)
        if outcome.cost_usd is None:
            self._child(m.unpriced, *labels).inc()
        else:
            self._child(m.cost, *labels).inc(outcome.cost_usd)

    def _attempts(self, route: str, ex: Exchange) -> None:
        """Retries, fallbacks and cooldowns, read from the attempt records.

        A record whose upstream equals the previous one's is a retry; a change of upstream is
        a fallback from the previous one; skipped records are upstreams left cooling down.
        """
        m = self._m
        previous: str | None = None
        for i, attempt in enumerate(ex.attempts):
            name = attempt.upstream
            failure = attempt.stream_failure
            if failure is not None and i + 1 < len(ex.attempts):
                self._child(m.precommit_failovers, name, failure.value).inc()
            if attempt.reason is AttemptReason.COOLING_DOWN:
                self._child(m.cooldown_skips, route, name).inc()
            elif name == previous:
                self._child(m.retries, route, name).inc()
            if previous is not None and name != previous:
                self._child(m.fallbacks, route, previous).inc()
            previous = name
        for name in ex.retry.cooldown_waits:
            self._child(m.cooldown_waits, route, name).inc()
        waited = ex.retry.waited_s + ex.retry.held_s
        if waited > 0:
            self._child(m.wait_seconds, route).inc(waited)
        self._pacing(route, ex)

    def _pacing(self, route: str, ex: Exchange) -> None:
        pacing = self._m.pacing
        for attempt in ex.attempts:
            if attempt.status == 429:
                self._child(pacing.upstream_429, route, attempt.upstream).inc()
        if ex.retry.held_s > 0:
            upstream = ex.upstream.name if ex.upstream is not None else NONE
            self._child(pacing.held, route, upstream).inc(ex.retry.held_s)
        if ex.retry.ratelimited is not None and ex.status == 429:
            self._child(pacing.proxy_429, route, ex.retry.ratelimited).inc()
