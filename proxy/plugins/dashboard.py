"""Feeds the live dashboard's rolling windows from each finished request.

It reports in ``on_report``, after every outcome is settled, into a :class:`LiveStats` that
lives as long as the server (a reload builds a new plugin around the same windows).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..dashboard.stats import LiveStats
from ..exchange import Exchange
from . import Plugin

KeyOf = Callable[[Exchange], "str | None"]
"""A display label for the API key a request used (never the secret)."""


def client_key_id(ex: Exchange) -> str | None:
    """In keys mode, the id of the proxy key the request came with (ids are not secrets)."""
    return ex.client_key.key_id if ex.client_key is not None else None


class DashboardFeed(Plugin):
    name = "dashboard"

    def __init__(self, stats: LiveStats, logger: Any, key_of: KeyOf = client_key_id) -> None:
        self._stats = stats
        self._log = logger
        self._key_of = key_of

    async def on_report(self, ex: Exchange) -> None:
        try:
            self._stats.observe(ex, self._key_of(ex))
        except Exception as exc:  # a dashboard bug must not cost the request its log line
            self._log.error("dashboard failed", request_id=ex.request_id, error=repr(exc))
