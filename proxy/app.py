"""Application wiring: shared resources in cleanup_ctx, the ordered plugin list, the routes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable
from typing import IO, Any

from aiohttp import web

from .auth.manage import KeyManager
from .auth_app import ADMIN_API, admin_api, auth_plugin, open_auth
from .config import Config
from .forward import make_session
from .handler import expect_continue, handle, http_errors
from .logs import make_logger
from .metrics import METRICS, Metrics, metrics_handler
from .models import ModelRegistry
from .plugins import Pipeline, Plugin
from .plugins.auth import AuthPlugin
from .plugins.context_budget import ContextBudget
from .plugins.metrics import MetricsPlugin
from .plugins.request_log import RequestLog
from .plugins.usage import UsageAccounting
from .pricing import PriceTable
from .reload import RELOADER, RESOURCES, Generations, Reloader, Resources, pinned
from .resilience.attempts import AttemptLoop
from .resilience.cooldown import make_store
from .routing import Router
from .service import CANCEL_GRACE_S, PROCESS, ProcessInfo, healthz
from .state import STATE, AppState, StateHolder

__all__ = ["RESOURCES", "Resources", "build_state", "default_plugins", "make_app"]


def default_plugins(config: Config, res: Resources) -> list[Plugin]:
    """The one explicit plugin list. Order only decides which ``on_request`` runs first:
    outcomes are settled before anything reports them. Client keys come first: a request
    that is not allowed costs no other plugin anything (see plugins/auth.py)."""
    registry = ModelRegistry.from_config(config)
    auth: list[Plugin] = []
    if config.auth.mode == "keys":
        if res.auth is None:
            raise RuntimeError("auth mode keys needs the AuthRuntime opened at startup")
        auth.append(auth_plugin(config, res.auth, res.metrics))
    metrics: list[Plugin] = []
    if config.metrics.enabled:
        metrics.append(MetricsPlugin(res.metrics, registry.known_names(), res.logger))
    return [
        *auth,
        ContextBudget(registry, res.corrections),
        UsageAccounting(PriceTable(registry=registry)),
        *metrics,
        RequestLog(res.logger),
    ]


PluginFactory = Callable[[Config, Resources], list[Plugin]]


def build_state(
    config: Config, res: Resources, plugins: PluginFactory = default_plugins
) -> AppState:
    """A complete generation of request-serving state for ``config``."""
    pipeline = Pipeline(plugins(config, res))
    keys = config.auth.mode == "keys"
    if keys and not any(isinstance(p, AuthPlugin) for p in pipeline.plugins):
        raise RuntimeError("auth mode keys: the plugin list has no AuthPlugin")
    refusals = pipeline.on_refusal if pipeline.refusal_hooks else None
    return AppState(
        config=config,
        router=Router(config.routes, client_keys=keys),
        pipeline=pipeline,
        dispatcher=AttemptLoop(
            res.session, config.timeouts, res.cooldowns, res.logger, res.responses, refusals
        ),
        logger=res.logger,
    )


def _key_manager(app: web.Application) -> KeyManager | None:
    """The running server's key manager, for the admin API (None until the store is open)."""
    res = app.get(RESOURCES)
    return res.auth.keys if res is not None and res.auth is not None else None


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
    plugins: PluginFactory = default_plugins,
) -> web.Application:
    """The proxy app for ``config``. ``worker`` (its index under a supervisor) is added to every
    log line; ``metrics_dir`` makes the metrics shared with sibling workers (see metrics.py);
    ``plugins`` builds each generation's plugin list (embedders add their own)."""
    # Request bodies are forwarded as the client encoded them: a gzip body stays gzip.
    holder = StateHolder()
    app = web.Application(
        client_max_size=config.limits.max_body_bytes,
        handler_args={"auto_decompress": False},
        middlewares=[http_errors(holder)],
    )
    app[STATE] = holder
    generations = Generations(holder)
    metrics = app[METRICS] = Metrics(shared_dir=metrics_dir)
    app[PROCESS] = ProcessInfo(started=time.monotonic(), worker=worker)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        logger = make_logger(config.logging, log_stream)
        if worker is not None:
            logger = logger.bind(worker=worker)

        def state_error(op: str, exc: Exception) -> None:
            logger.error("shared state unavailable, using local memory", op=op, error=repr(exc))

        auth = await open_auth(config, metrics, logger) if config.auth.mode == "keys" else None
        res = Resources(
            session=make_session(config.timeouts),
            logger=logger,
            cooldowns=make_store(config.state.backend, config.state.url, on_error=state_error),
            metrics=metrics,
            auth=auth,
        )
        app[RESOURCES] = res
        build = functools.partial(build_state, res=res, plugins=plugins)
        holder.current = build(config)
        app[RELOADER] = Reloader(generations, build, logger)
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
        if res.auth is not None:  # after the plugins: the last requests' rows are queued
            await res.auth.close()
        await res.cooldowns.close()
        await res.session.close()
        _flush_log(logger)

    app.cleanup_ctx.append(resources)
    app.router.add_get("/healthz", healthz)
    separate = config.metrics.enabled and config.metrics.port is not None
    if config.metrics.enabled and not separate:  # else serve() listens for it
        app.router.add_get("/metrics", metrics_handler(metrics))
    admin = admin_api(config, functools.partial(_key_manager, app))
    if admin is not None and separate:  # where /metrics is: serve() mounts it there
        app[ADMIN_API] = admin
    elif admin is not None:
        app.add_subapp("/admin/", admin.make())
    app.router.add_route(
        "*", "/{tail:.*}", pinned(handle, generations), expect_handler=expect_continue
    )
    return app
