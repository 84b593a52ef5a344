"""Hot reload: re-read the config on SIGHUP, swap in a new generation, retire the old one.

A generation is one :class:`AppState` (routes, pipeline, dispatcher). New requests get the
current one; a request keeps the one it started with, and a replaced generation is closed
(its plugins' ``close()``, e.g. the context budget's thread pool) only after its last request
ended, or at shutdown. What lives as long as the server (:class:`Resources`: the upstream
session, the cooldown store, the logger, the metrics) is shared by every generation, so config
keys that shape those need a restart: they are kept at their running values and logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from .config import Config
from .context.correction import Corrections, MemorySampleStore
from .dashboard.stats import LiveStats
from .dashboard.view import PacingSource
from .metrics import Metrics
from .resilience.cooldown import CooldownStore
from .resilience.pacer import Pacer
from .resilience.pacing_store import MemoryPacingStore
from .resilience.scope import Fingerprinter
from .sdnotify import Notifier
from .state import AppState, StateHolder
from .translate import MemoryResponseStore, ResponseStore

if TYPE_CHECKING:  # imported only when configured
    from .auth.runtime import AuthRuntime
    from .otel.telemetry import Telemetry


@dataclass(slots=True)
class Resources:
    """Things that live as long as the server, shared by every config generation."""

    session: aiohttp.ClientSession
    logger: Any
    cooldowns: CooldownStore
    metrics: Metrics
    responses: ResponseStore = field(default_factory=MemoryResponseStore)
    """Responses API conversations kept for clients served through a translation."""
    corrections: Corrections = field(default_factory=lambda: Corrections(MemorySampleStore()))
    """Learned token-count corrections: they outlive a reload."""
    pacer: Pacer = field(default_factory=lambda: Pacer(MemoryPacingStore()))
    """Live rate-limit models per scope, shared by every generation (and process, on Redis)."""
    fingerprint: Fingerprinter = field(default_factory=Fingerprinter)
    telemetry: Telemetry | None = None
    """The OpenTelemetry pipeline, when ``otel`` is configured."""
    live: LiveStats | None = None
    """The dashboard's rolling windows, when the dashboard is on."""
    pacing: PacingSource | None = None
    """The pacer's state for the dashboard, when pacing is on."""
    auth: AuthRuntime | None = None
    """Keys mode: the key store, cache, counters and ledger writer (None when auth is off)."""


RESOURCES = web.AppKey("resources", Resources)

RESTART_ONLY = (
    "listen",
    "workers",
    "limits",
    "logging",
    "metrics",
    "state",
    "auth",
    "store",
    "drain_timeout_s",
    "otel",
    "dashboard",
)
"""Top-level keys read once at startup: the listen sockets and worker count, the app's body
limit, the logger, the metrics routes and listen address, the cooldown store backend, keys
mode and its store (the runtime and the admin API), the runner's drain timeout, the
OpenTelemetry pipeline, the dashboard's routes and windows.
``timeouts.connect_s`` lives on the shared session, so it is one too."""


def adopt(running: Config, new: Config) -> tuple[Config, list[str]]:
    """``new`` with the restart-only keys kept at their running values, and the keys that
    changed but will only take effect after a restart."""
    changed = [key for key in RESTART_ONLY if getattr(running, key) != getattr(new, key)]
    if running.timeouts.connect_s != new.timeouts.connect_s:
        changed.append("timeouts.connect_s")
    kept = {key: getattr(running, key) for key in RESTART_ONLY}
    timeouts = dataclasses.replace(new.timeouts, connect_s=running.timeouts.connect_s)
    return dataclasses.replace(new, timeouts=timeouts, **kept), changed


class Generations:
    """In-flight counts per generation, so a replaced one is closed after its last request."""

    def __init__(self, holder: StateHolder) -> None:
        self.holder = holder
        self._active: dict[int, int] = {}
        self._retired: dict[int, AppState] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._total = 0
        self._idle: asyncio.Event | None = None

    @property
    def in_flight(self) -> int:
        """Proxied requests running now, on any generation."""
        return self._total

    async def wait_idle(self) -> None:
        """Return once no request runs (the drain; the caller bounds it with a timeout)."""
        while self._total:
            self._idle = asyncio.Event()
            try:
                await self._idle.wait()
            finally:
                self._idle = None

    def mark_draining(self) -> None:
        """Flag every live generation: requests cancelled from now on were cut by the drain."""
        for state in (self.holder.current, *self._retired.values()):
            state.draining = True

    def enter(self) -> AppState:
        state = self.holder.current
        key = id(state)
        self._active[key] = self._active.get(key, 0) + 1
        self._total += 1
        return state

    def leave(self, state: AppState) -> None:
        self._total -= 1
        if self._total == 0 and self._idle is not None:
            self._idle.set()
        key = id(state)
        left = self._active[key] - 1
        if left:
            self._active[key] = left
            return
        del self._active[key]
        retired = self._retired.pop(key, None)
        if retired is not None:
            self._close_later(retired)

    def swap(self, new: AppState) -> AppState:
        """Make ``new`` current; the old one closes now when idle, else after its last request."""
        old, self.holder.current = self.holder.current, new
        if id(old) in self._active:
            self._retired[id(old)] = old
        else:
            self._close_later(old)
        return old

    @property
    def retired(self) -> int:
        """Replaced generations still serving requests."""
        return len(self._retired)

    def _close_later(self, state: AppState) -> None:
        task = asyncio.get_running_loop().create_task(state.pipeline.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """At shutdown, after the drain: the current generation and any still retired."""
        states = [self.holder.current, *self._retired.values()]
        self._retired.clear()
        for state in states:
            if state is not None:
                await state.pipeline.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


Handler = Callable[[web.Request, AppState], Awaitable[web.StreamResponse]]


def pinned(
    handler: Handler, generations: Generations
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Run ``handler`` on the current generation and count the request against it, so a
    replaced generation is closed only after its last request."""

    async def handle_pinned(request: web.Request) -> web.StreamResponse:
        state = generations.enter()
        try:
            return await handler(request, state)
        finally:
            generations.leave(state)

    return handle_pinned


class Reloader:
    """Re-reads and validates the config and swaps generations; one reload at a time."""

    def __init__(
        self, generations: Generations, build: Callable[[Config], AppState], logger: Any
    ) -> None:
        self.generations = generations
        self.logger = logger
        self._build = build
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def request(self, loader: Callable[[], Config], notifier: Notifier) -> None:
        """From a signal handler: reload now, or once more after the running reload."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run(loader, notifier))

    async def _run(self, loader: Callable[[], Config], notifier: Notifier) -> None:
        while True:
            self._again = False
            await self.reload(loader, notifier)
            if not self._again:
                return

    async def reload(self, loader: Callable[[], Config], notifier: Notifier) -> bool:
        """One reload; on any error the running generation stays and the error is logged."""
        notifier.reloading()
        try:
            running = self.generations.holder.current.config
            new, restart = adopt(running, await asyncio.to_thread(loader))
            state = self._build(new)
        except Exception as exc:  # a bad file must never take the running proxy down
            self.logger.error("config reload failed, keeping the running config", error=str(exc))
            notifier.ready()
            return False
        if restart:
            self.logger.warning(
                "config keys changed that take effect only after a restart", keys=restart
            )
        self.generations.swap(state)
        self.logger.info("config reloaded", routes=[r.prefix for r in new.routes])
        notifier.ready()
        return True

    async def close(self) -> None:
        """Let a running reload finish before shutdown closes the generations."""
        if self._task is not None:
            self._again = False
            await asyncio.gather(self._task, return_exceptions=True)


RELOADER = web.AppKey("reloader", Reloader)
