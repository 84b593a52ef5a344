"""The built-in model facts, as data (read by :mod:`proxy.models`; no logic, no IO).

One row per model name or family. A row states only what differs from its family: facts
it leaves ``None`` come from the longest shorter name it extends (``gpt-4o-mini`` takes its
window and tokenizer from ``gpt-4o`` and has its own price), so a price row never needs to
repeat a window. Names are lower case and canonical (no provider prefix, no snapshot date).

Sources: context windows and input caps as published by OpenAI and Anthropic on their model
pages; prices are standard (non-batch, non-priority) list prices, USD per 1M tokens, checked
2026-11-24 against developers.openai.com/api/docs/pricing and the model pages,
platform.claude.com/docs/en/about-claude/pricing, cross-checked with github/docs
data/tables/copilot/models-and-pricing.yml. Not modelled: long-context tiers (Claude Sonnet
4/4.5 above 200K input: $6/$22.50; GPT-5.4 above 272K), Anthropic 1-hour cache writes (2x
input; billed here at the 5-minute rate), batch/flex/priority tiers. Rows below a family name
exist so a sibling never borrows a price (o1-pro is not o1; gpt-4o-2024-05-13 was priced
above later gpt-4o snapshots). The 1M window of some Claude models needs a beta header, so
200k is the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

EncodingName = Literal["o200k_base", "cl100k_base"]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens. ``cached_input``: cache reads (falls back to ``input``);
    ``cache_write``: Anthropic 5-minute cache writes, 1.25x input (falls back to ``input``)."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None


@dataclass(frozen=True, slots=True)
class Tokenizer:
    """The encoding the proxy counts with, and whether that count is the model's own.

    ``exact=False``: the count is a raw estimate that the learned correction
    (:mod:`proxy.context.correction`) turns into low/high bounds.
    """

    encoding: EncodingName
    exact: bool


O200K = Tokenizer("o200k_base", exact=True)
CL100K = Tokenizer("cl100k_base", exact=True)
UNKNOWN_TOKENIZER = Tokenizer("cl100k_base", exact=False)
"""Models without a public tokenizer: cl100k_base is the raw estimator (see correction.py)."""
O200K_BASIS = Tokenizer("o200k_base", exact=False)
"""gpt-oss: o200k-based (o200k_harmony), but served by third-party chat templates."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One row: every fact optional (``None``: ask the family)."""

    window: int | None = None
    """Total context window in tokens (input + output)."""
    max_input: int | None = None
    """Hard cap on input tokens when it is below window minus output (gpt-5: 272k)."""
    tokenizer: Tokenizer | None = None
    price: Price | None = None


def _claude(input_: float, output: float) -> Price:
    """Anthropic's published rule: cache reads 0.1x, 5-minute cache writes 1.25x base input."""
    return Price(input_, output, round(input_ * 0.1, 6), round(input_ * 1.25, 6))


M = ModelSpec

BUILTIN_MODELS: Mapping[str, ModelSpec] = {
    # OpenAI: GPT-5 family (400k window, at most 272k of it input)
    "gpt-5": M(400_000, 272_000, O200K, Price(1.25, 10.00, 0.125)),
    "gpt-5-chat": M(window=128_000),
    "gpt-5-mini": M(price=Price(0.25, 2.00, 0.025)),
    "gpt-5-nano": M(price=Price(0.05, 0.40, 0.005)),
    "gpt-5-pro": M(price=Price(15.00, 120.00)),
    "gpt-5.1": M(400_000, 272_000, O200K, Price(1.25, 10.00, 0.125)),
    "gpt-5.2": M(400_000, 272_000, O200K, Price(1.75, 14.00, 0.175)),
    "gpt-5.4": M(tokenizer=O200K, price=Price(2.50, 15.00, 0.25)),
    "gpt-5.4-mini": M(price=Price(0.75, 4.50, 0.075)),
    "gpt-5.4-nano": M(price=Price(0.20, 1.25, 0.02)),
    "gpt-5.4-pro": M(price=Price(30.00, 180.00)),
    "gpt-5.5": M(tokenizer=O200K, price=Price(5.00, 30.00, 0.50)),
    # OpenAI: GPT-4.1 / GPT-4.5 / GPT-4o
    "gpt-4.1": M(1_047_576, None, O200K, Price(2.00, 8.00, 0.50)),
    "gpt-4.1-mini": M(price=Price(0.40, 1.60, 0.10)),
    "gpt-4.1-nano": M(price=Price(0.10, 0.40, 0.025)),
    "gpt-4.5": M(128_000, None, O200K),
    "gpt-4o": M(128_000, None, O200K, Price(2.50, 10.00, 1.25)),
    "gpt-4o-2024-05-13": M(price=Price(5.00, 15.00)),
    "gpt-4o-mini": M(price=Price(0.15, 0.60, 0.075)),
    "chatgpt-4o": M(128_000, None, O200K),
    # OpenAI: o-series reasoning models
    "o1": M(200_000, None, O200K, Price(15.00, 60.00, 7.50)),
    "o1-mini": M(128_000, price=Price(1.10, 4.40, 0.55)),
    "o1-preview": M(window=128_000),
    "o1-pro": M(price=Price(150.00, 600.00)),
    "o3": M(200_000, None, O200K, Price(2.00, 8.00, 0.50)),
    "o3-mini": M(200_000, price=Price(1.10, 4.40, 0.55)),
    "o3-pro": M(price=Price(20.00, 80.00)),
    "o4": M(tokenizer=O200K),
    "o4-mini": M(200_000, price=Price(1.10, 4.40, 0.275)),
    # OpenAI: legacy (cl100k_base)
    "gpt-4": M(8_192, None, CL100K, Price(30.00, 60.00)),
    "gpt-4-32k": M(32_768, price=Price(60.00, 120.00)),
    "gpt-4-turbo": M(128_000, price=Price(10.00, 30.00)),
    "gpt-4-0125-preview": M(128_000, price=Price(10.00, 30.00)),
    "gpt-4-1106-preview": M(128_000, price=Price(10.00, 30.00)),
    "gpt-4-vision-preview": M(window=128_000),
    "gpt-3.5": M(tokenizer=CL100K),
    "gpt-3.5-turbo": M(16_385, price=Price(0.50, 1.50)),
    "gpt-3.5-turbo-1106": M(price=Price(1.00, 2.00)),
    "gpt-3.5-turbo-instruct": M(4_096, price=Price(1.50, 2.00)),
    "gpt-35": M(tokenizer=CL100K),
    "gpt-35-turbo": M(window=16_385),
    # OpenAI: embeddings (input only)
    "text-embedding": M(tokenizer=CL100K),
    "text-embedding-3": M(window=8_191),
    "text-embedding-3-small": M(price=Price(0.02, 0.0)),
    "text-embedding-3-large": M(price=Price(0.13, 0.0)),
    "text-embedding-ada-002": M(8_191, price=Price(0.10, 0.0)),
    # OpenAI open weights, served by others (vLLM, Ollama, llama.cpp) with their templates
    "gpt-oss": M(tokenizer=O200K_BASIS),
    # Anthropic ("claude-opus-4" also covers claude-opus-4-0 / -20250514)
    "claude": M(window=200_000, tokenizer=UNKNOWN_TOKENIZER),
    "claude-2.0": M(window=100_000),
    "claude-instant": M(window=100_000),
    "claude-opus-4": M(price=_claude(15.00, 75.00)),
    "claude-opus-4-1": M(price=_claude(15.00, 75.00)),
    "claude-opus-4-5": M(price=_claude(5.00, 25.00)),
    "claude-opus-4-6": M(price=_claude(5.00, 25.00)),
    "claude-opus-4-7": M(price=_claude(5.00, 25.00)),
    "claude-opus-4-8": M(price=_claude(5.00, 25.00)),
    "claude-sonnet-4": M(price=_claude(3.00, 15.00)),
    "claude-sonnet-4-5": M(price=_claude(3.00, 15.00)),
    "claude-sonnet-4-6": M(price=_claude(3.00, 15.00)),
    "claude-haiku-4-5": M(price=_claude(1.00, 5.00)),
    "claude-3-7-sonnet": M(price=_claude(3.00, 15.00)),
    "claude-3-5-sonnet": M(price=_claude(3.00, 15.00)),
    "claude-3-5-haiku": M(price=_claude(0.80, 4.00)),
    "claude-3-opus": M(price=_claude(15.00, 75.00)),
    "claude-3-haiku": M(price=Price(0.25, 1.25, 0.03, 0.30)),  # published, not the rule
}

CLOUD_VENDOR_PREFIXES = (
    "anthropic",
    "openai",
    "meta",
    "mistral",
    "amazon",
    "cohere",
    "ai21",
    "deepseek",
    "qwen",
    "writer",
)
"""Bedrock model ids start with ``[region.]vendor.`` (``us.anthropic.claude-...``)."""
