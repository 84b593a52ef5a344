"""The ``otel:`` section: file keys, the standard OTEL_* environment variables (the file wins),
and every error naming its key or variable."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.config import ConfigError, from_dict, otel_from_env


def minimal(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "routes": [
            {
                "prefix": "/openai",
                "provider": "openai",
                "upstreams": [{"name": "a", "base_url": "https://api.openai.com"}],
            }
        ]
    }
    raw.update(overrides)
    return raw


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {}),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, {"endpoint": "http://c:4318"}),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"},
            {"traces_endpoint": "http://c:4318/v1/traces"},
        ),
        ({"OTEL_SERVICE_NAME": "gw"}, {"service_name": "gw"}),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}, {"compression": "gzip"}),
        (
            {"OTEL_EXPORTER_OTLP_HEADERS": "api-key=a%20b, x=1"},
            {"headers": {"api-key": "a b", "x": "1"}},
        ),
        ({"OTEL_RESOURCE_ATTRIBUTES": "team=ml"}, {"resource_attributes": {"team": "ml"}}),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "2500"}, {"export_timeout_s": 2.5}),
        ({"OTEL_BSP_SCHEDULE_DELAY": "200"}, {"schedule_delay_s": 0.2}),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "15000"}, {"metrics_interval_s": 15.0}),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "100"}, {"max_queue_size": 100}),
        ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10"}, {"max_export_batch_size": 10}),
        ({"OTEL_SDK_DISABLED": "true"}, {"disabled": True}),
        ({"OTEL_SDK_DISABLED": "false"}, {"disabled": False}),
        (
            {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"},
            {"capture_content": True},
        ),
        (
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
            {"sample_ratio": 0.1},
        ),
        ({"OTEL_TRACES_SAMPLER": "always_off"}, {"sample_ratio": 0.0}),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_on"}, {"sample_ratio": 1.0}),
        ({"OTEL_TRACES_SAMPLER": "traceidratio"}, {}),  # no argument: the default ratio
    ],
)
def test_standard_variables_map_to_otel_keys(env: dict[str, str], expected: dict[str, Any]) -> None:
    assert expected == otel_from_env(env)


def test_off_unless_an_endpoint_is_configured() -> None:
    assert False is from_dict(minimal(), env={}).otel.enabled
    assert True is from_dict(minimal(otel={"endpoint": "http://c:4318"}), env={}).otel.enabled
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}
    assert True is from_dict(minimal(), env=env).otel.enabled
    env["OTEL_SDK_DISABLED"] = "true"
    assert False is from_dict(minimal(), env=env).otel.enabled


def test_the_file_wins_over_the_environment() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318", "OTEL_SERVICE_NAME": "env"}
    otel = from_dict(minimal(otel={"service_name": "file"}), env=env).otel
    assert ("http://env:4318", "file") == (otel.endpoint, otel.service_name)


@pytest.mark.parametrize(
    ("otel", "traces", "metrics"),
    [
        ({"endpoint": "http://c:4318"}, "http://c:4318/v1/traces", "http://c:4318/v1/metrics"),
        ({"endpoint": "http://c:4318/"}, "http://c:4318/v1/traces", "http://c:4318/v1/metrics"),
        (
            {"traces_endpoint": "http://c/x/v1/traces"},
            "http://c/x/v1/traces",
            "http://c/x/v1/metrics",
        ),
        (
            {"endpoint": "http://c", "metrics_endpoint": "http://m/in"},
            "http://c/v1/traces",
            "http://m/in",
        ),
    ],
)
def test_signal_urls(otel: dict[str, Any], traces: str, metrics: str) -> None:
    cfg = from_dict(minimal(otel=otel), env={}).otel
    assert (traces, metrics) == (cfg.traces_url, cfg.metrics_url)


@pytest.mark.parametrize(
    ("raw", "env", "message"),
    [
        ({"protocol": "grpc"}, {}, "otel.protocol: must be one of http/protobuf"),
        ({"endpoint": "ftp://c"}, {}, "otel.endpoint: not an http(s) URL"),
        ({"sample_ratio": 1.5}, {}, "otel.sample_ratio: must be 0..1"),
        ({"max_queue_size": 0}, {}, "otel.max_queue_size: must be > 0"),
        (
            {"max_queue_size": 10, "max_export_batch_size": 20},
            {},
            "otel.max_export_batch_size: must not exceed max_queue_size",
        ),
        ({"colour": "red"}, {}, "otel.colour: unknown key"),
        ({}, {"OTEL_BSP_SCHEDULE_DELAY": "soon"}, "OTEL_BSP_SCHEDULE_DELAY: expected a number"),
        ({}, {"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, "OTEL_EXPORTER_OTLP_HEADERS: expected"),
        ({}, {"OTEL_TRACES_SAMPLER": "jaeger_remote"}, "OTEL_TRACES_SAMPLER: 'jaeger_remote'"),
    ],
)
def test_errors_name_the_key_or_variable(
    raw: dict[str, Any], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_dict(minimal(otel=raw), env=env)


def test_headers_never_appear_in_the_config_repr() -> None:
    cfg = from_dict(minimal(otel={"endpoint": "http://c", "headers": {"key": "hunter2"}}), env={})
    assert "hunter2" not in repr(cfg)


@pytest.mark.parametrize(
    ("top", "route", "expected"),
    [(False, None, False), (True, None, True), (False, True, True), (True, False, False)],
)
def test_a_route_may_override_trace_context_injection(
    top: bool, route: bool | None, expected: bool
) -> None:
    raw = minimal(otel={"inject_context": top})
    if route is not None:
        raw["routes"][0]["otel"] = {"inject_context": route}
    cfg = from_dict(raw, env={})
    assert expected is cfg.inject_context(cfg.routes[0])
