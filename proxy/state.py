"""What a request needs from the running server, swapped as one object on reload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from .config import Config
from .exchange import Exchange
from .plugins import Pipeline
from .resilience.attempts import Dispatch
from .routing import Router


class Dispatcher(Protocol):
    """Chooses upstreams and attempts for a routed request."""

    async def dispatch(self, ex: Exchange) -> Dispatch: ...


@dataclass(slots=True)
class AppState:
    """One generation of config: a request keeps the state it started with."""

    config: Config
    router: Router
    pipeline: Pipeline
    dispatcher: Dispatcher
    logger: Any
    draining: bool = False
    """Set when the server drains, so a request cut at the drain timeout says so in its line."""

    @property
    def prefixes(self) -> str:
        return ", ".join(repr(r.prefix) for r in self.config.routes)


class StateHolder:
    """Holds the current AppState; stored once under an AppKey so reload never mutates the app."""

    def __init__(self) -> None:
        self.current: AppState = None  # type: ignore[assignment]  # set at startup


STATE = web.AppKey("state", StateHolder)
