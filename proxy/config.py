"""Typed configuration, loaded and validated once at startup.

Every error names the key path (``routes[1].upstreams[0].base_url: ...``) so an operator can fix
the file without reading code. This module and config_parse.py (the file, ``${VAR}``, the
generic building) are the only ones that read files or the environment. The process-level
sections live in config_serving.py and the ``otel`` section in config_otel.py; every section
is importable from here.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from .config_otel import Otel, otel_from_env
from .config_parse import (
    ConfigError,
    build,
    expand_env,
    non_negative,
    positive,
    read_yaml,
)
from .config_serving import (
    Limits,
    Listen,
    Logging,
    Metrics,
    State,
    Timeouts,
)

Provider = Literal["openai", "anthropic"]


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
        positive("max_attempts", self.max_attempts)
        for name in ("max_wait_s", "backoff_base_s", "backoff_cap_s"):
            non_negative(name, getattr(self, name))
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
        non_negative("max_hold_s", self.max_hold_s)
        positive("max_hold_bytes", self.max_hold_bytes)
        if self.first_content_s is not None:
            positive("first_content_s", self.first_content_s)


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
        non_negative("max_queue_wait_s", self.max_queue_wait_s)
        positive("window_s", self.window_s)


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
        non_negative("reserve_output_tokens", self.reserve_output_tokens)
        non_negative("safety_margin", self.safety_margin)
        if self.max_input_tokens is not None:
            positive("max_input_tokens", self.max_input_tokens)
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
            positive("window", self.window)
        if self.max_input_tokens is not None:
            positive("max_input_tokens", self.max_input_tokens)


@dataclass(frozen=True, slots=True)
class Auth:
    """Client keys (issue 15). ``off``: clients' own credentials pass through, as before."""

    mode: Literal["off", "keys"] = "off"
    cache_ttl_s: float = 5.0
    """A revoke or rotate reaches every instance within this many seconds."""
    default_max_output_tokens: int = 4096
    """Output reserved against tpm and budget when a request sets no max_tokens."""

    def __post_init__(self) -> None:
        positive("cache_ttl_s", self.cache_ttl_s)
        positive("default_max_output_tokens", self.default_max_output_tokens)


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
        positive("workers", self.workers)
        non_negative("drain_timeout_s", self.drain_timeout_s)
        if self.admin_token is not None and len(self.admin_token) < ADMIN_TOKEN_MIN_CHARS:
            raise ConfigError(f"admin_token: must be at least {ADMIN_TOKEN_MIN_CHARS} characters")

    def inject_context(self, route: Route) -> bool:
        """Whether ``route`` sends the proxy's span upstream as the trace parent."""
        own = route.otel.inject_context
        return self.otel.inject_context if own is None else own


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
