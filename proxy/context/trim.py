"""Trim a messages array to a token budget by evicting whole turns, oldest first (pure).

A turn starts at a user message (Anthropic: a user message without ``tool_result`` blocks,
since those answer the previous assistant message) and runs to the next turn start. So a user
message, its assistant replies and every tool exchange in between (assistant ``tool_calls``
with their ``role: tool`` results; Anthropic ``tool_use`` with the following ``tool_result``)
leave together. Messages before the first turn start form the oldest unit.

Always kept: system/developer messages anywhere (OpenAI), and the newest turn. When those alone
(plus ``fixed``) exceed the budget, ``ContextTooLarge`` says by how much; nothing is cut from
inside a message. When everything fits, the caller's own list object comes back untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]
Cost = Callable[[Message], int]

_PINNED_ROLES = frozenset({"system", "developer"})


@dataclass(frozen=True)
class TrimResult:
    messages: list[Message]
    removed: int
    tokens: int  # fixed + the cost of the kept messages


class ContextTooLarge(Exception):
    """The pinned messages and the newest turn alone need more than the budget."""

    def __init__(self, needed: int, budget: int) -> None:
        super().__init__(f"input needs {needed} tokens, budget is {budget}")
        self.needed = needed
        self.budget = budget


def _role(msg: Any) -> Any:
    return msg.get("role") if isinstance(msg, dict) else None


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
    costs: list[int],
    budget: int,
    fixed: int,
    is_start: Callable[[Any], bool],
    pinned: Callable[[Any], bool],
) -> tuple[list[int], int, int]:
    """Indices to keep, their total tokens with fixed, and where the newest turn begins."""
    movable = [i for i, m in enumerate(messages) if not pinned(m)]
    units = _units(movable, messages, is_start)
    newest = units.pop() if units else []
    total = fixed + sum(costs)
    evicted: set[int] = set()
    for unit in units:
        if total <= budget:
            break
        total -= sum(costs[i] for i in unit)
        evicted.update(unit)
    if total > budget:
        raise ContextTooLarge(total, budget)
    keep = [i for i in range(len(messages)) if i not in evicted]
    return keep, total, newest[0] if newest else len(messages)


def _tool_call_ids(msg: Any) -> set[Any]:
    calls = msg.get("tool_calls") if _role(msg) == "assistant" else None
    if not isinstance(calls, list):
        return set()
    return {c.get("id") for c in calls if isinstance(c, dict)}


def _drop_orphan_tools(messages: list[Message], keep: list[int], newest_start: int) -> list[int]:
    """Drop kept ``role: tool`` messages whose ``tool_call_id`` no kept assistant announced.

    The newest turn is forwarded as the client wrote it: trimming never orphans a tool message
    there, and dropping part of it would change the question being asked.
    """
    announced: set[Any] = set()
    result: list[int] = []
    for i in keep:
        msg = messages[i]
        announced |= _tool_call_ids(msg)
        orphan = _role(msg) == "tool" and msg.get("tool_call_id") not in announced
        if i >= newest_start or not orphan:
            result.append(i)
    return result


def trim_openai(messages: list[Message], budget: int, cost: Cost, fixed: int) -> TrimResult:
    """Fit an OpenAI chat ``messages`` list into ``budget`` tokens (see module docstring)."""
    costs = [cost(m) for m in messages]
    if fixed + sum(costs) <= budget:
        return TrimResult(messages, 0, fixed + sum(costs))
    keep, _, newest_start = _trim(
        messages, costs, budget, fixed, _is_openai_turn_start, lambda m: _role(m) in _PINNED_ROLES
    )
    kept = _drop_orphan_tools(messages, keep, newest_start)
    tokens = fixed + sum(costs[i] for i in kept)
    return TrimResult([messages[i] for i in kept], len(messages) - len(kept), tokens)


def trim_anthropic(messages: list[Message], budget: int, cost: Cost, fixed: int) -> TrimResult:
    """Fit an Anthropic ``messages`` list into ``budget`` tokens (see module docstring).

    The result is a suffix of the input that starts at a user turn, so alternation and every
    tool_result -> previous tool_use link of a valid input are preserved.
    """
    costs = [cost(m) for m in messages]
    if fixed + sum(costs) <= budget:
        return TrimResult(messages, 0, fixed + sum(costs))
    keep, tokens, _ = _trim(
        messages, costs, budget, fixed, _is_anthropic_turn_start, lambda m: False
    )
    return TrimResult([messages[i] for i in keep], len(messages) - len(keep), tokens)
