"""Keys mode in the server: the AuthRuntime opened for the server's life, its health in the
metrics and the log, the plugin built from it, and the admin API.

The runtime lives as long as the server (``Resources.auth``): key cache, counters, ledger
queue and store connections are shared by every config generation, so ``auth`` and ``store``
are restart-only keys. make_app opens it in its cleanup_ctx and closes it after the drain and
after the plugins, so rows of the last requests are still written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .auth.admin import make_admin_app
from .auth.gate import RefusalKind
from .auth.ledger import LedgerWriter
from .auth.manage import KeyManager
from .auth.runtime import AuthRuntime
from .config import Config
from .metrics import Metrics
from .models import ModelRegistry
from .plugins.auth import AuthPlugin
from .pricing import PriceTable

__all__ = ["ADMIN_API", "AdminApi", "admin_api", "auth_plugin", "open_auth"]


@dataclass(frozen=True, slots=True)
class AdminApi:
    """Makes the admin app (an aiohttp app can be mounted under one parent only)."""

    token: str = field(repr=False)
    keys: Callable[[], KeyManager | None]

    def make(self) -> web.Application:
        return make_admin_app(self.token, self.keys)


ADMIN_API = web.AppKey("admin_api", AdminApi)
"""Set when the admin API goes on the separate metrics listener: service.py mounts it there."""


async def open_auth(config: Config, metrics: Metrics, logger: Any) -> AuthRuntime:
    """The runtime for ``config`` (raises StoreUnavailable when the store cannot be reached)."""

    def failed(component: str, exc: Exception) -> None:
        metrics.auth_degraded.labels(component).set(1)
        logger.error("keys mode degraded", component=component, error=repr(exc))

    def recovered(component: str) -> None:
        metrics.auth_degraded.labels(component).set(0)
        logger.info("keys mode recovered", component=component)

    prices = PriceTable(registry=ModelRegistry.from_config(config))
    runtime = await AuthRuntime.open(config, prices, on_error=failed, on_recover=recovered)
    for component in ("ledger", "limits"):
        metrics.auth_degraded.labels(component).set(0)
    metrics.add_refresher(_ledger_refresher(metrics, runtime.ledger))
    if config.workers > 1 and config.state.backend != "redis":
        logger.warning(
            "keys mode with several workers and no Redis: each worker enforces the key limits"
            " and budgets on its own (configure state: {backend: redis} to share them)",
            workers=config.workers,
        )
    return runtime


def _ledger_refresher(metrics: Metrics, ledger: LedgerWriter) -> Callable[[], None]:
    """Copies the writer's counts into the collectors (counters advance by the difference)."""
    seen = {"written": 0, "dropped": 0, "lost": 0}
    counters = {name: metrics.ledger_rows.labels(name) for name in seen}
    queued, spooled = (
        metrics.ledger_backlog.labels("queued"),
        metrics.ledger_backlog.labels("spooled"),
    )

    def refresh() -> None:
        stats = ledger.stats
        queued.set(stats.queued)
        spooled.set(stats.spooled)
        for name, value in (
            ("written", stats.written),
            ("dropped", stats.dropped),
            ("lost", stats.lost),
        ):
            if value > seen[name]:
                counters[name].inc(value - seen[name])
                seen[name] = value

    return refresh


def auth_plugin(config: Config, runtime: AuthRuntime, metrics: Metrics) -> AuthPlugin:
    refusals: dict[tuple[str, RefusalKind], Any] = {}

    def count(route: str, kind: RefusalKind) -> None:
        child = refusals.get((route, kind))
        if child is None:  # routes from config, kinds an enum: bounded
            child = refusals[(route, kind)] = metrics.auth_refusals.labels(route, kind.value)
        child.inc()

    return AuthPlugin(
        runtime.gate,
        runtime.ledger,
        max_body_bytes=config.limits.max_body_bytes,
        count_refusal=count,
    )


def admin_api(config: Config, keys: Callable[[], KeyManager | None]) -> AdminApi | None:
    """The admin API, or None when keys mode is off or no admin token is configured: then
    ``/admin/`` is not served at all."""
    token = config.admin_token
    if config.auth.mode != "keys" or not token:
        return None
    return AdminApi(token, keys)
