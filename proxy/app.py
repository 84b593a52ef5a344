"""Application wiring: shared resources in cleanup_ctx, the ordered plugin list, the routes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable
from typing import IO, TYPE_CHECKING, Any

from aiohttp import web

from .auth.manage import KeyManager
from .auth_app import ADMIN_API, admin_api, auth_plugin, open_auth
from .config import Config
from .context.correction import Corrections
from .dashboard.pacing import PacerView
from .dashboard.stats import LiveStats
from .dashboard.web import add_dashboard_routes
from .forward import make_session
from .handler import expect_continue, handle, http_errors
from .logs import make_logger
from .metrics import METRICS, Metrics, ModelLabels, metrics_handler
from .models import ModelRegistry
from .pacing_metrics import PacingCollector
from .plugins import Pipeline, Plugin
from .plugins.auth import AuthPlugin
from .plugins.context_budget import ContextBudget
from .plugins.dashboard import DashboardFeed
from .plugins.metrics import MetricsPlugin
from .plugins.request_log import RequestLog
from .plugins.usage import UsageAccounting
from .pricing import PriceTable
from .reload import RELOADER, RESOURCES, Generations, Reloader, Resources, pinned
from .resilience.attempts import AttemptLoop
from .resilience.cooldown import StateEvents, make_store
from .resilience.gate import ScopeGate
from .resilience.pacer import Pacer
from .resilience.pacing_store import PacingStore, RedisPacingStore, make_pacing_store
from .resilience.scope import Fingerprinter
from .routing import Router
from .service import CANCEL_GRACE_S, PROCESS, ProcessInfo, healthz, serves_metrics_apart
from .state import STATE, AppState, StateHolder
from .version import __version__

if TYPE_CHECKING:  # imported only when OpenTelemetry (or Redis) is configured
    from .otel.telemetry import Telemetry
    from .redis_link import RedisLink

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
    dashboard: list[Plugin] = []
    if res.live is not None:
        dashboard.append(DashboardFeed(res.live, res.logger))
    return [
        *_tracing(config, res),
        *auth,
        ContextBudget(registry, res.corrections),
        UsageAccounting(PriceTable(registry=registry)),
        *metrics,
        *dashboard,
        RequestLog(res.logger),
    ]


def _tracing(config: Config, res: Resources) -> list[Plugin]:
    """The OpenTelemetry plugin, imported only when it is configured."""
    if res.telemetry is None:
        return []
    from .plugins.otel import otel_plugin

    return [otel_plugin(res.telemetry, config, res.logger)]


def _start_telemetry(config: Config, metrics: Metrics) -> Telemetry | None:
    if not config.otel.enabled:
        return None
    from .otel.telemetry import Telemetry

    def dropped(reason: str, spans: int) -> None:
        metrics.otel_dropped.labels(reason).inc(spans)

    telemetry = Telemetry(config.otel, dropped, __version__)
    telemetry.start()
    return telemetry


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
            res.session,
            config.timeouts,
            ScopeGate(res.cooldowns, res.pacer, res.fingerprint, config.timeouts, res.logger),
            res.logger,
            res.responses,
            refusals,
        ),
        logger=res.logger,
    )


async def _fingerprint_secret(config: Config, store: PacingStore) -> bytes | None:
    """The key of credential fingerprints: configured, else agreed through Redis, else (one
    process) a random one."""
    if config.pacing.fingerprint_secret:
        return config.pacing.fingerprint_secret.encode()
    if isinstance(store, RedisPacingStore):
        return await store.shared_secret()
    return None


def _share_small_stores(res: Resources, config: Config, events: StateEvents) -> RedisLink | None:
    """With a Redis state backend, Responses conversations and learned token corrections are
    shared by every process too (cooldowns and pacing have their own Redis stores)."""
    if config.state.backend != "redis" or not config.state.url:
        return None
    from .redis_link import RedisLink
    from .shared_stores import RedisResponseStore, RedisSampleStore

    link = RedisLink(config.state.url, on_loss=events.lost, on_recover=events.recovered)
    res.responses = RedisResponseStore(link)
    res.corrections = Corrections(RedisSampleStore(link))
    return link
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
        events = StateEvents(logger, config.state.display_url)
        state = config.state
        pacing_store = make_pacing_store(state.backend, state.url, events.lost, events.recovered)
        auth = await open_auth(config, metrics, logger) if config.auth.mode == "keys" else None
        res = Resources(
            session=make_session(config.timeouts),
            logger=logger,
            cooldowns=make_store(state.backend, state.url, events.lost, events.recovered),
            metrics=metrics,
            pacer=Pacer(pacing_store),
            fingerprint=Fingerprinter(await _fingerprint_secret(config, pacing_store)),
            telemetry=_start_telemetry(config, metrics),
            live=LiveStats(config.dashboard.recent_requests) if config.dashboard.enabled else None,
            auth=auth,
        )
        res.pacing = PacerView(res.pacer) if config.pacing.enabled else None
        if not metrics.shared:  # per-process state: nothing for sibling workers to add up
            labels = ModelLabels(ModelRegistry.from_config(config).known_names())
            metrics.registry.register(PacingCollector(res.pacer, labels))
        link = _share_small_stores(res, config, events)
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
        if link is not None:
            await link.close()
        await res.pacer.close()
        await pacing_store.close()
        if res.auth is not None:  # after the plugins: the last requests' rows are queued
            await res.auth.close()
        await res.cooldowns.close()
        await res.session.close()
        if res.telemetry is not None:  # what is queued still goes out, within a bound
            await res.telemetry.stop(config.otel.export_timeout_s)
        _flush_log(logger)

    app.cleanup_ctx.append(resources)
    app.router.add_get("/healthz", healthz)
    separate = config.metrics.enabled and config.metrics.port is not None
    if config.metrics.enabled and not separate:  # else serve() listens for it
        app.router.add_get("/metrics", metrics_handler(metrics))
    if config.dashboard.enabled and not serves_metrics_apart(config):
        add_dashboard_routes(app, app)
    admin = admin_api(config, functools.partial(_key_manager, app))
    if admin is not None and separate:  # where /metrics is: serve() mounts it there
        app[ADMIN_API] = admin
    elif admin is not None:
        app.add_subapp("/admin/", admin.make())
    app.router.add_route(
        "*", "/{tail:.*}", pinned(handle, generations), expect_handler=expect_continue
    )
    return app
