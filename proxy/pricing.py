"""Request cost in USD from normalised token usage and a per-model price table.

Prices are data shipped in code (no network, no file read at import); config may override
or extend them (``PriceTable(overrides)``). A model this table does not know costs ``None``,
never ``0``: an unknown price must not look like a free request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from proxy.usage import Usage

__all__ = ["BUILTIN_PRICES", "Price", "PriceTable"]

_MILLION = 1_000_000  # prices are per 1M tokens
_BOUNDARY = "-@:"  # what may follow a known name: dated snapshots, Vertex "@", Bedrock ":"


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens. ``cached_input``: cache reads (falls back to ``input``);
    ``cache_write``: Anthropic 5-minute cache writes, 1.25x input (falls back to ``input``)."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None


def _claude(input_: float, output: float) -> Price:
    """Anthropic's published rule: cache reads 0.1x, 5-minute cache writes 1.25x base input."""
    return Price(input_, output, round(input_ * 0.1, 6), round(input_ * 1.25, 6))


# Standard (non-batch, non-priority) list prices, USD per 1M tokens, checked 2026-11-24 against
# developers.openai.com/api/docs/pricing and the model pages (e.g. .../models/gpt-5-nano),
# platform.claude.com/docs/en/about-claude/pricing, cross-checked with github/docs
# data/tables/copilot/models-and-pricing.yml. Not modelled: long-context tiers (Claude
# Sonnet 4/4.5 above 200K input: $6/$22.50; GPT-5.4 above 272K), Anthropic 1-hour cache
# writes (2x input; billed here at the 5-minute rate), batch/flex/priority tiers.
# Entries below a family name exist so longest-prefix lookup never lends a sibling's price
# (o1-pro is not o1; gpt-4o-2024-05-13 was priced above later gpt-4o snapshots).
BUILTIN_PRICES: Mapping[str, Price] = {
    # OpenAI: GPT-5 family
    "gpt-5": Price(1.25, 10.00, 0.125),
    "gpt-5-mini": Price(0.25, 2.00, 0.025),
    "gpt-5-nano": Price(0.05, 0.40, 0.005),
    "gpt-5-pro": Price(15.00, 120.00),
    "gpt-5.1": Price(1.25, 10.00, 0.125),
    "gpt-5.2": Price(1.75, 14.00, 0.175),
    "gpt-5.4": Price(2.50, 15.00, 0.25),
    "gpt-5.4-mini": Price(0.75, 4.50, 0.075),
    "gpt-5.4-nano": Price(0.20, 1.25, 0.02),
    "gpt-5.4-pro": Price(30.00, 180.00),
    "gpt-5.5": Price(5.00, 30.00, 0.50),
    # OpenAI: GPT-4.1 / GPT-4o
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4o-2024-05-13": Price(5.00, 15.00),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    # OpenAI: o-series reasoning models
    "o1": Price(15.00, 60.00, 7.50),
    "o1-mini": Price(1.10, 4.40, 0.55),
    "o1-pro": Price(150.00, 600.00),
    "o3": Price(2.00, 8.00, 0.50),
    "o3-mini": Price(1.10, 4.40, 0.55),
    "o3-pro": Price(20.00, 80.00),
    "o4-mini": Price(1.10, 4.40, 0.275),
    # OpenAI: legacy
    "gpt-4-turbo": Price(10.00, 30.00),
    "gpt-4-0125-preview": Price(10.00, 30.00),
    "gpt-4-1106-preview": Price(10.00, 30.00),
    "gpt-4": Price(30.00, 60.00),
    "gpt-4-32k": Price(60.00, 120.00),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "gpt-3.5-turbo-1106": Price(1.00, 2.00),
    "gpt-3.5-turbo-instruct": Price(1.50, 2.00),
    # OpenAI: embeddings (input only)
    "text-embedding-3-small": Price(0.02, 0.0),
    "text-embedding-3-large": Price(0.13, 0.0),
    "text-embedding-ada-002": Price(0.10, 0.0),
    # Anthropic: Claude 4.x ("claude-opus-4" also covers claude-opus-4-0 / -20250514)
    "claude-opus-4": _claude(15.00, 75.00),
    "claude-opus-4-1": _claude(15.00, 75.00),
    "claude-opus-4-5": _claude(5.00, 25.00),
    "claude-opus-4-6": _claude(5.00, 25.00),
    "claude-opus-4-7": _claude(5.00, 25.00),
    "claude-opus-4-8": _claude(5.00, 25.00),
    "claude-sonnet-4": _claude(3.00, 15.00),
    "claude-sonnet-4-5": _claude(3.00, 15.00),
    "claude-sonnet-4-6": _claude(3.00, 15.00),
    "claude-haiku-4-5": _claude(1.00, 5.00),
    # Anthropic: Claude 3.x
    "claude-3-7-sonnet": _claude(3.00, 15.00),
    "claude-3-5-sonnet": _claude(3.00, 15.00),
    "claude-3-5-haiku": _claude(0.80, 4.00),
    "claude-3-opus": _claude(15.00, 75.00),
    "claude-3-haiku": Price(0.25, 1.25, 0.03, 0.30),  # published rates, not the rounded rule
}


class PriceTable:
    """Built-in prices plus config ``overrides`` (same names replace, new names extend).

    Resolution: the exact (case-insensitive) name, else the longest known name that is a
    prefix ending at a ``-``, ``@`` or ``:`` boundary, so ``gpt-4o-2024-08-06`` resolves to
    ``gpt-4o`` and ``gpt-4o-mini-2024-07-18`` to ``gpt-4o-mini``, while ``gpt-4`` never
    prices ``gpt-4o`` or ``gpt-4.5-preview`` (those stay unknown unless listed).
    """

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        table = {name.lower(): price for name, price in BUILTIN_PRICES.items()}
        for name, price in (overrides or {}).items():
            table[name.strip().lower()] = price
        self._prices = table

    def lookup(self, model: str | None) -> Price | None:
        if not model:
            return None
        name = model.strip().lower()
        price = self._prices.get(name)
        cut = len(name)
        while price is None and cut > 0:
            cut = max(name.rfind(ch, 0, cut) for ch in _BOUNDARY)
            if cut > 0:
                price = self._prices.get(name[:cut])
        return price

    def cost(self, model: str | None, usage: Usage) -> float | None:
        """USD for one request, or None when the model is unknown or no usage is known.

        Input is split, never double-counted: cache reads at ``cached_input``, cache writes
        at ``cache_write``, the rest of ``prompt_tokens`` at ``input``. Reasoning tokens are
        already inside ``completion_tokens`` and billed once, at ``output``.
        """
        price = self.lookup(model)
        if price is None or (usage.prompt_tokens is None and usage.completion_tokens is None):
            return None
        prompt = usage.prompt_tokens or 0
        cached = min(usage.cached_tokens or 0, prompt)
        written = min(usage.cache_creation_tokens or 0, prompt - cached)
        fresh = prompt - cached - written
        read_rate = price.input if price.cached_input is None else price.cached_input
        write_rate = price.input if price.cache_write is None else price.cache_write
        total = (
            fresh * price.input
            + cached * read_rate
            + written * write_rate
            + (usage.completion_tokens or 0) * price.output
        )
        return total / _MILLION
