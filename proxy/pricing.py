"""Request cost in USD from normalised token usage and a per-model price table.

Prices are data shipped in code (no network, no file read at import); config may override
or extend them (``PriceTable(overrides)``). A model this table does not know costs ``None``,
never ``0``: an unknown price must not look like a free request.
"""

from __future__ import annotations

from collections.abc import Mapping

from proxy.model_table import BUILTIN_MODELS, ModelSpec, Price
from proxy.models import DEFAULT_REGISTRY, ModelRegistry
from proxy.usage import Usage

__all__ = ["BUILTIN_PRICES", "Price", "PriceTable"]

_MILLION = 1_000_000  # prices are per 1M tokens

BUILTIN_PRICES: Mapping[str, Price] = {
    name: spec.price for name, spec in BUILTIN_MODELS.items() if spec.price is not None
}
"""The registry's built-in prices (``proxy.model_table`` holds the rows and their sources)."""


class PriceTable:
    """Built-in prices plus config ``overrides`` (same names replace, new names extend).

    Resolution is the model registry's (``proxy.models``): ``openai/gpt-4o``, Bedrock and
    Vertex ids, ``ft:`` fine-tunes and dated snapshots resolve to the longest known name,
    while ``gpt-4`` never prices ``gpt-4o`` or ``gpt-4.5-preview``.
    """

    def __init__(
        self,
        overrides: Mapping[str, Price] | None = None,
        *,
        registry: ModelRegistry = DEFAULT_REGISTRY,
    ) -> None:
        rows = {name: ModelSpec(price=price) for name, price in (overrides or {}).items()}
        self._registry = registry.extended(rows) if rows else registry

    def lookup(self, model: str | None) -> Price | None:
        return self._registry.facts(model).price

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
