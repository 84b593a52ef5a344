"""Typed configuration, loaded and validated once at startup.

Every error names the key path (``routes[1].upstreams[0].base_url: ...``) so an operator can fix
the file without reading code. This is the only module that reads files or the environment.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import yaml


class ConfigError(Exception):
    """A config problem, with the key path it concerns."""


Provider = Literal["openai", "anthropic"]


@dataclass(frozen=True, slots=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 8080
    unix: str | None = None
    """Also listen on this Unix socket path (a sidecar's apps reach it with no TCP port)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port: must be 0..65535, got {self.port!r}")
        if self.unix is not None and not 0 < len(os.fsencode(self.unix)) <= _UNIX_PATH_MAX:
            raise ConfigError(
                f"unix: a socket path must be 1..{_UNIX_PATH_MAX} bytes, got {self.unix!r}"
            )


_UNIX_PATH_MAX = 107
"""sockaddr_un.sun_path is 108 bytes on Linux, one of them the terminating NUL."""


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    models: dict[str, str] = field(default_factory=dict)
    """Model-name mapping applied when this upstream serves a request (e.g. a fallback vendor)."""
    pass_client_credentials: bool = False
    """Send the client's own credential here even though it is not the route's first upstream.
    Off by default: a client's key is meant for the upstream the route names first."""

    def __post_init__(self) -> None:
        _check_url(self.base_url)


@dataclass(frozen=True, slots=True)
class Retry:
    max_attempts: int = 3
    max_wait_s: float = 30.0
    retry_on: tuple[int, ...] = (429, 500, 502, 503, 504, 529)
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 8.0
    on_timeout: bool = False
    """Resend a request whose upstream sent no response head in time. Off by default: it may
    still be running (and billed) upstream."""

    def __post_init__(self) -> None:
        _positive("max_attempts", self.max_attempts)
        _non_negative("max_wait_s", self.max_wait_s)


@dataclass(frozen=True, slots=True)
class Streaming:
    commit_point: bool = True
    """Hold a stream's head until its first content, so a failure before it can be retried."""
    max_hold_s: float = 20.0
    """Longest a stream's head is held (pings do not extend it); then it is relayed as is."""
    max_hold_bytes: int = 256 * 1024
    first_content_s: float | None = None
    """Longest gap between events before the first content; None: ``timeouts.first_byte_s``."""
    error_bodies: bool = False
    """Treat a 200 JSON answer that carries an error instead of a completion like a 5xx."""

    def __post_init__(self) -> None:
        _non_negative("max_hold_s", self.max_hold_s)
        _positive("max_hold_bytes", self.max_hold_bytes)
        if self.first_content_s is not None:
            _positive("first_content_s", self.first_content_s)


@dataclass(frozen=True, slots=True)
class Context:
    enabled: bool = True
    reserve_output_tokens: int = 4096
    safety_margin: int = 256
    max_input_tokens: int | None = None
    safety_factor: float = 1.2
    """Multiplier on tiktoken estimates for models without a public tokenizer (Claude, unknown)."""
    models: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _non_negative("reserve_output_tokens", self.reserve_output_tokens)
        _non_negative("safety_margin", self.safety_margin)
        if self.max_input_tokens is not None:
            _positive("max_input_tokens", self.max_input_tokens)
        if self.safety_factor < 1.0:
            raise ConfigError("safety_factor: must be >= 1.0")


@dataclass(frozen=True, slots=True)
class RouteOtel:
    inject_context: bool | None = None
    """Send the proxy's span upstream as the parent (``traceparent``); None: ``otel``'s."""


@dataclass(frozen=True, slots=True)
class Route:
    prefix: str
    provider: Provider
    upstreams: tuple[Upstream, ...]
    context: Context = field(default_factory=Context)
    retry: Retry = field(default_factory=Retry)
    streaming: Streaming = field(default_factory=Streaming)
    otel: RouteOtel = field(default_factory=RouteOtel)

    def __post_init__(self) -> None:
        if self.prefix and (not self.prefix.startswith("/") or self.prefix.endswith("/")):
            raise ConfigError("prefix: must be empty or start with '/' and not end with '/'")
        if not self.upstreams:
            raise ConfigError("upstreams: at least one upstream is required")
        names = [u.name for u in self.upstreams]
        if len(set(names)) != len(names):
            raise ConfigError("upstreams: names must be unique within a route")


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float = 10.0
    first_byte_s: float = 120.0
    idle_s: float = 120.0
    total_s: float = 900.0

    def __post_init__(self) -> None:
        for name in ("connect_s", "first_byte_s", "idle_s", "total_s"):
            _positive(name, getattr(self, name))


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        _positive("max_body_bytes", self.max_body_bytes)


@dataclass(frozen=True, slots=True)
class State:
    backend: Literal["memory", "redis"] = "memory"
    url: str | None = None

    def __post_init__(self) -> None:
        if self.backend == "redis" and not self.url:
            raise ConfigError("url: required when backend is redis")


@dataclass(frozen=True, slots=True)
class Logging:
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True, slots=True)
class Metrics:
    enabled: bool = True
    host: str | None = None
    """When set with port, /metrics is served on its own listen address instead of the proxy's."""
    port: int | None = None


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
            _positive(name, getattr(self, name))
        for name in ("export_timeout_s", "metrics_interval_s"):
            _positive(name, getattr(self, name))
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


@dataclass(frozen=True, slots=True)
class Dashboard:
    enabled: bool = True
    """``/dashboard`` where ``/metrics`` is served: loopback clients only, unless an
    ``admin_token`` is set, which every client must then present."""
    recent_requests: int = 50
    """How many of the last requests' log lines the page shows."""

    def __post_init__(self) -> None:
        if not 1 <= self.recent_requests <= 1000:
            raise ConfigError("recent_requests: must be 1..1000")


ADMIN_TOKEN_MIN_CHARS = 16


@dataclass(frozen=True, slots=True)
class PriceEntry:
    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None


@dataclass(frozen=True, slots=True)
class Config:
    routes: tuple[Route, ...]
    listen: Listen = field(default_factory=Listen)
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    retry: Retry = field(default_factory=Retry)
    context: Context = field(default_factory=Context)
    streaming: Streaming = field(default_factory=Streaming)
    state: State = field(default_factory=State)
    logging: Logging = field(default_factory=Logging)
    metrics: Metrics = field(default_factory=Metrics)
    otel: Otel = field(default_factory=Otel)
    dashboard: Dashboard = field(default_factory=Dashboard)
    admin_token: str | None = field(default=None, repr=False)
    """Guards the admin pages (``/dashboard``); ``LLM_PROXY_ADMIN_TOKEN`` when not set here."""
    pricing: dict[str, PriceEntry] = field(default_factory=dict)
    drain_timeout_s: float = 30.0
    workers: int = 1

    def __post_init__(self) -> None:
        prefixes = [r.prefix for r in self.routes]
        if len(set(prefixes)) != len(prefixes):
            raise ConfigError("routes: prefixes must be unique")
        _positive("workers", self.workers)
        if self.admin_token is not None and len(self.admin_token) < ADMIN_TOKEN_MIN_CHARS:
            raise ConfigError(f"admin_token: must be at least {ADMIN_TOKEN_MIN_CHARS} characters")

    def inject_context(self, route: Route) -> bool:
        """Whether ``route`` sends the proxy's span upstream as the trace parent."""
        own = route.otel.inject_context
        return self.otel.inject_context if own is None else own


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name}: must be > 0, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"{name}: must be >= 0, got {value!r}")


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base_url: not an http(s) URL: {url!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"base_url: must not carry a query or fragment: {url!r}")


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace ``${VAR}`` (or ``${VAR:-default}``) in every string; a missing VAR is an error."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path or '<root>'}: environment variable {name} is not set")

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, env, _join(path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def build(cls: Any, raw: Any, path: str) -> Any:
    """Build a value of type ``cls`` from plain YAML data, naming ``path`` in every error."""
    origin = typing.get_origin(cls)
    args = typing.get_args(cls)
    where = path or "<root>"
    if dataclasses.is_dataclass(cls):
        return _build_dataclass(cls, raw, path)
    if origin in (typing.Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return build(inner[0], raw, path)
    if origin is Literal:
        if raw not in args:
            raise ConfigError(f"{where}: must be one of {', '.join(map(str, args))}; got {raw!r}")
        return raw
    if origin is tuple:
        if not isinstance(raw, list):
            raise ConfigError(f"{where}: expected a list, got {type(raw).__name__}")
        return tuple(build(args[0], v, f"{path}[{i}]") for i, v in enumerate(raw))
    if origin is dict:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
        return {str(k): build(args[1], v, _join(path, str(k))) for k, v in raw.items()}
    return _build_scalar(cls, raw, where)


def _build_scalar(cls: Any, raw: Any, where: str) -> Any:
    if cls is bool:
        if not isinstance(raw, bool):
            raise ConfigError(f"{where}: expected true or false, got {raw!r}")
        return raw
    if cls is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(f"{where}: expected an integer, got {raw!r}")
        return raw
    if cls is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ConfigError(f"{where}: expected a number, got {raw!r}")
        return float(raw)
    if cls is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: expected a string, got {raw!r}")
        return raw
    raise ConfigError(f"{where}: unsupported type {cls!r}")  # pragma: no cover


def _build_dataclass(cls: Any, raw: Any, path: str) -> Any:
    where = path or "<root>"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, raw)) - set(fields))
    if unknown:
        raise ConfigError(f"{_join(path, unknown[0])}: unknown key (allowed: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name in raw:
            kwargs[name] = build(hints[name], raw[name], _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_join(path, name)}: required key is missing")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{_join(path, str(exc))}") from None


def from_dict(raw: Any, env: Mapping[str, str] | None = None) -> Config:
    """Validate parsed YAML; route-level ``context``/``retry`` inherit the top level."""
    if not isinstance(raw, dict):
        raise ConfigError("<root>: expected a mapping")
    data = expand_env(raw, os.environ if env is None else env)
    for i, route in enumerate(data.get("routes") or []):
        if not isinstance(route, dict):
            continue
        for key in ("context", "retry", "streaming"):
            top, own = data.get(key) or {}, route.get(key) or {}
            if not isinstance(top, dict) or not isinstance(own, dict):
                continue  # the type error is reported by build() with its path
            route[key] = {**top, **own}
        data["routes"][i] = route
    if "routes" not in data:
        raise ConfigError("routes: required key is missing")
    source = os.environ if env is None else env
    otel = data.get("otel")
    if otel is None or isinstance(otel, dict):
        data["otel"] = {**otel_from_env(source), **(otel or {})}
    if data.get("admin_token") is None and source.get(ADMIN_TOKEN_ENV):
        data["admin_token"] = source[ADMIN_TOKEN_ENV]
    return build(Config, data, "")


ADMIN_TOKEN_ENV = "LLM_PROXY_ADMIN_TOKEN"

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


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML config file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    return from_dict(raw, env)
