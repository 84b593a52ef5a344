"""The request's one canonical log line, written once every outcome is settled."""

from __future__ import annotations

from typing import Any

from ..exchange import Exchange
from ..logline import log_level, report_fields
from . import Plugin


class RequestLog(Plugin):
    name = "request_log"

    def __init__(self, logger: Any) -> None:
        self._log = logger

    async def on_report(self, ex: Exchange) -> None:
        getattr(self._log, log_level(ex))("request", **report_fields(ex))
