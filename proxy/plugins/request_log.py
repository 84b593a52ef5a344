"""The request's one canonical log line, emitted once when it completed."""

from __future__ import annotations

from typing import Any

from ..exchange import Exchange
from . import Plugin


class RequestLog(Plugin):
    """Last in the pipeline, so every other plugin's ``ex.log`` fields are in the line."""

    name = "request_log"

    def __init__(self, logger: Any) -> None:
        self._log = logger

    async def on_complete(self, ex: Exchange) -> None:
        ttfb = ex.elapsed_ms(ex.t_first_byte) if ex.t_first_byte is not None else None
        self._log.info(
            "request",
            request_id=ex.request_id,
            route=ex.route.name,
            upstream=ex.upstream.name if ex.upstream else None,
            method=ex.request.method,
            path=ex.request.rel_url.raw_path,
            status=ex.status,
            stream=ex.stream,
            duration_ms=ex.elapsed_ms(),
            ttfb_ms=ttfb,
            bytes_in=len(ex.original_body),
            bytes_out=ex.bytes_out,
            client=ex.request.remote,
            error=ex.error,
            **ex.log,
        )
