"""What a request needs from the running server, swapped as one object on reload."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .config import Config
from .errors import ProxyError
from .forward import Dispatcher
from .plugins import Pipeline
from .routing import Router


@dataclass(slots=True)
class AppState:
    """One generation of config: a request keeps the state it started with."""

    config: Config
    router: Router
    pipeline: Pipeline
    dispatcher: Dispatcher
    logger: Any
    refused: Callable[[str | None, int], None] | None = None
    """Told (route name or None, status) of each request refused before an exchange existed."""
    draining: bool = False
    """Set when the server drains, so a request cut at the drain timeout says so in its line."""

    @property
    def prefixes(self) -> str:
        return ", ".join(repr(r.prefix) for r in self.config.routes)

    def log_unrouted(self, request: web.Request, request_id: str, error: ProxyError) -> None:
        """Requests refused before an exchange exists still leave their one log line."""
        self.logger.info(
            "request",
            request_id=request_id,
            route=None,
            method=request.method,
            path=request.rel_url.raw_path,
            status=error.status,
            error=error.message,
            client=request.remote,
        )
        if self.refused is not None:
            match = self.router.match(request.rel_url.raw_path)
            self.refused(match[0].name if match else None, error.status)


class StateHolder:
    """Holds the current AppState; stored once under an AppKey so reload never mutates the app."""

    def __init__(self) -> None:
        self.current: AppState = None  # type: ignore[assignment]


STATE = web.AppKey("state", StateHolder)
