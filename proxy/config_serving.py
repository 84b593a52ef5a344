"""The process-level config sections: where to listen, timeouts and body limits, the shared
state backend, logging and metrics. Part of config.py's schema (re-exported there).
"""

from __future__ import annotations

import grp
import ipaddress
import os
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from .config_parse import ConfigError, FileMode, port_number, positive


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
        port_number("port", self.port)
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
        positive("backlog", self.backlog)
        if self.max_connections is not None:
            positive("max_connections", self.max_connections)
        for name in ("header_timeout_s", "body_timeout_s", "idle_timeout_s"):
            positive(name, getattr(self, name))
        positive("max_header_bytes", self.max_header_bytes)
        positive("max_headers", self.max_headers)


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
class Timeouts:
    connect_s: float = 10.0
    first_byte_s: float = 600.0
    """Up to the response head: a long non-streaming generation sends nothing before it ends
    (the official SDKs wait 600 s by default)."""
    idle_s: float = 120.0
    total_s: float = 900.0

    def __post_init__(self) -> None:
        for name in ("connect_s", "first_byte_s", "idle_s", "total_s"):
            positive(name, getattr(self, name))


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        positive("max_body_bytes", self.max_body_bytes)


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
            port_number("port", self.port)
