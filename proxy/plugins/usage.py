"""Usage accounting: token counts, time to first token and cost of each request, for the log line.

``on_chunk`` only feeds a :class:`~proxy.usage.UsageTap` (a copy of the bytes; the client's bytes
are never touched or held). ``on_complete`` takes the provider's usage when it came, else counts
the generated text and the request (``token_source: estimate``), prices it, and settles
``ex.usage`` (model, tokens, source, cost). Binary and non-LLM responses are never parsed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Mapping
from typing import Any

from ..config import PriceEntry, Provider
from ..context.tokens import all_loaded, count_request, count_text, get_encoding
from ..exchange import Exchange
from ..outcomes import SlotKey, UsageOutcome
from ..pricing import Price, PriceTable
from ..usage import Usage, UsageTap
from . import Plugin

_NEW: Any = object()
_LLM_PATHS = ("/chat/completions", "/completions", "/messages", "/responses", "/embeddings")
INLINE_MAX_CHARS = 16_384
"""Above this many characters to count, the count runs in a thread (~20 us per 1k chars)."""


def warm_token_encodings() -> str | None:
    """Load the bundled BPE tables (~0.4 s once per process); run it in a thread at startup so
    no estimate ever loads one on the event loop. Returns the error instead of raising: the
    proxy must serve even when token counting is broken."""
    try:
        get_encoding("o200k_base")
        get_encoding("cl100k_base")
    except Exception as exc:
        return repr(exc)
    return None


def is_llm_call(ex: Exchange) -> bool:
    """A POST to a generation or embedding endpoint: the only answers that carry usage."""
    return ex.request.method == "POST" and ex.tail.rstrip("/").endswith(_LLM_PATHS)


def _price_table(pricing: Mapping[str, PriceEntry]) -> PriceTable:
    return PriceTable(
        {k: Price(p.input, p.output, p.cached_input, p.cache_write) for k, p in pricing.items()}
    )


def _count_tokens(
    text: str, body: dict[str, Any] | None, model: str | None, provider: Provider, factor: float
) -> tuple[int, int | None]:
    """(completion tokens of ``text``, prompt tokens of a chat ``body`` or None)."""
    completion = count_text(text, model) if text else 0
    if body is None or not isinstance(body.get("messages"), list):
        return completion, None
    return completion, count_request(body, provider, factor).tokens


def open_tap(ex: Exchange) -> UsageTap | None:
    """A tap for a JSON or SSE answer to an LLM call; None (never look again) otherwise."""
    headers = ex.upstream_headers
    if headers is None or ex.route is None or not is_llm_call(ex):
        return None
    ctype = headers.get("Content-Type", "").lower()
    streaming = ctype.startswith("text/event-stream")
    if not streaming and "json" not in ctype:
        return None
    return UsageTap(
        ex.route.provider.name,
        streaming=streaming,
        content_encoding=headers.get("Content-Encoding"),
    )


_TAP: SlotKey[UsageTap | None] = SlotKey("usage_tap")


class UsageAccounting(Plugin):
    """Settles ``ex.usage``: the provider's counts when it sent them, else an estimate."""

    name = "usage"

    def __init__(
        self,
        prices: PriceTable | Mapping[str, PriceEntry],
        *,
        inline_max_chars: int = INLINE_MAX_CHARS,
    ) -> None:
        self._prices = prices if isinstance(prices, PriceTable) else _price_table(prices)
        self._inline_max = inline_max_chars

    def on_chunk(self, ex: Exchange, chunk: bytes) -> None:
        slots = ex.slots
        tap = slots.get(_TAP, _NEW)
        if tap is _NEW:
            tap = slots[_TAP] = open_tap(ex)
        if tap is not None and tap.feed(chunk):
            ex.t_first_token = time.monotonic()

    async def on_complete(self, ex: Exchange) -> None:
        if ex.route is None or not is_llm_call(ex):
            return
        outcome = ex.usage = UsageOutcome()
        tap = ex.slot(_TAP)
        usage = tap.finish() if tap is not None else Usage()  # a JSON body is read here
        outcome.model = (tap.model if tap is not None else None) or await self._request_model(ex)
        if tap is None:
            return
        outcome.finish_reasons = tap.finish_reasons
        if tap.error_event is not None and ex.error is None:
            ex.error = f"upstream error event: {tap.error_event}"
        ok = ex.status is not None and 200 <= ex.status < 300
        cut = ex.stream and not tap.saw_terminal
        if ok and (usage.source != "upstream" or cut):
            usage = await self._estimate(ex, tap, usage, outcome.model)
        outcome.usage = usage
        if usage.source != "none":
            cost = self._prices.cost(outcome.model, usage)
            outcome.cost_usd = None if cost is None else round(cost, 10)

    async def _estimate(
        self, ex: Exchange, tap: UsageTap, usage: Usage, model: str | None
    ) -> Usage:
        """Count what the provider did not report: the generated text, and the request.

        A stream cut before its end may carry usage from its start only (Anthropic's
        ``message_start`` says ``output_tokens: 1``), so the text count wins when larger.
        """
        assert ex.route is not None
        text = tap.completion_text
        prompt = usage.prompt_tokens
        if prompt is None and ex.context is not None:
            prompt = ex.context.prompt_tokens_est
        body = None if isinstance(prompt, int) else await self._sent_body(ex)
        size = len(text) + (len(ex.body) if body is not None else 0)
        args = (text, body, model, ex.route.provider.name, ex.route.config.context.safety_factor)
        if size > self._inline_max or not all_loaded():
            completion, body_prompt = await asyncio.to_thread(_count_tokens, *args)
        else:
            completion, body_prompt = _count_tokens(*args)
        if body_prompt is not None:
            prompt = body_prompt
        return dataclasses.replace(
            usage,
            prompt_tokens=prompt if isinstance(prompt, int) else None,
            completion_tokens=max(usage.completion_tokens or 0, completion),
            source="estimate",
        )

    async def _sent_body(self, ex: Exchange) -> dict[str, Any] | None:
        """The JSON object that went upstream (a rewritten body if a plugin replaced it)."""
        parse: Any = (lambda: json.loads(ex.body)) if ex.body_replaced else ex.json
        try:
            data = await asyncio.to_thread(parse) if len(ex.body) > 256 << 10 else parse()
        except Exception:  # not JSON: nothing to count
            return None
        return data if isinstance(data, dict) else None

    async def _request_model(self, ex: Exchange) -> str | None:
        """The model asked for, as the upstream that served it was sent it (fallback maps)."""
        body = await self._sent_body(ex)
        model = body.get("model") if body is not None else None
        if not isinstance(model, str):
            return None
        return ex.upstream.models.get(model, model) if ex.upstream is not None else model
