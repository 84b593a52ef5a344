"""Counting with known accuracy: raw counts, script classes, learned corrections and bounds."""

from __future__ import annotations

import math
from typing import Any

import pytest

from proxy.context import tokens
from proxy.context.corpus import LANGUAGES, conversation
from proxy.context.correction import (
    PRIORS,
    Bounds,
    Correction,
    CorrectionKey,
    Corrections,
    CountMethod,
    MemorySampleStore,
    Stats,
)
from proxy.context.counting import Api, RawCount, api_for, raw_count
from proxy.context.scripts import ScriptClass, classify, script_of
from proxy.fake_upstream.content import prompt_tokens

UNKNOWN = "my-local-llama"  # no tokenizer in the registry


def body(messages: list[dict[str, Any]], model: str = UNKNOWN) -> dict[str, Any]:
    return {"model": model, "messages": messages}


def o200k_true(messages: list[dict[str, Any]]) -> int:
    """Stand-in for an unknown model's own tokenizer: o200k_base, the proxy's chat formula."""
    return tokens.count_openai_chat(body(messages, "gpt-4o")).tokens


# ---------------------------------------------------------------- script classes


@pytest.mark.parametrize(
    ("text", "cls"),
    [
        ("Hello, how are you today?", ScriptClass.LATIN),
        ("Báo cáo cho thấy doanh thu tăng", ScriptClass.LATIN),
        ("def f(x):\n    return x ** 2", ScriptClass.LATIN),
        ("1234567 8901234 5678 90123", ScriptClass.DIGITS),
        ("Отчёт показывает рост выручки", ScriptClass.CYRILLIC),
        ("报告显示收入增长", ScriptClass.CJK),
        ("報告書によると売上が伸びています", ScriptClass.CJK),
        ("보고서에 따르면 매출이 증가했습니다", ScriptClass.HANGUL),
        ("يُظهر التقرير أن الإيرادات نمت", ScriptClass.OTHER),
        ("???  ...", ScriptClass.LATIN),
    ],
)
def test_classify(text: str, cls: ScriptClass) -> None:
    assert cls == classify(text)


def test_script_of_a_request_needs_a_dominant_class() -> None:
    assert ScriptClass.HANGUL == script_of(conversation("ko", 5))
    mixed = conversation("ko", 3) + conversation("en", 6)
    assert ScriptClass.MIXED == script_of(mixed)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 5000}}
    assert ScriptClass.CJK == script_of([{"role": "user", "content": ["报告显示收入增长", image]}])


# ---------------------------------------------------------------- raw counts


def test_raw_count_of_an_openai_model_is_the_exact_tiktoken_count() -> None:
    msgs = conversation("en", 4)
    got = raw_count(body(msgs, "gpt-4o"), Api.CHAT)
    assert (True, tokens.count_openai_chat(body(msgs, "gpt-4o")).tokens) == (got.exact, got.tokens)


def test_raw_count_of_an_unknown_model_is_uninflated_cl100k() -> None:
    msgs = conversation("ru", 4)
    got = raw_count(body(msgs), Api.CHAT)
    expected = tokens.count_openai_chat(body(msgs), safety_factor=1.0).tokens
    assert (False, ScriptClass.CYRILLIC, expected) == (got.exact, got.script, got.tokens)


def test_raw_count_of_anthropic_splits_fixed_and_messages() -> None:
    data = {"model": "claude-sonnet-4-5", "system": "Be terse.", "messages": conversation("en", 2)}
    got = raw_count(data, Api.MESSAGES)
    assert tokens.count_anthropic_messages(data, safety_factor=1.0).tokens == got.tokens
    assert tokens.fixed_tokens(data, "anthropic", 1.0) == got.fixed


def test_raw_count_of_responses_input_items() -> None:
    enc = tokens.get_encoding("o200k_base")

    def n(text: str) -> int:
        return len(enc.encode_ordinary(text))

    data = {
        "model": "gpt-4o",
        "instructions": "Be terse.",
        "input": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"q":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "It is sunny."}],
            },
        ],
    }
    got = raw_count(data, Api.RESPONSES)
    assert (
        RawCount(
            3 + 3 + n("Be terse."),
            (
                3 + n("user") + n("What is the weather in Paris?"),
                3 + n("weather") + n('{"q":1}'),
                3 + n("sunny"),
                3 + n("assistant") + n("It is sunny."),
            ),
            True,
            ScriptClass.LATIN,
        )
        == got
    )
    assert RawCount(6 + n("hi"), (), True, ScriptClass.LATIN) == raw_count(
        {"model": "gpt-4o", "input": "hi"}, Api.RESPONSES
    )


@pytest.mark.parametrize(
    ("provider", "path", "api"),
    [
        ("openai", "/v1/chat/completions", Api.CHAT),
        ("openai", "/openai/v1/responses", Api.RESPONSES),
        ("anthropic", "/v1/messages", Api.MESSAGES),
        ("anthropic", "/v1/messages/count_tokens", None),
        ("openai", "/v1/embeddings", None),
        ("openai", "/v1/messages", None),
    ],
)
def test_api_for(provider: str, path: str, api: Api | None) -> None:
    assert api == api_for(provider, path)


# ---------------------------------------------------------------- priors are honest


@pytest.mark.parametrize("lang", LANGUAGES)
def test_prior_bounds_contain_o200k_count_on_every_language(lang: str) -> None:
    for seed in range(5):
        msgs = conversation(lang, 3 + 4 * seed, seed)
        raw = raw_count(body(msgs), Api.CHAT)
        bounds = PRIORS[raw.script]
        assert bounds.low * raw.tokens <= o200k_true(msgs) <= bounds.high * raw.tokens


# ---------------------------------------------------------------- learning


KEY = CorrectionKey("local", UNKNOWN, ScriptClass.LATIN)


async def test_correction_converges_to_the_fake_upstreams_billed_tokens() -> None:
    """After 20 responses the estimate is within 5% of what the fake bills, and the bounds
    still hold the truth."""
    corrections = Corrections(MemorySampleStore())
    for seed in range(20):
        data = body(conversation("en", 2 + seed, seed))
        await corrections.observe(KEY, raw_count(data, Api.CHAT).tokens, prompt_tokens(data))
    data = body(conversation("en", 30, seed=99))
    raw = raw_count(data, Api.CHAT).tokens
    bounds = await corrections.bounds(KEY, raw)
    billed = prompt_tokens(data)
    assert (CountMethod.LEARNED, 20) == (bounds.method, bounds.samples)
    assert abs(bounds.estimate - billed) <= 0.05 * billed
    assert bounds.low <= billed <= bounds.high


async def test_margin_shrinks_as_samples_accumulate() -> None:
    corrections = Corrections(MemorySampleStore(), refresh_s=0)
    widths = []
    for seed in range(40):
        bounds = await corrections.bounds(KEY, 10_000)
        widths.append(bounds.high - bounds.low)
        data = body(conversation("en", 5 + seed % 7, seed))
        await corrections.observe(KEY, raw_count(data, Api.CHAT).tokens, prompt_tokens(data))
    assert widths == sorted(widths, reverse=True)
    assert widths[-1] < widths[0] / 5


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_low_bound_never_trims_a_conversation_that_fits(lang: str) -> None:
    """Unknown tokenizer (o200k as the server's), conversations sized to 90-100% of a 4,000
    token budget: the low bound is under budget before and after learning from that server."""
    corrections = Corrections(MemorySampleStore(), refresh_s=0)
    budget = 4000
    for seed in range(12):
        msgs = conversation(lang, 60, seed)
        costs = [tokens.message_tokens(m, "openai", "gpt-4o") for m in msgs]
        drop = 0
        while 3 + sum(costs[drop:]) > budget:
            drop += 2
        msgs = msgs[drop:]
        raw = raw_count(body(msgs), Api.CHAT)
        key = CorrectionKey("local", UNKNOWN, raw.script)
        bounds = await corrections.bounds(key, raw.tokens)
        assert o200k_true(msgs) >= 0.9 * budget - 400  # just under the window
        assert bounds.low <= budget, (lang, seed, bounds)
        await corrections.observe(key, raw.tokens, o200k_true(msgs))


async def test_small_prompts_and_zero_bills_are_not_sampled() -> None:
    corrections = Corrections(MemorySampleStore())
    assert [False, False, True] == [
        await corrections.observe(KEY, 10, 8),
        await corrections.observe(KEY, 100, 0),
        await corrections.observe(KEY, 100, 80),
    ]


async def test_memory_store_keeps_the_last_values_and_bounded_keys() -> None:
    store = MemorySampleStore(max_keys=2)
    for i in range(5):
        await store.add("a", float(i), keep=3)
    await store.add("b", 1.0, keep=3)
    await store.add("c", 1.0, keep=3)
    assert ([], [1.0], [1.0]) == tuple([await store.recent(k) for k in "abc"])
    store = MemorySampleStore()
    for i in range(5):
        await store.add("a", float(i), keep=3)
    assert [2.0, 3.0, 4.0] == await store.recent("a")


def test_welford_matches_the_textbook_formulas() -> None:
    values = [0.1, -0.2, 0.05, 0.3]
    stats = Stats.of(values)
    mean = sum(values) / 4
    var = sum((v - mean) ** 2 for v in values) / 3
    assert (4, pytest.approx(mean), pytest.approx(math.sqrt(var))) == (
        stats.n,
        stats.mean,
        stats.spread,
    )


def test_prior_bounds_before_any_sample() -> None:
    prior = PRIORS[ScriptClass.HANGUL]
    bounds = Correction(prior).bounds(1000)
    assert (
        Bounds(
            1000,
            math.floor(1000 * prior.low),
            round(1000 * math.sqrt(prior.low * prior.high)),
            math.ceil(1000 * prior.high),
            CountMethod.PRIOR,
        )
        == bounds
    )


async def test_measure_and_learn_skip_exact_counts_and_learn_the_rest() -> None:
    corrections = Corrections(MemorySampleStore(), refresh_s=0)
    exact = await corrections.measure(
        "up", "gpt-4o", raw_count(body(conversation("en", 5), "gpt-4o"), Api.CHAT)
    )
    assert (None, CountMethod.EXACT) == (exact.key, exact.bounds.method)
    assert False is await corrections.learn(exact, 100)
    data = body(conversation("ru", 5))
    measured = await corrections.measure("up", UNKNOWN, raw_count(data, Api.CHAT))
    assert CorrectionKey("up", UNKNOWN, ScriptClass.CYRILLIC) == measured.key
    assert CountMethod.PRIOR == measured.bounds.method
    assert True is await corrections.learn(measured, prompt_tokens(data))
    again = await corrections.measure("up", UNKNOWN, raw_count(data, Api.CHAT))
    assert (CountMethod.LEARNED, prompt_tokens(data)) == (
        again.bounds.method,
        again.bounds.estimate,
    )


async def test_low_ratio_ceiling_covers_every_script_class() -> None:
    corrections = Corrections(MemorySampleStore(), refresh_s=0)
    assert max(p.low for p in PRIORS.values()) == pytest.approx(
        await corrections.low_ratio_ceiling("up", UNKNOWN)
    )
    key = CorrectionKey("up", UNKNOWN, ScriptClass.HANGUL)
    for _ in range(30):
        await corrections.observe(key, 1000, 2500)  # a tokenizer that counts 2.5x
    ceiling = await corrections.low_ratio_ceiling("up", UNKNOWN)
    assert (await corrections.bounds(key, 1000)).low <= 1000 * ceiling
    assert ceiling > 2.0


async def test_the_ceiling_is_kept_for_refresh_s_and_renewed_by_a_local_sample() -> None:
    """Every request on a context route asks for the ceiling: within ``refresh_s`` the store is
    not read again, except that this process's own new sample takes effect at once."""
    reads: list[str] = []

    class CountingStore(MemorySampleStore):
        async def recent(self, key: str) -> list[float]:
            reads.append(key)
            return list(await super().recent(key))

    corrections = Corrections(CountingStore(), refresh_s=60)
    first = await corrections.low_ratio_ceiling("up", UNKNOWN)
    counted = len(reads)
    assert counted == len(ScriptClass)
    assert first == await corrections.low_ratio_ceiling("up", UNKNOWN)
    assert counted == len(reads)  # memoised
    key = CorrectionKey("up", UNKNOWN, ScriptClass.HANGUL)
    for _ in range(30):
        await corrections.observe(key, 1000, 2500)
    assert await corrections.low_ratio_ceiling("up", UNKNOWN) > 2.0 > first
