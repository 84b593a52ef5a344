"""Keep chat requests inside the model's context budget, rewriting ``messages`` only when needed.

Order of work, cheapest first: a byte-level peek (model and output reserve, no JSON parse) and
the length bound (a token covers at least one byte) let almost every request through untouched;
only a body that may not fit is parsed and counted, and large ones are counted off the loop.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..config import Context
from ..context import tokens
from ..context.trim import ContextTooLarge, trim_anthropic, trim_openai
from ..context.windows import context_window
from ..errors import ContextLengthExceeded
from ..exchange import Exchange
from ..outcomes import ContextOutcome
from . import Plugin

OFF_LOOP_BYTES = 64 * 1024
"""Bodies larger than this are counted and trimmed off the loop (tiktoken drops the GIL)."""

_MODEL = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.){1,200})"')
_RESERVE = re.compile(rb'"max_(?:completion_|output_)?tokens"\s*:\s*(\d{1,9})')
_ENDPOINTS = {"openai": ("/chat/completions",), "anthropic": ("/v1/messages",)}
RESERVE_KEYS = ("max_completion_tokens", "max_output_tokens", "max_tokens")
WindowOf = Callable[[Context, "str | None"], "int | None"]


@dataclass(frozen=True, slots=True)
class Budget:
    tokens: int
    window: int | None


def budget_for(ctx: Context, window: int | None, reserve: int | None) -> Budget | None:
    """window - output reserve - safety margin, capped by the route's max_input_tokens."""
    limits = []
    if window is not None:
        out = reserve if reserve is not None else ctx.reserve_output_tokens
        limits.append(window - out - ctx.safety_margin)
    if ctx.max_input_tokens is not None:
        limits.append(ctx.max_input_tokens)
    return Budget(max(0, min(limits)), window) if limits else None


def peek_budget(ctx: Context, body: bytes, window_of: WindowOf) -> Budget | None:
    """A budget no larger than the real one, read from the raw bytes without parsing JSON.

    Nested objects may also have "model" or "max_tokens" keys, so the smallest budget over
    every match is taken; no model match at all means "don't know" (None: parse to find out).
    """
    models = [m.decode("utf-8", "replace") for m in _MODEL.findall(body)]
    if not models:
        return None
    reserves = [int(r) for r in _RESERVE.findall(body)]
    reserve = max(reserves) if reserves else None
    budgets: list[Budget] = []
    for model in models:
        budget = budget_for(ctx, window_of(ctx, model), reserve)
        if budget is None:
            return None
        budgets.append(budget)
    return min(budgets, key=lambda b: b.tokens)


def is_chat_endpoint(provider: str, tail: str) -> bool:
    return any(tail.endswith(suffix) for suffix in _ENDPOINTS.get(provider, ()))


@dataclass(slots=True)
class Outcome:
    """What fitting one request came to; ``body`` is None when the original bytes go out."""

    count: tokens.TokenCount
    budget: int
    body: bytes | None = None
    removed: int = 0


def fit(data: dict[str, Any], provider: Any, budget: int, factor: float) -> Outcome:
    """Count, and trim when over budget. Pure CPU work: safe to run in a thread."""
    count = tokens.count_request(data, provider, factor)
    if count.tokens <= budget:
        return Outcome(count, budget)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ContextTooLarge(count.tokens, budget)
    model = data.get("model") if isinstance(data.get("model"), str) else None

    def cost(msg: dict[str, Any]) -> int:
        return tokens.message_tokens(msg, provider, model, factor)

    fixed = tokens.fixed_tokens(data, provider, factor)
    trim = trim_anthropic if provider == "anthropic" else trim_openai
    result = trim(messages, budget, cost, fixed)
    new_body = json.dumps({**data, "messages": result.messages}, ensure_ascii=False).encode()
    return Outcome(tokens.TokenCount(result.tokens, count.method), budget, new_body, result.removed)


class ContextBudget(Plugin):
    """Refuses what can never fit (400 context_length_exceeded, nothing sent upstream) and
    evicts the oldest whole turns from what does not fit now."""

    name = "context_budget"

    def __init__(self) -> None:
        self._windows: dict[tuple[int, str | None], int | None] = {}
        # One worker thread: counting is CPU-bound, and one thread stalls the loop least
        # (bench/bench_tokens.py: 2 ms worst stall vs 11 ms with the default pool).
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="context-budget")

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def window_of(self, ctx: Context, model: str | None) -> int | None:
        """Context windows by model, memoised: the prefix lookup is on every request's path."""
        key = (id(ctx), model)
        try:
            return self._windows[key]
        except KeyError:
            if len(self._windows) > 4096:
                self._windows.clear()
            window = self._windows[key] = context_window(model, ctx.models)
            return window

    async def on_request(self, ex: Exchange) -> web.StreamResponse | None:
        assert ex.route is not None
        ctx = ex.route.config.context
        provider = ex.route.provider.name
        if not ctx.enabled or ex.request.method != "POST":
            return None
        if ex.request.headers.get("Content-Encoding", "identity") != "identity":
            return None
        if not is_chat_endpoint(provider, ex.tail):
            return None
        floor = peek_budget(ctx, ex.body, self.window_of)
        if floor is not None and not tokens.may_exceed(ex.body, floor.tokens, ctx.safety_factor):
            return None
        data = ex.json_object()
        if data is None:
            return None
        model = data.get("model") if isinstance(data.get("model"), str) else None
        reserve = next((data[k] for k in RESERVE_KEYS if isinstance(data.get(k), int)), None)
        budget = budget_for(ctx, self.window_of(ctx, model), reserve)
        if budget is None:
            return None
        outcome = await self._fit(ex, data, provider, budget.tokens, ctx.safety_factor)
        ex.context = ContextOutcome(
            outcome.count.tokens, outcome.count.method, outcome.budget, outcome.removed
        )
        if outcome.body is not None:
            ex.replace_body(outcome.body)
            ex.response_headers["x-proxy-context-trimmed"] = str(outcome.removed)
        return None

    async def _fit(
        self, ex: Exchange, data: dict[str, Any], provider: str, budget: int, factor: float
    ) -> Outcome:
        try:
            if len(ex.body) > OFF_LOOP_BYTES or not tokens.all_loaded():
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._pool, fit, data, provider, budget, factor)
            return fit(data, provider, budget, factor)
        except ContextTooLarge as exc:
            ex.context = ContextOutcome(exc.needed, "estimate", exc.budget)
            raise ContextLengthExceeded(
                f"This request needs at least {exc.needed} input tokens after dropping every "
                f"older turn, but the budget for this model is {exc.budget} tokens "
                "(context window minus the output reserve and safety margin). "
                "Shorten the system prompt or the newest message, or lower max_tokens."
            ) from None
