"""Prometheus collectors on a registry owned by one app, never the process-global one.

Tests build many apps in one process, and a reload must keep counting into the same series, so
the registry lives as long as the app and is shared by every config generation. Naming follows
Prometheus conventions: the ``llm_proxy_`` prefix, base units (seconds, USD), ``_total`` on
counters. Label values come from closed sets: routes and upstreams from config, models through
:class:`ModelLabels`, status as its class. What a request did is turned into these calls by
``proxy.plugins.metrics``; this module knows nothing of exchanges beyond the in-flight set.

Across workers (``--workers N``) the numbers must be the server's, not one worker's, whichever
worker a scrape lands on. prometheus-client's multiprocess mode does that: each worker writes
its values to memory-mapped files in a directory the supervisor owns, and any worker's
``/metrics`` merges every file. It was chosen over merging siblings' expositions on scrape
because a dead worker's files stay: a restarted worker does not make the summed counters drop
(Prometheus would read that as a reset and over-count ``rate()``), and no worker has to reach
another. Its limits, handled here: callback gauges cannot cross processes, so in shared mode
the two in-flight gauges are ``livesum`` gauges each worker refreshes every second (and the
supervisor drops a dead worker's with ``mark_process_dead``); and the value class is chosen
process-wide, so shared mode is switched on only inside a worker process, never in the tests'
many in-process apps.
"""

from __future__ import annotations

import asyncio
import functools
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric

from .models import NONE, OTHER, ModelRegistry
from .pacing_metrics import PacingCounters
from .version import __version__

__all__ = ["NONE", "OTHER", "Metrics", "ModelLabels"]

# 0.5 s and 10 s are the brief's alert thresholds: a bucket edge on each keeps the p95
# comparison exact instead of interpolated.
TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0)

_BY_MODEL = ("route", "upstream", "model")
_BY_UPSTREAM = ("route", "upstream")


def status_class(status: int | None) -> str:
    """``2xx`` .. ``5xx``; ``none`` when no status was sent (client left while waiting)."""
    return f"{status // 100}xx" if status is not None and 100 <= status < 600 else NONE


class ModelLabels:
    """Maps a model name to a label value from a closed set: the registry's matcher
    (``proxy.models``) over ``known`` names, so ``openai/gpt-4o``, ``ft:gpt-4o:org::id`` and
    ``gpt-4o-2024-08-06`` are all ``gpt-4o``; anything else is ``other``, so a client cannot
    create series by inventing model names."""

    def __init__(self, known: Iterable[str]) -> None:
        self._registry = ModelRegistry({}, labels=known)

    def __call__(self, model: str | None) -> str:
        return self._registry.label(model)


def share_values(directory: str) -> None:
    """Make this process write every metric value to ``directory`` (multiprocess mode).

    prometheus-client reads the directory from ``PROMETHEUS_MULTIPROC_DIR`` whenever it opens a
    file, and picks the value class once at import; both are set here, for the whole process,
    before any collector exists. Called only in a worker process of a supervisor.
    """
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()


def forget_process(directory: str, pid: int) -> None:
    """A worker died: its ``livesum`` gauges (in-flight) go; its counters stay counted."""
    multiprocess.mark_process_dead(pid, directory)


class Metrics:
    """Every collector the proxy exports, and the in-flight set behind the two gauges.

    ``shared_dir``: aggregate with sibling worker processes through that directory.
    """

    def __init__(self, shared_dir: str | None = None) -> None:
        self.shared_dir = shared_dir
        if shared_dir is not None:
            share_values(shared_dir)
        self.registry = r = CollectorRegistry()
        self.pacing = PacingCounters(r)
        self.requests = Counter(
            "llm_proxy_requests",
            "Requests answered, by HTTP status class of the response.",
            [*_BY_MODEL, "status_class"],
            registry=r,
        )
        self.duration = Histogram(
            "llm_proxy_request_duration_seconds",
            "From the request's arrival to the end of its response.",
            [*_BY_MODEL, "stream"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "llm_proxy_time_to_first_token_seconds",
            "Streams only: from the request's arrival to the first event carrying content.",
            _BY_MODEL,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self._token_counters(r)
        self._resilience_counters(r)
        self._process_collectors(r)
        self.incomplete = Counter(
            "llm_proxy_incomplete_responses",
            "Responses that started but did not finish cleanly (reason: upstream or client).",
            [*_BY_UPSTREAM, "reason"],
            registry=r,
        )
        self.otel_dropped = Counter(
            "llm_proxy_otel_dropped_spans",
            "Spans not exported (reason: queue_full when the export queue was full, "
            "export_failed when the collector refused or could not be reached).",
            ["reason"],
            registry=r,
        )
        self.cache_lookups = Counter(
            "llm_proxy_cache_lookups",
            "Reserved for the response cache (result: hit or miss); nothing counts it yet.",
            ["route", "result"],
            registry=r,
        )
        self._auth_collectors(r)
        self._refreshers: list[Callable[[], None]] = []
        self.live: set[Any] = set()
        mode: Any = "livesum"
        self._in_flight = Gauge(
            "llm_proxy_in_flight_requests",
            "Requests being served right now.",
            registry=r,
            multiprocess_mode=mode,
        )
        self._in_flight_streams = Gauge(
            "llm_proxy_in_flight_streams",
            "SSE responses being streamed right now.",
            registry=r,
            multiprocess_mode=mode,
        )
        if shared_dir is None:  # computed on scrape; shared mode refreshes them instead
            self._in_flight.set_function(lambda: len(self.live))
            self._in_flight_streams.set_function(self.live_streams)

    @property
    def shared(self) -> bool:
        return self.shared_dir is not None

    def live_streams(self) -> int:
        return sum(1 for ex in self.live if ex.stream)

    async def publish_live(self, interval_s: float = 1.0) -> None:
        """Shared mode: write the in-flight gauges every ``interval_s`` (a stream is known to
        be one only once its response started, so they cannot be kept on track/untrack)."""
        while True:
            self._in_flight.set(len(self.live))
            self._in_flight_streams.set(self.live_streams())
            self.refresh()
            await asyncio.sleep(interval_s)

    def _process_collectors(self, r: CollectorRegistry) -> None:
        """The build, the process (``process_*``, one process only: shared mode reads every
        live worker's at scrape, see :class:`_LiveWorkers`) and the client connections."""
        mode: Any = "max"
        self.build_info = Gauge(
            "llm_proxy_build_info",
            "Always 1; the running version is its label.",
            ["version"],
            registry=r,
            multiprocess_mode=mode,
        )
        self.build_info.labels(__version__).set(1)
        if self.shared_dir is None:
            ProcessCollector(registry=r)
        self.connections_refused = Counter(
            "llm_proxy_connections_refused",
            "Client connections closed at once because listen.max_connections were open.",
            registry=r,
        )
        self.client_timeouts = Counter(
            "llm_proxy_client_timeouts",
            "Client connections closed for sending a request's head or body too slowly "
            "(phase: header or body).",
            ["phase"],
            registry=r,
        )

    def add_refresher(self, refresh: Callable[[], None]) -> None:
        """``refresh()`` copies a component's own counts into collectors: before every scrape,
        and in shared mode every second (a scrape may land on a sibling worker)."""
        self._refreshers.append(refresh)

    def refresh(self) -> None:
        for refresh in self._refreshers:
            refresh()

    def _auth_collectors(self, r: CollectorRegistry) -> None:
        """Keys mode. Refusals are labelled by route and kind, never by key: per-key numbers
        are the ledger's (``llm-proxy spend --by key``), and a key label would grow with the
        store."""
        self.auth_refusals = Counter(
            "llm_proxy_auth_refusals",
            "Requests refused by the client-key gate (kind: invalid_api_key, key_revoked, "
            "model_not_allowed, requests_per_minute, budget_exceeded, ...).",
            ["route", "kind"],
            registry=r,
        )
        self.auth_degraded = Gauge(
            "llm_proxy_auth_degraded",
            "1 while a keys-mode dependency fails (component: ledger = the store's writes, "
            "limits = the Redis counters, counted locally meanwhile).",
            ["component"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.ledger_backlog = Gauge(
            "llm_proxy_ledger_rows_pending",
            "Ledger rows not yet written (state: queued, or spooled while the store is down).",
            ["state"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ledger_rows = Counter(
            "llm_proxy_ledger_rows",
            "Ledger rows by fate (outcome: written; dropped: queue or spool full; lost: "
            "unwritten at shutdown).",
            ["outcome"],
            registry=r,
        )

    def _token_counters(self, r: CollectorRegistry) -> None:
        by_source = [*_BY_MODEL, "source"]
        self.prompt_tokens = Counter(
            "llm_proxy_prompt_tokens",
            "Input tokens (source: upstream or estimate).",
            by_source,
            registry=r,
        )
        self.completion_tokens = Counter(
            "llm_proxy_completion_tokens",
            "Output tokens (source: upstream or estimate).",
            by_source,
            registry=r,
        )
        self.cached_tokens = Counter(
            "llm_proxy_cached_tokens",
            "Input tokens read from the provider's prompt cache.",
            _BY_MODEL,
            registry=r,
        )
        self.cost = Counter(
            "llm_proxy_cost_usd",
            "Cost of the tokens at the price table's rates, in USD.",
            _BY_MODEL,
            registry=r,
        )
        self.unpriced = Counter(
            "llm_proxy_unpriced_requests",
            "Requests with token counts but no price for their model (cost not counted).",
            _BY_MODEL,
            registry=r,
        )

    def _resilience_counters(self, r: CollectorRegistry) -> None:
        self.retries = Counter(
            "llm_proxy_retries",
            "Attempts sent again to the upstream just tried.",
            _BY_UPSTREAM,
            registry=r,
        )
        self.fallbacks = Counter(
            "llm_proxy_fallbacks",
            "Moves to the next upstream (upstream: the one left).",
            _BY_UPSTREAM,
            registry=r,
        )
        self.cooldown_waits = Counter(
            "llm_proxy_cooldown_waits",
            "Requests that waited for a shared upstream cooldown before sending.",
            _BY_UPSTREAM,
            registry=r,
        )
        self.cooldown_skips = Counter(
            "llm_proxy_cooldown_skips",
            "Upstreams skipped because they were cooling down.",
            _BY_UPSTREAM,
            registry=r,
        )
        self.precommit_failovers = Counter(
            "llm_proxy_precommit_failovers",
            "Streams that failed before their first content and were tried again "
            "(reason: error_event, cut, idle, empty).",
            ["upstream", "reason"],
            registry=r,
        )
        self.wait_seconds = Counter(
            "llm_proxy_retry_wait_seconds",
            "Time requests spent waiting on hints and cooldowns.",
            ["route"],
            registry=r,
        )
        self.trims = Counter(
            "llm_proxy_context_trims",
            "Requests whose messages were trimmed to fit the window.",
            ["route", "model"],
            registry=r,
        )
        self.trimmed_messages = Counter(
            "llm_proxy_context_trimmed_messages",
            "Messages removed by context trimming.",
            ["route", "model"],
            registry=r,
        )

    def track(self, ex: Any) -> None:
        self.live.add(ex)

    def untrack(self, ex: Any) -> None:
        self.live.discard(ex)

    def count_refused(self, route: str | None, status: int) -> None:
        """A request refused before an exchange existed (unknown route, body too large)."""
        self.requests.labels(route or NONE, NONE, NONE, status_class(status)).inc()

    def exposition(self) -> bytes:
        """The text format (0.0.4) every Prometheus 2.x scrapes, without ``_created`` series;
        in shared mode the sum over every worker's files."""
        if self.shared_dir is not None:
            self.refresh()
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged, path=self.shared_dir)
            merged.register(_LiveWorkers(self.shared_dir))
            return generate_latest(merged)
        self.refresh()
        return generate_latest(_WithoutCreated(self.registry))  # type: ignore[arg-type]


class _WithoutCreated:
    """The registry's families minus ``*_created`` samples: in the text format they are one
    extra gauge series per counter and histogram child, which Prometheus 2.x has no use for.
    (prometheus-client only offers a process-global switch for this.)"""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():  # fresh objects on every collect
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


class _LiveWorkers:
    """Shared mode: ``process_*`` of every live worker, each series labelled with its ``pid``.

    prometheus-client's ProcessCollector reads one process and its multiprocess files cannot
    carry it, so the worker answering a scrape reads its siblings' /proc entries itself. The
    live workers are those with ``livesum`` files (``forget_process`` removes a dead one's).
    """

    def __init__(self, directory: str) -> None:
        self._dir = directory

    def pids(self) -> list[int]:
        found = set()
        for name in os.listdir(self._dir):
            stem, _, pid = name.removesuffix(".db").rpartition("_")
            if stem == "gauge_livesum" and pid.isdigit():
                found.add(int(pid))
        return sorted(found)

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for pid in self.pids():
            reader = ProcessCollector(pid=functools.partial(int, pid), registry=None)
            for family in reader.collect():
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for s in family.samples:
                    merged.add_sample(s.name, {**s.labels, "pid": str(pid)}, s.value)
        yield from families.values()


METRICS = web.AppKey("metrics", Metrics)
"""The app's one Metrics, set by make_app; serve() reads it for a separate listen address."""


SCRAPE_RETRIES_S = (0.01, 0.05, 0.2)
"""Pauses before reading the metrics files again after a torn read."""
TORN_READ = (OSError, ValueError, struct.error)
"""Shared mode: a worker starting (its file created, not yet sized) or dying while this one
reads the files; a moment later they read whole."""


def metrics_handler(metrics: Metrics) -> Any:
    """``GET /metrics`` in the Prometheus text format."""

    def exposed() -> web.Response:
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4}
        )

    async def handle(request: web.Request) -> web.Response:
        for retry_s in SCRAPE_RETRIES_S:
            try:
                return exposed()
            except TORN_READ:
                await asyncio.sleep(retry_s)
        try:
            return exposed()
        except TORN_READ:
            text = "metrics files are being rewritten by a worker starting or stopping\n"
            return web.Response(status=503, text=text, headers={"Retry-After": "1"})

    return handle


def make_metrics_app(metrics: Metrics, admin: web.Application | None = None) -> web.Application:
    """An app serving ``/metrics`` (and the ``/admin/`` API when given), for a separate listen
    address."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(metrics))
    if admin is not None:
        app.add_subapp("/admin/", admin)
    return app
