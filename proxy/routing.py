"""Which route a path belongs to, and the upstream URL it maps to."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Route
from .providers import PROVIDERS, ProviderSpec


@dataclass(frozen=True, slots=True)
class RouteTarget:
    config: Route
    provider: ProviderSpec

    @property
    def name(self) -> str:
        return self.config.prefix or "/"


class Router:
    """Longest-prefix match on whole path segments (``/openai`` never matches ``/openaix``)."""

    def __init__(self, routes: tuple[Route, ...]) -> None:
        ordered = sorted(routes, key=lambda r: len(r.prefix), reverse=True)
        self._targets = [RouteTarget(r, PROVIDERS[r.provider]) for r in ordered]

    def match(self, path: str) -> tuple[RouteTarget, str] | None:
        """The route and the path tail to append to the upstream base URL."""
        for target in self._targets:
            prefix = target.config.prefix
            if not prefix:
                return target, path
            if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
                return target, path[len(prefix) :]
        return None


_DOT_SEGMENTS = frozenset({".", "..", "%2e", "%2e%2e", ".%2e", "%2e."})


def escapes_base(tail: str) -> bool:
    """A tail with ``.``/``..`` segments could climb out of the upstream's base path."""
    if "." not in tail:
        return False
    return any(seg.lower() in _DOT_SEGMENTS for seg in tail.split("/"))


def upstream_url(base_url: str, tail: str, query_string: str) -> str:
    """``base_url`` + the path after the prefix + the query, all kept exactly as encoded."""
    url = base_url.rstrip("/") + tail
    return f"{url}?{query_string}" if query_string else url
