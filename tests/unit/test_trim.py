"""Turn-based trimming of messages arrays to a token budget (proxy.context.trim)."""

from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate, pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.context.trim import ContextTooLarge, TrimResult, trim_anthropic, trim_openai


def cost(msg: dict[str, Any]) -> int:
    return msg["_t"]


def m(role: str, t: int = 10, **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": f"{role} {t}", "_t": t, **extra}


def call(*ids: str, t: int = 10) -> dict[str, Any]:
    calls = [
        {"id": i, "type": "function", "function": {"name": "f", "arguments": "{}"}} for i in ids
    ]
    return {"role": "assistant", "content": None, "tool_calls": calls, "_t": t}


def result(call_id: str, t: int = 10) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": "r", "_t": t}


def total(messages: list[dict[str, Any]]) -> int:
    return sum(cost(x) for x in messages)


# ---------------------------------------------------------------- OpenAI, table-driven


def test_fitting_input_is_returned_as_the_same_list_object() -> None:
    messages = [m("system"), m("user"), call("a"), result("a")]  # ends with a tool result
    out = trim_openai(messages, budget=45, cost=cost, fixed=5)
    assert TrimResult(messages, 0, 45) == out
    assert out.messages is messages


def test_oldest_turn_is_evicted_first_and_system_kept() -> None:
    sys_, u1, a1, u2, a2, u3 = (
        m("system"),
        m("user"),
        m("assistant"),
        m("user"),
        m("assistant"),
        m("user"),
    )
    out = trim_openai([sys_, u1, a1, u2, a2, u3], budget=40, cost=cost, fixed=0)
    assert [sys_, u2, a2, u3] == out.messages
    assert (2, 40) == (out.removed, out.tokens)


def test_eviction_stops_as_soon_as_it_fits() -> None:
    msgs = [m("user", 50), m("assistant", 50), m("user", 5), m("assistant", 5), m("user", 5)]
    out = trim_openai(msgs, budget=20, cost=cost, fixed=3)
    assert msgs[2:] == out.messages
    assert 18 == out.tokens


def test_tool_calls_leave_with_their_results_and_their_turn() -> None:
    old = [m("user"), call("a", "b"), result("a"), result("b"), m("assistant")]
    new = [m("user"), call("c"), result("c")]
    out = trim_openai([m("developer"), *old, *new], budget=40, cost=cost, fixed=0)
    assert ["developer", "user", "assistant", "tool"] == [x["role"] for x in out.messages]
    assert new == out.messages[1:]


def test_system_message_in_the_middle_is_kept_when_its_turn_goes() -> None:
    mid = m("system", 1)
    msgs = [m("user"), mid, m("assistant"), m("user"), m("assistant")]
    out = trim_openai(msgs, budget=21, cost=cost, fixed=0)
    assert [mid, msgs[3], msgs[4]] == out.messages


def test_orphan_tool_messages_at_the_head_are_dropped() -> None:
    msgs = [m("system"), result("gone"), m("assistant"), m("user"), m("assistant"), m("user")]
    out = trim_openai(msgs, budget=40, cost=cost, fixed=0)
    assert [msgs[0], *msgs[3:]] == out.messages


def test_tool_result_separated_from_its_call_by_a_user_message_is_not_orphaned() -> None:
    # Invalid input ordering: the result sits in the next turn; trimming must not keep it alone.
    msgs = [m("user"), call("x"), m("user"), result("x"), m("assistant"), m("user")]
    out = trim_openai(msgs, budget=40, cost=cost, fixed=0)
    assert [msgs[2], msgs[4], msgs[5]] == out.messages
    assert (3, 30) == (out.removed, out.tokens)


def test_newest_turn_with_long_tool_loop_is_kept_whole() -> None:
    newest = [m("user", 1), call("a", t=1), result("a", t=1), call("b", t=1), result("b", t=1)]
    out = trim_openai([m("user", 50), m("assistant", 50), *newest], budget=5, cost=cost, fixed=0)
    assert newest == out.messages


@pytest.mark.parametrize(
    ("messages", "fixed", "budget", "needed"),
    [
        ([m("system", 10), m("user", 10), m("assistant", 10), m("user", 30)], 5, 40, 45),
        ([m("user", 1)], 100, 50, 101),
        ([m("system", 60)], 0, 50, 60),
        ([m("user", 10), call("a", t=20), result("a", t=30)], 0, 59, 60),
    ],
)
def test_too_large_when_pinned_and_newest_turn_alone_exceed_budget(
    messages: list[dict[str, Any]], fixed: int, budget: int, needed: int
) -> None:
    with pytest.raises(ContextTooLarge) as info:
        trim_openai(messages, budget=budget, cost=cost, fixed=fixed)
    assert (needed, budget) == (info.value.needed, info.value.budget)


def test_empty_messages_fit_or_report_fixed() -> None:
    empty: list[dict[str, Any]] = []
    assert trim_openai(empty, 10, cost, 3).messages is empty
    with pytest.raises(ContextTooLarge):
        trim_openai(empty, 2, cost, 3)


# ---------------------------------------------------------------- Anthropic, table-driven


def use(*ids: str, t: int = 10) -> dict[str, Any]:
    blocks = [{"type": "tool_use", "id": i, "name": "f", "input": {}} for i in ids]
    return {"role": "assistant", "content": blocks, "_t": t}


def answer(*ids: str, t: int = 10, text: bool = False) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "tool_result", "tool_use_id": i, "content": "ok"} for i in ids
    ]
    if text:
        blocks.append({"type": "text", "text": "also this"})
    return {"role": "user", "content": blocks, "_t": t}


def test_anthropic_fitting_input_is_the_same_list_object() -> None:
    messages = [m("user"), use("a"), answer("a")]
    out = trim_anthropic(messages, budget=30, cost=cost, fixed=0)
    assert out.messages is messages
    assert (0, 30) == (out.removed, out.tokens)


def test_anthropic_tool_result_user_message_does_not_start_a_turn() -> None:
    turn1 = [m("user"), use("a"), answer("a", text=True), m("assistant")]
    turn2 = [m("user"), use("b"), answer("b")]
    out = trim_anthropic([*turn1, *turn2], budget=30, cost=cost, fixed=0)
    assert turn2 == out.messages
    assert 4 == out.removed


def test_anthropic_leading_assistant_is_evicted_before_turns() -> None:
    msgs = [m("assistant"), m("user"), m("assistant"), m("user")]
    out = trim_anthropic(msgs, budget=30, cost=cost, fixed=0)
    assert msgs[1:] == out.messages


def test_anthropic_newest_turn_alone_too_large() -> None:
    with pytest.raises(ContextTooLarge) as info:
        trim_anthropic([m("user"), m("assistant"), m("user", 20)], budget=25, cost=cost, fixed=7)
    assert (27, 25) == (info.value.needed, info.value.budget)


# ---------------------------------------------------------------- property tests

COST = st.integers(0, 40)


@st.composite
def openai_conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Valid chat histories: pinned prompts, turns with tool exchanges, a newest turn."""
    ids = iter(range(10_000))
    msgs = [
        m(draw(st.sampled_from(["system", "developer"])), draw(COST))
        for _ in range(draw(st.integers(0, 2)))
    ]
    for _ in range(draw(st.integers(1, 6))):
        msgs.append(m("user", draw(COST)))
        for _ in range(draw(st.integers(0, 3))):
            step = draw(st.sampled_from(["text", "tools", "system"]))
            if step == "text":
                msgs.append(m("assistant", draw(COST)))
            elif step == "system":
                msgs.append(m("system", draw(COST)))
            else:
                call_ids = [f"c{next(ids)}" for _ in range(draw(st.integers(1, 3)))]
                msgs.append(call(*call_ids, t=draw(COST)))
                msgs += [result(i, t=draw(COST)) for i in draw(st.permutations(call_ids))]
    return msgs


@st.composite
def random_openai_messages(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Arbitrary role sequences, including invalid ones (orphans, results before calls)."""
    out = []
    for _ in range(draw(st.integers(0, 12))):
        role = draw(st.sampled_from(["system", "developer", "user", "assistant", "tool"]))
        ident = draw(st.sampled_from("abc"))
        if role == "tool":
            out.append(result(ident, t=draw(COST)))
        elif role == "assistant" and draw(st.booleans()):
            out.append(call(ident, t=draw(COST)))
        else:
            out.append(m(role, draw(COST)))
    return out


def is_subsequence(small: list[Any], big: list[Any]) -> bool:
    it = iter(big)
    return all(any(x is y for y in it) for x in small)


def newest_turn(messages: list[dict[str, Any]], starts: Any) -> list[dict[str, Any]]:
    idx = [i for i, x in enumerate(messages) if starts(x)]
    tail = messages[idx[-1] :] if idx else messages
    return [x for x in tail if x["role"] not in ("system", "developer")]


def announced_before(out: list[dict[str, Any]], i: int) -> set[str]:
    return {c["id"] for x in out[:i] for c in (x.get("tool_calls") or [])}


def check_common_openai(
    messages: list[dict[str, Any]], budget: int, fixed: int
) -> tuple[TrimResult | None, list[dict[str, Any]]]:
    pinned = [x for x in messages if x["role"] in ("system", "developer")]
    newest = newest_turn(messages, lambda x: x["role"] == "user")
    try:
        out = trim_openai(messages, budget, cost, fixed)
    except ContextTooLarge as exc:
        assert exc.needed == fixed + total(pinned) + total(newest)
        assert exc.needed > budget == exc.budget
        return None, newest
    assert out.tokens <= budget
    assert out.tokens == fixed + total(out.messages)
    assert out.removed == len(messages) - len(out.messages)
    assert is_subsequence(out.messages, messages)
    assert all(any(p is x for x in out.messages) for p in pinned)
    assert all(any(n is x for x in out.messages) for n in newest)
    if fixed + total(messages) <= budget:
        assert out.messages is messages and out.removed == 0
    return out, newest


@settings(max_examples=400)
@given(openai_conversations(), st.integers(0, 600), st.integers(0, 30))
def test_openai_trim_properties_on_valid_conversations(
    messages: list[dict[str, Any]], budget: int, fixed: int
) -> None:
    out, _ = check_common_openai(messages, budget, fixed)
    if out is None:
        return
    kept = out.messages
    for i, x in enumerate(kept):  # no orphan tool message
        if x["role"] == "tool":
            assert x["tool_call_id"] in announced_before(kept, i)
    for x in kept:  # an assistant's tool_calls keep every one of their results
        for c in x.get("tool_calls") or []:
            assert any(r.get("tool_call_id") == c["id"] for r in kept if r["role"] == "tool")
    if out.removed:  # minimal: the newest evicted turn would not have fit
        turn_starts = [i for i, x in enumerate(messages) if x["role"] == "user"]
        first_kept = next(i for i in turn_starts if any(messages[i] is k for k in kept))
        prev = max(i for i in turn_starts if i < first_kept)
        back = [x for x in messages[prev:first_kept] if x["role"] not in ("system", "developer")]
        assert out.tokens + total(back) > budget


@settings(max_examples=400)
@given(random_openai_messages(), st.integers(0, 300), st.integers(0, 30))
def test_openai_trim_properties_on_arbitrary_role_sequences(
    messages: list[dict[str, Any]], budget: int, fixed: int
) -> None:
    out, newest = check_common_openai(messages, budget, fixed)
    if out is None or out.messages is messages:
        return
    for i, x in enumerate(out.messages):
        if x["role"] == "tool" and not any(x is n for n in newest):
            assert x["tool_call_id"] in announced_before(out.messages, i)


@st.composite
def anthropic_conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Valid alternating histories; tool_result answers the immediately previous tool_use."""
    ids = iter(range(10_000))
    msgs: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 6))):
        msgs.append(m("user", draw(COST)))
        for _ in range(draw(st.integers(0, 3))):
            if draw(st.booleans()):
                use_ids = [f"t{next(ids)}" for _ in range(draw(st.integers(1, 3)))]
                msgs.append(use(*use_ids, t=draw(COST)))
                msgs.append(answer(*use_ids, t=draw(COST), text=draw(st.booleans())))
        msgs.append(m("assistant", draw(COST)))
    if draw(st.booleans()):
        msgs.append(m("user", draw(COST)))  # the newest turn awaits its answer
    return msgs


def is_anthropic_turn_start(x: dict[str, Any]) -> bool:
    content = x["content"]
    return x["role"] == "user" and not (
        isinstance(content, list) and any(b["type"] == "tool_result" for b in content)
    )


@settings(max_examples=400)
@given(anthropic_conversations(), st.integers(0, 800), st.integers(0, 30))
def test_anthropic_trim_properties(messages: list[dict[str, Any]], budget: int, fixed: int) -> None:
    newest = newest_turn(messages, is_anthropic_turn_start)
    try:
        out = trim_anthropic(messages, budget, cost, fixed)
    except ContextTooLarge as exc:
        assert exc.needed == fixed + total(newest) > budget
        return
    kept = out.messages
    assert out.tokens == fixed + total(kept) <= budget
    assert kept == messages[len(messages) - len(kept) :]  # a suffix, so order is preserved
    assert all(any(n is x for x in kept) for n in newest)
    assert is_anthropic_turn_start(kept[0])
    assert all(a["role"] != b["role"] for a, b in pairwise(kept))
    for prev, x in pairwise(kept):
        results = [
            b["tool_use_id"]
            for b in x["content"]
            if isinstance(x["content"], list) and b["type"] == "tool_result"
        ]
        uses = {
            b["id"]
            for b in prev["content"]
            if isinstance(prev["content"], list) and b["type"] == "tool_use"
        }
        assert set(results) <= uses
    if fixed + total(messages) <= budget:
        assert kept is messages


# ---------------------------------------------------------------- stepped (cache-stable) cuts

from proxy.context.stepped import choose_cut, grid_cut, stable_step  # noqa: E402
from proxy.context.trim import trim_responses  # noqa: E402


@pytest.mark.parametrize(
    ("costs", "need", "step", "cut"),
    [
        ([10, 10, 10, 10], 15, 0, 2),  # turn-wise: the fewest turns
        ([10, 10, 10, 10], 15, 25, 3),  # grid cut at C >= 25
        ([10, 10, 10, 10], 5, 25, 3),  # even a small need jumps to the first grid cut
        ([10, 10, 10, 10], 31, 25, 4),  # k=2: C >= 50 is past the end: evict all
        ([100, 10], 50, 10, 1),  # one big turn satisfies several grid points at once
        ([10, 10], 0, 5, 0),
        ([10, 10], 21, 5, None),
    ],
)
def test_choose_cut(costs: list[int], need: int, step: int, cut: int | None) -> None:
    assert cut == choose_cut(costs, need, step)


@settings(max_examples=300)
@given(st.lists(st.integers(0, 50), max_size=12), st.integers(-5, 700), st.integers(0, 60))
def test_grid_cut_on_the_costs_is_choose_cut(costs: list[int], need: int, step: int) -> None:
    """grid_cut takes the fewest units that must go (known from the newest turns alone) where
    choose_cut takes the tokens to shed: on the same grid they cut at the same place."""
    sums = [0, *accumulate(costs)]
    if need > sums[-1]:
        assert choose_cut(costs, need, step) is None
        return
    fewest = bisect_left(sums, need) if need > 0 else 0
    assert choose_cut(costs, need, step) == grid_cut(costs, fewest, step)


def test_only_the_turns_the_decision_needs_are_counted() -> None:
    """2,000 old turns, a budget of ~50: the pinned system prompt, the newest turn and the
    turns that fit are counted; the ones evicted unseen are not (their grid sizes are known)."""
    msgs = [m("system", 50)] + [m(("user", "assistant")[i % 2], 10) for i in range(2000)]
    msgs.append(m("user", 10))
    counted: list[int] = []

    def spy(msg: dict[str, Any]) -> int:
        counted.append(1)
        return cost(msg)

    grid = [10 * len(str(x["content"])) for x in msgs]
    out = trim_openai(msgs, 563, spy, 3, step=1000, grid=grid)
    assert len(counted) < 100
    assert out.tokens == 3 + total(out.messages) <= 563
    full = trim_openai(msgs, 563, [cost(x) for x in msgs], 3, step=1000, grid=grid)
    assert full == out and full.kept == out.kept
    assert [msgs[i] for i in out.kept] == out.messages


def test_stable_step_is_a_grid_point_that_ignores_small_budget_changes() -> None:
    assert 0 == stable_step(1000, 1.0)
    steps = {stable_step(b, 0.7) for b in range(10_000, 10_400, 7)}
    assert 1 == len(steps)
    (step,) = steps
    assert 0.3 * 10_000 / 2**0.25 < step <= 0.3 * 10_000


def conversation_turns(n: int) -> list[dict[str, Any]]:
    """A system prompt and n user/assistant turns of varied cost, then a new question."""
    msgs = [m("system", 50)]
    for i in range(n):
        msgs += [m("user", 20 + (i * 37) % 60), m("assistant", 80 + (i * 53) % 150)]
    return msgs


def test_stepped_trimming_keeps_the_same_prefix_across_consecutive_turns() -> None:
    """A growing conversation: the cut moves rarely, and after each move the kept part is
    back near share x budget; turn-wise trimming moves the cut on every request."""
    budget, share = 3000, 0.7
    step = stable_step(budget, share)
    cuts: list[int] = []
    turnwise: list[int] = []
    for turns in range(5, 120):
        msgs = [*conversation_turns(turns), m("user", 30)]
        out = trim_openai(msgs, budget, cost, fixed=10, step=step)
        assert out.tokens <= budget
        cuts.append(out.removed)
        turnwise.append(trim_openai(msgs, budget, cost, fixed=10).removed)
        if len(cuts) > 1 and cuts[-1] != cuts[-2] and cuts[-2] > 0:
            assert out.tokens <= share * budget + 2 * 230  # back near the share (+ unit sizes)
    moves = sum(1 for a, b in pairwise(cuts) if a != b)
    turnwise_moves = sum(1 for a, b in pairwise(turnwise) if a != b)
    trimmed = sum(1 for c in cuts if c > 0)
    assert moves * 4 <= trimmed  # a turn is ~190 tokens, a step ~860: ~4.5 turns per move
    assert turnwise_moves >= 0.9 * trimmed


@settings(max_examples=300)
@given(openai_conversations(), st.integers(0, 600), st.integers(0, 30), st.integers(1, 300))
def test_stepped_trim_properties(
    messages: list[dict[str, Any]], budget: int, fixed: int, step: int
) -> None:
    """Stepped trimming keeps every guarantee of turn-wise trimming except minimality."""
    pinned = [x for x in messages if x["role"] in ("system", "developer")]
    try:
        out = trim_openai(messages, budget, cost, fixed, step=step)
    except ContextTooLarge:
        return
    assert out.tokens == fixed + total(out.messages) <= budget
    assert is_subsequence(out.messages, messages)
    assert all(any(p is x for x in out.messages) for p in pinned)
    if fixed + total(messages) <= budget:
        assert out.messages is messages


def test_costs_may_be_given_as_a_list() -> None:
    msgs = [m("user"), m("assistant"), m("user")]
    assert trim_openai(msgs, 25, cost, 0) == trim_openai(msgs, 25, [10, 10, 10], 0)
    with pytest.raises(ValueError):
        trim_openai(msgs, 25, [10, 10], 0)


# ---------------------------------------------------------------- Responses API input


def item(kind: str, t: int = 10, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "_t": t, **extra}


def umsg(role: str = "user", t: int = 10) -> dict[str, Any]:
    return {"role": role, "content": "x", "_t": t}  # "type" omitted, as the SDK allows


def test_responses_keeps_function_calls_with_outputs_and_pins_system_items() -> None:
    old = [
        umsg(),
        item("reasoning", id="rs_1"),
        item("function_call", call_id="c1"),
        item("function_call_output", call_id="c1"),
        item("message", role="assistant"),
    ]
    dev = item("message", role="developer", t=5)
    new = [umsg(), item("function_call", call_id="c2"), item("function_call_output", call_id="c2")]
    out = trim_responses([dev, *old, *new], budget=40, cost=cost, fixed=0)
    assert [dev, *new] == out.messages
    assert (5, 35) == (out.removed, out.tokens)


def test_responses_orphan_outputs_at_the_head_are_dropped() -> None:
    items = [
        item("function_call_output", call_id="gone"),
        item("message", role="assistant"),
        umsg(),
        item("message", role="assistant"),
        umsg(),
    ]
    out = trim_responses(items, budget=30, cost=cost, fixed=0)
    assert items[2:] == out.messages


def test_responses_fitting_input_is_the_same_list() -> None:
    items = [umsg(), item("function_call", call_id="a"), item("function_call_output", call_id="a")]
    assert trim_responses(items, 30, cost, 0).messages is items


# ---------------------------------------------------------------- Anthropic cache_control


def marked(role: str, t: int = 10) -> dict[str, Any]:
    block = {"type": "text", "text": "doc", "cache_control": {"type": "ephemeral"}}
    return {"role": role, "content": [block], "_t": t}


def test_anthropic_trim_counts_dropped_breakpoints_and_the_prefix_to_rewrite() -> None:
    msgs = [
        marked("user", 30),
        m("assistant"),
        m("user"),
        m("assistant"),
        marked("user", 10),
        m("assistant"),
        m("user"),
    ]
    out = trim_anthropic(msgs, budget=55, cost=cost, fixed=5)
    assert msgs[2:] == out.messages
    assert (1, 5 + 10 + 10 + 10) == (out.breakpoints_dropped, out.cache_rewrite_tokens)
    assert [b for b in out.messages[2]["content"]] == msgs[4]["content"]  # marker untouched


def test_anthropic_fitting_request_reports_no_cache_cost() -> None:
    msgs = [marked("user"), m("assistant"), m("user")]
    assert TrimResult(msgs, 0, 30) == trim_anthropic(msgs, 30, cost, 0)
