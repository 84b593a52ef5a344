"""Fit one request body into its budget: the pure decision the context-budget plugin applies.

Pre-emptive (:func:`fit_request`): a body whose most favourable count (``bounds.low``) is
within the budget goes out untouched, byte for byte. Only a body that is over even by the low
bound is trimmed, with the cache-stable stepped rule, to the budget expressed in raw tokens
(``budget / low ratio``), so the trimmed body fits by the same favourable count.

Counting stops once the decision is known (issue 17). Items are counted newest first until
the body is over the budget by the low bound of every script class, or to the end. Counted to
the end, the body is decided exactly as by a full count: its class, its bounds, trimmed or
not. Known to be over early, what the trim keeps lies inside the part counted, and the rest
depends on the stepped grid (``stepped.byte_grid``):

- a body of at most ``stepped.token_grid_bound(budget)`` text bytes is cut on the token grid,
  where a full count cut it: it takes the correction of its class as a whole (script weights,
  no counting), and the trim counts the older turns for the grid (not for a refusal, known
  from the pinned messages and the newest turn);
- a larger body is cut on the byte grid and takes the correction of the class of the newest
  part counted; the turns the trim drops are never read.

The trimmed body's raw count is the sum of its kept items' costs (never counted again).

Error-driven (:func:`fit_retry`): after a context-length error, trim to the
``RetryBudget`` computed from the server's own figures (``overflow.retry_budget``).

Both are CPU work over the parsed body: run big bodies off the event loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..models import DEFAULT_REGISTRY, ModelRegistry
from .budget import Budget
from .correction import Bounds, CorrectionTable, Measured, exact_bounds
from .counting import Api, BodyCounter, RawCount
from .overflow import RetryBudget
from .scripts import ScriptClass
from .stepped import byte_grid, grid_step
from .trim import ContextTooLarge, TrimResult, trim_anthropic, trim_openai, trim_responses

__all__ = ["Fit", "Refused", "fit_request", "fit_retry"]

_TRIMMERS = {Api.CHAT: trim_openai, Api.RESPONSES: trim_responses, Api.MESSAGES: trim_anthropic}
_ITEMS_KEY = {Api.CHAT: "messages", Api.RESPONSES: "input", Api.MESSAGES: "messages"}


@dataclass(frozen=True, slots=True)
class Fit:
    """What fitting one request came to."""

    body: dict[str, Any] | None
    """The rewritten body; None when the original bytes go out untouched."""
    measured: Measured
    """The bounds of what goes out (scaled from the decision's bounds when trimmed) and whose
    correction they come from."""
    budget: int
    """The budget the body was fitted to, in provider tokens."""
    raw: RawCount
    """The raw count of what goes out: the whole body's when untouched (then counted to the
    end), the trimmed body's when trimmed (its kept items' costs, not counted again)."""
    removed: int = 0
    breakpoints_dropped: int = 0
    cache_rewrite_tokens: int = 0
    counted: int = 0
    """Items whose tokens were counted to decide (and for the token grid), of all the body's
    items."""
    byte_grid: bool = False
    """Trimmed on the byte grid (a body over ``stepped.token_grid_bound``), not the token
    grid."""

    @property
    def bounds(self) -> Bounds:
        return self.measured.bounds


class Refused(ContextTooLarge):
    """:class:`ContextTooLarge` in provider tokens, with the bounds of the part counted to know
    it: at least everything outside the items, the pinned messages and the newest turn, so a
    lower bound of the whole body's when counting stopped early (with the correction of the
    whole body's class on the token grid, of the part's on the byte grid)."""

    def __init__(self, needed: int, budget: int, measured: Measured) -> None:
        super().__init__(needed, budget)
        self.measured = measured


def fit_request(
    data: dict[str, Any],
    api: Api,
    table: CorrectionTable | None,
    budget: Budget,
    share: float,
    registry: ModelRegistry = DEFAULT_REGISTRY,
) -> Fit:
    """Untouched unless over the budget by the low bound; then trimmed in steps of about
    ``1 - share`` of the budget. ``table``: the model's corrections (None: the registry has
    its tokenizer, counted exactly). Raises :class:`Refused`."""
    counter = BodyCounter(data, api, registry)
    table = None if counter.exact else table
    floor = table.floor_ratio() if table is not None else 1.0
    tokens, start = counter.fixed, len(counter.items)
    while start > 0 and math.floor(tokens * floor) <= budget.tokens:
        start -= 1
        tokens += counter.cost(start)
    measured = _measured(table, counter.script(range(start, len(counter.items))), tokens)
    if start == 0 and measured.bounds.low <= budget.tokens:
        return Fit(None, measured, budget.tokens, counter.raw(), counted=counter.counted)
    grid = byte_grid(counter.items, budget.tokens)
    if grid is None and start > 0:  # the token grid: the correction of the whole body's class
        measured = _measured(table, counter.script(), tokens)
    ratio = measured.bounds.low_ratio
    raw_budget = math.floor(budget.tokens / ratio) if ratio > 0 else budget.tokens
    return _trimmed(data, api, counter, measured, raw_budget, budget.tokens, share, grid)


def fit_retry(
    data: dict[str, Any],
    api: Api,
    raw: RawCount,
    measured: Measured,
    retry: RetryBudget,
    share: float,
    registry: ModelRegistry = DEFAULT_REGISTRY,
) -> Fit:
    """Trim the body that failed (whose count is ``raw``, bounds ``measured``) to
    ``retry.tokens`` raw tokens (the single retry)."""
    counter = BodyCounter(data, api, registry, known=raw)
    low = measured.bounds.low
    provider_budget = retry.server_budget if retry.server_budget is not None else low
    grid = byte_grid(counter.items, provider_budget)
    return _trimmed(data, api, counter, measured, retry.tokens, provider_budget, share, grid)


def _measured(table: CorrectionTable | None, script: ScriptClass, raw: int) -> Measured:
    if table is None:
        return Measured(exact_bounds(raw), None)
    return table.measured(script, raw)


def _trimmed(
    data: dict[str, Any],
    api: Api,
    counter: BodyCounter,
    measured: Measured,
    raw_budget: int,
    provider_budget: int,
    share: float,
    grid: list[int] | None,
) -> Fit:
    """Trim to ``raw_budget`` on ``grid`` (``stepped.byte_grid``; None: the token grid)."""
    key = _ITEMS_KEY[api]
    items = counter.items
    ratio = measured.bounds.low_ratio
    try:
        if not items:
            raise ContextTooLarge(counter.fixed, raw_budget)
        step = grid_step(raw_budget, share, grid)
        trim = _TRIMMERS[api]
        result: TrimResult = trim(
            items, raw_budget, counter.costs, counter.fixed, step=step, grid=grid
        )
    except ContextTooLarge as exc:
        raise Refused(math.ceil(exc.needed * ratio), provider_budget, measured) from None
    return Fit(
        body={**data, key: result.messages},
        measured=Measured(_scaled(measured.bounds, result.tokens), measured.key),
        budget=provider_budget,
        raw=counter.raw(result.kept),
        removed=result.removed,
        breakpoints_dropped=result.breakpoints_dropped,
        cache_rewrite_tokens=result.cache_rewrite_tokens,
        counted=counter.counted,
        byte_grid=grid is not None,
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
