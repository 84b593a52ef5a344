"""Typed configuration, loaded and validated once at startup.

Every error names the key path (``routes[1].upstreams[0].base_url: ...``) so an operator can fix
the file without reading code. This module and config_parse.py (the file, ``${VAR}``, the
generic building) are the only ones that read files or the environment.
"""

from __future__ import annotations

import dataclasses
import grp
import ipaddress
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from .config_parse import ConfigError, FileMode, build, expand_env, read_yaml

Provider = Literal["openai", "anthropic"]


@dataclass(frozen=True, slots=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 8080
    allow_remote: bool = False
    """A host other than a loopback address needs this: anyone who reaches the port uses the
    proxy, and with it every upstream ``api_key`` in this file."""
    unix: str | None = None
    """Also listen on this Unix socket path (a sidecar's apps reach it with no TCP port)."""
    unix_mode: FileMode | None = None
    """The socket file's permission bits (e.g. ``"0660"``); None: what the umask leaves."""
    unix_group: str | int | None = None
    """The socket file's group (name or gid), so the app's user can connect with ``0660``."""
    backlog: int = 1024
    """Accept queue length per listening socket; the kernel caps it at net.core.somaxconn."""
    max_connections: int | None = None
    """Open client connections per process; more are closed at once. None: half the file
    descriptor limit (each proxied request also holds an upstream connection)."""
    header_timeout_s: float = 10.0
    """A request's line and headers must arrive within this, from their first byte."""
    body_timeout_s: float = 60.0
    """A request's body must arrive within this, from the end of its headers."""
    idle_timeout_s: float = 75.0
    """A connection with no request running is closed after this (keep-alive)."""
    max_header_bytes: int = 8190
    """Longest request line, and longest header line; longer gets a 400."""
    max_headers: int = 128

    def __post_init__(self) -> None:
        _port("port", self.port)
        if not (self.allow_remote or is_loopback(self.host)):
            where = "listens on every interface" if self.host in _ANY else "is not loopback"
            raise ConfigError(
                f"host: {self.host!r} {where}: other machines could use the proxy, and with it "
                "any upstream api_key it holds; set listen.allow_remote: true (or pass "
                "--allow-remote) if that is intended"
            )
        if self.unix is not None and not 0 < len(os.fsencode(self.unix)) <= _UNIX_PATH_MAX:
            raise ConfigError(
                f"unix: a socket path must be 1..{_UNIX_PATH_MAX} bytes, got {self.unix!r}"
            )
        if self.unix_mode is not None and not 0 <= self.unix_mode <= 0o777:
            raise ConfigError(
                f"unix_mode: must be 0..0777, got {self.unix_mode!r} (write it in octal, quoted: "
                "'0660')"
            )
        if self.unix_group is not None:
            object.__setattr__(self, "unix_group", _group_id(self.unix_group))
        _positive("backlog", self.backlog)
        if self.max_connections is not None:
            _positive("max_connections", self.max_connections)
        for name in ("header_timeout_s", "body_timeout_s", "idle_timeout_s"):
            _positive(name, getattr(self, name))
        _positive("max_header_bytes", self.max_header_bytes)
        _positive("max_headers", self.max_headers)


_ANY = ("", "0.0.0.0", "::")


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address literal; a name is not resolved (no network here)."""
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _group_id(group: str | int) -> int:
    if isinstance(group, int) or group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"unix_group: no such group: {group!r}") from None


_UNIX_PATH_MAX = 107
"""sockaddr_un.sun_path is 108 bytes on Linux, one of them the terminating NUL."""


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    models: dict[str, str] = field(default_factory=dict)
    """Model-name mapping applied when this upstream serves a request (e.g. a fallback vendor)."""
    api: Literal["openai_chat", "openai_responses", "anthropic"] | None = None
    """The API this upstream speaks when it differs from the route's: requests and answers
    are then translated (only for the endpoints a translation knows). None: the route's."""
    pass_client_credentials: bool = False
    """Send the client's own credential here even though it is not the route's first upstream.
    Off by default: a client's key is meant for the upstream the route names first."""

    def __post_init__(self) -> None:
        _check_url(self.base_url)
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError(
                "api_key: is empty (an environment variable set to ''?); remove the key to pass "
                "clients' own credentials through"
            )


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
        for name in ("max_wait_s", "backoff_base_s", "backoff_cap_s"):
            _non_negative(name, getattr(self, name))
        bad = [s for s in self.retry_on if not 100 <= s <= 599]
        if bad:
            raise ConfigError(f"retry_on: HTTP statuses are 100..599, got {bad[0]!r}")


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
class Pacing:
    """Proactive pacing from the providers' rate-limit headers (issue 12)."""

    enabled: bool = True
    target_utilisation: float = 0.95
    """Admit while (1 - this) x limit stays in each bucket: room for header lag and estimates."""
    max_queue_wait_s: float = 30.0
    """Longest a request is held for its scope to refill; lowered by ``x-proxy-max-wait``."""
    window_s: float = 60.0
    """The providers' limit window (per minute): a bucket refills at limit / window_s."""
    fingerprint_secret: str | None = field(default=None, repr=False)
    """Key of the credential fingerprints; top level only. Unset: shared through Redis when
    the state backend is Redis, else random per process."""

    def __post_init__(self) -> None:
        if not 0 < self.target_utilisation <= 1:
            raise ConfigError(
                f"target_utilisation: must be in (0, 1], got {self.target_utilisation!r}"
            )
        _non_negative("max_queue_wait_s", self.max_queue_wait_s)
        _positive("window_s", self.window_s)


@dataclass(frozen=True, slots=True)
class Context:
    enabled: bool = True
    reserve_output_tokens: int = 4096
    safety_margin: int = 256
    max_input_tokens: int | None = None
    safety_factor: float = 1.2
    """Multiplier on tiktoken estimates for models without a public tokenizer (Claude, unknown)."""
    models: dict[str, int] = field(default_factory=dict)
    trim_target_share: float = 0.7
    """When trimming is needed, cut down to this share of the budget and keep that cut for the
    following turns (cache-stable stepped trimming, ``context/stepped.py``)."""
    output_reserve_share: float = 0.25
    """Without max_tokens in the request, the output reserve is at most this share of the window."""
    count_tokens_endpoint: bool = False
    """Anthropic: ask the upstream's free /v1/messages/count_tokens before trimming."""

    def __post_init__(self) -> None:
        if not 0.0 < self.trim_target_share <= 1.0:
            raise ConfigError("trim_target_share: must be > 0 and <= 1")
        if not 0.0 < self.output_reserve_share < 1.0:
            raise ConfigError("output_reserve_share: must be > 0 and < 1")
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
    pacing: Pacing = field(default_factory=Pacing)
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
    first_byte_s: float = 600.0
    """Up to the response head: a long non-streaming generation sends nothing before it ends
    (the official SDKs wait 600 s by default)."""
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
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in _REDIS_SCHEMES or not (parts.hostname or parts.path):
                raise ConfigError(
                    f"url: not a Redis URL (redis://host:port/db, rediss://, unix://path): "
                    f"{redact_url(self.url)!r}"
                )

    @property
    def display_url(self) -> str | None:
        """The URL for messages: any password replaced by ``***``."""
        return None if self.url is None else redact_url(self.url)


_REDIS_SCHEMES = ("redis", "rediss", "unix")


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo part masked (``redis://:***@host/0``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url if parts.netloc or "@" not in url else "***@" + url.rpartition("@")[2]
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


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

    def __post_init__(self) -> None:
        if self.port is not None:
            _port("port", self.port)


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
class ModelEntry:
    """Facts about one model name that the built-in registry lacks (``proxy.models``)."""

    window: int | None = None
    max_input_tokens: int | None = None
    tokenizer: Literal["o200k_base", "cl100k_base", "unknown"] | None = None

    def __post_init__(self) -> None:
        if self.window is not None:
            _positive("window", self.window)
        if self.max_input_tokens is not None:
            _positive("max_input_tokens", self.max_input_tokens)


@dataclass(frozen=True, slots=True)
class Auth:
    """Client keys (issue 15). ``off``: clients' own credentials pass through, as before."""

    mode: Literal["off", "keys"] = "off"
    cache_ttl_s: float = 5.0
    """A revoke or rotate reaches every instance within this many seconds."""
    default_max_output_tokens: int = 4096
    """Output reserved against tpm and budget when a request sets no max_tokens."""

    def __post_init__(self) -> None:
        _positive("cache_ttl_s", self.cache_ttl_s)
        _positive("default_max_output_tokens", self.default_max_output_tokens)


ADMIN_TOKEN_ENV = "LLM_PROXY_ADMIN_TOKEN"


@dataclass(frozen=True, slots=True)
class Storage:
    """Where keys and the spend ledger live."""

    backend: Literal["sqlite", "postgres"] = "sqlite"
    path: str = "llm-proxy.db"
    """SQLite file; a relative path is taken from the config file's folder."""
    url: str | None = field(default=None, repr=False)
    """PostgreSQL DSN (postgresql://user:pass@host/db); may carry a password."""

    def __post_init__(self) -> None:
        if self.backend == "postgres" and not self.url:
            raise ConfigError("url: required when backend is postgres")


@dataclass(frozen=True, slots=True)
class Config:
    routes: tuple[Route, ...]
    listen: Listen = field(default_factory=Listen)
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    retry: Retry = field(default_factory=Retry)
    context: Context = field(default_factory=Context)
    streaming: Streaming = field(default_factory=Streaming)
    pacing: Pacing = field(default_factory=Pacing)
    state: State = field(default_factory=State)
    logging: Logging = field(default_factory=Logging)
    metrics: Metrics = field(default_factory=Metrics)
    otel: Otel = field(default_factory=Otel)
    dashboard: Dashboard = field(default_factory=Dashboard)
    admin_token: str | None = field(default=None, repr=False)
    """Guards the admin pages (``/dashboard``, ``/admin/``); ``LLM_PROXY_ADMIN_TOKEN`` when not
    set here."""
    pricing: dict[str, PriceEntry] = field(default_factory=dict)
    models: dict[str, ModelEntry] = field(default_factory=dict)
    auth: Auth = field(default_factory=Auth)
    store: Storage = field(default_factory=Storage)
    drain_timeout_s: float = 30.0
    workers: int = 1

    def __post_init__(self) -> None:
        if not self.routes:
            raise ConfigError("routes: at least one route is required")
        prefixes = [r.prefix for r in self.routes]
        if len(set(prefixes)) != len(prefixes):
            raise ConfigError("routes: prefixes must be unique")
        _positive("workers", self.workers)
        _non_negative("drain_timeout_s", self.drain_timeout_s)
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


def _port(name: str, value: int) -> None:
    if not 1 <= value <= 65535:
        raise ConfigError(f"{name}: must be 1..65535, got {value!r}")


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base_url: not an http(s) URL: {url!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"base_url: must not carry a query or fragment: {url!r}")


INHERITED = {"retry": Retry, "context": Context, "streaming": Streaming, "pacing": Pacing}
"""Top-level sections every route inherits; a route's own keys override them one by one."""


def from_dict(
    raw: Any, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Validate parsed YAML; route-level ``context``/``retry`` inherit the top level.

    ``overrides`` (the command line's) replace keys of the file before validation, one level
    deep (``{"listen": {"port": 9000}}``), so a flag can also make a file's value acceptable.
    """
    if not isinstance(raw, dict):
        raise ConfigError("<root>: expected a mapping")
    data = expand_env(raw, os.environ if env is None else env)
    for key, value in (overrides or {}).items():
        section = data.get(key)
        if isinstance(value, Mapping) and isinstance(section, dict):
            data[key] = {**section, **value}
        else:
            data[key] = value
    for key, cls in INHERITED.items():  # on its own first, so its errors name `context.<key>`
        build(cls, data.get(key), key)
    routes = data.get("routes")
    for i, route in enumerate(routes if isinstance(routes, list) else []):
        if not isinstance(route, dict):
            continue
        own_pacing = route.get("pacing")
        if isinstance(own_pacing, dict) and "fingerprint_secret" in own_pacing:
            raise ConfigError(f"routes[{i}].pacing.fingerprint_secret: top level only")
        for key in INHERITED:
            top, own = data.get(key) or {}, route.get(key) or {}
            if isinstance(top, dict) and isinstance(own, dict):  # else build() names the error
                route[key] = {**top, **own}
    if "routes" not in data:
        raise ConfigError("routes: required key is missing")
    source = os.environ if env is None else env
    otel = data.get("otel")
    if otel is None or isinstance(otel, dict):
        data["otel"] = {**otel_from_env(source), **(otel or {})}
    if data.get("admin_token") is None and source.get(ADMIN_TOKEN_ENV):
        data["admin_token"] = source[ADMIN_TOKEN_ENV]
    config = typing.cast(Config, build(Config, data, ""))
    check_budgets(config, raw)
    return config


def check_budgets(config: Config, raw: dict[str, Any]) -> None:
    """Refuse a route whose input budget is <= 0 for a model it knows a window of, even for a
    request without max_tokens; the error names the keys where the user wrote them."""
    from .models import ModelRegistry  # the registry imports config types only for typing

    base = ModelRegistry.from_config(config)
    for i, route in enumerate(config.routes):
        ctx = route.context
        registry = base.for_context(ctx)
        for name, origin in _windowed_names(config, raw, i):
            window = registry.facts(name).window
            if window is None:
                continue
            reserve = min(ctx.reserve_output_tokens, int(window * ctx.output_reserve_share))
            if window - reserve - ctx.safety_margin > 0:
                continue
            key = _where(raw, i, "safety_margin")
            raise ConfigError(
                f"{key}: {ctx.safety_margin} leaves no input budget for model {name!r} "
                f"(window {window} from {origin}): window - output reserve {reserve} "
                f"- safety_margin <= 0; lower {key.rsplit('.', 1)[0]}.safety_margin "
                "or reserve_output_tokens, or fix the window"
            )


def _windowed_names(config: Config, raw: dict[str, Any], i: int) -> list[tuple[str, str]]:
    """(model name as written, where its window comes from) for one route."""
    out: list[tuple[str, str]] = []
    own = (raw["routes"][i].get("context") or {}).get("models")
    where = f"routes[{i}].context.models" if isinstance(own, dict) else "context.models"
    out += [(name, f"{where}.{name}") for name in config.routes[i].context.models]
    out += [(name, f"models.{name}.window") for name, e in config.models.items() if e.window]
    for j, upstream in enumerate(config.routes[i].upstreams):
        for name in (*upstream.models, *upstream.models.values()):
            out.append((name, f"the built-in table (routes[{i}].upstreams[{j}].models)"))
    return out


def _where(raw: dict[str, Any], i: int, key: str) -> str:
    """The key path where the user wrote ``key`` for route ``i`` (route, top level, default)."""
    own = raw["routes"][i].get("context")
    if isinstance(own, dict) and key in own:
        return f"routes[{i}].context.{key}"
    return "context." + key


def _anchor_store(cfg: Config, folder: Path) -> Config:
    """A relative SQLite path is relative to the config file, not to the working directory."""
    path = Path(cfg.store.path)
    if path.is_absolute():
        return cfg
    return dataclasses.replace(cfg, store=dataclasses.replace(cfg.store, path=str(folder / path)))


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


def load(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read and validate a YAML config file; every problem is one line naming the file or key."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings (routes:, listen:, ...)")
    return _anchor_store(from_dict(raw, env, overrides), Path(path).absolute().parent)
