"""Application wiring: shared resources in cleanup_ctx, the ordered plugin list, the routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, Any

import aiohttp
from aiohttp import web

from .config import Config
from .forward import make_session
from .handler import handle
from .logs import make_logger
from .plugins import Pipeline, Plugin
from .plugins.request_log import RequestLog
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


RESOURCES = web.AppKey("resources", Resources)


def default_plugins(config: Config, res: Resources) -> list[Plugin]:
    """The one explicit, ordered plugin list. The request log stays last."""
    return [RequestLog(res.logger)]


def build_state(config: Config, res: Resources) -> AppState:
    """A complete generation of request-serving state for ``config``."""
    return AppState(
        config=config,
        router=Router(config.routes),
        pipeline=Pipeline(default_plugins(config, res)),
        dispatcher=AttemptLoop(res.session, config.timeouts, res.cooldowns, res.logger),
        logger=res.logger,
    )


def make_app(config: Config, *, log_stream: IO[str] | None = None) -> web.Application:
    app = web.Application(client_max_size=config.limits.max_body_bytes, handler_args={})
    holder = StateHolder()
    app[STATE] = holder

    async def resources(app: web.Application) -> AsyncIterator[None]:
        logger = make_logger(config.logging, log_stream)

        def state_error(op: str, exc: Exception) -> None:
            logger.error("shared state unavailable, using local memory", op=op, error=repr(exc))

        res = Resources(
            session=make_session(config.timeouts),
            logger=logger,
            cooldowns=make_store(config.state.backend, config.state.url, on_error=state_error),
        )
        app[RESOURCES] = res
        holder.current = build_state(config, res)
        yield
        await holder.current.pipeline.close()
        await res.cooldowns.close()
        await res.session.close()

    app.cleanup_ctx.append(resources)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
