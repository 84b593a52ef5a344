"""Running the app as a service: health endpoint, signals, graceful drain."""

from __future__ import annotations

import asyncio
import signal
import time

from aiohttp import web

from .config import Config
from .metrics import METRICS, make_metrics_app

_STARTED = time.monotonic()


async def healthz(request: web.Request) -> web.Response:
    from .state import STATE

    state = request.app[STATE].current
    return web.json_response(
        {
            "status": "ok",
            "routes": [r.prefix for r in state.config.routes],
            "uptime_s": round(time.monotonic() - _STARTED, 3),
        }
    )


async def serve(
    app: web.Application, config: Config, *, ready: asyncio.Event | None = None
) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting and let in-flight requests finish
    for up to ``drain_timeout_s`` before cancelling them."""
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=config.drain_timeout_s,
    )
    await runner.setup()
    runners = [runner]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, config.listen.host, config.listen.port, reuse_address=True)
        await site.start()
        if config.listen.unix:
            await web.UnixSite(runner, config.listen.unix).start()
        if config.metrics.enabled and config.metrics.port is not None:
            # /metrics on its own address; it stays up while the proxy drains
            metrics = web.AppRunner(make_metrics_app(app[METRICS]), access_log=None)
            runners.append(metrics)
            await metrics.setup()
            host = config.metrics.host or config.listen.host
            await web.TCPSite(metrics, host, config.metrics.port, reuse_address=True).start()
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        for each in runners:
            await each.cleanup()
