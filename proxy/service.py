"""Running the app as a service: health endpoint, signals, reload, graceful drain, sd_notify.

SIGTERM/SIGINT: tell the service manager STOPPING=1, close the listening sockets, let in-flight
requests finish for up to ``drain_timeout_s``, then cancel what is left and exit. SIGHUP: reload
(see reload.py). The signal handlers stay installed until the drain is over, so a second
SIGTERM (Ctrl-C reaching a whole process group, a supervisor forwarding) cannot kill a drain.
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
from .listeners import Plan, remove_unix, start_sites
from .metrics import METRICS, make_metrics_app
from .reload import RELOADER, Reloader
from .sdnotify import Notifier
from .state import STATE

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


@dataclass(slots=True)
class Service:
    """How the process was launched; the defaults are one plain process on the config's address."""

    plan: Plan | None = None
    """Where to listen; None: the config's TCP address (and Unix socket)."""
    notifier: Notifier = field(default_factory=Notifier)
    loader: Callable[[], Config] | None = None
    """Re-reads the config on SIGHUP; None: SIGHUP is logged and ignored."""
    shared: bool = False
    """One of several workers: TCP addresses are bound with SO_REUSEPORT."""
    parent: socket.socket | None = None
    """This worker's end of its socket pair with the supervisor: end of file means the
    supervisor died, so this worker drains and exits instead of serving on as an orphan."""


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
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,  # our one log line per request is the access log
        handler_cancellation=True,
        shutdown_timeout=CANCEL_GRACE_S,  # the drain itself is _drain()'s
    )
    await runner.setup()
    runners = [runner]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloader = app[RELOADER]
    signals = {
        signal.SIGTERM: stop.set,
        signal.SIGINT: stop.set,
        signal.SIGHUP: _reload_handler(reloader, svc),
    }
    for sig, callback in signals.items():
        loop.add_signal_handler(sig, callback)
    try:
        if config.metrics.enabled and config.metrics.port is not None:  # first: a port that
            await _serve_metrics(app, config, svc.shared, runners)  # is taken fails it all
        addresses = await start_sites(runner, plan, reuse_port=svc.shared)
        if svc.parent is not None:
            _watch_parent(loop, svc.parent, stop, reloader.logger)
        reloader.logger.info("listening", addresses=addresses, pid=os.getpid())
        if ready is not None:
            ready.set()
        svc.notifier.ready(status="serving on " + ", ".join(addresses))
        await stop.wait()
        svc.notifier.stopping()
        await _drain(runner, reloader, config.drain_timeout_s)
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
        remove_unix(plan.unix)


async def _serve_metrics(
    app: web.Application, config: Config, shared: bool, runners: list[web.AppRunner]
) -> None:
    """/metrics (and /admin/ in keys mode) on its own address; it stays up while the proxy
    drains (cleaned up last)."""
    admin = app.get(ADMIN_API)
    metrics_app = make_metrics_app(app[METRICS], admin.make() if admin is not None else None)
    metrics = web.AppRunner(metrics_app, access_log=None)
    runners.append(metrics)
    await metrics.setup()
    host = config.metrics.host or config.listen.host
    await web.TCPSite(
        metrics, host, config.metrics.port, reuse_address=True, reuse_port=shared or None
    ).start()


async def _drain(runner: web.AppRunner, reloader: Reloader, drain_s: float) -> None:
    """Stop accepting, close idle keep-alive connections, wait for running requests.

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
    try:
        async with asyncio.timeout(drain_s):
            await generations.wait_idle()
    except TimeoutError:
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
