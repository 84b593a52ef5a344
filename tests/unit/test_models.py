"""The model registry: one matcher, the same facts for every spelling of a model name."""

from __future__ import annotations

import pytest

from proxy import config as config_mod
from proxy.context.tokens import encoding_for_model
from proxy.metrics import ModelLabels
from proxy.model_table import CL100K, O200K, UNKNOWN_TOKENIZER
from proxy.models import DEFAULT_REGISTRY, ModelFacts, ModelRegistry, ModelSpec, Price
from proxy.pricing import PriceTable


def same_facts(a: ModelFacts, b: ModelFacts) -> bool:
    return (a.key, a.label, a.window, a.max_input, a.tokenizer, a.price) == (
        b.key,
        b.label,
        b.window,
        b.max_input,
        b.tokenizer,
        b.price,
    )


SPELLINGS = [
    (
        "gpt-4o",
        [
            "GPT-4o",
            " gpt-4o ",
            "openai/gpt-4o",
            "azure/gpt-4o",
            "gpt-4o-2024-08-06",
            "gpt-4o-2024-11-20",
            "ft:gpt-4o:org::id",
            "ft:gpt-4o-2024-08-06:org:name:id",
            "openrouter/openai/gpt-4o",
        ],
    ),
    ("gpt-4o-mini", ["gpt-4o-mini-2024-07-18", "ft:gpt-4o-mini-2024-07-18:acme::x1"]),
    (
        "claude-3-5-sonnet",
        [
            "claude-3-5-sonnet-20241022",
            "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            "eu.anthropic.claude-3-5-sonnet-20240620-v1:0",
            "claude-3-5-sonnet@20240620",
            "claude-3-5-sonnet-v2@20241022",
            "anthropic/claude-3-5-sonnet-20241022",
            "bedrock/us.anthropic.claude-3-5-sonnet-20241022-v2:0",
            "publishers/anthropic/models/claude-3-5-sonnet@20240620",
            "arn:aws:bedrock:us-east-1:123:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0",
        ],
    ),
    (
        "claude-sonnet-4-5",
        ["claude-sonnet-4-5-20250929", "global.anthropic.claude-sonnet-4-5-20250929-v1:0"],
    ),
    ("gpt-5", ["gpt-5-2025-08-07", "openai/gpt-5", "ft:gpt-5:org::x"]),
    ("gpt-4", ["gpt-4-0613", "openai/gpt-4-0613"]),
    ("o3-mini", ["o3-mini-2025-01-31", "openai/o3-mini"]),
]


@pytest.mark.parametrize(
    ("canonical", "spelling"), [(c, s) for c, spellings in SPELLINGS for s in spellings]
)
def test_every_spelling_gives_the_canonical_facts(canonical: str, spelling: str) -> None:
    expected = DEFAULT_REGISTRY.facts(canonical)
    actual = DEFAULT_REGISTRY.facts(spelling)
    assert same_facts(expected, actual)
    assert canonical == actual.label


def test_gpt4o_openai_prefix_and_finetune_share_window_price_label() -> None:
    got = {
        (f.window, f.price, f.label, f.tokenizer)
        for f in map(DEFAULT_REGISTRY.facts, ["gpt-4o", "openai/gpt-4o", "ft:gpt-4o:org::id"])
    }
    assert {(128_000, Price(2.50, 10.00, 1.25), "gpt-4o", O200K)} == got


@pytest.mark.parametrize(
    ("model", "window", "max_input", "tokenizer", "label"),
    [
        ("gpt-5-mini-2025-08-07", 400_000, 272_000, O200K, "gpt-5-mini"),
        ("gpt-5-chat-latest", 128_000, 272_000, O200K, "gpt-5-chat"),
        ("gpt-4.1-nano", 1_047_576, None, O200K, "gpt-4.1-nano"),
        ("gpt-4.5-preview", 128_000, None, O200K, "gpt-4.5"),
        ("gpt-4-turbo-2024-04-09", 128_000, None, CL100K, "gpt-4-turbo"),
        ("gpt-35-turbo", 16_385, None, CL100K, "gpt-35-turbo"),
        ("claude-2.1", 200_000, None, UNKNOWN_TOKENIZER, "claude"),
        ("claude-new-family-9", 200_000, None, UNKNOWN_TOKENIZER, "claude"),
        ("llama-3.1-70b", None, None, UNKNOWN_TOKENIZER, "other"),
        ("gpt-40-experimental", None, None, UNKNOWN_TOKENIZER, "other"),
        ("my-claude-3-5-sonnet", None, None, UNKNOWN_TOKENIZER, "other"),
        ("o1x-custom", None, None, UNKNOWN_TOKENIZER, "other"),
        ("", None, None, UNKNOWN_TOKENIZER, "none"),
        (None, None, None, UNKNOWN_TOKENIZER, "none"),
    ],
)
def test_facts_table(
    model: str | None, window: int | None, max_input: int | None, tokenizer: object, label: str
) -> None:
    f = DEFAULT_REGISTRY.facts(model)
    assert (window, max_input, tokenizer, label) == (f.window, f.max_input, f.tokenizer, f.label)


def test_a_family_row_never_lends_a_sibling_price() -> None:
    reg = DEFAULT_REGISTRY
    assert reg.facts("o1-pro").price != reg.facts("o1").price
    assert None is reg.facts("gpt-4.5-preview").price
    assert 128_000 == reg.facts("gpt-4o-mini").window  # the window is the family's


def test_config_rows_replace_stated_facts_and_keep_the_rest() -> None:
    reg = DEFAULT_REGISTRY.extended(
        {"gpt-4o": ModelSpec(price=Price(1.0, 2.0)), "Small-Model": ModelSpec(window=2048)}
    )
    assert (128_000, Price(1.0, 2.0)) == (reg.facts("gpt-4o").window, reg.facts("gpt-4o").price)
    assert Price(0.15, 0.60, 0.075) == reg.facts("gpt-4o-mini").price  # longer name wins
    small = reg.facts("openai/small-model-q4")
    assert (2048, "small-model", UNKNOWN_TOKENIZER) == (small.window, small.label, small.tokenizer)
    assert None is DEFAULT_REGISTRY.facts("small-model").window  # the original is untouched


def test_registry_from_config_merges_models_pricing_windows_and_labels() -> None:
    raw = {
        "models": {
            "my-llama": {"window": 4096, "tokenizer": "o200k_base", "max_input_tokens": 3000}
        },
        "pricing": {"my-llama": {"input": 1.0, "output": 2.0}},
        "context": {"models": {"tiny": 2048}},
        "routes": [
            {
                "prefix": "/v1",
                "provider": "openai",
                "context": {"models": {"route-only": 1000}},
                "upstreams": [
                    {"name": "a", "base_url": "http://a", "models": {"gpt-4o": "llama-3.3"}}
                ],
            }
        ],
    }
    cfg = config_mod.from_dict(raw, env={})
    reg = ModelRegistry.from_config(cfg)
    llama = reg.facts("my-llama-q8")
    assert (4096, 3000, O200K, Price(1.0, 2.0)) == (
        llama.window,
        llama.max_input,
        llama.tokenizer,
        llama.price,
    )
    assert 2048 == reg.facts("tiny").window
    assert "llama-3.3" == reg.label("llama-3.3-70b")
    assert None is reg.facts("route-only").window
    assert 1000 == reg.for_context(cfg.routes[0].context).facts("route-only").window


def test_legacy_views_delegate_to_the_registry() -> None:
    assert PriceTable().lookup("openai/gpt-4o") == DEFAULT_REGISTRY.facts("gpt-4o").price
    assert PriceTable().lookup("bedrock/anthropic.claude-3-haiku-20240307-v1:0") == Price(
        0.25, 1.25, 0.03, 0.30
    )
    assert ("o200k_base", True) == (
        encoding_for_model("ft:gpt-4o:org::id")[0].name,
        encoding_for_model("ft:gpt-4o:org::id")[1],
    )
    assert "gpt-4o" == ModelLabels(["gpt-4o"])("openai/gpt-4o-2024-08-06")
