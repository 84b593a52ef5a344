"""Which route a path belongs to, and the upstream URL it maps to."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from .config import Route
from .providers import PROVIDERS, ProviderSpec


@dataclass(frozen=True, slots=True)
class RouteTarget:
    config: Route
    provider: ProviderSpec
    client_keys: bool = False
    """Clients authenticate with the proxy's own keys (``auth: {mode: keys}``): what they send
    as a credential is never an upstream's, so it is never forwarded."""

    @property
    def name(self) -> str:
        return self.config.prefix or "/"


class Router:
    """Longest-prefix match on whole path segments (``/openai`` never matches ``/openaix``)."""

    def __init__(self, routes: tuple[Route, ...], *, client_keys: bool = False) -> None:
        ordered = sorted(routes, key=lambda r: len(r.prefix), reverse=True)
        self._targets = [RouteTarget(r, PROVIDERS[r.provider], client_keys) for r in ordered]

    def match(self, path: str) -> tuple[RouteTarget, str] | None:
        """The route and the path tail to append to the upstream base URL."""
        for target in self._targets:
            prefix = target.config.prefix
            if not prefix:
                return target, path
            if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
                return target, path[len(prefix) :]
        return None


_MAX_DECODE_ROUNDS = 4


def escapes_base(tail: str) -> bool:
    """A tail that could climb out of the upstream's base path, in any spelling.

    Upstreams and intermediaries may decode ``%2e`` or ``%2f`` (even twice) or treat ``\\``
    as a separator, so the decision is made on every decoding of the path up to a fixed
    depth: if any of them has a ``.`` or ``..`` segment, the path is refused.
    """
    if "." not in tail and "%" not in tail and "\\" not in tail:
        return False
    current = tail
    for _ in range(_MAX_DECODE_ROUNDS):
        segments = current.replace("\\", "/").split("/")
        if any(seg in (".", "..") for seg in segments):
            return True
        decoded = unquote(current, errors="surrogateescape")
        if decoded == current:
            return False
        current = decoded
    return "%" in current  # still encoded after the rounds: refuse rather than guess


def upstream_url(base_url: str, tail: str, query_string: str) -> str:
    """``base_url`` + the path after the prefix + the query, all kept exactly as encoded."""
    url = base_url.rstrip("/") + tail
    return f"{url}?{query_string}" if query_string else url
