"""Running the app as a service: health endpoint, signals, reload, graceful drain, sd_notify.

SIGTERM/SIGINT: tell the service manager STOPPING=1, close the listening sockets, let in-flight
requests finish for up to ``drain_timeout_s``, then cancel what is left and exit. A second
SIGTERM/SIGINT during the drain cuts it short: running requests are cancelled (their log lines
say so) and the process exits at once. A worker of a supervisor receives every Ctrl-C twice
(from the terminal and forwarded), so there only the supervisor's SIGQUIT, sent on its own
second signal, cuts the drain. SIGHUP: reload (see reload.py). The handlers stay installed
until the drain is over, so no stop signal ever kills the process before its cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .auth_app import ADMIN_API
from .config import Config
from .connections import ConnectionGuard, ConnectionLimits, Shape
from .dashboard.web import add_dashboard_routes
from .listeners import (
    Bound,
    ListenError,
    Plan,
    bind_plan,
    bind_tcp,
    effective_backlog,
    open_file_limit,
    somaxconn,
    start_sites,
    tcp_address,
)
from .logs import ServerLog
from .metrics import METRICS, make_metrics_app
from .reload import RELOADER, Reloader
from .sdnotify import Notifier
from .state import STATE
from .version import __version__

CANCEL_GRACE_S = 0.1
"""After the drain: how long aiohttp waits for what is still running before it cancels it."""


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """This serving process, for /healthz: when it started (monotonic), which worker it is."""

    started: float
    worker: int | None = None


PROCESS = web.AppKey("process", ProcessInfo)


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATE].current
    info = request.app[PROCESS]
    return web.json_response(
        {
            "status": "ok",
            "routes": [r.prefix for r in state.config.routes],
            "uptime_s": round(time.monotonic() - info.started, 3),
            "pid": os.getpid(),
            "worker": info.worker,
        }
    )


@dataclass(frozen=True, slots=True)
class Startup:
    """Facts for the startup line that only the entry point knows."""

    config_path: str | None = None


@dataclass(slots=True)
class Service:
    """How the process was launched; the defaults are one plain process on the config's address."""

    plan: Plan | None = None
    """Where to listen; None: the config's TCP address (and Unix socket)."""
    notifier: Notifier = field(default_factory=Notifier)
    loader: Callable[[], Config] | None = None
    """Re-reads the config on SIGHUP; None: SIGHUP is logged and ignored."""
    shared: bool = False
    """One of several workers: TCP addresses are bound with SO_REUSEPORT, and only the
    supervisor's SIGQUIT cuts a drain short (see the module docstring)."""
    parent: socket.socket | None = None
    """This worker's end of its socket pair with the supervisor: end of file means the
    supervisor died, so this worker drains and exits instead of serving on as an orphan."""
    startup: Startup = field(default_factory=Startup)


@dataclass(slots=True)
class _Stop:
    """The stop signals: the first starts the drain, a second cuts it short."""

    requested: asyncio.Event = field(default_factory=asyncio.Event)
    now: asyncio.Event = field(default_factory=asyncio.Event)

    def signal(self) -> None:
        (self.now if self.requested.is_set() else self.requested).set()

    def at_once(self) -> None:
        self.requested.set()
        self.now.set()


async def serve(
    app: web.Application,
    config: Config,
    *,
    ready: asyncio.Event | None = None,
    service: Service | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, reload on SIGHUP, then drain (see the module docstring)."""
    svc = service or Service()
    plan = svc.plan or Plan.from_config(config.listen)
    limits = ConnectionLimits.from_listen(config.listen, open_file_limit())
    server_log = ServerLog()
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,  # our one log line per request is the access log
        handler_cancellation=True,
        shutdown_timeout=CANCEL_GRACE_S,  # the drain itself is _drain()'s
        logger=server_log,
        **limits.runner_kwargs(),
    )
    await runner.setup()
    runners = [runner]
    stop = _Stop()
    loop = asyncio.get_running_loop()
    reloader = app[RELOADER]
    server_log.target = logger = reloader.logger
    signals = _signals(stop, svc, _reload_handler(reloader, svc))
    for sig, callback in signals.items():
        loop.add_signal_handler(sig, callback)
    bound = Bound()
    try:
        bound, addresses = await _listen(app, config, svc, plan, runners, limits, logger)
        if svc.parent is not None:
            _watch_parent(loop, svc.parent, stop.requested, logger)
        logger.info("listening", addresses=addresses, pid=os.getpid())
        if not svc.shared:
            log_startup(logger, config, svc.startup, addresses, loop_name(loop))
        if ready is not None:
            ready.set()
        svc.notifier.ready(status="serving on " + ", ".join(addresses))
        await stop.requested.wait()
        svc.notifier.stopping()
        await _drain(runner, reloader, config.drain_timeout_s, stop.now)
    finally:
        if svc.parent is not None:
            loop.remove_reader(svc.parent.fileno())
        await reloader.close()
        for each in runners:
            await each.cleanup()
        for sig in signals:
            loop.remove_signal_handler(sig)
            if svc.shared:  # a worker exits next: a late forwarded SIGTERM must not kill it
                signal.signal(sig, signal.SIG_IGN)
        bound.close()


async def _listen(
    app: web.Application,
    config: Config,
    svc: Service,
    plan: Plan,
    runners: list[web.AppRunner],
    limits: ConnectionLimits,
    logger: Any,
) -> tuple[Bound, list[str]]:
    """Bind and serve every listening socket (/metrics' own first: a port that is taken fails
    it all), each connection through the guard; what was bound, and the addresses."""
    backlog = _backlog(config, logger)
    if config.metrics.enabled and config.metrics.port is not None:
        await _serve_metrics(app, config, svc.shared, runners, backlog)
    runner = runners[0]
    assert runner.server is not None
    bound = bind_plan(plan, config.listen, backlog=backlog, reuse_port=svc.shared)
    guard = ConnectionGuard(
        runner.server,
        limits,
        logger,
        Shape(lambda: app[STATE].current.config.routes),
        app[METRICS],
    )
    try:
        return bound, await start_sites(runner, bound, guard, backlog)
    except BaseException:
        bound.close()
        raise


def _signals(
    stop: _Stop, svc: Service, reload: Callable[[], None]
) -> dict[signal.Signals, Callable[[], None]]:
    """Alone, a second SIGTERM/SIGINT cuts the drain short. A worker gets each of those twice
    for one Ctrl-C (the terminal's, and the supervisor's forwarded one), so for a worker only
    the supervisor's SIGQUIT does (the supervisor sends it on its own second signal)."""
    if not svc.shared:
        return {signal.SIGTERM: stop.signal, signal.SIGINT: stop.signal, signal.SIGHUP: reload}
    return {
        signal.SIGTERM: stop.requested.set,
        signal.SIGINT: stop.requested.set,
        signal.SIGQUIT: stop.at_once,
        signal.SIGHUP: reload,
    }


def _backlog(config: Config, logger: Any) -> int:
    cap = somaxconn()
    backlog = effective_backlog(config.listen.backlog, cap)
    if backlog < config.listen.backlog:
        logger.warning(
            "listen.backlog is above the kernel's net.core.somaxconn, which caps it",
            backlog=config.listen.backlog,
            somaxconn=cap,
        )
    return backlog


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: the package the running event loop comes from."""
    return type(loop).__module__.split(".")[0]


def metrics_address(config: Config, addresses: list[str]) -> str | None:
    """Where /metrics answers: its own address, the first listener, or nowhere (None)."""
    if not config.metrics.enabled:
        return None
    if config.metrics.port is not None:
        host = config.metrics.host or config.listen.host
        return f"{tcp_address(host, config.metrics.port)}/metrics"
    return f"{addresses[0]}/metrics" if addresses else "/metrics"


def log_startup(
    logger: Any, config: Config, startup: Startup, addresses: list[str], loop: str
) -> None:
    """The one line that says what started: version, config, routes, loop, metrics, workers."""
    logger.info(
        "started",
        version=__version__,
        config=startup.config_path,
        routes=[r.prefix for r in config.routes],
        loop=loop,
        metrics=metrics_address(config, addresses),
        workers=config.workers,
        addresses=addresses,
    )


def serves_metrics_apart(config: Config) -> bool:
    """/metrics (and /dashboard with it) on their own address rather than the proxy's."""
    return config.metrics.enabled and config.metrics.port is not None


async def _serve_metrics(
    app: web.Application,
    config: Config,
    shared: bool,
    runners: list[web.AppRunner],
    backlog: int,
) -> None:
    """/metrics (with /dashboard, and /admin/ in keys mode) on their own address; they stay
    up while the proxy drains (cleaned up last)."""
    admin = app.get(ADMIN_API)
    metrics_app = make_metrics_app(app[METRICS], admin.make() if admin is not None else None)
    if config.dashboard.enabled:
        add_dashboard_routes(metrics_app, app)
    metrics = web.AppRunner(metrics_app, access_log=None)
    runners.append(metrics)
    await metrics.setup()
    host = config.metrics.host or config.listen.host
    assert config.metrics.port is not None and metrics.server is not None
    try:
        sockets = bind_tcp(host, config.metrics.port, backlog=backlog, reuse_port=shared)
    except ListenError as exc:
        raise ListenError(f"{exc.address} (metrics)", exc.reason) from None
    await start_sites(metrics, Bound(sockets), metrics.server, backlog)


async def _drain(
    runner: web.AppRunner, reloader: Reloader, drain_s: float, now: asyncio.Event
) -> None:
    """Stop accepting, close idle keep-alive connections, wait for running requests, until
    they are done, ``drain_s`` passed, or ``now`` is set (a second stop signal).

    aiohttp's own graceful shutdown waits ``shutdown_timeout`` and then up to as long again
    before it cancels a handler; this keeps the operator's ``drain_timeout_s`` the real bound.
    """
    generations = reloader.generations
    generations.mark_draining()
    reloader.logger.info("draining", timeout_s=drain_s, in_flight=generations.in_flight)
    for site in list(runner.sites):
        await site.stop()
    if runner.server is not None:
        runner.server.pre_shutdown()
    idle = asyncio.ensure_future(generations.wait_idle())
    forced = asyncio.ensure_future(now.wait())
    try:
        await asyncio.wait((idle, forced), timeout=drain_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        idle.cancel()
        forced.cancel()
    if idle.done() and not idle.cancelled():
        return
    if now.is_set():
        reloader.logger.warning(
            "second stop signal, cutting running requests now", in_flight=generations.in_flight
        )
    else:
        reloader.logger.warning(
            "drain timeout, cutting running requests", in_flight=generations.in_flight
        )


def _reload_handler(reloader: Reloader, svc: Service) -> Callable[[], None]:
    loader = svc.loader
    if loader is None:
        return lambda: reloader.logger.warning("SIGHUP ignored: this server has no config file")
    return lambda: reloader.request(loader, svc.notifier)


def _watch_parent(
    loop: asyncio.AbstractEventLoop, parent: socket.socket, stop: asyncio.Event, logger: Any
) -> None:
    """A supervisor never writes to its workers: readable means it is gone (end of file)."""

    def readable() -> None:
        with contextlib.suppress(BlockingIOError):
            if parent.recv(1, socket.MSG_DONTWAIT):
                return
        loop.remove_reader(parent.fileno())
        logger.warning("supervisor gone, draining")
        stop.set()

    loop.add_reader(parent.fileno(), readable)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``uvloop`` (required), ``asyncio``, or ``auto``: uvloop when the extra is installed."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def run(main: Coroutine[Any, Any, None], loop: str = "auto") -> None:
    """Run ``main`` to completion on a fresh event loop of the chosen kind."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        runner.run(main)
