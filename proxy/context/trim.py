"""Trim a conversation to a token budget by evicting whole turns, oldest first (pure).

Three shapes, one rule. A turn starts at a user message and runs to the next turn start, so a
user message, its assistant replies and every tool exchange in between leave together:

- OpenAI chat ``messages``: assistant ``tool_calls`` with their ``role: tool`` results;
  system/developer messages are pinned wherever they are.
- Responses API ``input``: ``function_call`` / ``function_call_output`` (and ``reasoning``
  items, which must precede their call) stay in their turn; system/developer message items are
  pinned; top-level ``instructions`` are outside ``input`` and never touched.
- Anthropic ``messages``: a user message made of ``tool_result`` blocks answers the previous
  assistant ``tool_use`` and is not a turn start; thinking blocks live inside assistant
  messages, so they leave with their turn. The result is a suffix starting at a user turn.

Messages before the first turn start form the oldest unit. The newest turn is always kept;
when the pinned messages and the newest turn (plus ``fixed``) exceed the budget,
``ContextTooLarge`` says by how much: nothing is cut from inside a message. When everything
fits, the caller's own list object comes back untouched.

Where to cut: ``step=0`` cuts turn by turn (the fewest turns that fit). ``step > 0`` is
cache-stable stepped trimming (``stepped.py``): cut points lie on a grid of cumulative turn
sizes (``grid``, one size per message; the token costs when not given), so the following
requests of the conversation keep the same cut (the same prompt prefix, a warm provider
cache) until the budget is reached again.

Costs are read newest first and only as far as the decision needs: the pinned messages and
the newest turn (all that a refusal reads), then older turns until one no longer fits, and
then, for a stepped cut without a ``grid``, every turn, since the grid is made of their costs.
A lazy sequence of costs (``counting.BodyCounter.costs``) is therefore never asked for the
turns a trim on a ``grid`` (or turn by turn) drops unseen.

Anthropic ``cache_control`` breakpoints: the trimmer never moves, adds or removes one, and
never touches ``system``/``tools`` (their breakpoints stay warm). A cut happens only when the
caller decided the request is over budget, and then any front cut invalidates every message
breakpoint after it, so the rule is to cut rarely (stepped) and to count the cost: the result
says how many breakpoints were dropped with their messages and how many kept tokens lie before
the last kept breakpoint (the prefix the provider writes to its cache again, at 1.25x input).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from .stepped import grid_cut

Message = dict[str, Any]
Cost = Callable[[Message], int]
Costs = Cost | Sequence[int]

_PINNED_ROLES = frozenset({"system", "developer"})


@dataclass(frozen=True)
class TrimResult:
    messages: list[Message]
    removed: int
    tokens: int  # fixed + the cost of the kept messages
    breakpoints_dropped: int = 0
    """Anthropic: cache_control markers that left with evicted messages."""
    cache_rewrite_tokens: int = 0
    """Anthropic: kept tokens up to the last kept breakpoint, written to the cache again."""
    kept: tuple[int, ...] = field(default=(), compare=False)
    """Where each kept message was in the input (so its cost is known without counting)."""


class ContextTooLarge(Exception):
    """The pinned messages and the newest turn alone need more than the budget."""

    def __init__(self, needed: int, budget: int) -> None:
        super().__init__(f"input needs {needed} tokens, budget is {budget}")
        self.needed = needed
        self.budget = budget


def _role(msg: Any) -> str | None:
    """A message's role, or None when it has none a provider would accept (not a string)."""
    role = msg.get("role") if isinstance(msg, dict) else None
    return role if isinstance(role, str) else None


def _is_openai_turn_start(msg: Any) -> bool:
    return _role(msg) == "user"


def _is_anthropic_turn_start(msg: Any) -> bool:
    if _role(msg) != "user":
        return False
    content = msg.get("content")
    return not (
        isinstance(content, list)
        and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
    )


def _is_response_message(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type", "message") == "message"


def _is_responses_turn_start(item: Any) -> bool:
    return _is_response_message(item) and _role(item) == "user"


def _is_responses_pinned(item: Any) -> bool:
    return _is_response_message(item) and _role(item) in _PINNED_ROLES


def _units(
    movable: Sequence[int], messages: list[Message], is_start: Callable[[Any], bool]
) -> list[list[int]]:
    """Split message indices into eviction units: [head?, turn, turn, ..., newest turn]."""
    units: list[list[int]] = []
    for i in movable:
        if not units or is_start(messages[i]):
            units.append([])
        units[-1].append(i)
    return units


def _trim(
    messages: list[Message],
    costs: Sequence[int],
    grid: Sequence[int] | None,
    budget: int,
    fixed: int,
    is_start: Callable[[Any], bool],
    pinned: Callable[[Any], bool],
    step: int,
) -> tuple[list[int], int, int] | None:
    """Indices to keep, their total tokens with fixed, and where the newest turn begins;
    None when everything fits."""
    pins: list[int] = []
    movable: list[int] = []
    for i, msg in enumerate(messages):
        (pins if pinned(msg) else movable).append(i)
    units = _units(movable, messages, is_start)
    newest = units.pop() if units else []
    tokens = fixed + sum(costs[i] for i in pins) + sum(costs[i] for i in newest)
    if tokens > budget:
        raise ContextTooLarge(tokens, budget)
    unit_costs: dict[int, int] = {}
    fewest = 0  # the fewest oldest units that must go
    for u in range(len(units) - 1, -1, -1):
        unit_costs[u] = sum(costs[i] for i in units[u])
        if tokens + unit_costs[u] > budget:
            fewest = u + 1
            break
        tokens += unit_costs[u]
    else:
        return None
    cut = fewest
    if step > 0:  # the grid: every unit's size (without a ``grid``, every unit's cost)
        sizes = costs if grid is None else grid
        cut = grid_cut([sum(sizes[i] for i in unit) for unit in units], fewest, step)
    tokens -= sum(unit_costs[u] for u in range(fewest, cut))
    evicted = {i for unit in units[:cut] for i in unit}
    keep = [i for i in range(len(messages)) if i not in evicted]
    return keep, tokens, newest[0] if newest else len(messages)


def _costs(messages: list[Message], cost: Costs) -> Sequence[int]:
    if callable(cost):
        return _Memo(messages, cost)
    if len(cost) != len(messages):
        raise ValueError("one cost per message")
    return cost


class _Memo(Sequence[int]):
    """Per-message costs from a cost function, each computed when first read."""

    def __init__(self, messages: list[Message], cost: Cost) -> None:
        self._messages, self._cost = messages, cost
        self._known: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._messages)

    @overload
    def __getitem__(self, i: int) -> int: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[int]: ...

    def __getitem__(self, i: int | slice) -> int | Sequence[int]:
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        found = self._known.get(i)
        if found is None:
            found = self._known[i] = self._cost(self._messages[i])
        return found


def _tool_call_ids(msg: Any) -> set[Any]:
    calls = msg.get("tool_calls") if _role(msg) == "assistant" else None
    if not isinstance(calls, list):
        return set()
    return {c.get("id") for c in calls if isinstance(c, dict)}


def _drop_orphans(
    messages: list[Message],
    keep: list[int],
    newest_start: int,
    announces: Callable[[Any], set[Any]],
    answers: Callable[[Any], Any],
) -> list[int]:
    """Drop kept answers (tool results) whose call no kept message announced.

    The newest turn is forwarded as the client wrote it: trimming never orphans an answer
    there, and dropping part of it would change the question being asked.
    """
    announced: set[Any] = set()
    result: list[int] = []
    for i in keep:
        msg = messages[i]
        announced |= announces(msg)
        call_id = answers(msg)
        orphan = call_id is not None and call_id not in announced
        if i >= newest_start or not orphan:
            result.append(i)
    return result


def _tool_answer(msg: Any) -> Any:
    return msg.get("tool_call_id", _NO_ID) if _role(msg) == "tool" else None


_NO_ID = object()  # a tool message without tool_call_id never matches an announced call


def trim_openai(
    messages: list[Message],
    budget: int,
    cost: Costs,
    fixed: int,
    *,
    step: int = 0,
    grid: Sequence[int] | None = None,
) -> TrimResult:
    """Fit an OpenAI chat ``messages`` list into ``budget`` tokens (see module docstring)."""
    costs = _costs(messages, cost)
    pinned: Callable[[Any], bool] = lambda m: _role(m) in _PINNED_ROLES  # noqa: E731
    found = _trim(messages, costs, grid, budget, fixed, _is_openai_turn_start, pinned, step)
    if found is None:
        return _untouched(messages, costs, fixed)
    keep, _, newest_start = found
    kept = _drop_orphans(messages, keep, newest_start, _tool_call_ids, _tool_answer)
    return _kept(messages, kept, fixed + sum(costs[i] for i in kept))


def _function_call_ids(item: Any) -> set[Any]:
    if isinstance(item, dict) and item.get("type") == "function_call":
        return {item.get("call_id")}
    return set()


def _function_answer(item: Any) -> Any:
    if isinstance(item, dict) and item.get("type") == "function_call_output":
        return item.get("call_id", _NO_ID)
    return None


def trim_responses(
    items: list[Message],
    budget: int,
    cost: Costs,
    fixed: int,
    *,
    step: int = 0,
    grid: Sequence[int] | None = None,
) -> TrimResult:
    """Fit a Responses API ``input`` array into ``budget`` tokens (see module docstring)."""
    costs = _costs(items, cost)
    start, pinned = _is_responses_turn_start, _is_responses_pinned
    found = _trim(items, costs, grid, budget, fixed, start, pinned, step)
    if found is None:
        return _untouched(items, costs, fixed)
    keep, _, newest_start = found
    kept = _drop_orphans(items, keep, newest_start, _function_call_ids, _function_answer)
    return _kept(items, kept, fixed + sum(costs[i] for i in kept))


def trim_anthropic(
    messages: list[Message],
    budget: int,
    cost: Costs,
    fixed: int,
    *,
    step: int = 0,
    grid: Sequence[int] | None = None,
) -> TrimResult:
    """Fit an Anthropic ``messages`` list into ``budget`` tokens (see module docstring).

    The result is a suffix of the input that starts at a user turn, so alternation and every
    tool_result -> previous tool_use link of a valid input are preserved.
    """
    costs = _costs(messages, cost)
    found = _trim(
        messages, costs, grid, budget, fixed, _is_anthropic_turn_start, lambda m: False, step
    )
    if found is None:
        return _untouched(messages, costs, fixed)
    keep, tokens, _ = found
    first = keep[0] if keep else len(messages)
    last_kept_mark = max((i for i in keep if _has_breakpoint(messages[i])), default=None)
    rewrite = 0
    if last_kept_mark is not None:
        rewrite = fixed + sum(costs[i] for i in range(first, last_kept_mark + 1))
    return TrimResult(
        [messages[i] for i in keep],
        len(messages) - len(keep),
        tokens,
        breakpoints_dropped=sum(1 for msg in messages[:first] if _has_breakpoint(msg)),
        cache_rewrite_tokens=rewrite,
        kept=tuple(keep),
    )


def _untouched(messages: list[Message], costs: Sequence[int], fixed: int) -> TrimResult:
    """Everything fits: the caller's own list, every cost read."""
    return TrimResult(messages, 0, fixed + sum(costs), kept=tuple(range(len(messages))))


def _kept(messages: list[Message], kept: list[int], tokens: int) -> TrimResult:
    return TrimResult(
        [messages[i] for i in kept], len(messages) - len(kept), tokens, kept=tuple(kept)
    )


def _has_breakpoint(msg: Any) -> bool:
    content = msg.get("content") if isinstance(msg, dict) else None
    if not isinstance(content, list):
        return False
    return any(isinstance(b, dict) and b.get("cache_control") is not None for b in content)
