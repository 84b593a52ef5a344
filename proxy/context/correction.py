"""Token counts with known accuracy for models whose tokenizer the proxy does not have.

The raw estimate (cl100k_base, no inflation) is compared with the prompt tokens the provider
billed for the same body; the log of billed/raw is tracked per (upstream, model, script
class) and yields bounds for the next request:

- ``low``: the most favourable count. Pre-emptive trimming happens only when even this is
  over the budget, so a conversation that fits is never trimmed on a guess.
- ``estimate``: the point estimate (the geometric mean ratio), for logs and metrics.
- ``high``: the least favourable count, for pacing cost or token rate limits.

Before any sample the bounds are the measured prior of the script class (``PRIORS``: every
ratio seen between cl100k_base and six real tokenizers on that script, plus the figures of
issue 13, with a little room). With samples the centre is the samples' mean and the half
width is ``Z`` spreads (a prediction interval for one more request) plus the prior's half
width weighted ``N0 / (N0 + n)``: it shrinks as samples accumulate and never below the
spread the samples show.

Sharing: samples live in a :class:`SampleStore` (the last ``keep`` log-ratios per key), so
every worker and instance learns from every response. The memory store is here; a Redis one
(LPUSH + LTRIM + LRANGE per key) satisfies the same protocol.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from .counting import RawCount
from .scripts import ScriptClass

__all__ = [
    "PRIORS",
    "Bounds",
    "Correction",
    "CorrectionKey",
    "CorrectionTable",
    "Corrections",
    "CountMethod",
    "Measured",
    "MemorySampleStore",
    "Prior",
    "SampleStore",
    "Stats",
    "exact_bounds",
]


class CountMethod(StrEnum):
    """How the input tokens of a request were counted (for the log line)."""

    EXACT = "tiktoken"
    """The model's own tokenizer (OpenAI models)."""
    PRIOR = "prior"
    """Raw estimate with the script class's measured prior bounds (no samples yet)."""
    LEARNED = "learned"
    """Raw estimate corrected by samples of billed tokens."""
    ENDPOINT = "count_tokens"
    """The provider's own count (Anthropic /v1/messages/count_tokens)."""


@dataclass(frozen=True, slots=True)
class Bounds:
    """A request's input tokens: ``low <= estimate <= high``, in the provider's tokens."""

    raw: int
    """The proxy's raw count (cl100k_base or the model's own tokenizer)."""
    low: int
    estimate: int
    high: int
    method: CountMethod
    samples: int = 0

    @property
    def low_ratio(self) -> float:
        """Provider tokens per raw token at the low bound (to turn a budget into raw units)."""
        return self.low / self.raw if self.raw > 0 else 1.0


def exact_bounds(tokens: int, method: CountMethod = CountMethod.EXACT) -> Bounds:
    """Bounds of a count that is the provider's own (tiktoken for OpenAI, count_tokens)."""
    return Bounds(tokens, tokens, tokens, tokens, method)


@dataclass(frozen=True, slots=True)
class Prior:
    """Provider tokens per cl100k token, the range measured for a script class."""

    low: float
    high: float


PRIORS: Mapping[ScriptClass, Prior] = {
    ScriptClass.LATIN: Prior(0.52, 1.60),
    ScriptClass.CYRILLIC: Prior(0.51, 1.35),
    ScriptClass.CJK: Prior(0.60, 1.60),
    ScriptClass.HANGUL: Prior(0.51, 2.35),
    ScriptClass.DIGITS: Prior(0.74, 3.10),
    ScriptClass.OTHER: Prior(0.26, 2.00),
    ScriptClass.MIXED: Prior(0.26, 3.10),
}
"""Text-only ratios measured against o200k_base, Claude 2, Mistral tekken and SentencePiece,
and LLaMA-2 (docs/context-counting.md), widened ~5%: LATIN 0.55 (Vietnamese, o200k) to 1.51
(code, LLaMA-2), and 0.88 (English on issue 13's server); CYRILLIC 0.54-1.24; CJK 0.64-1.52;
HANGUL 0.54-1.79 and 2.2 (issue 13); DIGITS 0.77-3.00 (one token per digit); OTHER 0.28
(Hindi, o200k) to 1.86 (Thai, Claude 2)."""

Z = 3.0
"""Spreads of the log-ratio on each side of the centre."""
N0 = 1.0
"""Weight of the prior's width, in samples."""
SPREAD_FLOOR = 0.02
"""Minimum log-ratio spread: two samples that agree do not make the next request exact."""
MIN_RAW_TOKENS = 32
"""Smaller prompts are not sampled: fixed template tokens dominate their ratio."""
_LOG_CLAMP = (math.log(0.05), math.log(20.0))


@dataclass(frozen=True, slots=True)
class Stats:
    """Welford's running mean and squared deviations of log(billed / raw)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> Stats:
        n = self.n + 1
        delta = x - self.mean
        mean = self.mean + delta / n
        return Stats(n, mean, self.m2 + delta * (x - mean))

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        stats = cls()
        for x in values:
            stats = stats.add(x)
        return stats

    @property
    def spread(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0


@dataclass(frozen=True, slots=True)
class Correction:
    """What is known about one (model, script class): the prior and the samples' stats."""

    prior: Prior
    stats: Stats = Stats()

    def log_interval(self) -> tuple[float, float, float]:
        """(low, centre, high) of log(provider tokens / raw tokens)."""
        lo, hi = math.log(self.prior.low), math.log(self.prior.high)
        n = self.stats.n
        if n == 0:
            return lo, (lo + hi) / 2, hi
        data = Z * max(self.stats.spread, SPREAD_FLOOR) * math.sqrt(1 + 1 / n)
        half = data + (hi - lo) / 2 * N0 / (N0 + n)
        centre = self.stats.mean
        return centre - half, centre, centre + half

    def bounds(self, raw: int) -> Bounds:
        lo, centre, hi = self.log_interval()
        method = CountMethod.LEARNED if self.stats.n else CountMethod.PRIOR
        return Bounds(
            raw=raw,
            low=math.floor(raw * math.exp(lo)),
            estimate=round(raw * math.exp(centre)),
            high=math.ceil(raw * math.exp(hi)),
            method=method,
            samples=self.stats.n,
        )


@dataclass(frozen=True, slots=True)
class CorrectionKey:
    """Whose ratio: the same model behind two servers may have two chat templates."""

    upstream: str
    model: str
    """The registry's normalised name (``ModelFacts.name``)."""
    script: ScriptClass

    def store_key(self) -> str:
        return f"{self.upstream}|{self.model}|{self.script.value}"


@dataclass(frozen=True, slots=True)
class Measured:
    """A request's bounds and whose correction they came from (None: exact, nothing to learn)."""

    bounds: Bounds
    key: CorrectionKey | None


@dataclass(frozen=True, slots=True)
class CorrectionTable:
    """Every script class's correction for one (upstream, model): what counting a body needs
    before it knows the body's class (known only once the body, or its newest part, is read)."""

    upstream: str
    model: str
    corrections: Mapping[ScriptClass, Correction]

    def floor_ratio(self) -> float:
        """The smallest low-bound ratio of any class: a body of at least N raw tokens has a low
        bound of at least floor(N x this), whatever its class turns out to be."""
        return min(math.exp(c.log_interval()[0]) for c in self.corrections.values())

    def measured(self, script: ScriptClass, raw: int) -> Measured:
        key = CorrectionKey(self.upstream, self.model, script)
        return Measured(self.corrections[script].bounds(raw), key)


class SampleStore(Protocol):
    """Where samples are shared: the last ``keep`` values per key, oldest dropped first."""

    async def add(self, key: str, value: float, keep: int) -> None: ...

    async def recent(self, key: str) -> Sequence[float]: ...


class MemorySampleStore:
    """One process's samples; at most ``max_keys`` keys (least recently added dropped), since
    model names come from clients."""

    def __init__(self, max_keys: int = 1024) -> None:
        self._data: OrderedDict[str, deque[float]] = OrderedDict()
        self._max_keys = max_keys

    async def add(self, key: str, value: float, keep: int) -> None:
        values = self._data.pop(key, None)
        if values is None or values.maxlen != keep:
            values = deque(values or (), maxlen=keep)
        values.append(value)
        self._data[key] = values
        while len(self._data) > self._max_keys:
            self._data.popitem(last=False)

    async def recent(self, key: str) -> Sequence[float]:
        return list(self._data.get(key, ()))


class Corrections:
    """Per-key corrections read from a shared store, cached here for ``refresh_s``."""

    def __init__(
        self,
        store: SampleStore,
        *,
        keep: int = 200,
        refresh_s: float = 5.0,
        priors: Mapping[ScriptClass, Prior] = PRIORS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._keep = keep
        self._refresh_s = refresh_s
        self._priors = priors
        self._clock = clock
        self._cache: dict[str, tuple[float, Correction]] = {}
        self._ceilings: dict[tuple[str, str], tuple[float, float]] = {}

    async def get(self, key: CorrectionKey) -> Correction:
        """The current correction for ``key`` (the prior alone until samples arrive)."""
        name = key.store_key()
        cached = self._cache.get(name)
        if cached is not None and self._clock() - cached[0] < self._refresh_s:
            return cached[1]
        values = await self._store.recent(name)
        return self._remember(name, Correction(self._priors[key.script], Stats.of(values)))

    async def bounds(self, key: CorrectionKey, raw: int) -> Bounds:
        return (await self.get(key)).bounds(raw)

    async def measure(self, upstream: str, model: str, raw: RawCount) -> Measured:
        """Bounds for a raw count: exact for a known tokenizer, else learned or prior.
        ``model``: the registry's normalised name (``ModelFacts.name``)."""
        if raw.exact:
            return Measured(exact_bounds(raw.tokens), None)
        key = CorrectionKey(upstream, model, raw.script)
        return Measured(await self.bounds(key, raw.tokens), key)

    async def table(self, upstream: str, model: str) -> CorrectionTable:
        """Every class's current correction for ``model`` (the registry's normalised name)."""
        found = {s: await self.get(CorrectionKey(upstream, model, s)) for s in ScriptClass}
        return CorrectionTable(upstream, model, found)

    async def low_ratio_ceiling(self, upstream: str, model: str) -> float:
        """The largest low-bound ratio over every script class of this model: a body of N
        bytes has a low bound of at most N x this (a token covers >= 1 byte), so
        ``tokens.may_exceed(body, budget, safety_factor=ceiling)`` False means "fits, skip
        counting". Kept for ``refresh_s`` like the corrections it is made of: every request
        on a context route asks, and most are answered by it alone."""
        memo = self._ceilings.get((upstream, model))
        if memo is not None and self._clock() - memo[0] < self._refresh_s:
            return memo[1]
        ratios = []
        for script in ScriptClass:
            low, _, _ = (await self.get(CorrectionKey(upstream, model, script))).log_interval()
            ratios.append(math.exp(low))
        if len(self._ceilings) > 4096:
            self._ceilings.clear()
        self._ceilings[(upstream, model)] = (self._clock(), max(ratios))
        return max(ratios)

    async def learn(self, measured: Measured, billed: int) -> bool:
        """Feed back the input tokens billed for the body ``measured`` counted (False: exact
        count or unusable sample)."""
        if measured.key is None:
            return False
        return await self.observe(measured.key, measured.bounds.raw, billed)

    async def observe(self, key: CorrectionKey, raw: int, billed: int) -> bool:
        """Record that a body the proxy counted ``raw`` was billed ``billed`` input tokens
        (all of them: cached and cache-written included). False when not usable."""
        if raw < MIN_RAW_TOKENS or billed <= 0:
            return False
        lo, hi = _LOG_CLAMP
        value = min(hi, max(lo, math.log(billed / raw)))
        name = key.store_key()
        await self._store.add(name, value, self._keep)
        self._cache.pop(name, None)
        self._ceilings.pop((key.upstream, key.model), None)
        return True

    def _remember(self, name: str, correction: Correction) -> Correction:
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[name] = (self._clock(), correction)
        return correction
