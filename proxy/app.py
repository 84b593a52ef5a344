"""Application wiring: shared resources in cleanup_ctx, the ordered plugin list, the routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, Any

import aiohttp
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
from .plugins.usage import UsageAccounting, warm_token_encodings
from .resilience.attempts import AttemptLoop
from .resilience.cooldown import CooldownStore, make_store
from .routing import Router
from .service import healthz
from .state import STATE, AppState, StateHolder


@dataclass(slots=True)
class Resources:
    """Things that live as long as the server, shared by every config generation."""

    session: aiohttp.ClientSession
    logger: Any
    cooldowns: CooldownStore
    metrics: Metrics


RESOURCES = web.AppKey("resources", Resources)


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


def make_app(config: Config, *, log_stream: IO[str] | None = None) -> web.Application:
    app = web.Application(client_max_size=config.limits.max_body_bytes, handler_args={})
    holder = StateHolder()
    app[STATE] = holder
    metrics = app[METRICS] = Metrics()

    async def resources(app: web.Application) -> AsyncIterator[None]:
        logger = make_logger(config.logging, log_stream)

        def state_error(op: str, exc: Exception) -> None:
            logger.error("shared state unavailable, using local memory", op=op, error=repr(exc))

        res = Resources(
            session=make_session(config.timeouts),
            logger=logger,
            cooldowns=make_store(config.state.backend, config.state.url, on_error=state_error),
            metrics=metrics,
        )
        broken = await asyncio.to_thread(warm_token_encodings)  # never load one on the loop
        if broken is not None:
            logger.error("token encodings unavailable, usage estimates will fail", error=broken)
        app[RESOURCES] = res
        holder.current = build_state(config, res)
        yield
        await holder.current.pipeline.close()
        await res.cooldowns.close()
        await res.session.close()

    app.cleanup_ctx.append(resources)
    app.router.add_get("/healthz", healthz)
    if config.metrics.enabled and config.metrics.port is None:  # else serve() listens for it
        app.router.add_get("/metrics", metrics_handler(metrics))
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
