"""Where to cut a conversation so the next requests keep the same prompt prefix.

Turn-by-turn trimming drops one more old turn on every request once a conversation is over
budget, so its prompt prefix changes every time and the provider's prompt cache (OpenAI's
automatic caching, Anthropic's ``cache_control``) never hits again. Stepped trimming cuts
deeper, down to ``share`` of the budget, and then keeps that cut while the conversation grows
back to the budget.

The rule is stateless and deterministic, so every worker and instance cuts the same way:
let C(j) be the size of the oldest j turns (cumulative from the start of the conversation,
pinned messages excluded). With ``step = (1 - share) x budget``, the k-th cut point is the
first turn boundary j with C(j) >= k x step. The request evicts the smallest such cut (smallest
k) that makes it fit. Appending turns never changes C(j) of old turns, so the same k is chosen
until the kept part outgrows the budget, then the cut jumps to k+1, about ``step`` tokens
later, and the kept part is back near ``share`` of the budget.

What C(j) measures: any size that never changes for a given message keeps the cut stable.
Two grids, chosen by the size of the body (:func:`byte_grid`):

- the token grid: each turn's token count (the trim's own costs). Cuts land where the token
  budget's steps fall, the best for the provider's cache (``bench/bench_context.py``), but
  C(j) of the turns a trim evicts needs those turns counted: every turn of the body.
- the byte grid: the UTF-8 bytes of each message's strings (:func:`grid_weights`, with a step
  of :data:`BYTES_PER_TOKEN` bytes per token), known without tokenizing. For a long
  conversation far over its budget the evicted turns are most of the body (issue 17: a 24 MB
  history over a 128k budget), and counting them would cost seconds of CPU. Bytes per token
  vary with the script and the tokenizer (about 2 to 9, docs/context-counting.md), so a jump
  sheds between about half and twice ``step`` tokens (less where tokens are longer than 4
  bytes, so the cut moves more often there). The kept part always fits: which turns must go
  is decided by their tokens.

A body uses the token grid while its text is at most :func:`token_grid_bound` bytes, the byte
grid beyond. The bound depends only on the route's budget (in provider tokens, which learning
does not move), and a conversation's history only grows, so a conversation switches grids
once in its life, when its client-sent history first passes the bound: one cache miss (the
cut moves from a token grid point to a byte grid point), then the byte grid's hits.

The step must not wobble with the budget (the budget in raw tokens moves a little whenever
the learned token correction is updated), so :func:`stable_step` rounds it down to a
geometric grid of 2^(1/4) (every ~19%): small budget changes leave the grid, and so every
cut point, where it was.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

__all__ = [
    "BYTES_PER_TOKEN",
    "GRID_TOKEN_MAX_BYTES",
    "GRID_TOKEN_MAX_BYTES_PER_BUDGET_TOKEN",
    "byte_grid",
    "choose_cut",
    "grid_cut",
    "grid_step",
    "grid_weights",
    "stable_step",
    "token_grid_bound",
]

_GRID = 4
"""Grid points per doubling for :func:`stable_step`."""
BYTES_PER_TOKEN = 4
"""The step in bytes of :func:`grid_weights`: about what a token covers in English and code."""
GRID_TOKEN_MAX_BYTES_PER_BUDGET_TOKEN = 32
"""The token grid for a body of at most this many text bytes per budget token (~8x the
budget at 4 bytes per token: 4 MB for gpt-4o's 128k, 6.4 MB for Claude's 200k).

Why: counting every turn costs CPU in proportion to the body, the decision alone in
proportion to the budget (an exact count reads about the budget's tokens, a corrected one up
to ~4x them), so up to this bound the token grid costs at most ~8x what the decision costs,
and it keeps the cache hits of every conversation within a few budgets, where most trimmed
requests are (``bench_context.py``: 93.8 % of requests after the first trim hit, against
90.4 % on the byte grid, which bills 7-17 % more input; its 5-budget conversation stays
under the bound). The price, measured with ``bench_large.py`` on 2 shared vCPUs: a gpt-4o body just
under its bound costs ~0.55 s of CPU (~0.1 s just over it, on the byte grid; ~0.55 s before
issue 17), a Claude body just under its bound ~1.4 s (~0.7 s over it; 2.6 s before)."""
GRID_TOKEN_MAX_BYTES = 8_000_000
"""The token grid's bound whatever the budget. A 1M-token window (gpt-4.1) would otherwise
count every turn of a body of up to 32 MB, ~4-7 s of CPU (issue 17's problem back); 8 MB is
~1-1.7 s (~120 ms per MB with o200k, ~210 with cl100k and the script classes). Budgets up to
250k tokens (Claude, o3) are under it; gpt-5's 272k is capped at ~7.4x its budget. Lower it
to trade cache hits for CPU (4 MB: ~0.5-0.9 s at most)."""


def stable_step(budget: int, share: float) -> int:
    """The step for ``share`` of ``budget``, rounded down to the 2^(1/4) grid (0: turn-wise)."""
    if share >= 1.0 or budget <= 0:
        return 0
    nominal = (1.0 - share) * budget
    if nominal < 1:
        return 0
    return math.floor(2 ** (math.floor(math.log2(nominal) * _GRID) / _GRID))


def choose_cut(unit_costs: Sequence[int], need: int, step: int) -> int | None:
    """How many of the oldest units to evict to shed at least ``need`` tokens.

    ``step <= 0``: the fewest units (turn-wise). Otherwise the first grid cut (see the module
    docstring) that sheds enough. None when evicting every unit is still not enough.
    """
    sums = [0, *accumulate(unit_costs)]
    if need <= 0:
        return 0
    if sums[-1] < need:
        return None
    if step <= 0:
        return bisect_left(sums, need)
    k = max(1, need // step)
    while True:
        cut = min(bisect_left(sums, k * step), len(sums) - 1)
        if sums[cut] >= need:
            return cut
        k += 1


def token_grid_bound(budget: int) -> int:
    """The most text bytes (:func:`grid_weights` summed) a body trimmed to ``budget`` tokens
    may have to be cut on the token grid."""
    return min(GRID_TOKEN_MAX_BYTES_PER_BUDGET_TOKEN * max(budget, 0), GRID_TOKEN_MAX_BYTES)


def byte_grid(items: Sequence[Any], budget: int) -> list[int] | None:
    """The grid for cutting ``items`` under a budget of ``budget`` tokens: their byte sizes
    (:func:`grid_weights`) when their text is over :func:`token_grid_bound`, None for the
    token grid (the trim's token costs). ``budget``: the route's, in provider tokens, which a
    learned correction does not move, so the choice is the same for every request of a
    conversation until its history passes the bound."""
    weights = grid_weights(items)
    return weights if sum(weights) > token_grid_bound(budget) else None


def grid_step(budget: int, share: float, grid: Sequence[int] | None) -> int:
    """The step for a trim to ``budget`` tokens on ``grid`` (from :func:`byte_grid`): tokens on
    the token grid (None), bytes on the byte grid."""
    step = stable_step(budget, share)
    return step if grid is None else step * BYTES_PER_TOKEN


def grid_cut(weights: Sequence[int], fewest: int, step: int) -> int:
    """The first grid cut (see the module docstring) that evicts at least ``fewest`` of the
    oldest units; ``weights``: each unit's size in the grid's measure, ``step`` in the same.
    Sizes, not tokens: a unit the cut passes over need not be counted."""
    if fewest <= 0:
        return 0
    if step <= 0:
        return fewest
    sums = [0, *accumulate(weights)]
    k = sums[fewest - 1] // step + 1  # the first k whose cut point lies at or after ``fewest``
    return max(fewest, min(bisect_left(sums, k * step), len(sums) - 1))


def grid_weights(items: Sequence[Any]) -> list[int]:
    """The UTF-8 bytes of the strings in each item (keys not included): a message's fixed
    size, known without tokenizing it."""
    return [_text_bytes(item) for item in items]


def _text_bytes(value: Any) -> int:
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) if item.isascii() else len(item.encode("utf-8", "surrogatepass"))
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total
