"""Budgets and the fit decision: untouched when it may fit, trimmed to the budget otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.config import Context
from proxy.context.budget import Budget, BudgetLimit, input_budget, requested_output
from proxy.context.corpus import LANGUAGES, conversation
from proxy.context.correction import (
    PRIORS,
    Correction,
    CorrectionTable,
    CountMethod,
    Measured,
)
from proxy.context.counting import Api, raw_count
from proxy.context.fit import fit_request, fit_retry
from proxy.context.overflow import ContextOverflow, OverflowSource, retry_budget
from proxy.context.scripts import ScriptClass
from proxy.context.trim import ContextTooLarge
from proxy.models import DEFAULT_REGISTRY, ModelSpec

SMALL = DEFAULT_REGISTRY.extended({"small-model": ModelSpec(window=2048)})


@pytest.mark.parametrize(
    ("model", "requested", "ctx", "expected"),
    [
        ("small-model", None, Context(), Budget(1280, 2048, 512, BudgetLimit.WINDOW)),
        ("small-model", 100, Context(), Budget(1692, 2048, 100, BudgetLimit.WINDOW)),
        ("small-model", 4000, Context(), Budget(0, 2048, 4000, BudgetLimit.WINDOW)),
        (
            "gpt-4o",
            None,
            Context(),
            Budget(128_000 - 4096 - 256, 128_000, 4096, BudgetLimit.WINDOW),
        ),
        (
            "gpt-5",
            None,
            Context(),
            Budget(272_000 - 256, 400_000, 4096, BudgetLimit.MODEL_INPUT_CAP),
        ),
        (
            "gpt-4o",
            None,
            Context(max_input_tokens=5000),
            Budget(5000, 128_000, 4096, BudgetLimit.ROUTE_CAP),
        ),
    ],
)
def test_input_budget(model: str, requested: int | None, ctx: Context, expected: Budget) -> None:
    assert expected == input_budget(SMALL.facts(model), ctx, requested)


def test_unknown_window_and_no_cap_has_no_budget() -> None:
    assert None is input_budget(SMALL.facts("llama-3.1-70b"), Context(), None)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"max_tokens": 10}, 10),
        ({"max_completion_tokens": 20, "max_tokens": 10}, 20),
        ({"max_output_tokens": 30}, 30),
        ({"max_tokens": True}, None),
        ({}, None),
    ],
)
def test_requested_output(body: dict[str, Any], expected: int | None) -> None:
    assert expected == requested_output(body)


PRIOR_TABLE = CorrectionTable("up", "small-model", {s: Correction(PRIORS[s]) for s in ScriptClass})


def prior_bounds(data: dict[str, Any], api: Api = Api.CHAT) -> Any:
    raw = raw_count(data, api, SMALL)
    return raw, Correction(PRIORS[raw.script]).bounds(raw.tokens)


def fit(data: dict[str, Any], budget: Budget, table: CorrectionTable | None = PRIOR_TABLE) -> Any:
    return fit_request(data, Api.CHAT, table, budget, 0.7, SMALL)


def test_a_conversation_that_may_fit_goes_out_untouched() -> None:
    data = {"model": "small-model", "messages": conversation("en", 24)}
    raw, bounds = prior_bounds(data)
    budget = input_budget(SMALL.facts("small-model"), Context(), None)
    assert budget is not None and bounds.low <= budget.tokens < raw.tokens  # over by raw count
    out = fit(data, budget)
    assert (None, bounds, 0, raw) == (out.body, out.bounds, out.removed, out.raw)
    assert len(data["messages"]) == out.counted  # a body that fits is counted to the end


def test_a_conversation_over_even_by_the_low_bound_is_trimmed_to_fit_it() -> None:
    data = {"model": "small-model", "messages": conversation("ko", 40)}
    raw, bounds = prior_bounds(data)
    assert ScriptClass.HANGUL == raw.script
    budget = input_budget(SMALL.facts("small-model"), Context(), None)
    assert budget is not None and bounds.low > budget.tokens
    out = fit(data, budget)
    assert out.body is not None and out.removed > 0
    assert out.bounds.low <= budget.tokens
    assert out.body["messages"] == data["messages"][out.removed :]
    assert raw_count(out.body, Api.CHAT, SMALL) == out.raw
    assert out.raw.tokens == out.bounds.raw


def test_gpt5_over_272k_input_is_trimmed_under_the_cap() -> None:
    turn = "word " * 2000
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": turn} for i in range(141)
    ]
    data = {"model": "gpt-5", "messages": messages}
    raw = raw_count(data, Api.CHAT)
    assert raw.exact and raw.tokens > 272_000
    budget = input_budget(DEFAULT_REGISTRY.facts("gpt-5"), Context(), None)
    assert budget is not None
    out = fit_request(data, Api.CHAT, None, budget, 0.7)
    assert out.body is not None
    assert out.bounds.raw == raw_count(out.body, Api.CHAT).tokens <= budget.tokens < 272_000
    assert CountMethod.EXACT == out.bounds.method
    assert not out.byte_grid and out.counted == len(messages)  # 1.4 MB: under the bound


def test_too_large_is_reported_in_provider_tokens() -> None:
    data = {"model": "small-model", "messages": [{"role": "user", "content": "word " * 5000}]}
    _, bounds = prior_bounds(data)
    budget = input_budget(SMALL.facts("small-model"), Context(), None)
    assert budget is not None
    with pytest.raises(ContextTooLarge) as info:
        fit(data, budget)
    assert (bounds.low, 1280) == (info.value.needed, info.value.budget)


def test_error_driven_retry_trims_to_the_servers_figures() -> None:
    """The server counted 1.3x the proxy's raw count; the retry body fits its window."""
    data = {"model": "small-model", "messages": conversation("en", 24)}
    raw, bounds = prior_bounds(data)
    server_count = round(raw.tokens * 1.3)
    rec = ContextOverflow(OverflowSource.LLAMA_CPP, 2048, server_count, None, server_count)
    retry = retry_budget(rec, sent_estimate=raw.tokens, reserve=None)
    assert retry is not None
    out = fit_retry(data, Api.CHAT, raw, Measured(bounds, None), retry, 0.7, SMALL)
    assert out.body is not None
    assert raw_count(out.body, Api.CHAT, SMALL) == out.raw
    assert out.raw.tokens * 1.3 <= 2048 - 512


# ---------------------------------------------------------------- the retry loop, end to end

import aiohttp  # noqa: E402

from proxy.context.overflow import parse_overflow  # noqa: E402
from proxy.fake_upstream import FakeUpstream, prompt_tokens  # noqa: E402


@pytest.mark.parametrize(
    ("flavour", "path", "api"),
    [
        ("openai", "/v1/chat/completions", Api.CHAT),
        ("llama", "/v1/chat/completions", Api.CHAT),
        ("vllm", "/v1/chat/completions", Api.CHAT),
        ("openai", "/v1/messages", Api.MESSAGES),
    ],
)
async def test_over_the_window_by_the_servers_count_ends_in_200_after_one_retry(
    aiohttp_server: Any, flavour: str, path: str, api: Api
) -> None:
    """The proxy's estimate says it may fit; the server (the fake, its own tokenizer) says
    400; its figures give the retry budget; the trimmed retry is accepted."""
    fake = FakeUpstream(context_windows={"small-model": 2048}, context_flavour=flavour)  # type: ignore[arg-type]
    server = await aiohttp_server(fake.make_app())
    data: dict[str, Any] = {
        "model": "small-model",
        "max_tokens": 50,
        "messages": conversation("en", 40),
    }
    raw, bounds = prior_bounds(data, api)
    budget = input_budget(SMALL.facts("small-model"), Context(), requested_output(data))
    assert budget is not None and bounds.low <= budget.tokens  # sent as is
    assert prompt_tokens(data) > 2048
    async with aiohttp.ClientSession() as session:
        async with session.post(server.make_url(path), json=data) as resp:
            record = parse_overflow(resp.status, await resp.read())
        assert record is not None
        retry = retry_budget(
            record, sent_estimate=raw.tokens, reserve=requested_output(data), known_window=2048
        )
        assert retry is not None
        out = fit_retry(data, api, raw, Measured(bounds, None), retry, 0.7, SMALL)
        assert out.body is not None and out.removed > 0
        async with session.post(server.make_url(path), json=out.body) as resp:
            assert 200 == resp.status


# ---------------------------------------------------------------- counting only what decides

from proxy.context import counting  # noqa: E402
from proxy.context.fit import Refused  # noqa: E402


def long_history(n: int, model: str, newest: str = "And now?") -> dict[str, Any]:
    msgs = [{"role": "system", "content": "Be brief."}]
    for turn in conversation("en", n // 2, seed=7)[: n - 1]:
        msgs.append(turn)
    msgs.append({"role": "user", "content": newest})
    return {"model": model, "messages": msgs}


def spy_counts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = counting._ITEM[Api.CHAT]

    def spy(enc: Any, msg: Any) -> int:
        calls.append(1)
        return real(enc, msg)

    monkeypatch.setitem(counting._ITEM, Api.CHAT, spy)  # type: ignore[index]
    return calls


@pytest.mark.parametrize("model", ["gpt-4o", "small-model"])
def test_a_2000_message_body_over_budget_is_counted_only_as_far_as_the_decision_needs(
    model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = long_history(2000, model)
    budget = input_budget(SMALL.facts(model), Context(max_input_tokens=3000), None)
    assert budget is not None
    calls = spy_counts(monkeypatch)
    table = None if model == "gpt-4o" else PRIOR_TABLE
    out = fit_request(data, Api.CHAT, table, budget, 0.7, SMALL)
    assert out.body is not None and out.removed > 1900
    assert out.byte_grid  # far over the token grid's bound
    assert len(calls) == out.counted < 200  # not 2,000
    assert raw_count(out.body, Api.CHAT, SMALL) == out.raw  # the kept items' costs, no recount
    assert out.bounds.low <= budget.tokens
    assert out.bounds.raw == out.raw.tokens


def test_the_newest_turn_alone_over_is_refused_after_counting_little(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = long_history(2000, "gpt-4o", newest="word " * 4000)
    budget = Budget(3000, 128_000, 4096, BudgetLimit.ROUTE_CAP)
    calls = spy_counts(monkeypatch)
    with pytest.raises(Refused) as info:
        fit_request(data, Api.CHAT, None, budget, 0.7, SMALL)
    monkeypatch.undo()
    full = raw_count(data, Api.CHAT)
    needed = full.fixed + full.items[0] + full.items[-1]  # the system prompt and the question
    assert (needed, 3000) == (info.value.needed, info.value.budget)
    assert len(calls) <= 3
    assert info.value.measured.bounds.raw < full.tokens  # what was counted, not the whole


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("turns", [10, 30, 60])
def test_the_decision_is_the_full_counts_decision(lang: str, turns: int) -> None:
    """Trimmed exactly when the full count's low bound is over the budget, whatever the
    class; the trimmed body fits by the bounds it reports, and its count is its own."""
    data = {"model": "small-model", "messages": conversation(lang, turns, seed=turns)}
    raw, bounds = prior_bounds(data)
    budget = input_budget(SMALL.facts("small-model"), Context(), None)
    assert budget is not None
    try:
        out = fit(data, budget)
    except Refused:
        assert bounds.low > budget.tokens
        return
    assert (out.body is not None) == (bounds.low > budget.tokens)
    if out.body is None:
        assert (raw, bounds) == (out.raw, out.bounds)
    else:
        assert out.bounds.low <= budget.tokens
        assert raw_count(out.body, Api.CHAT, SMALL) == out.raw


# ---------------------------------------------------------------- the stepped grid

import math  # noqa: E402

from proxy.context.stepped import choose_cut, grid_weights, stable_step, token_grid_bound  # noqa: E402


def cut_before_issue_17(data: dict[str, Any], budget: int, table: CorrectionTable | None) -> int:
    """Messages the trim evicted before issue 17: the whole body counted, the raw budget from
    the whole body's class, ``choose_cut`` on every turn's token cost."""
    raw = raw_count(data, Api.CHAT, SMALL)
    ratio = 1.0 if table is None else Correction(PRIORS[raw.script]).bounds(raw.tokens).low_ratio
    raw_budget = math.floor(budget / ratio)
    units: list[list[int]] = []
    for i, msg in enumerate(data["messages"]):
        if msg["role"] != "system":
            if not units or msg["role"] == "user":
                units.append([])
            units[-1].append(i)
    units.pop()  # the newest turn stays
    costs = [sum(raw.items[i] for i in unit) for unit in units]
    cut = choose_cut(costs, raw.tokens - raw_budget, stable_step(raw_budget, 0.7))
    assert cut is not None
    return sum(len(unit) for unit in units[:cut])


@pytest.mark.parametrize("model", ["gpt-4o", "small-model"])
def test_under_the_bound_every_cut_is_where_the_token_grid_put_it_before_issue_17(
    model: str,
) -> None:
    """A conversation growing turn by turn, Korean then English (its newest part's class is
    not the whole body's), under the token grid's bound: every request trims exactly the
    messages the full count and choose_cut on token costs trimmed, and every message is
    counted (the token grid needs them all)."""
    history = conversation("ko", 40, seed=3)[:-1] + conversation("en", 40, seed=4)
    budget = Budget(1500, 2048, 512, BudgetLimit.ROUTE_CAP)
    assert sum(grid_weights(history)) < token_grid_bound(budget.tokens)
    table = None if model == "gpt-4o" else PRIOR_TABLE
    trimmed = 0
    for t in range(10, 81):
        data = {"model": model, "messages": [{"role": "system", "content": "Be brief."}]}
        data["messages"] += history[: 2 * t + 1]
        try:
            out = fit_request(data, Api.CHAT, table, budget, 0.7, SMALL)
        except Refused:
            with pytest.raises(ContextTooLarge):
                cut_before_issue_17(data, budget.tokens, table)
            continue
        if out.body is None:
            continue
        trimmed += 1
        assert not out.byte_grid
        assert out.removed == cut_before_issue_17(data, budget.tokens, table)
        assert out.counted == len(data["messages"])
        assert raw_count(out.body, Api.CHAT, SMALL) == out.raw
    assert trimmed > 40


def test_the_newest_turn_alone_over_is_refused_after_counting_little_under_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the token grid too: a refusal needs the pinned messages and the newest turn only."""
    data = long_history(200, "gpt-4o", newest="word " * 4000)
    budget = Budget(3000, 128_000, 4096, BudgetLimit.ROUTE_CAP)
    assert sum(grid_weights(data["messages"])) < token_grid_bound(budget.tokens)
    calls = spy_counts(monkeypatch)
    with pytest.raises(Refused):
        fit_request(data, Api.CHAT, None, budget, 0.7, SMALL)
    assert len(calls) <= 3


@pytest.mark.parametrize("model", ["gpt-4o", "small-model"])
def test_over_the_bound_the_byte_grid_spares_the_old_turns(
    model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same history, once under the bound (every message counted for the token grid) and
    once over it (a smaller budget: the turns the trim drops are never counted)."""
    data = long_history(600, model)
    size = sum(grid_weights(data["messages"]))
    table = None if model == "gpt-4o" else PRIOR_TABLE
    calls = spy_counts(monkeypatch)
    under = Budget(size // 32 + 1, 128_000, 4096, BudgetLimit.ROUTE_CAP)
    out = fit_request(data, Api.CHAT, table, under, 0.7, SMALL)
    assert out.body is not None and not out.byte_grid
    assert len(calls) == out.counted == len(data["messages"])
    calls.clear()
    over = Budget(size // 32 - 1, 128_000, 4096, BudgetLimit.ROUTE_CAP)
    out = fit_request(data, Api.CHAT, table, over, 0.7, SMALL)
    assert out.body is not None and out.byte_grid
    assert len(calls) == out.counted < len(data["messages"])
    if table is None:  # an exact count reads about the kept part (prior bounds: ~4x it)
        assert out.counted < len(data["messages"]) - out.removed + 50
