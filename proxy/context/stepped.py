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
The proxy uses the UTF-8 bytes of each message's strings (:func:`grid_weights`, with a step
of :data:`BYTES_PER_TOKEN` bytes per token), not its token count: C(j) of the turns a trim
evicts would otherwise need those turns counted, and on a long conversation those are most
of the body (issue 17). Bytes per token vary with the script and the tokenizer (about 2 to 9,
docs/context-counting.md), so a jump sheds between about half and twice ``step`` tokens; the
kept part always fits, since which turns must go is decided by their counted tokens.

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

__all__ = ["BYTES_PER_TOKEN", "choose_cut", "grid_cut", "grid_weights", "stable_step"]

_GRID = 4
"""Grid points per doubling for :func:`stable_step`."""
BYTES_PER_TOKEN = 4
"""The step in bytes of :func:`grid_weights`: about what a token covers in English and code."""


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
