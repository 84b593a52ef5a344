"""The JSON behind the dashboard (``GET /dashboard/data``): typed records, serialised as is.

Schema (version 1); times are seconds unless a name says ``_ms``, instants are epoch seconds:

- ``version``, ``generated_at``, ``uptime_s``, ``in_flight``
- ``requests``: ``total``, ``errors``, ``rps_10s``, ``rps_60s``, ``per_second`` and
  ``errors_per_second`` (the last 60 seconds, oldest first)
- ``latency_ms``, ``ttft_ms``: ``window_s``, ``count``, ``p50``, ``p90``, ``p99`` (null
  without samples); latency is arrival to end of response, TTFT is streams only
- ``errors``: ``[{kind, total, last_60s}]``; kind is a status code or a failure word
- ``models``: ``[{name, requests, prompt_tokens, completion_tokens, cached_tokens, cost_usd,
  unpriced}]``; ``keys``: the same by API key, or null while keys are off
- ``cooldowns``: ``[{scope, upstream, remaining_s, until}]`` from the cooldown store
- ``pacing``: ``{available, scopes: [{scope, state, remaining_s, detail}],
  recent_holds: [{scope, kind, count, waited_s}]}`` (holds of the last 5 minutes)
- ``trims``: ``{requests, messages, recent: [{at, route, model, removed, budget,
  prompt_tokens_est}]}``
- ``recent``: the last requests' log lines (the fields of the one JSON log line), newest first
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..config import Config
from ..resilience.scope import LimitKind, Scope
from .stats import LiveStats, Percentiles, TrimRecord

VERSION = 1
SERIES_SECONDS = 60
HOLD_WINDOW_S = 300.0
PERCENTILE_WINDOW_S = 300.0


@dataclass(frozen=True, slots=True)
class PacingState:
    """One pacing scope as a pacer reports it (the pacing feature fills these)."""

    scope: str
    state: str
    """E.g. ``open``, ``holding``, ``throttled``."""
    remaining_s: float | None
    detail: str | None = None


class PacingSource(Protocol):
    """What a pacer offers the dashboard: its current state per scope (sync, cheap)."""

    def pacing_snapshot(self) -> Sequence[PacingState]: ...


@dataclass(frozen=True, slots=True)
class RequestCounts:
    total: int
    errors: int
    rps_10s: float
    rps_60s: float
    per_second: list[int]
    errors_per_second: list[int]


@dataclass(frozen=True, slots=True)
class ErrorCount:
    kind: str
    total: int
    last_60s: int


@dataclass(frozen=True, slots=True)
class UsageRow:
    name: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float
    unpriced: int


@dataclass(frozen=True, slots=True)
class CooldownRow:
    scope: str
    upstream: str | None
    remaining_s: float
    until: float


@dataclass(frozen=True, slots=True)
class HoldSummary:
    scope: str
    kind: str
    count: int
    waited_s: float


@dataclass(frozen=True, slots=True)
class PacingView:
    available: bool
    scopes: list[PacingState]
    recent_holds: list[HoldSummary]


@dataclass(frozen=True, slots=True)
class TrimView:
    requests: int
    messages: int
    recent: list[TrimRecord]


@dataclass(frozen=True, slots=True)
class DashboardData:
    version: int
    generated_at: float
    uptime_s: float
    in_flight: int
    requests: RequestCounts
    latency_ms: Percentiles
    ttft_ms: Percentiles
    errors: list[ErrorCount]
    models: list[UsageRow]
    keys: list[UsageRow] | None
    cooldowns: list[CooldownRow]
    pacing: PacingView
    trims: TrimView
    recent: list[dict[str, Any]]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), default=str, ensure_ascii=False)


def cooldown_rows(snapshot: Mapping[str, float], config: Config, now: float) -> list[CooldownRow]:
    """Cooldown scopes named by upstream, limit kind and model; never a credential (a scope
    key holds only a fingerprint, and even that is left out) nor a URL."""
    rows = []
    for key, until in snapshot.items():
        scope = Scope.from_key(key)
        if scope is None:
            continue
        remaining = round(until - now, 1)
        if remaining > 0:
            name = scope.upstream if scope.kind is LimitKind.UPSTREAM else scope.label
            rows.append(CooldownRow(name, scope.upstream, remaining, round(until, 3)))
    return sorted(rows, key=lambda r: -r.remaining_s)


def _usage_rows(table: Mapping[str, Any]) -> list[UsageRow]:
    rows = [
        UsageRow(
            name,
            t.requests,
            t.prompt_tokens,
            t.completion_tokens,
            t.cached_tokens,
            round(t.cost_usd, 6),
            t.unpriced,
        )
        for name, t in table.items()
    ]
    return sorted(rows, key=lambda r: (-r.requests, r.name))


def _errors(stats: LiveStats, now: float) -> list[ErrorCount]:
    recent: dict[str, int] = {}
    for t, kind in stats.recent_errors:
        if now - t <= SERIES_SECONDS:
            recent[kind] = recent.get(kind, 0) + 1
    rows = [ErrorCount(k, n, recent.get(k, 0)) for k, n in stats.error_kinds.items()]
    return sorted(rows, key=lambda r: (-r.last_60s, -r.total, r.kind))


def _holds(stats: LiveStats, now: float) -> list[HoldSummary]:
    sums: dict[tuple[str, str], tuple[int, float]] = {}
    for hold in stats.holds:
        if now - hold.t <= HOLD_WINDOW_S:
            count, waited = sums.get((hold.scope, hold.kind), (0, 0.0))
            sums[(hold.scope, hold.kind)] = (count + 1, waited + hold.waited_s)
    return [HoldSummary(s, k, n, round(w, 3)) for (s, k), (n, w) in sorted(sums.items())]


def _rate(series: list[int], seconds: int) -> float:
    """Requests per second over the last ``seconds`` complete seconds."""
    window = series[-seconds - 1 : -1]
    return round(sum(window) / seconds, 2) if window else 0.0


def build_view(
    stats: LiveStats,
    *,
    cooldowns: Mapping[str, float],
    config: Config,
    in_flight: int,
    pacing: PacingSource | None = None,
) -> DashboardData:
    now = stats.clock()
    wall = time.time()
    series = stats.requests.series(now, SERIES_SECONDS + 1)
    errors = stats.errors.series(now, SERIES_SECONDS + 1)
    return DashboardData(
        version=VERSION,
        generated_at=round(wall, 3),
        uptime_s=round(now - stats.started, 1),
        in_flight=in_flight,
        requests=RequestCounts(
            stats.total,
            stats.errors_total,
            _rate(series, 10),
            _rate(series, SERIES_SECONDS),
            series[1:],
            errors[1:],
        ),
        latency_ms=stats.latency.percentiles(now, PERCENTILE_WINDOW_S, 1000.0),
        ttft_ms=stats.ttft.percentiles(now, PERCENTILE_WINDOW_S, 1000.0),
        errors=_errors(stats, now),
        models=_usage_rows(stats.models.rows),
        keys=_usage_rows(stats.keys.rows) if stats.keys_seen else None,
        cooldowns=cooldown_rows(cooldowns, config, wall),
        pacing=PacingView(
            available=pacing is not None,
            scopes=list(pacing.pacing_snapshot()) if pacing is not None else [],
            recent_holds=_holds(stats, now),
        ),
        trims=TrimView(stats.trims, stats.trimmed_messages, list(stats.recent_trims)),
        recent=list(stats.recent),
    )
