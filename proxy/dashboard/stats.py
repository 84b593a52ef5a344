"""Bounded rolling windows of what the proxy did, fed once per finished request.

Everything here has a fixed ceiling (seconds in a ring, samples in a deque, distinct names in
a table), so a proxy that runs for months under any traffic holds the same few hundred KB.
Pure: no aiohttp, no I/O; the clock is injectable for tests.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errorkind import error_kind
from ..exchange import Exchange
from ..logline import report_fields

Clock = Callable[[], float]

RING_SECONDS = 120
SAMPLES = 4096
"""Latency and TTFT samples kept; percentiles are over those inside the window."""
MAX_NAMES = 64
"""Distinct models (or keys) tracked; later ones are summed under ``other``."""
MAX_KEYS = 1024
MAX_ERROR_KINDS = 32
RECENT_ERRORS = 2048
RECENT_TRIMS = 20
RECENT_HOLDS = 512
OTHER = "other"


class SecondRing:
    """Counts per second for the last ``size`` seconds of the monotonic clock."""

    def __init__(self, size: int = RING_SECONDS) -> None:
        self._size = size
        self._counts = [0] * size
        self._second = [-1] * size

    def add(self, t: float, n: int = 1) -> None:
        second = int(t)
        i = second % self._size
        if self._second[i] != second:
            self._second[i], self._counts[i] = second, 0
        self._counts[i] += n

    def series(self, now: float, seconds: int) -> list[int]:
        """Counts of the last ``seconds`` whole seconds, oldest first, the current one last."""
        current = int(now)
        out = []
        for second in range(current - seconds + 1, current + 1):
            i = second % self._size
            out.append(self._counts[i] if self._second[i] == second else 0)
        return out


@dataclass(frozen=True, slots=True)
class Percentiles:
    window_s: float
    count: int
    p50: float | None
    p90: float | None
    p99: float | None


class Samples:
    """The last ``maxlen`` (time, value) samples."""

    def __init__(self, maxlen: int = SAMPLES) -> None:
        self._items: deque[tuple[float, float]] = deque(maxlen=maxlen)

    def add(self, t: float, value: float) -> None:
        self._items.append((t, value))

    def percentiles(self, now: float, window_s: float, scale: float = 1.0) -> Percentiles:
        values = sorted(v * scale for t, v in self._items if now - t <= window_s)
        if not values:
            return Percentiles(window_s, 0, None, None, None)

        def rank(q: float) -> float:  # nearest rank
            return round(values[min(len(values) - 1, int(q * len(values)))], 3)

        return Percentiles(window_s, len(values), rank(0.5), rank(0.9), rank(0.99))


@dataclass(slots=True)
class UsageTotals:
    """Requests, tokens and cost summed for one model (or one key)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0


class Table:
    """Totals by name, at most ``limit`` names (the rest go to ``other``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.rows: dict[str, UsageTotals] = {}

    def row(self, name: str) -> UsageTotals:
        row = self.rows.get(name)
        if row is None:
            if len(self.rows) >= self.limit:
                name = OTHER
            row = self.rows.setdefault(name, UsageTotals())
        return row

    def add(self, name: str, ex: Exchange) -> None:
        row = self.row(name)
        row.requests += 1
        outcome = ex.usage
        if outcome is None:
            return
        usage = outcome.usage
        row.prompt_tokens += usage.prompt_tokens or 0
        row.completion_tokens += usage.completion_tokens or 0
        row.cached_tokens += usage.cached_tokens or 0
        if outcome.cost_usd is not None:
            row.cost_usd += outcome.cost_usd
        elif usage.source != "none":
            row.unpriced += 1


@dataclass(frozen=True, slots=True)
class TrimRecord:
    at: float
    """Epoch seconds."""
    route: str | None
    model: str | None
    removed: int
    budget: int
    prompt_tokens_est: int


@dataclass(frozen=True, slots=True)
class HoldRecord:
    t: float
    """Monotonic seconds when the hold began."""
    scope: str
    kind: str
    waited_s: float


@dataclass(slots=True)
class LiveStats:
    """What the dashboard shows, kept since the server started (never per config generation)."""

    recent_requests: int = 50
    clock: Clock = time.monotonic
    started: float = field(init=False)
    total: int = 0
    errors_total: int = 0
    requests: SecondRing = field(default_factory=SecondRing)
    errors: SecondRing = field(default_factory=SecondRing)
    latency: Samples = field(default_factory=Samples)
    ttft: Samples = field(default_factory=Samples)
    error_kinds: dict[str, int] = field(default_factory=dict)
    recent_errors: deque[tuple[float, str]] = field(
        default_factory=lambda: deque(maxlen=RECENT_ERRORS)
    )
    models: Table = field(default_factory=lambda: Table(MAX_NAMES))
    keys: Table = field(default_factory=lambda: Table(MAX_KEYS))
    keys_seen: bool = False
    trims: int = 0
    trimmed_messages: int = 0
    recent_trims: deque[TrimRecord] = field(default_factory=lambda: deque(maxlen=RECENT_TRIMS))
    holds: deque[HoldRecord] = field(default_factory=lambda: deque(maxlen=RECENT_HOLDS))
    recent: deque[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()
        self.recent = deque(maxlen=self.recent_requests)

    def observe(self, ex: Exchange, key: str | None = None) -> None:
        """One finished request. ``key``: a label for the API key it used (keys feature)."""
        now = self.clock()
        self.total += 1
        self.requests.add(now)
        kind = error_kind(ex)
        if kind is not None:
            self._error(now, kind)
        if ex.route is not None:
            self.latency.add(now, now - ex.t_start)
            if ex.stream and ex.t_first_token is not None:
                self.ttft.add(now, ex.t_first_token - ex.t_start)
        model = ex.usage.model if ex.usage is not None else None
        if ex.usage is not None:
            self.models.add(model or "unknown", ex)
        if key is not None:
            self.keys_seen = True
            self.keys.add(key, ex)
        self._trim(ex, model)
        for hold in ex.retry.holds:
            self.holds.append(HoldRecord(hold.started, hold.scope, hold.kind.value, hold.waited_s))
        self.recent.appendleft(report_fields(ex))

    def _error(self, now: float, kind: str) -> None:
        self.errors_total += 1
        self.errors.add(now)
        if kind not in self.error_kinds and len(self.error_kinds) >= MAX_ERROR_KINDS:
            kind = OTHER
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
        self.recent_errors.append((now, kind))

    def _trim(self, ex: Exchange, model: str | None) -> None:
        context = ex.context
        if context is None or context.trimmed_messages <= 0:
            return
        self.trims += 1
        self.trimmed_messages += context.trimmed_messages
        route = ex.route.name if ex.route is not None else None
        self.recent_trims.appendleft(
            TrimRecord(
                time.time(),
                route,
                model,
                context.trimmed_messages,
                context.budget,
                context.prompt_tokens_est,
            )
        )
