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
from urllib.parse import urlsplit

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

    def __post_init__(self) -> None:
        _check_url(self.base_url)


@dataclass(frozen=True, slots=True)
class Retry:
    max_attempts: int = 3
    max_wait_s: float = 30.0
    retry_on: tuple[int, ...] = (429, 500, 502, 503, 504, 529)
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 8.0

    def __post_init__(self) -> None:
        _positive("max_attempts", self.max_attempts)
        _non_negative("max_wait_s", self.max_wait_s)


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
class Route:
    prefix: str
    provider: Provider
    upstreams: tuple[Upstream, ...]
    context: Context = field(default_factory=Context)
    retry: Retry = field(default_factory=Retry)

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
class PriceEntry:
    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None


@dataclass(frozen=True, slots=True)
class Auth:
    """Client keys (issue 15). ``off``: clients' own credentials pass through, as before."""

    mode: Literal["off", "keys"] = "off"
    cache_ttl_s: float = 5.0
    """A revoke or rotate reaches every instance within this many seconds."""
    default_max_output_tokens: int = 4096
    """Output reserved against tpm and budget when a request sets no max_tokens."""
    admin_token: str | None = field(default=None, repr=False)
    """Bearer token for /admin/; taken from LLM_PROXY_ADMIN_TOKEN when not set here."""

    def __post_init__(self) -> None:
        _positive("cache_ttl_s", self.cache_ttl_s)
        _positive("default_max_output_tokens", self.default_max_output_tokens)
        if self.admin_token is not None and len(self.admin_token) < _ADMIN_TOKEN_MIN:
            raise ConfigError(f"admin_token: must be at least {_ADMIN_TOKEN_MIN} characters")


_ADMIN_TOKEN_MIN = 16
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
    state: State = field(default_factory=State)
    logging: Logging = field(default_factory=Logging)
    metrics: Metrics = field(default_factory=Metrics)
    pricing: dict[str, PriceEntry] = field(default_factory=dict)
    auth: Auth = field(default_factory=Auth)
    store: Storage = field(default_factory=Storage)
    drain_timeout_s: float = 30.0
    workers: int = 1

    def __post_init__(self) -> None:
        prefixes = [r.prefix for r in self.routes]
        if len(set(prefixes)) != len(prefixes):
            raise ConfigError("routes: prefixes must be unique")
        _positive("workers", self.workers)


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
        for key in ("context", "retry"):
            top, own = data.get(key) or {}, route.get(key) or {}
            if not isinstance(top, dict) or not isinstance(own, dict):
                continue  # the type error is reported by build() with its path
            route[key] = {**top, **own}
        data["routes"][i] = route
    if "routes" not in data:
        raise ConfigError("routes: required key is missing")
    return _with_admin_token(build(Config, data, ""), os.environ if env is None else env)


def _with_admin_token(cfg: Config, env: Mapping[str, str]) -> Config:
    token = env.get(ADMIN_TOKEN_ENV)
    if cfg.auth.admin_token is not None or not token:
        return cfg
    try:
        return dataclasses.replace(cfg, auth=dataclasses.replace(cfg.auth, admin_token=token))
    except ConfigError as exc:
        raise ConfigError(f"{ADMIN_TOKEN_ENV}: {exc}") from None


def _anchor_store(cfg: Config, folder: Path) -> Config:
    """A relative SQLite path is relative to the config file, not to the working directory."""
    path = Path(cfg.store.path)
    if path.is_absolute():
        return cfg
    return dataclasses.replace(cfg, store=dataclasses.replace(cfg.store, path=str(folder / path)))


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
    return _anchor_store(from_dict(raw, env), Path(path).absolute().parent)
