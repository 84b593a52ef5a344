"""Application wiring: shared resources in cleanup_ctx, the ordered plugin list, the routes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator
from typing import IO, Any

from aiohttp import web

from .config import Config
from .forward import make_session
from .handler import handle
from .logs import make_logger
from .metrics import METRICS, Metrics, metrics_handler
from .plugins import Pipeline, Plugin
from .plugins.context_budget import ContextBudget
from .plugins.metrics import MetricsPlugin, known_models
from .plugins.request_log import RequestLog
from .plugins.usage import UsageAccounting
from .reload import RELOADER, RESOURCES, Generations, Reloader, Resources, pinned
from .resilience.attempts import AttemptLoop
from .resilience.cooldown import StateEvents, make_store
from .routing import Router
from .service import CANCEL_GRACE_S, PROCESS, ProcessInfo, healthz
from .state import STATE, AppState, StateHolder

__all__ = ["RESOURCES", "Resources", "build_state", "default_plugins", "make_app"]


def default_plugins(config: Config, res: Resources) -> list[Plugin]:
    """The one explicit, ordered plugin list. The request log stays last."""
    metrics: list[Plugin] = []
    if config.metrics.enabled:  # after usage accounting, whose log fields it counts
        metrics.append(MetricsPlugin(res.metrics, known_models(config), res.logger))
    return [ContextBudget(), UsageAccounting(config.pricing), *metrics, RequestLog(res.logger)]


def build_state(config: Config, res: Resources) -> AppState:
    """A complete generation of request-serving state for ``config``."""
    return AppState(
        config=config,
        router=Router(config.routes),
        pipeline=Pipeline(default_plugins(config, res)),
        dispatcher=AttemptLoop(res.session, config.timeouts, res.cooldowns, res.logger),
        logger=res.logger,
        refused=res.metrics.count_refused,
    )


def _flush_log(logger: Any) -> None:
    """Write out what a queued log sink still holds (and stop its thread): a worker process
    ends with ``os._exit``, which skips the ``atexit`` hook that would otherwise do it."""
    close = getattr(getattr(logger, "_logger", None), "close", None)
    if callable(close):
        close()


def make_app(
    config: Config,
    *,
    log_stream: IO[str] | None = None,
    worker: int | None = None,
    metrics_dir: str | None = None,
) -> web.Application:
    """The proxy app for ``config``. ``worker`` (its index under a supervisor) is added to every
    log line; ``metrics_dir`` makes the metrics shared with sibling workers (see metrics.py)."""
    app = web.Application(client_max_size=config.limits.max_body_bytes, handler_args={})
    holder = StateHolder()
    app[STATE] = holder
    generations = Generations(holder)
    metrics = app[METRICS] = Metrics(shared_dir=metrics_dir)
    app[PROCESS] = ProcessInfo(started=time.monotonic(), worker=worker)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        logger = make_logger(config.logging, log_stream)
        if worker is not None:
            logger = logger.bind(worker=worker)
        state = StateEvents(logger, config.state.display_url)
        res = Resources(
            session=make_session(config.timeouts),
            logger=logger,
            cooldowns=make_store(
                config.state.backend, config.state.url, state.lost, state.recovered
            ),
            metrics=metrics,
        )
        app[RESOURCES] = res
        holder.current = build_state(config, res)
        app[RELOADER] = Reloader(generations, functools.partial(build_state, res=res), logger)
        publisher = asyncio.create_task(metrics.publish_live()) if metrics.shared else None
        yield
        if publisher is not None:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
        with contextlib.suppress(TimeoutError):  # handlers cut by the drain log their line
            async with asyncio.timeout(CANCEL_GRACE_S):
                await generations.wait_idle()
        await generations.close()
        await res.cooldowns.close()
        await res.session.close()
        _flush_log(logger)

    app.cleanup_ctx.append(resources)
    app.router.add_get("/healthz", healthz)
    if config.metrics.enabled and config.metrics.port is None:  # else serve() listens for it
        app.router.add_get("/metrics", metrics_handler(metrics))
    app.router.add_route("*", "/{tail:.*}", pinned(handle, generations))
    return app
