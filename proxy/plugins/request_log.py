"""The request's one canonical log line, written once every outcome is settled."""

from __future__ import annotations

from typing import Any

from ..exchange import Exchange
from ..logline import log_fields, log_level
from . import Plugin


class RequestLog(Plugin):
    name = "request_log"

    def __init__(self, logger: Any) -> None:
        self._log = logger

    async def on_report(self, ex: Exchange) -> None:
        getattr(self._log, log_level(ex))("request", **log_fields(ex))
