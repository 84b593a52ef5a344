"""The input budget of one request: what the model accepts minus what the answer needs.

Budget = min(window - output reserve - safety margin, model input cap - safety margin, route
``max_input_tokens``). The output reserve is the request's own max_tokens (any spelling);
without one it is ``reserve_output_tokens`` capped at ``output_reserve_share`` of the window,
so a 2,048-token model still accepts a short prompt (2048 - min(4096, 512) - 256 = 1280)
instead of a budget of zero. The model input cap is the registry's (gpt-5: 272k of 400k).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..config import Context
from ..models import ModelFacts

__all__ = ["OUTPUT_KEYS", "Budget", "BudgetLimit", "input_budget", "requested_output"]

OUTPUT_KEYS = ("max_completion_tokens", "max_output_tokens", "max_tokens")


class BudgetLimit(StrEnum):
    """Which limit set the budget (for the log line)."""

    WINDOW = "window"
    MODEL_INPUT_CAP = "model_input_cap"
    ROUTE_CAP = "route_max_input_tokens"


@dataclass(frozen=True, slots=True)
class Budget:
    tokens: int
    """Input tokens the request may use, in the provider's tokens (>= 0)."""
    window: int | None
    reserve: int
    """Output tokens set aside (0 when no window is known)."""
    limit: BudgetLimit


def requested_output(body: Mapping[str, Any]) -> int | None:
    """The request's output cap, whichever spelling it uses (None: not set)."""
    for key in OUTPUT_KEYS:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def input_budget(facts: ModelFacts, ctx: Context, requested: int | None) -> Budget | None:
    """The budget for a request to ``facts``' model, or None when no limit is known."""
    limits: list[tuple[int, BudgetLimit]] = []
    reserve = 0
    if facts.window is not None:
        share_cap = math.floor(facts.window * ctx.output_reserve_share)
        reserve = min(ctx.reserve_output_tokens, share_cap) if requested is None else requested
        limits.append((facts.window - reserve - ctx.safety_margin, BudgetLimit.WINDOW))
    if facts.max_input is not None:
        limits.append((facts.max_input - ctx.safety_margin, BudgetLimit.MODEL_INPUT_CAP))
    if ctx.max_input_tokens is not None:
        limits.append((ctx.max_input_tokens, BudgetLimit.ROUTE_CAP))
    if not limits:
        return None
    tokens, limit = min(limits, key=lambda pair: pair[0])
    return Budget(max(0, tokens), facts.window, reserve, limit)
