"""The ``otel`` config section and the standard ``OTEL_*`` environment variables that fill
it. Part of config.py's schema (re-exported there).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from .config_parse import ConfigError, positive


@dataclass(frozen=True, slots=True)
class Otel:
    """OpenTelemetry export (traces and GenAI metrics over OTLP/HTTP). Off unless an endpoint
    is set here or by ``OTEL_EXPORTER_OTLP_*``; keys set here win over the environment."""

    endpoint: str | None = None
    """The collector's base URL; ``/v1/traces`` and ``/v1/metrics`` are appended."""
    traces_endpoint: str | None = None
    """Full URL for spans, instead of ``endpoint`` + ``/v1/traces``."""
    metrics_endpoint: str | None = None
    protocol: Literal["http/protobuf"] = "http/protobuf"
    service_name: str = "llm-proxy"
    sample_ratio: float = 1.0
    """Share of new traces recorded; a client's sampled ``traceparent`` is always followed."""
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    """Sent with every export (e.g. a collector's API key)."""
    compression: Literal["none", "gzip"] = "none"
    resource_attributes: dict[str, str] = field(default_factory=dict)
    capture_content: bool = False
    """Record prompts and completions on spans. Off: message content never leaves the proxy."""
    inject_context: bool = False
    """Send the proxy's span upstream as ``traceparent``; off: the client's headers go as sent."""
    metrics: bool = True
    """Also export the GenAI client metrics."""
    max_queue_size: int = 2048
    """Spans waiting for export; beyond it new spans are dropped (and counted)."""
    max_export_batch_size: int = 512
    schedule_delay_s: float = 1.0
    export_timeout_s: float = 10.0
    metrics_interval_s: float = 60.0
    disabled: bool = False
    """``OTEL_SDK_DISABLED=true``: off even with an endpoint."""

    def __post_init__(self) -> None:
        for name in ("endpoint", "traces_endpoint", "metrics_endpoint"):
            url = getattr(self, name)
            if url is not None and urlsplit(url).scheme not in ("http", "https"):
                raise ConfigError(f"{name}: not an http(s) URL: {url!r}")
        if not 0.0 <= self.sample_ratio <= 1.0:
            raise ConfigError(f"sample_ratio: must be 0..1, got {self.sample_ratio!r}")
        for name in ("max_queue_size", "max_export_batch_size", "schedule_delay_s"):
            positive(name, getattr(self, name))
        for name in ("export_timeout_s", "metrics_interval_s"):
            positive(name, getattr(self, name))
        if self.max_export_batch_size > self.max_queue_size:
            raise ConfigError("max_export_batch_size: must not exceed max_queue_size")

    @property
    def enabled(self) -> bool:
        return not self.disabled and (self.endpoint or self.traces_endpoint) is not None

    @property
    def traces_url(self) -> str:
        return self.traces_endpoint or _signal_url(self.endpoint, "traces")

    @property
    def metrics_url(self) -> str:
        return self.metrics_endpoint or _signal_url(self.endpoint or self.traces_url, "metrics")


def _signal_url(base: str | None, signal: str) -> str:
    assert base is not None
    if base.rstrip("/").endswith("/v1/traces"):  # only a traces URL was given
        return base.rstrip("/")[: -len("traces")] + signal
    return f"{base.rstrip('/')}/v1/{signal}"


_OTEL_STRINGS = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": "endpoint",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "traces_endpoint",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "metrics_endpoint",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "protocol",
    "OTEL_EXPORTER_OTLP_COMPRESSION": "compression",
    "OTEL_SERVICE_NAME": "service_name",
}


_OTEL_MILLIS = {
    "OTEL_EXPORTER_OTLP_TIMEOUT": "export_timeout_s",
    "OTEL_BSP_SCHEDULE_DELAY": "schedule_delay_s",
    "OTEL_METRIC_EXPORT_INTERVAL": "metrics_interval_s",
}


_OTEL_INTS = {
    "OTEL_BSP_MAX_QUEUE_SIZE": "max_queue_size",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "max_export_batch_size",
}


_OTEL_FLAGS = {
    "OTEL_SDK_DISABLED": "disabled",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "capture_content",
}


_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")


_FIXED_SAMPLERS = {
    "always_on": 1.0,
    "parentbased_always_on": 1.0,
    "always_off": 0.0,
    "parentbased_always_off": 0.0,
}


def otel_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``otel:`` keys the standard ``OTEL_*`` variables set (the file's keys win)."""
    out: dict[str, Any] = {}
    for var, key in _OTEL_STRINGS.items():
        if env.get(var):
            out[key] = env[var].strip()
    for var, key in _OTEL_MILLIS.items():
        if env.get(var):
            out[key] = _env_number(var, env[var]) / 1000
    for var, key in _OTEL_INTS.items():
        if env.get(var):
            out[key] = int(_env_number(var, env[var]))
    for var, key in _OTEL_FLAGS.items():
        if env.get(var):
            out[key] = env[var].strip().lower() == "true"
    for var, key in (
        ("OTEL_EXPORTER_OTLP_HEADERS", "headers"),
        ("OTEL_RESOURCE_ATTRIBUTES", "resource_attributes"),
    ):
        if env.get(var):
            out[key] = _env_pairs(var, env[var])
    ratio = _env_sample_ratio(env)
    if ratio is not None:
        out["sample_ratio"] = ratio
    return out


def _env_number(var: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{var}: expected a number, got {raw!r}") from None


def _env_pairs(var: str, raw: str) -> dict[str, str]:
    """``k1=v1,k2=v2`` with URL-encoded values (the OTel environment format)."""
    pairs: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{var}: expected key=value pairs separated by commas")
        pairs[unquote(key.strip())] = unquote(value.strip())
    return pairs


def _env_sample_ratio(env: Mapping[str, str]) -> float | None:
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler in _FIXED_SAMPLERS:
        return _FIXED_SAMPLERS[sampler]
    if sampler in _RATIO_SAMPLERS and env.get("OTEL_TRACES_SAMPLER_ARG"):
        return _env_number("OTEL_TRACES_SAMPLER_ARG", env["OTEL_TRACES_SAMPLER_ARG"])
    if sampler and sampler not in _RATIO_SAMPLERS:
        raise ConfigError(
            f"OTEL_TRACES_SAMPLER: {sampler!r} is not supported "
            f"(use one of {', '.join([*_FIXED_SAMPLERS, *_RATIO_SAMPLERS])})"
        )
    return None
