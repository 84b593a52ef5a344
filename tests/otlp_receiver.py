"""A small OTLP/HTTP receiver for tests: accepts ``/v1/traces`` and ``/v1/metrics`` the way a
collector does and decodes them with the opentelemetry-proto package.

``hold`` (an unset event) makes ``/v1/traces`` wait before answering, so a test can fill the
proxy's export queue deterministically; ``raw`` keeps every body as received, so a test can
search the bytes for text that must never be exported.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan


def value_of(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value_of(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attributes_of(v.kvlist_value.values)
    return getattr(v, kind) if kind is not None else None


def attributes_of(kvs: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in kvs}


@dataclass(frozen=True)
class Event:
    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Span:
    """One exported span, decoded."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[Event]
    status: str
    resource: dict[str, Any]

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def _span(pb: PbSpan, resource: dict[str, Any]) -> Span:
    return Span(
        name=pb.name,
        kind=PbSpan.SpanKind.Name(pb.kind),
        trace_id=pb.trace_id.hex(),
        span_id=pb.span_id.hex(),
        parent_span_id=pb.parent_span_id.hex(),
        start_ns=pb.start_time_unix_nano,
        end_ns=pb.end_time_unix_nano,
        attributes=attributes_of(pb.attributes),
        events=[Event(e.name, e.time_unix_nano, attributes_of(e.attributes)) for e in pb.events],
        status=pb.status.StatusCode.Name(pb.status.code),
        resource=resource,
    )


@dataclass(frozen=True)
class Point:
    """One histogram data point of an exported metric."""

    metric: str
    unit: str
    attributes: dict[str, Any]
    count: int
    sum: float


@dataclass
class OtlpReceiver:
    spans: list[Span] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)
    """Spans per ``/v1/traces`` request, in arrival order."""
    points: list[Point] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    trace_posts: int = 0
    hold: asyncio.Event | None = None
    url: str = ""

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/v1/metrics", self._metrics)
        return app

    async def _body(self, request: web.Request) -> bytes:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.raw.append(body)
        return body

    async def _traces(self, request: web.Request) -> web.Response:
        self.trace_posts += 1
        if self.hold is not None:
            await self.hold.wait()
        message = ExportTraceServiceRequest.FromString(await self._body(request))
        count = 0
        for rs in message.resource_spans:
            resource = attributes_of(rs.resource.attributes)
            for ss in rs.scope_spans:
                self.spans.extend(_span(s, resource) for s in ss.spans)
                count += len(ss.spans)
        self.batches.append(count)
        return web.Response(content_type="application/x-protobuf")

    async def _metrics(self, request: web.Request) -> web.Response:
        message = ExportMetricsServiceRequest.FromString(await self._body(request))
        for rm in message.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for dp in metric.histogram.data_points:
                        attrs = attributes_of(dp.attributes)
                        self.points.append(Point(metric.name, metric.unit, attrs, dp.count, dp.sum))
        return web.Response(content_type="application/x-protobuf")

    async def wait_for(
        self, ready: Callable[[OtlpReceiver], bool], timeout_s: float = 10.0
    ) -> None:
        """Return once ``ready(self)``; fail the test after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while not ready(self):  # noqa: ASYNC110 - polled state, no event to wait on
                await asyncio.sleep(0.02)

    def trace(self, trace_id: str) -> list[Span]:
        return [s for s in self.spans if s.trace_id == trace_id]

    def roots(self) -> list[Span]:
        """The proxy's request spans (children point at one of these)."""
        ids = {s.span_id for s in self.spans}
        return [s for s in self.spans if s.parent_span_id not in ids]

    def children(self, parent: Span) -> list[Span]:
        kids = [s for s in self.spans if s.parent_span_id == parent.span_id]
        return sorted(kids, key=lambda s: s.start_ns)

    def latest_points(self, metric: str) -> list[Point]:
        """The last exported value of each series of ``metric`` (exports are cumulative)."""
        latest: dict[tuple[tuple[str, Any], ...], Point] = {}
        for p in self.points:
            if p.metric == metric:
                latest[tuple(sorted((k, str(v)) for k, v in p.attributes.items()))] = p
        return list(latest.values())


def kv(key: str, value: str) -> KeyValue:  # for tests that build requests by hand
    return KeyValue(key=key, value=AnyValue(string_value=value))
