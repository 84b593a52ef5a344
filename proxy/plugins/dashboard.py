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
"""A display label for the API key a request used (never the secret); the keys feature
passes one so the dashboard shows tokens and cost per key."""


class DashboardFeed(Plugin):
    name = "dashboard"

    def __init__(self, stats: LiveStats, logger: Any, key_of: KeyOf | None = None) -> None:
        self._stats = stats
        self._log = logger
        self._key_of = key_of

    async def on_report(self, ex: Exchange) -> None:
        try:
            self._stats.observe(ex, self._key_of(ex) if self._key_of is not None else None)
        except Exception as exc:  # a dashboard bug must not cost the request its log line
            self._log.error("dashboard failed", request_id=ex.request_id, error=repr(exc))
