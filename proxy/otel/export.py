"""The export thread: a bounded span queue sent in batches, and the metrics sent periodically,
over OTLP/HTTP, without ever touching the event loop.

Serving encodes a request's spans and appends them to a queue (``submit``); a daemon thread
joins them into batches and POSTs them. When the queue is full (the collector is slow
or down) new spans are dropped and counted, never waited for. A batch the collector refuses
or that cannot be sent within ``export_timeout_s`` (retried while time remains on 429, 502,
503, 504 and connection errors, as the OTLP spec asks) is counted as dropped too.
"""

from __future__ import annotations

import gzip
import http.client
import threading
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

from ..config import Otel
from .histograms import Histograms
from .otlp import Origin, SpanData, encode_metrics, encode_span, encode_traces

OnDrop = Callable[[str, int], None]
"""``on_drop(reason, spans)``: ``queue_full`` or ``export_failed``; called from any thread."""

_RETRYABLE = frozenset({429, 502, 503, 504})


class _Poster:
    """POSTs protobuf bodies to one OTLP/HTTP URL on a kept-alive connection."""

    def __init__(self, url: str, headers: dict[str, str], gzip_body: bool, timeout_s: float):
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {**headers, "Content-Type": "application/x-protobuf"}
        if gzip_body:
            self._headers["Content-Encoding"] = "gzip"
        self._gzip = gzip_body
        self._timeout = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self, timeout_s: float) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=timeout_s)
        self._conn.timeout = timeout_s
        return self._conn

    def post(self, body: bytes) -> bool:
        """True when the collector accepted the body; retried while the timeout allows."""
        payload = gzip.compress(body, 6) if self._gzip else body
        deadline = time.monotonic() + self._timeout
        delay = 0.1
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                conn = self._connection(left)
                conn.request("POST", self._path, payload, self._headers)
                response = conn.getresponse()
                response.read()
                if 200 <= response.status < 300:
                    return True
                if response.status not in _RETRYABLE:
                    return False
            except (OSError, http.client.HTTPException):
                self.close()
            if time.monotonic() + delay >= deadline:
                return False
            time.sleep(delay)
            delay *= 2

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Exporter:
    """Bounded span queue + metrics, sent by one daemon thread."""

    def __init__(
        self,
        cfg: Otel,
        origin: Origin,
        histograms: Histograms | None,
        on_drop: OnDrop,
    ) -> None:
        self._cfg = cfg
        self._origin = origin
        self._histograms = histograms
        self._on_drop = on_drop
        self._queue: deque[bytes] = deque()
        self._max = cfg.max_queue_size
        self._batch = cfg.max_export_batch_size
        gz = cfg.compression == "gzip"
        headers = dict(cfg.headers)
        self._traces = _Poster(cfg.traces_url, headers, gz, cfg.export_timeout_s)
        self._metrics = _Poster(cfg.metrics_url, headers, gz, cfg.export_timeout_s)
        self._started_ns = time.time_ns()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="otel-export", daemon=True)
        self._thread.start()

    def submit(self, spans: list[SpanData]) -> None:
        """From the event loop: encode the spans of one request and queue them, or drop them
        when the queue is full.

        Encoding happens here, on the loop, not on the export thread: a thread doing CPU work
        takes the GIL every time the loop releases it for a socket call, and the loop then
        waits for it (measured: a quarter of the throughput lost, against a sixth with the
        same work done here). The thread only joins bytes and waits on the network.
        """
        if len(self._queue) + len(spans) > self._max:
            self._on_drop("queue_full", len(spans))
            return
        self._queue.extend([encode_span(s) for s in spans])
        if len(self._queue) >= self._batch and not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        next_metrics = time.monotonic() + self._cfg.metrics_interval_s
        while not self._stopping:
            now = time.monotonic()
            self._wake.wait(min(self._cfg.schedule_delay_s, max(0.0, next_metrics - now)))
            self._wake.clear()
            self._send_spans()
            if self._histograms is not None and time.monotonic() >= next_metrics:
                self._send_metrics()
                next_metrics = time.monotonic() + self._cfg.metrics_interval_s
        self._send_spans()
        if self._histograms is not None:
            self._send_metrics()
        self._traces.close()
        self._metrics.close()

    def _send_spans(self) -> None:
        while self._queue:
            batch: list[bytes] = []
            while self._queue and len(batch) < self._batch:
                batch.append(self._queue.popleft())
            try:
                sent = self._traces.post(encode_traces(self._origin, batch))
            except Exception:  # an encoding bug must not kill the thread
                sent = False
            if not sent:
                self._on_drop("export_failed", len(batch))

    def _send_metrics(self) -> None:
        try:
            assert self._histograms is not None
            data = self._histograms.snapshot()
            if any(d.points for d in data):
                body = encode_metrics(self._origin, data, self._started_ns, time.time_ns())
                self._metrics.post(body)
        except Exception:  # metrics are best effort; the next period sends the totals again
            return

    def shutdown(self, timeout_s: float) -> None:
        """Blocking: send what is queued (and the metrics once more), at most ``timeout_s``."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)
