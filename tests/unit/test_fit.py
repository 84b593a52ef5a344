"""Budgets and the fit decision: untouched when it may fit, trimmed to the budget otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.config import Context
from proxy.context.budget import Budget, BudgetLimit, input_budget, requested_output
from proxy.context.corpus import conversation
from proxy.context.correction import PRIORS, Correction, CountMethod, exact_bounds
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


def prior_bounds(data: dict[str, Any], api: Api = Api.CHAT) -> Any:
    raw = raw_count(data, api, SMALL)
    return raw, Correction(PRIORS[raw.script]).bounds(raw.tokens)


def test_a_conversation_that_may_fit_goes_out_untouched() -> None:
    data = {"model": "small-model", "messages": conversation("en", 24)}
    raw, bounds = prior_bounds(data)
    budget = input_budget(SMALL.facts("small-model"), Context(), None)
    assert budget is not None and bounds.low <= budget.tokens < raw.tokens  # over by raw count
    fit = fit_request(data, Api.CHAT, raw, bounds, budget, share=0.7)
    assert (None, bounds, 0) == (fit.body, fit.bounds, fit.removed)


def test_a_conversation_over_even_by_the_low_bound_is_trimmed_to_fit_it() -> None:
    data = {"model": "small-model", "messages": conversation("ko", 40)}
    raw, bounds = prior_bounds(data)
    assert ScriptClass.HANGUL == raw.script
    budget = input_budget(SMALL.facts("small-model"), Context(), None)
    assert budget is not None and bounds.low > budget.tokens
    fit = fit_request(data, Api.CHAT, raw, bounds, budget, share=0.7)
    assert fit.body is not None and fit.removed > 0
    assert fit.bounds.low <= budget.tokens
    assert fit.body["messages"] == data["messages"][fit.removed :]
    assert raw_count(fit.body, Api.CHAT, SMALL).tokens == fit.bounds.raw


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
    fit = fit_request(data, Api.CHAT, raw, exact_bounds(raw.tokens), budget, share=0.7)
    assert fit.body is not None
    assert fit.bounds.raw == raw_count(fit.body, Api.CHAT).tokens <= budget.tokens < 272_000
    assert CountMethod.EXACT == fit.bounds.method


def test_too_large_is_reported_in_provider_tokens() -> None:
    data = {"model": "small-model", "messages": [{"role": "user", "content": "word " * 5000}]}
    raw, bounds = prior_bounds(data)
    budget = input_budget(SMALL.facts("small-model"), Context(), None)
    assert budget is not None
    with pytest.raises(ContextTooLarge) as info:
        fit_request(data, Api.CHAT, raw, bounds, budget, share=0.7)
    assert (bounds.low, 1280) == (info.value.needed, info.value.budget)


def test_error_driven_retry_trims_to_the_servers_figures() -> None:
    """The server counted 1.3x the proxy's raw count; the retry body fits its window."""
    data = {"model": "small-model", "messages": conversation("en", 24)}
    raw, bounds = prior_bounds(data)
    server_count = round(raw.tokens * 1.3)
    rec = ContextOverflow(OverflowSource.LLAMA_CPP, 2048, server_count, None, server_count)
    retry = retry_budget(rec, sent_estimate=raw.tokens, reserve=None)
    assert retry is not None
    fit = fit_retry(data, Api.CHAT, raw, bounds, retry, share=0.7)
    assert fit.body is not None
    assert raw_count(fit.body, Api.CHAT, SMALL).tokens * 1.3 <= 2048 - 512


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
        fit = fit_retry(data, api, raw, bounds, retry, share=0.7)
        assert fit.body is not None and fit.removed > 0
        async with session.post(server.make_url(path), json=fit.body) as resp:
            assert 200 == resp.status
