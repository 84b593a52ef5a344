"""Keep chat requests inside the model's window: never trim one that fits, fix one that does not.

- Pre-emptive: a request is trimmed only when even its most favourable count (the low bound
  of a learned correction, or the exact count for OpenAI models) is over the budget; then it
  is cut in cache-stable steps (see ``context/stepped.py``). Cheapest first: a byte-level
  peek (model and output cap, no JSON parse) and the length bound let almost every request
  through without counting; the rest are counted newest first, only until the decision is
  known (``context/fit.py``), large bodies off the event loop.
- Error-driven: when the upstream answers with a context-length error anyway, the figures
  it states decide the trim, and the request is sent once more before any byte reached the
  client (the ``on_refusal`` phase).
- Learning: billed input tokens are compared with the proxy's raw count of what was sent,
  per upstream, model and script, so the bounds tighten as responses arrive.
"""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..config import Context
from ..context.budget import Budget, input_budget, requested_output
from ..context.correction import Bounds, Corrections, Measured
from ..context.counting import Api, RawCount, api_for, raw_count
from ..context.fit import Fit, Refused, fit_request, fit_retry
from ..context.overflow import parse_overflow, retry_budget
from ..context.tokens import all_loaded, may_exceed
from ..context.trim import ContextTooLarge
from ..errors import ContextLengthExceeded
from ..exchange import Exchange
from ..jsonbytes import json_bytes
from ..models import ModelFacts, ModelRegistry
from ..outcomes import ContextOutcome, SlotKey
from . import Plugin, Refusal

OFF_LOOP_BYTES = 64 * 1024
"""Bodies larger than this are counted and trimmed off the loop (tiktoken drops the GIL)."""
LEARN_EVERY = 10
"""Once a correction has this many samples, only every n-th fitting request is counted."""

_MODEL = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.){1,200})"')
_RESERVE = re.compile(rb'"max_(?:completion_|output_)?tokens"\s*:\s*(\d{1,9})')


@dataclass(slots=True)
class _Sent:
    """What this plugin knows about the body that went (or goes) upstream."""

    api: Api
    facts: ModelFacts
    budget: Budget | None
    data: dict[str, Any]
    raw: RawCount
    measured: Measured
    retried: bool = False


_SENT: SlotKey[_Sent] = SlotKey("context_budget")


class ContextBudget(Plugin):
    """Refuses what can never fit (400 context_length_exceeded, nothing sent upstream),
    evicts the oldest whole turns from what does not fit, and learns from the bill."""

    name = "context_budget"

    def __init__(self, registry: ModelRegistry, corrections: Corrections) -> None:
        self._registry = registry
        self._registries: dict[int, ModelRegistry] = {}
        self._corrections = corrections
        self._seen = 0
        # One worker thread: counting is CPU-bound, and one thread stalls the loop least
        # (bench/bench_tokens.py: 2 ms worst stall vs 11 ms with the default pool).
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="context-budget")

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def registry(self, ctx: Context) -> ModelRegistry:
        """The registry with a route's own ``context.models`` windows on top."""
        found = self._registries.get(id(ctx))
        if found is None:
            found = self._registries[id(ctx)] = self._registry.for_context(ctx)
        return found

    # -- before the first attempt ------------------------------------------------------------

    async def on_request(self, ex: Exchange) -> web.StreamResponse | None:
        assert ex.route is not None
        ctx = ex.route.config.context
        if not ctx.enabled or ex.request.method != "POST":
            return None
        if ex.request.headers.get("Content-Encoding", "identity") != "identity":
            return None
        api = api_for(ex.route.provider.name, ex.tail)
        if api is None:
            return None
        registry = self.registry(ctx)
        upstream = ex.route.config.upstreams[0].name
        # More bytes than any budget has tokens: the byte bound cannot say "fits", no peek.
        largest = ctx.max_input_tokens or registry.largest_input
        floor = peek_budget(ex.body, ctx, registry) if len(ex.body) <= largest else None
        if floor is not None:
            ceiling = await self._corrections.low_ratio_ceiling(upstream, floor[0])
            if not may_exceed(ex.body, floor[1].tokens, safety_factor=ceiling):
                return None  # fits by any count: not even parsed
        data = ex.json_object()
        if data is None or data.get("previous_response_id"):
            return None  # unparseable (the upstream answers), or the history lives upstream
        name = data.get("model")
        facts = registry.facts(name if isinstance(name, str) else None)
        budget = input_budget(facts, ctx, requested_output(data))
        if budget is None:
            return None
        table = None
        if not facts.tokenizer.exact:
            table = await self._corrections.table(upstream, facts.name)
        share = ctx.trim_target_share
        try:
            fit: Fit = await self._off_loop(
                len(ex.body), fit_request, data, api, table, budget, share, registry
            )
        except Refused as exc:
            ex.context = _outcome(exc.measured.bounds, exc.budget, needed=exc.needed)
            raise ContextLengthExceeded(
                f"This request needs at least {exc.needed} input tokens after dropping every "
                f"older turn, but the budget for this model is {exc.budget} tokens "
                "(context window minus the output reserve and safety margin). "
                "Shorten the system prompt or the newest message, or lower max_tokens."
            ) from None
        sent = _Sent(api, facts, budget, data, fit.raw, fit.measured)
        ex.set_slot(_SENT, sent)
        ex.context = _outcome(fit.bounds, budget.tokens, fit=fit)
        if fit.body is not None:
            self._apply(ex, sent, fit)
            ex.response_headers["x-proxy-context-trimmed"] = str(ex.context.trimmed_messages)
        return None

    def _apply(self, ex: Exchange, sent: _Sent, fit: Fit) -> None:
        """Send the trimmed body; its raw count (for learning and retries) is the fit's, made
        of the kept items' costs."""
        assert fit.body is not None
        ex.replace_body(json_bytes(fit.body))
        sent.data, sent.raw, sent.measured = fit.body, fit.raw, fit.measured

    # -- after a context-length error ------------------------------------------------------

    async def on_refusal(self, ex: Exchange, refusal: Refusal) -> bool:
        assert ex.route is not None
        ctx = ex.route.config.context
        if not ctx.enabled:
            return False
        overflow = parse_overflow(
            refusal.status, refusal.body, refusal.headers.get("Content-Encoding")
        )
        if overflow is None:
            return False
        sent = ex.slot(_SENT) or await self._count_now(ex, ctx, refusal.upstream.name)
        if sent is None or sent.retried:
            return False
        sent.retried = True
        if overflow.prompt_tokens and sent.measured.key is not None:
            await self._corrections.observe(
                sent.measured.key, sent.raw.tokens, overflow.prompt_tokens
            )
        target = retry_budget(
            overflow,
            sent_estimate=sent.raw.tokens,
            reserve=requested_output(sent.data),
            known_window=sent.facts.window,
            output_reserve_share=ctx.output_reserve_share,
        )
        if target is None:
            return False  # only the client can fix it (max_tokens alone fills the window)
        registry = self.registry(ctx)
        try:
            fit: Fit = await self._off_loop(
                len(ex.body),
                fit_retry,
                sent.data,
                sent.api,
                sent.raw,
                sent.measured,
                target,
                ctx.trim_target_share,
                registry,
            )
        except ContextTooLarge:
            return False  # the newest turn alone is too long: the upstream's error stands
        if fit.body is None or fit.removed == 0:
            return False
        before = ex.context
        self._apply(ex, sent, fit)
        ex.context = _outcome(fit.bounds, fit.budget, fit=fit, retried=True, before=before)
        ex.response_headers["x-proxy-context-trimmed"] = str(ex.context.trimmed_messages)
        return True

    async def _count_now(self, ex: Exchange, ctx: Context, upstream: str) -> _Sent | None:
        """The request skipped counting (it looked like it fits): count it now."""
        assert ex.route is not None
        api = api_for(ex.route.provider.name, ex.tail)
        data = ex.json_object() if not ex.body_replaced else None
        if api is None or data is None:
            return None
        registry = self.registry(ctx)
        model = data.get("model") if isinstance(data.get("model"), str) else None
        facts = registry.facts(model)
        raw = await self._off_loop(len(ex.body), raw_count, data, api, registry)
        measured = await self._corrections.measure(upstream, facts.name, raw)
        sent = _Sent(
            api, facts, input_budget(facts, ctx, requested_output(data)), data, raw, measured
        )
        ex.set_slot(_SENT, sent)
        return sent

    # -- after the answer ------------------------------------------------------------------

    async def on_report(self, ex: Exchange) -> None:
        """Learn from the input tokens the provider billed for what was sent."""
        usage = ex.usage.usage if ex.usage is not None else None
        if usage is None or usage.source != "upstream" or not usage.prompt_tokens:
            return
        if ex.status is None or not 200 <= ex.status < 300 or ex.upstream is None:
            return
        if ex.translation is not None:
            return  # billed in another API's terms
        sent = ex.slot(_SENT)
        if sent is None:
            sent = await self._sample(ex)
        if sent is None or sent.measured.key is None:
            return
        if sent.measured.key.upstream != ex.upstream.name:
            return  # a fallback served it: its tokens are another upstream's
        await self._corrections.observe(sent.measured.key, sent.raw.tokens, usage.prompt_tokens)

    async def _sample(self, ex: Exchange) -> _Sent | None:
        """Count a request that fit without counting, to learn from it: every one while the
        correction is young, then every ``LEARN_EVERY``-th."""
        if ex.route is None or not ex.route.config.context.enabled or ex.upstream is None:
            return None
        data = ex.json_object()
        model = data.get("model") if data is not None else None
        ctx = ex.route.config.context
        if not isinstance(model, str) or self.registry(ctx).facts(model).tokenizer.exact:
            return None  # counted exactly: nothing to learn
        self._seen += 1
        sent = await self._count_now(ex, ctx, ex.upstream.name)
        if sent is None or sent.measured.key is None:
            return None
        if sent.measured.bounds.samples >= 20 and self._seen % LEARN_EVERY:
            return None
        return sent

    async def _off_loop(self, size: int, fn: Any, *args: Any) -> Any:
        if size > OFF_LOOP_BYTES or not all_loaded():
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        return fn(*args)


def peek_budget(body: bytes, ctx: Context, registry: ModelRegistry) -> tuple[str, Budget] | None:
    """A budget no larger than the real one, read from the raw bytes without parsing, with the
    model name it was computed for.

    Nested objects may also have "model" or "max_tokens" keys, so the smallest budget over
    every match is taken; no usable match at all means "don't know" (parse to find out).
    """
    models = [m.decode("utf-8", "replace") for m in _MODEL.findall(body)]
    if not models:
        return None
    reserves = [int(r) for r in _RESERVE.findall(body)]
    reserve = max(reserves) if reserves else None
    best: tuple[str, Budget] | None = None
    for model in models:
        facts = registry.facts(model)
        budget = input_budget(facts, ctx, reserve)
        if budget is None:
            return None
        if best is None or budget.tokens < best[1].tokens:
            best = (facts.name, budget)
    return best


def _outcome(
    bounds: Bounds,
    budget: int,
    *,
    fit: Fit | None = None,
    needed: int | None = None,
    retried: bool = False,
    before: ContextOutcome | None = None,
) -> ContextOutcome:
    return ContextOutcome(
        prompt_tokens_est=needed if needed is not None else bounds.estimate,
        count_method=bounds.method.value,
        budget=budget,
        trimmed_messages=(before.trimmed_messages if before else 0) + (fit.removed if fit else 0),
        low=bounds.low,
        high=bounds.high,
        retried=retried,
        breakpoints_dropped=fit.breakpoints_dropped if fit else 0,
    )
