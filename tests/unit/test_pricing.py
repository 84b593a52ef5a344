"""Price lookup by model name and cost of normalised usage, checked by hand-computed numbers."""

from __future__ import annotations

import json

import pytest

from proxy.pricing import BUILTIN_PRICES, Price, PriceTable
from proxy.usage import Usage, UsageTap

TABLE = PriceTable()


@pytest.mark.parametrize(
    ("model", "expected_key"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("GPT-4.1-Mini", "gpt-4.1-mini"),
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("o1-pro-2025-03-19", "o1-pro"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
        ("gpt-4-0613", "gpt-4"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("text-embedding-3-large", "text-embedding-3-large"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("claude-3-5-sonnet@20240620", "claude-3-5-sonnet"),
    ],
)
def test_lookup_resolves_exact_dated_and_longest_prefix(model: str, expected_key: str) -> None:
    assert BUILTIN_PRICES[expected_key] == TABLE.lookup(model)


@pytest.mark.parametrize(
    "model",
    [
        None,
        "",
        "unknown-model",
        "gpt-4.5-preview",
        "gpt-4oo",
        "o5",
        "claude",
        "-gpt-4o",
        "my-gpt-4o",
    ],
)
def test_lookup_of_unknown_model_is_none(model: str | None) -> None:
    assert None is TABLE.lookup(model)


def test_prefix_must_end_at_a_boundary_so_families_do_not_borrow_prices() -> None:
    assert (Price(2.50, 10.00, 1.25), Price(0.15, 0.60, 0.075)) == (
        TABLE.lookup("gpt-4o"),
        TABLE.lookup("gpt-4o-mini"),
    )
    assert TABLE.lookup("gpt-4") != TABLE.lookup("gpt-4o")
    assert Price(5.00, 25.00, 0.50, 6.25) == TABLE.lookup("claude-opus-4-5")
    assert Price(15.00, 75.00, 1.50, 18.75) == TABLE.lookup("claude-opus-4-0")


def test_anthropic_cache_rates_follow_published_multipliers() -> None:
    claude = {k: p for k, p in BUILTIN_PRICES.items() if k.startswith("claude")}
    assert len(claude) >= 14
    for name, price in claude.items():
        if name == "claude-3-haiku":
            continue  # published as $0.03 / $0.30, not the rounded multipliers
        assert (price.input * 1.25, price.input * 0.1) == pytest.approx(
            (price.cache_write, price.cached_input)
        ), name


def test_overrides_replace_and_extend_builtins() -> None:
    table = PriceTable({"gpt-4o": Price(1.0, 2.0), "My-Local-Model": Price(0.5, 0.5)})
    assert Price(1.0, 2.0) == table.lookup("gpt-4o-2024-11-20")
    assert Price(0.5, 0.5) == table.lookup("my-local-model-v2")
    assert Price(0.15, 0.60, 0.075) == table.lookup("gpt-4o-mini")  # sibling untouched
    assert Price(2.50, 10.00, 1.25) == TABLE.lookup("gpt-4o")  # other tables untouched


def test_openai_cached_tokens_are_billed_at_cached_rate_not_twice() -> None:
    # gpt-4o: 600 fresh x $2.50 + 400 cached x $1.25 + 500 out x $10 = $0.0015 + $0.0005 + $0.005
    usage = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=400, source="upstream")
    assert 0.007 == pytest.approx(TABLE.cost("gpt-4o-2024-08-06", usage), abs=1e-12)


def test_anthropic_cache_reads_and_writes_are_billed_at_their_rates() -> None:
    # claude-sonnet-4: 100 fresh x $3 + 1000 read x $0.30 + 200 written x $3.75 + 50 out x $15
    usage = Usage(1300, 50, 1000, 200, None, "upstream")
    expected = (100 * 3 + 1000 * 0.30 + 200 * 3.75 + 50 * 15) / 1e6
    assert 0.0021 == pytest.approx(expected)
    assert expected == pytest.approx(TABLE.cost("claude-sonnet-4-20250514", usage), abs=1e-12)


def test_anthropic_raw_usage_through_the_tap_is_costed_without_double_counting() -> None:
    body = {
        "model": "claude-sonnet-4-20250514",
        "content": [],
        "usage": {
            "input_tokens": 100,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 200,
            "output_tokens": 50,
        },
    }
    tap = UsageTap("anthropic", streaming=False)
    tap.feed(json.dumps(body).encode())
    usage = tap.finish()  # a JSON body is parsed at the end; tap.model is known after it
    assert 0.0021 == pytest.approx(TABLE.cost(tap.model, usage), abs=1e-12)


def test_reasoning_tokens_are_inside_completion_and_billed_once() -> None:
    # o3: 1000 in x $2 + 1000 out (800 of them reasoning) x $8 = $0.002 + $0.008
    usage = Usage(1000, 1000, 0, None, 800, "upstream")
    assert 0.010 == pytest.approx(TABLE.cost("o3", usage), abs=1e-12)


def test_cached_tokens_fall_back_to_input_rate_when_model_has_no_cached_price() -> None:
    # gpt-4-turbo: 1000 in (500 cached, no cached rate) x $10 + 100 out x $30
    usage = Usage(1000, 100, 500, None, None, "upstream")
    assert 0.013 == pytest.approx(TABLE.cost("gpt-4-turbo", usage), abs=1e-12)


def test_embedding_usage_without_completion_costs_input_only() -> None:
    assert 0.02 == pytest.approx(TABLE.cost("text-embedding-3-small", Usage(1_000_000)))


def test_inconsistent_counts_are_clamped_not_negative() -> None:
    # cached > prompt: at most all 100 prompt tokens are cached; gpt-4o-mini 100 x $0.075
    usage = Usage(prompt_tokens=100, completion_tokens=0, cached_tokens=500, source="upstream")
    assert 0.0000075 == pytest.approx(TABLE.cost("gpt-4o-mini", usage), abs=1e-15)


@pytest.mark.parametrize(
    ("model", "usage"),
    [
        ("unknown-model", Usage(100, 100, source="upstream")),
        (None, Usage(100, 100, source="upstream")),
        ("gpt-4o", Usage(source="none")),
    ],
)
def test_cost_is_none_for_unknown_model_or_unknown_usage(model: str | None, usage: Usage) -> None:
    assert None is TABLE.cost(model, usage)


def test_zero_tokens_on_a_known_model_cost_zero() -> None:
    assert 0.0 == TABLE.cost("gpt-4o", Usage(0, 0, source="upstream"))
