"""Context windows and input caps by model name: a view of :mod:`proxy.models`.

Kept for callers written before the registry; new code asks ``ModelRegistry.facts``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache

from ..model_table import BUILTIN_MODELS
from ..models import DEFAULT_REGISTRY, ModelRegistry, candidates, normalize

__all__ = [
    "BUILTIN_MAX_INPUT",
    "BUILTIN_WINDOWS",
    "context_window",
    "longest_prefix",
    "max_input_tokens",
    "normalize_model",
]

BUILTIN_WINDOWS: Mapping[str, int] = {
    name: spec.window for name, spec in BUILTIN_MODELS.items() if spec.window is not None
}
BUILTIN_MAX_INPUT: Mapping[str, int] = {
    name: spec.max_input for name, spec in BUILTIN_MODELS.items() if spec.max_input is not None
}


def normalize_model(model: str) -> str:
    """The registry's comparable form of a model name."""
    return normalize(model)


def longest_prefix(keys: Iterable[str], model: str) -> str | None:
    """The longest key that is ``model`` or a prefix of it ending before ``-``, ``@`` or ``:``."""
    known = set(keys)
    return next((c for c in candidates(model) if c in known), None)


@lru_cache(maxsize=64)
def _registry(overrides: frozenset[tuple[str, int]]) -> ModelRegistry:
    return DEFAULT_REGISTRY.with_windows(dict(overrides))


def context_window(model: str | None, overrides: Mapping[str, int] | None = None) -> int | None:
    """Context window for ``model``; config ``overrides`` extend the registry.

    None: unknown model (the caller should not trim what it cannot size).
    """
    registry = _registry(frozenset(overrides.items())) if overrides else DEFAULT_REGISTRY
    return registry.facts(model).window


def max_input_tokens(model: str | None) -> int | None:
    """Published cap on input tokens when it is lower than the window minus output."""
    return DEFAULT_REGISTRY.facts(model).max_input
