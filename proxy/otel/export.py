"""Sending spans and metrics over OTLP/HTTP from a task on the event loop, without ever making
a request wait.

Serving encodes a request's spans and appends them to a bounded queue (``submit``, called
from ``on_report`` after the response ended). A background task POSTs them in batches with
its own aiohttp session, and the metrics every ``metrics_interval_s``. When the queue is full
(the collector is slow or down) new spans are dropped and counted, never waited for; a batch
the collector refuses, or that cannot be sent within ``export_timeout_s`` (retried while
time remains on 429, 502, 503, 504 and connection errors, as the OTLP spec asks), is counted
as dropped too.

Why a task and not a thread: the export is network I/O, which the loop does well, and a
second Python thread doing anything takes the GIL whenever the loop releases it for a socket
call, so the loop then waits for it (measured: several percent of throughput lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from collections import deque
from collections.abc import Callable

import aiohttp

from ..config import Otel
from .histograms import Histograms
from .otlp import Origin, SpanData, encode_metrics, encode_span, encode_traces

OnDrop = Callable[[str, int], None]
"""``on_drop(reason, spans)``: ``queue_full`` or ``export_failed``."""

_RETRYABLE = frozenset({429, 502, 503, 504})


class Exporter:
    """Bounded span queue and periodic metrics, sent by one task (``start``/``stop``)."""

    def __init__(
        self, cfg: Otel, origin: Origin, histograms: Histograms | None, on_drop: OnDrop
    ) -> None:
        self._cfg = cfg
        self._origin = origin
        self._histograms = histograms
        self._on_drop = on_drop
        self._queue: deque[bytes] = deque()
        self._max = cfg.max_queue_size
        self._batch = cfg.max_export_batch_size
        self._headers = {**cfg.headers, "Content-Type": "application/x-protobuf"}
        if cfg.compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"
        self._started_ns = time.time_ns()
        self._ready: asyncio.Event | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sending (on the running loop)."""
        self._ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def submit(self, spans: list[SpanData]) -> None:
        """Encode the spans of one request and queue them, or drop them when the queue is full."""
        if len(self._queue) + len(spans) > self._max:
            self._on_drop("queue_full", len(spans))
            return
        self._queue.extend([encode_span(s) for s in spans])
        if len(self._queue) >= self._batch and self._ready is not None:
            self._ready.set()

    async def stop(self, timeout_s: float) -> None:
        """Send what is queued and the metrics once more, waiting at most ``timeout_s``."""
        if self._task is None or self._ready is None:
            return
        self._stopping = True
        self._ready.set()
        done, _ = await asyncio.wait([self._task], timeout=timeout_s)
        if not done:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        assert self._ready is not None
        timeout = aiohttp.ClientTimeout(total=self._cfg.export_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            next_metrics = time.monotonic() + self._cfg.metrics_interval_s
            flush_at = time.monotonic() + self._cfg.schedule_delay_s
            while not self._stopping:
                wait = max(0.0, min(flush_at, next_metrics) - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready.wait(), wait)
                self._ready.clear()
                now = time.monotonic()
                flush = now >= flush_at  # else woken by a full batch: send only full ones
                metrics_due = self._histograms is not None and now >= next_metrics
                await self._send(session, flush, metrics_due)
                if flush:
                    flush_at = time.monotonic() + self._cfg.schedule_delay_s
                if metrics_due:
                    next_metrics = time.monotonic() + self._cfg.metrics_interval_s
            await self._send(session, True, self._histograms is not None)

    async def _send(self, session: aiohttp.ClientSession, flush: bool, metrics: bool) -> None:
        try:
            await self._send_spans(session, flush)
            if metrics:
                await self._send_metrics(session)
        except Exception:  # a bug here must not end exporting (what was lost is counted)
            self._on_drop("export_failed", len(self._queue))
            self._queue.clear()

    async def _send_spans(self, session: aiohttp.ClientSession, flush: bool) -> None:
        """Full batches; with ``flush`` also the rest of what is queued now (not what arrives
        while sending, which would make a stream of small batches under load)."""
        due = len(self._queue) if flush else 0
        while len(self._queue) >= self._batch or due > 0:
            batch = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
            due -= len(batch)
            body = encode_traces(self._origin, batch)
            if not await self._post(session, self._cfg.traces_url, body):
                self._on_drop("export_failed", len(batch))

    async def _send_metrics(self, session: aiohttp.ClientSession) -> None:
        assert self._histograms is not None
        data = self._histograms.snapshot()
        if any(d.points for d in data):
            body = encode_metrics(self._origin, data, self._started_ns, time.time_ns())
            await self._post(session, self._cfg.metrics_url, body)

    async def _post(self, session: aiohttp.ClientSession, url: str, body: bytes) -> bool:
        """True when the collector accepted ``body``; retried while the timeout allows."""
        payload = gzip.compress(body, 6) if self._cfg.compression == "gzip" else body
        deadline = time.monotonic() + self._cfg.export_timeout_s
        delay = 0.1
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                timeout = aiohttp.ClientTimeout(total=left)
                async with session.post(
                    url, data=payload, headers=self._headers, timeout=timeout
                ) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        return True
                    if resp.status not in _RETRYABLE:
                        return False
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            if time.monotonic() + delay >= deadline:
                return False
            await asyncio.sleep(delay)
            delay *= 2
