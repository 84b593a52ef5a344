"""The dashboard's rolling windows stay bounded and say what happened; its JSON view names
cooldowns without credentials."""

from __future__ import annotations

import json

from aiohttp.test_utils import make_mocked_request

from proxy import config as config_mod
from proxy.dashboard.stats import MAX_ERROR_KINDS, MAX_NAMES, LiveStats, Samples, SecondRing
from proxy.dashboard.view import build_view, cooldown_rows
from proxy.exchange import Exchange
from proxy.outcomes import Hold, HoldKind, UsageOutcome
from proxy.resilience.scope import LimitKind, Scope
from proxy.routing import Router
from proxy.usage import Usage

CFG = config_mod.from_dict(
    {
        "routes": [
            {
                "prefix": "/openai",
                "provider": "openai",
                "upstreams": [{"name": "main", "base_url": "https://user:pw@api.example.com/v1"}],
            }
        ]
    },
    env={},
)


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def exchange(status: int = 200, model: str | None = "gpt-4o", t_start: float = 999.5) -> Exchange:
    path = "/openai/v1/chat/completions"
    ex = Exchange(make_mocked_request("POST", path), t_start=t_start)
    match = Router(CFG.routes).match(path)
    assert match is not None
    ex.routed(*match)
    ex.status = status
    ex.usage = UsageOutcome(model, Usage(10, 2, 4, None, None, "upstream"), 0.001)
    return ex


def test_second_ring_counts_per_second_and_forgets_old_seconds() -> None:
    ring = SecondRing(size=10)
    ring.add(100.2)
    ring.add(100.9, 2)
    ring.add(103.0)
    assert [3, 0, 0, 1] == ring.series(103.5, 4)
    ring.add(113.1)  # the same slot as 103, ten seconds later
    assert [0] * 9 + [1] == ring.series(113.5, 10)


def test_percentiles_cover_only_the_window() -> None:
    samples = Samples(maxlen=100)
    for i in range(1, 11):
        samples.add(float(i), i / 10)
    got = samples.percentiles(now=10.0, window_s=4.5, scale=1000)
    assert (5, 800.0, 1000.0, 1000.0) == (got.count, got.p50, got.p90, got.p99)
    assert (0, None) == (samples.percentiles(100.0, 1.0).count, samples.percentiles(100.0, 1.0).p50)


def test_live_stats_are_bounded_whatever_the_traffic() -> None:
    stats = LiveStats(recent_requests=5, clock=Clock())
    for i in range(MAX_NAMES + 20):
        stats.observe(exchange(model=f"model-{i}"))
    assert (MAX_NAMES + 1, 20) == (len(stats.models.rows), stats.models.rows["other"].requests)
    for i in range(MAX_ERROR_KINDS + 5):
        stats.observe(exchange(status=400 + i, model="model-0"))
    assert (MAX_ERROR_KINDS + 1, 5) == (len(stats.error_kinds), stats.error_kinds["other"])
    assert (5, MAX_NAMES + 20 + MAX_ERROR_KINDS + 5) == (len(stats.recent), stats.total)


def test_the_view_serialises_what_was_observed() -> None:
    clock = Clock()
    stats = LiveStats(clock=clock)
    held = exchange()
    held.retry.holds.append(Hold(HoldKind.COOLDOWN, "main", 999.6, 0.25))
    stats.observe(held)
    stats.observe(exchange(status=429))
    view = build_view(stats, cooldowns={}, config=CFG, in_flight=3)
    got = json.loads(view.to_json())
    assert (2, 1, 3) == (got["requests"]["total"], got["requests"]["errors"], got["in_flight"])
    assert [{"kind": "429", "total": 1, "last_60s": 1}] == got["errors"]
    assert [
        {
            "name": "gpt-4o",
            "requests": 2,
            "prompt_tokens": 20,
            "completion_tokens": 4,
            "cached_tokens": 8,
            "cost_usd": 0.002,
            "unpriced": 0,
        }
    ] == got["models"]
    assert [{"scope": "main", "kind": "cooldown", "count": 1, "waited_s": 0.25}] == got["pacing"][
        "recent_holds"
    ]
    assert (500.0, 2) == (got["latency_ms"]["p50"], got["latency_ms"]["count"])
    assert None is got["keys"]
    stats.observe(exchange(), key="team-a")
    keys = json.loads(build_view(stats, cooldowns={}, config=CFG, in_flight=0).to_json())["keys"]
    assert [("team-a", 1)] == [(k["name"], k["requests"]) for k in keys]


def test_cooldown_rows_name_upstream_kind_and_model_never_a_credential() -> None:
    model = Scope("main", "f1ngerpr1nt", LimitKind.MODEL, "gpt-4o")
    whole = Scope("main", "*", LimitKind.UPSTREAM)
    snapshot = {
        model.key: 1030.0,
        whole.key: 1010.0,
        Scope("old", "*", LimitKind.UPSTREAM).key: 999.0,  # expired
        "not a scope key": 1100.0,
    }
    rows = cooldown_rows(snapshot, CFG, now=1000.0)
    assert [("main:gpt-4o", "main", 30.0), ("main", "main", 10.0)] == [
        (r.scope, r.upstream, r.remaining_s) for r in rows
    ]
    assert "f1ngerpr1nt" not in repr(rows)
