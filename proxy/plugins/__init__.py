"""The plugin seam: five phases, each with one written meaning, and the pipeline that runs them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDictProxy

from ..config import Upstream
from ..exchange import Exchange


@dataclass(frozen=True, slots=True)
class Refusal:
    """An upstream's client-error answer (400, 413, 422), read before any byte reached the
    client. ``body`` is as received (mind ``Content-Encoding``), at most 1 MiB of it."""

    upstream: Upstream
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class Plugin:
    """Override only the phases you need; the pipeline skips the rest at no cost."""

    name = "plugin"

    async def on_request(self, ex: Exchange) -> web.StreamResponse | None:
        """After the request was routed and its body read, before any upstream is tried.

        Return None to go on, or a response to answer with it (nothing is sent upstream).
        Rewrite the body only through ``ex.replace_body``; reject by raising a ProxyError.
        """
        return None

    async def on_refusal(self, ex: Exchange, refusal: Refusal) -> bool:
        """An upstream refused the request as the client sent it (a context-length error...).

        Return True after fixing the request through ``ex.replace_body``: it is sent once more
        to the same upstream. False passes the refusal on to the client unchanged.
        """
        return False

    def on_chunk(self, ex: Exchange, chunk: bytes) -> None:
        """Each upstream body chunk, after it was written to the client.

        Observe only: never modify, never block, never await.
        """

    async def on_complete(self, ex: Exchange) -> None:
        """Once per request after the response ended, successfully or not (also for requests
        refused before routing, proxy errors, cancelled requests and requests answered by
        ``on_request``): settle this plugin's outcome record on the exchange."""

    async def on_report(self, ex: Exchange) -> None:
        """After every plugin's ``on_complete``: all outcome records are final. Read them to
        report (log line, metrics, traces) or to settle state that depends on another
        plugin's outcome (learned token counts, spend); never modify the exchange."""

    async def close(self) -> None:
        """On shutdown or when a reload retires this plugin."""


def _overrides(plugin: Plugin, method: str) -> bool:
    return getattr(type(plugin), method) is not getattr(Plugin, method)


class Pipeline:
    """Plugins in their one explicit order, with a per-phase list of only those that take part.

    Outcomes are settled (``on_complete``) before anything reports them (``on_report``), so
    no reporter depends on where it stands in the list.
    """

    def __init__(self, plugins: Sequence[Plugin]) -> None:
        self.plugins = tuple(plugins)
        self._finishing: set[asyncio.Future[None]] = set()
        self.request_hooks = [p.on_request for p in plugins if _overrides(p, "on_request")]
        self.refusal_hooks = [p.on_refusal for p in plugins if _overrides(p, "on_refusal")]
        self.chunk_taps = [p.on_chunk for p in plugins if _overrides(p, "on_chunk")]
        self.complete_hooks = [p.on_complete for p in plugins if _overrides(p, "on_complete")]
        self.report_hooks = [p.on_report for p in plugins if _overrides(p, "on_report")]

    async def on_request(self, ex: Exchange) -> web.StreamResponse | None:
        for hook in self.request_hooks:
            response = await hook(ex)
            if response is not None:
                return response
        return None

    async def on_refusal(self, ex: Exchange, refusal: Refusal) -> bool:
        """True when a plugin fixed the request for one more try."""
        for hook in self.refusal_hooks:
            if await hook(ex, refusal):
                return True
        return False

    async def on_complete(self, ex: Exchange) -> None:
        """Every hook runs even if an earlier one failed: the log line must always be written."""
        for hook in self.complete_hooks:
            try:
                await hook(ex)
            except Exception as exc:  # a plugin bug must not cost the request its other hooks
                ex.plugin_errors.append(f"{hook.__qualname__}: {exc!r}")
        for report in self.report_hooks:
            try:
                await report(ex)
            except Exception as exc:
                ex.plugin_errors.append(f"{report.__qualname__}: {exc!r}")

    async def complete(self, ex: Exchange) -> None:
        """``on_complete`` and ``on_report``, run to their end even if the caller is cancelled.

        A client that hangs up right after the last byte (or the drain cutting a request)
        cancels the handler; the usage estimate, the metrics and the log line still finish,
        and ``close`` waits for them. The cancellation is passed on afterwards.
        """
        done = asyncio.ensure_future(self.on_complete(ex))
        self._finishing.add(done)
        done.add_done_callback(self._finishing.discard)
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            await done
            raise

    async def close(self, finish_timeout_s: float = 5.0) -> None:
        """Let running completions write their lines, then close every plugin."""
        if self._finishing:
            await asyncio.wait(set(self._finishing), timeout=finish_timeout_s)
        for plugin in self.plugins:
            await plugin.close()
