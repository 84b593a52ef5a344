"""Fit one request body into its budget: the pure decision the context-budget plugin applies.

Pre-emptive (:func:`fit_request`): a body whose most favourable count (``bounds.low``) is
within the budget goes out untouched, byte for byte. Only a body that is over even by the low
bound is trimmed, with the cache-stable stepped rule, to the budget expressed in raw tokens
(``budget / low ratio``), so the trimmed body fits by the same favourable count.

Error-driven (:func:`fit_retry`): after a context-length error, trim to the
``RetryBudget`` computed from the server's own figures (``overflow.retry_budget``).

Both are CPU work over the parsed body: run big bodies off the event loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .budget import Budget
from .correction import Bounds
from .counting import Api, RawCount
from .overflow import RetryBudget
from .stepped import stable_step
from .trim import ContextTooLarge, TrimResult, trim_anthropic, trim_openai, trim_responses

__all__ = ["Fit", "fit_request", "fit_retry"]

_TRIMMERS = {Api.CHAT: trim_openai, Api.RESPONSES: trim_responses, Api.MESSAGES: trim_anthropic}
_ITEMS_KEY = {Api.CHAT: "messages", Api.RESPONSES: "input", Api.MESSAGES: "messages"}


@dataclass(frozen=True, slots=True)
class Fit:
    """What fitting one request came to."""

    body: dict[str, Any] | None
    """The rewritten body; None when the original bytes go out untouched."""
    bounds: Bounds
    """The count of what goes out (scaled from the original's bounds when trimmed)."""
    budget: int
    """The budget the body was fitted to, in provider tokens."""
    removed: int = 0
    breakpoints_dropped: int = 0
    cache_rewrite_tokens: int = 0


def fit_request(
    data: dict[str, Any], api: Api, raw: RawCount, bounds: Bounds, budget: Budget, share: float
) -> Fit:
    """Untouched unless ``bounds.low > budget.tokens``; then trimmed in steps of
    ``1 - share`` of the budget. Raises ContextTooLarge (in provider tokens)."""
    if bounds.low <= budget.tokens:
        return Fit(None, bounds, budget.tokens)
    ratio = bounds.low_ratio
    raw_budget = math.floor(budget.tokens / ratio) if ratio > 0 else budget.tokens
    return _trimmed(data, api, raw, bounds, raw_budget, budget.tokens, share)


def fit_retry(
    data: dict[str, Any], api: Api, raw: RawCount, bounds: Bounds, retry: RetryBudget, share: float
) -> Fit:
    """Trim the body that failed to ``retry.tokens`` raw tokens (the single retry)."""
    provider_budget = retry.server_budget if retry.server_budget is not None else bounds.low
    return _trimmed(data, api, raw, bounds, retry.tokens, provider_budget, share)


def _trimmed(
    data: dict[str, Any],
    api: Api,
    raw: RawCount,
    bounds: Bounds,
    raw_budget: int,
    provider_budget: int,
    share: float,
) -> Fit:
    key = _ITEMS_KEY[api]
    items = data.get(key)
    ratio = bounds.low_ratio
    try:
        if not isinstance(items, list) or not items:
            raise ContextTooLarge(raw.tokens, raw_budget)
        step = stable_step(raw_budget, share)
        result: TrimResult = _TRIMMERS[api](items, raw_budget, raw.items, raw.fixed, step=step)
    except ContextTooLarge as exc:
        raise ContextTooLarge(math.ceil(exc.needed * ratio), provider_budget) from None
    return Fit(
        body={**data, key: result.messages},
        bounds=_scaled(bounds, result.tokens),
        budget=provider_budget,
        removed=result.removed,
        breakpoints_dropped=result.breakpoints_dropped,
        cache_rewrite_tokens=result.cache_rewrite_tokens,
    )


def _scaled(bounds: Bounds, raw: int) -> Bounds:
    if bounds.raw <= 0:
        return bounds
    f = raw / bounds.raw
    return Bounds(
        raw=raw,
        low=math.floor(bounds.low * f),
        estimate=round(bounds.estimate * f),
        high=math.ceil(bounds.high * f),
        method=bounds.method,
        samples=bounds.samples,
    )
