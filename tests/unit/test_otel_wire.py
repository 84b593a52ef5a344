"""The hand-written OTLP encoder, read back with the opentelemetry-proto package, and the W3C
trace context parser and sampler."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from proxy.otel.histograms import MAX_SERIES, Histogram, Histograms
from proxy.otel.otlp import (
    Event,
    Origin,
    SpanData,
    encode_attributes,
    encode_metrics,
    encode_span,
    encode_traces,
)
from proxy.otel.tracecontext import Sampler, format_traceparent, parse_traceparent
from tests.otlp_receiver import attributes_of

ORIGIN = Origin.of({"service.name": "svc", "n": 3}, "scope", "1.2")
TRACE = bytes(range(16))
SPAN = bytes(range(8))


def decode(spans: list[SpanData]) -> ExportTraceServiceRequest:
    body = encode_traces(ORIGIN, [encode_span(s) for s in spans])
    return ExportTraceServiceRequest.FromString(body)


def test_a_span_reads_back_field_by_field() -> None:
    span = SpanData(
        trace_id=TRACE,
        span_id=SPAN,
        parent_span_id=b"\x09" * 8,
        name="chat gpt-4o",
        start_ns=1_700_000_000_000_000_000,
        end_ns=1_700_000_000_500_000_000,
        attributes={"s": "é" * 200, "i": -5, "f": 0.25, "b": False, "a": ("stop", "length")},
        encoded_attributes=encode_attributes({"pre": "encoded", "n": 1}),
        events=[Event("gen_ai.conversation.compacted", 1_700_000_000_100_000_000, {"k": 2})],
        error="upstream said no",
        trace_state="vendor=1",
        flags=0x301,
    )
    message = decode([span])
    [rs] = message.resource_spans
    assert {"service.name": "svc", "n": 3} == attributes_of(rs.resource.attributes)
    [ss] = rs.scope_spans
    assert ("scope", "1.2") == (ss.scope.name, ss.scope.version)
    [pb] = ss.spans
    assert (TRACE, SPAN, b"\x09" * 8, "vendor=1", "chat gpt-4o", 3) == (
        pb.trace_id,
        pb.span_id,
        pb.parent_span_id,
        pb.trace_state,
        pb.name,
        pb.kind,
    )
    assert (span.start_ns, span.end_ns, 0x301) == (
        pb.start_time_unix_nano,
        pb.end_time_unix_nano,
        pb.flags,
    )
    assert {
        "pre": "encoded",
        "n": 1,
        "s": "é" * 200,
        "i": -5,
        "f": 0.25,
        "b": False,
        "a": ["stop", "length"],
    } == attributes_of(pb.attributes)
    [event] = pb.events
    assert ("gen_ai.conversation.compacted", span.events[0].time_ns, {"k": 2}) == (
        event.name,
        event.time_unix_nano,
        attributes_of(event.attributes),
    )
    assert (2, "upstream said no") == (pb.status.code, pb.status.message)


def test_true_and_1_are_never_confused_by_the_encoding_cache() -> None:
    spans = [
        SpanData(TRACE, SPAN, b"", "x", 1, 2, {"k": value})
        for value in (1, True, 1, True, 0, False)
    ]
    decoded = [
        attributes_of(s.attributes)["k"]
        for s in decode(spans).resource_spans[0].scope_spans[0].spans
    ]
    assert [1, True, 1, True, 0, False] == decoded
    assert [int, bool, int, bool, int, bool] == [type(v) for v in decoded]


def test_histograms_read_back_with_cumulative_buckets() -> None:
    h = Histogram("gen_ai.client.operation.duration", "s", "GenAI operation duration.", (1, 2))
    key = (("gen_ai.operation.name", "chat"), ("server.port", 443))
    for value in (0.5, 1.0, 1.5, 3.0):
        h.record(value, key)
    body = encode_metrics(ORIGIN, Histograms(h).snapshot(), 10, 20)
    message = ExportMetricsServiceRequest.FromString(body)
    [metric] = message.resource_metrics[0].scope_metrics[0].metrics
    assert ("gen_ai.client.operation.duration", "s", 2) == (
        metric.name,
        metric.unit,
        metric.histogram.aggregation_temporality,
    )
    [point] = metric.histogram.data_points
    assert {"gen_ai.operation.name": "chat", "server.port": 443} == attributes_of(point.attributes)
    assert (10, 20, 4, 6.0, [2, 1, 1], [1.0, 2.0], 0.5, 3.0) == (
        point.start_time_unix_nano,
        point.time_unix_nano,
        point.count,
        point.sum,
        list(point.bucket_counts),
        list(point.explicit_bounds),
        point.min,
        point.max,
    )


def test_histogram_series_are_capped() -> None:
    h = Histogram("m", "s", "", (1,))
    for i in range(MAX_SERIES + 3):
        h.record(0.5, (("model", f"m{i}"),))
    points = h.snapshot().points
    assert MAX_SERIES + 1 == len(points)
    assert [3] == [p.count for p in points if p.attributes == {"otel.metric.overflow": True}]


TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("value", "valid", "sampled"),
    [
        (TP, True, True),
        (TP[:-2] + "00", True, False),
        (TP[:-2] + "03", True, True),  # the "random" flag may be set too
        ("01" + TP[2:] + "-future-fields", True, True),  # a later version, read as 00
        (TP + "-extra", False, False),  # version 00 has exactly four fields
        ("ff" + TP[2:], False, False),
        ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", False, False),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01", False, False),
        (TP.upper(), False, False),
        ("garbage", False, False),
        ("", False, False),
    ],
)
def test_traceparent_parsing(value: str, valid: bool, sampled: bool) -> None:
    parent = parse_traceparent(value, "a=1")
    assert valid == (parent is not None)
    if parent is not None:
        assert (sampled, "a=1") == (parent.sampled, parent.trace_state)
        assert "4bf92f3577b34da6a3ce929d0e0e4736" == parent.trace_id.hex()


def test_traceparent_round_trip() -> None:
    assert TP == format_traceparent(bytes.fromhex(TP[3:35]), bytes.fromhex(TP[36:52]), True)


def test_the_sampler_follows_the_parent_and_otherwise_the_trace_ids_low_bits() -> None:
    half = Sampler(0.5)
    low = bytes(8) + (1).to_bytes(8, "big")
    high = bytes(8) + (2**64 - 1).to_bytes(8, "big")
    assert (True, False) == (half.sampled(low, None), half.sampled(high, None))
    parent = parse_traceparent(TP)
    unsampled = parse_traceparent(TP[:-2] + "00")
    assert (True, False) == (half.sampled(high, parent), half.sampled(low, unsampled))
    assert (False, True) == (Sampler(0.0).sampled(low, None), Sampler(1.0).sampled(high, None))
