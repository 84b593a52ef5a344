"""The one model registry: a model name in, every fact the proxy knows about it out.

Context budget, pricing, token counting and metric labels all ask :meth:`ModelRegistry.facts`,
so ``gpt-4o``, ``openai/gpt-4o``, ``ft:gpt-4o:org::id`` and ``gpt-4o-2024-08-06`` can never get
different answers from different tables.

Matching, one rule for every fact:

1. Normalise: strip and lower-case; drop a routing prefix up to the last ``/``
   (``openai/gpt-4o``, ``bedrock/...``, Vertex ``publishers/anthropic/models/...``, Bedrock
   ARNs); drop a fine-tune ``ft:``; drop a Bedrock ``[region.]vendor.`` prefix
   (``us.anthropic.claude-...``, ``anthropic.claude-...``).
2. Candidates are the name itself and every prefix that ends right before a ``-``, ``@`` or
   ``:`` (dated snapshots ``gpt-4o-2024-08-06``, Vertex ``claude-3-5-sonnet@20240620``, Bedrock
   ``...-v2:0``, fine-tunes ``gpt-4o:org::id``), longest first. So ``gpt-4`` never captures
   ``gpt-4o`` or ``gpt-4.1``.
3. Each fact comes from the longest candidate whose row states it (a row states only what
   differs from its family, see ``model_table``). The label is the longest candidate that
   has a row at all; anything else is ``other`` (bounded metric cardinality).

Config extends the table: a config entry replaces the facts it states for that exact name,
and adds the name if new. A longer name still wins over a shorter one, whichever layer it
comes from (overriding ``gpt-4o``'s price does not reprice ``gpt-4o-mini``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

from .model_table import (
    BUILTIN_MODELS,
    CL100K,
    CLOUD_VENDOR_PREFIXES,
    O200K,
    UNKNOWN_TOKENIZER,
    ModelSpec,
    Price,
    Tokenizer,
)

if TYPE_CHECKING:
    from .config import Config, Context

__all__ = [
    "NONE",
    "OTHER",
    "ModelFacts",
    "ModelRegistry",
    "ModelSpec",
    "Price",
    "Tokenizer",
    "candidates",
    "normalize",
]

NONE = "none"
"""Label of a request that names no model."""
OTHER = "other"
"""Label of every model name outside the known set."""

_BOUNDARY = "-@:"
_BEDROCK = re.compile(
    r"^(?:[a-z]{2,6}(?:-[a-z]+)?\.)?(?:" + "|".join(CLOUD_VENDOR_PREFIXES) + r")\."
)
_TOKENIZERS: Mapping[str, Tokenizer] = {
    "o200k_base": O200K,
    "cl100k_base": CL100K,
    "unknown": UNKNOWN_TOKENIZER,
}
_MEMO_LIMIT = 4096


def normalize(model: str) -> str:
    """The comparable form of a model name (steps 1 of the module docstring)."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    name = name.removeprefix("ft:")
    return _BEDROCK.sub("", name, count=1)


def candidates(name: str) -> Iterator[str]:
    """``name`` and its prefixes ending before a boundary character, longest first."""
    yield name
    cut = len(name)
    while True:
        cut = max(name.rfind(ch, 0, cut) for ch in _BOUNDARY)
        if cut <= 0:
            return
        yield name[:cut]


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What the proxy knows about one model name; ``None`` facts are unknown."""

    name: str
    """The normalised name (a stable key, e.g. for learned token corrections)."""
    key: str | None
    """The longest known name it resolves to; None when nothing matches."""
    label: str
    """Metric label: ``key``, ``other`` for unknown names, ``none`` without a model."""
    window: int | None
    max_input: int | None
    tokenizer: Tokenizer
    price: Price | None


def _merge(base: ModelSpec | None, top: ModelSpec) -> ModelSpec:
    if base is None:
        return top
    stated = {f.name: getattr(top, f.name) for f in fields(top) if getattr(top, f.name) is not None}
    return replace(base, **stated)


class ModelRegistry:
    """Built-in rows plus layers of config rows; lookups are memoised per name."""

    def __init__(
        self,
        rows: Mapping[str, ModelSpec] | None = None,
        labels: Iterable[str] = (),
    ) -> None:
        table = {normalize(k): v for k, v in (BUILTIN_MODELS if rows is None else rows).items()}
        for name in labels:
            if name and name.strip():
                table.setdefault(normalize(name), ModelSpec())
        self._rows = table
        self._memo: dict[str, ModelFacts] = {}
        sizes = [n for spec in table.values() for n in (spec.window, spec.max_input) if n]
        self.largest_input = max(sizes, default=0)
        """The largest window or input cap of any row: no model's input budget is larger."""

    def extended(self, rows: Mapping[str, ModelSpec], labels: Iterable[str] = ()) -> ModelRegistry:
        """A new registry: ``rows`` replace the facts they state, new names are added."""
        merged = dict(self._rows)
        for name, spec in rows.items():
            key = normalize(name)
            merged[key] = _merge(merged.get(key), spec)
        return ModelRegistry(merged, labels)

    def with_windows(self, windows: Mapping[str, int]) -> ModelRegistry:
        """Shorthand for ``context.models`` (name -> window)."""
        if not windows:
            return self
        return self.extended({k: ModelSpec(window=v) for k, v in windows.items()})

    @classmethod
    def from_config(cls, config: Config) -> ModelRegistry:
        """Built-ins + top-level ``models``, ``pricing`` and ``context.models``; upstream model
        mappings become label-only names. Route-level windows: :meth:`for_context`."""
        rows: dict[str, ModelSpec] = {}
        for name, entry in config.models.items():
            tokenizer = None if entry.tokenizer is None else _TOKENIZERS[entry.tokenizer]
            rows[name] = ModelSpec(entry.window, entry.max_input_tokens, tokenizer)
        for name, p in config.pricing.items():
            spec = ModelSpec(price=Price(p.input, p.output, p.cached_input, p.cache_write))
            rows[name] = _merge(rows.get(name), spec)
        for name, window in config.context.models.items():
            rows[name] = _merge(rows.get(name), ModelSpec(window=window))
        labels: set[str] = set()
        for route in config.routes:
            labels |= set(route.context.models)
            for upstream in route.upstreams:
                labels |= set(upstream.models) | set(upstream.models.values())
        return cls().extended(rows, labels)

    def for_context(self, context: Context) -> ModelRegistry:
        """This registry with a route's ``context.models`` windows on top."""
        return self.with_windows(context.models)

    def known_names(self) -> frozenset[str]:
        """Every label value besides ``other`` and ``none``."""
        return frozenset(self._rows)

    def label(self, model: str | None) -> str:
        return self.facts(model).label

    def facts(self, model: str | None) -> ModelFacts:
        """Every fact about ``model`` (see the module docstring for the matching rule)."""
        raw = model or ""
        found = self._memo.get(raw)
        if found is None:
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            found = self._memo[raw] = self._resolve(raw)
        return found

    def _resolve(self, raw: str) -> ModelFacts:
        name = normalize(raw) if raw.strip() else ""
        rows = [(c, self._rows[c]) for c in candidates(name) if c in self._rows] if name else []

        def first(attr: str) -> object:
            return next((getattr(s, attr) for _, s in rows if getattr(s, attr) is not None), None)

        key = rows[0][0] if rows else None
        label = NONE if not name else (key or OTHER)
        tokenizer = first("tokenizer")
        return ModelFacts(
            name=name,
            key=key,
            label=label,
            window=first("window"),  # type: ignore[arg-type]
            max_input=first("max_input"),  # type: ignore[arg-type]
            tokenizer=tokenizer if isinstance(tokenizer, Tokenizer) else UNKNOWN_TOKENIZER,
            price=first("price"),  # type: ignore[arg-type]
        )


DEFAULT_REGISTRY = ModelRegistry()
"""Built-ins only (a module-level constant: pure data, built without IO)."""
