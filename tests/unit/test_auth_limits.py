"""Per-key limits: the sliding window, reservations and settlement, budgets, Redis sharing."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from proxy.auth.keys import BudgetPeriod
from proxy.auth.limits import (
    Ask,
    Denied,
    Held,
    Limiter,
    MemoryCounters,
    Over,
    budget_period,
)
from proxy.auth.limits_redis import RedisCounters
from tests.auth_support import FakeClock
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]  # fixtures, used by name

TOTAL = budget_period(BudgetPeriod.TOTAL, 0.0)
USD = 10**9  # nano-USD


async def no_spend(key_id: str, since: float) -> int:
    return 0


Make = Callable[..., Limiter]


def fail_on_outage(op: str, exc: Exception) -> None:
    raise AssertionError(f"Redis failed during {op}: {exc!r}")


@pytest.fixture(params=["memory", "redis"])
async def limiters(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """``make()`` is one proxy instance's Limiter. Memory: every call returns the same one (a
    process); Redis: each call is a separate instance sharing the test's redis-server."""
    made: list[Limiter] = []
    if request.param == "memory":

        def make(**kwargs: Any) -> Limiter:
            if not made:
                made.append(Limiter(kwargs.get("load_spent", no_spend)))
            return made[0]
    else:
        server: RedisServer = request.getfixturevalue("redis_server")

        def make(**kwargs: Any) -> Limiter:
            load = kwargs.pop("load_spent", no_spend)
            # A generous timeout: on this shared test machine a slow answer must not look like
            # an outage (that would switch to per-instance memory, on purpose, and count apart).
            counters = RedisCounters(server.url, timeout_s=5.0)
            limiter = Limiter(load, counters, on_error=fail_on_outage, **kwargs)
            made.append(limiter)
            return limiter

    yield make
    for limiter in made:
        await limiter.close()


# ---------------------------------------------------------------- the window (exact clock)


def test_rpm_is_a_sliding_60_second_window_with_an_exact_retry_after() -> None:
    clock = FakeClock(1000.0)
    counters = MemoryCounters(clock=clock)
    ask = Ask("k", tokens=0, cost_nanos=0, rpm=3)
    for t in (0, 10, 20):
        clock.now = 1000.0 + t
        assert isinstance(counters.admit_now(ask, f"t{t}"), Held)
    clock.now = 1030.0
    assert Denied(Over.RPM, 30.0) == counters.admit_now(ask, "x")
    clock.now = 1059.5
    assert Denied(Over.RPM, 0.5) == counters.admit_now(ask, "x")
    clock.now = 1060.0  # the first admission leaves the window now
    assert isinstance(counters.admit_now(ask, "t60"), Held)
    assert Denied(Over.RPM, 10.0) == counters.admit_now(ask, "x")


def test_tpm_reserves_the_worst_case_and_settling_frees_the_difference() -> None:
    clock = FakeClock(1000.0)
    counters = MemoryCounters(clock=clock)
    ask = Ask("k", tokens=600, cost_nanos=0, tpm=1000)
    first = counters.admit_now(ask, "a")
    assert isinstance(first, Held)
    clock.advance(15)
    assert Denied(Over.TPM, 45.0) == counters.admit_now(ask, "b")
    counters.settle_now(first, tokens=150, cost_nanos=0, period=None)
    assert isinstance(counters.admit_now(ask, "b"), Held)  # 150 + 600 <= 1000
    assert Denied(Over.TPM, 45.0) == counters.admit_now(Ask("k", 300, 0, tpm=1000), "c")


def test_a_request_above_tpm_is_refused_without_a_wait() -> None:
    counters = MemoryCounters()
    assert Denied(Over.TOKENS_ABOVE_LIMIT, None) == counters.admit_now(
        Ask("k", tokens=1001, cost_nanos=0, tpm=1000), "a"
    )


def test_the_longer_wait_wins_when_rpm_and_tpm_both_refuse() -> None:
    clock = FakeClock(1000.0)
    counters = MemoryCounters(clock=clock)
    counters.admit_now(Ask("k", 500, 0), "a")  # leaves the window at +60
    clock.advance(20)
    counters.admit_now(Ask("k", 400, 0), "b")  # at +80
    # rpm=2 waits for a (40 s); 601 more tokens need a and b gone (60 s)
    assert Denied(Over.TPM, 60.0) == counters.admit_now(Ask("k", 601, 0, rpm=2, tpm=1000), "c")
    # rpm=1 waits for b (60 s); 200 more tokens need only a gone (40 s)
    assert Denied(Over.RPM, 60.0) == counters.admit_now(Ask("k", 200, 0, rpm=1, tpm=1000), "c")


def test_a_settlement_after_the_window_does_not_touch_the_new_window() -> None:
    clock = FakeClock(1000.0)
    counters = MemoryCounters(clock=clock)
    held = counters.admit_now(Ask("k", 800, 0, tpm=1000), "a")
    assert isinstance(held, Held)
    clock.advance(61)
    counters.settle_now(held, tokens=5000, cost_nanos=0, period=None)
    assert isinstance(counters.admit_now(Ask("k", 1000, 0, tpm=1000), "b"), Held)


# ---------------------------------------------------------------- memory and Redis


async def test_rpm_admits_exactly_n_under_50_concurrent_callers_on_two_instances(
    limiters: Make,
) -> None:
    instances = [limiters(), limiters()]
    ask = Ask("key_a", tokens=10, cost_nanos=0, rpm=20)
    results = await asyncio.gather(*(instances[i % 2].admit(ask) for i in range(50)))
    admitted = [r for r in results if isinstance(r, Held)]
    refused = [r for r in results if isinstance(r, Denied)]
    assert (20, 30) == (len(admitted), len(refused))
    assert {Over.RPM} == {r.over for r in refused}
    assert all(0 < r.retry_after_s <= 60 for r in refused)  # type: ignore[operator]


async def test_tpm_and_concurrency_are_shared(limiters: Make) -> None:
    a, b = limiters(), limiters()
    first = await a.admit(Ask("key_a", tokens=700, cost_nanos=0, tpm=1000, max_concurrent=1))
    assert isinstance(first, Held)
    refused = await b.admit(Ask("key_a", tokens=100, cost_nanos=0, tpm=1000, max_concurrent=1))
    assert Denied(Over.CONCURRENCY, None) == refused
    await a.settle(first, tokens=200, cost_nanos=0, period=None)
    second = await b.admit(Ask("key_a", tokens=800, cost_nanos=0, tpm=1000, max_concurrent=1))
    assert isinstance(second, Held)  # 200 settled + 800 reserved fits 1000
    over = await a.admit(Ask("key_a", tokens=1, cost_nanos=0, tpm=1000))
    assert isinstance(over, Denied) and Over.TPM == over.over


async def test_keys_do_not_share_counters(limiters: Make) -> None:
    limiter = limiters()
    assert isinstance(await limiter.admit(Ask("key_a", 0, 0, rpm=1)), Held)
    assert isinstance(await limiter.admit(Ask("key_b", 0, 0, rpm=1)), Held)
    assert isinstance(await limiter.admit(Ask("key_a", 0, 0, rpm=1)), Denied)


async def test_a_budget_is_never_overshot_by_concurrent_reservations_and_settlements(
    limiters: Make,
) -> None:
    """50 workers on two instances spend a $1 budget; each request may cost up to $0.0125 and
    really costs 30-100 % of that. Spend never exceeds the budget, and the budget is used up
    to less than one worst case (not enforced below the configured amount either)."""
    instances = [limiters(), limiters()]
    worst = 12_500_000
    ask = Ask("key_a", tokens=2000, cost_nanos=worst, budget_nanos=1 * USD, period=TOTAL)
    rng = random.Random(7)
    spent = 0

    async def worker(i: int) -> None:
        nonlocal spent
        limiter = instances[i % 2]
        while True:
            held = await limiter.admit(ask)
            if isinstance(held, Denied):
                assert Denied(Over.BUDGET, None) == held
                return
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(0)
            actual = int(worst * rng.uniform(0.3, 1.0))
            await limiter.settle(held, tokens=1500, cost_nanos=actual, period=TOTAL)
            spent += actual

    await asyncio.gather(*(worker(i) for i in range(50)))
    while isinstance(held := await instances[0].admit(ask), Held):  # what is left, worst cases
        await instances[0].settle(held, tokens=2000, cost_nanos=worst, period=TOTAL)
        spent += worst
    assert spent <= 1 * USD
    assert 1 * USD - spent < worst


async def test_in_flight_reservations_count_against_the_budget_until_settled(
    limiters: Make,
) -> None:
    a, b = limiters(), limiters()
    ask = Ask("key_a", tokens=10, cost_nanos=100, budget_nanos=1000, period=TOTAL)
    held = [await (a if i % 2 else b).admit(ask) for i in range(11)]
    assert [True] * 10 + [False] == [isinstance(h, Held) for h in held]  # 10 x 100 = 1000
    for h in held[:4]:
        assert isinstance(h, Held)
        await a.settle(h, tokens=10, cost_nanos=40, period=TOTAL)  # 4 x 60 given back
    admitted = [await b.admit(ask) for _ in range(3)]
    assert [True, True, False] == [isinstance(h, Held) for h in admitted]  # 160 + 800 + 200


async def test_spend_recorded_before_a_restart_is_seeded_from_the_ledger_once_per_period(
    limiters: Make,
) -> None:
    calls: list[tuple[str, float]] = []

    async def ledger(key_id: str, since: float) -> int:
        calls.append((key_id, since))
        return 990 * 10**6  # $0.99 already spent this month

    limiter = limiters(load_spent=ledger)
    month = budget_period(BudgetPeriod.MONTH, time.time())
    ask = Ask("key_a", tokens=10, cost_nanos=9 * 10**6, budget_nanos=USD, period=month)
    held = await limiter.admit(ask)
    assert isinstance(held, Held)
    await limiter.settle(held, tokens=10, cost_nanos=9 * 10**6, period=month)
    assert Denied(Over.BUDGET, None) == await limiter.admit(
        Ask("key_a", tokens=10, cost_nanos=2 * 10**6, budget_nanos=USD, period=month)
    )
    assert [("key_a", month.start)] == calls


# ---------------------------------------------------------------- Redis outages


async def test_redis_down_degrades_to_memory_and_settlements_are_replayed_on_recovery(
    redis_server: RedisServer,
) -> None:
    events: list[tuple[str, ...]] = []
    limiter = Limiter(
        no_spend,
        RedisCounters(redis_server.url),
        on_error=lambda op, exc: events.append(("error", op)),
        on_recover=lambda: events.append(("recover",)),
        retry_after_s=0.0,
    )
    ask = Ask("key_a", tokens=0, cost_nanos=0, max_concurrent=1)
    shared = await limiter.admit(ask)
    assert isinstance(shared, Held) and shared.shared
    redis_server.stop()
    local = await limiter.admit(ask)  # this process's memory has no request in flight
    assert isinstance(local, Held) and not local.shared and limiter.degraded
    await limiter.settle(shared, tokens=0, cost_nanos=0, period=None)  # kept for Redis
    await limiter.settle(local, tokens=0, cost_nanos=0, period=None)
    redis_server.start()
    again = await limiter.admit(ask)  # the replayed settlement freed the Redis slot first
    assert isinstance(again, Held) and again.shared and not limiter.degraded
    assert [("error", "admit"), ("recover",)] == events
    await limiter.close()


async def test_a_hold_left_by_a_dead_instance_is_freed_when_its_lease_ends(
    redis_server: RedisServer,
) -> None:
    dead = RedisCounters(redis_server.url, lease_s=0.2)
    alive = RedisCounters(redis_server.url, lease_s=0.2)
    ask = Ask("key_a", tokens=0, cost_nanos=0, max_concurrent=1)
    assert isinstance(await dead.admit(ask, "never-settled"), Held)
    await dead.close()
    assert Denied(Over.CONCURRENCY, None) == await alive.admit(ask, "t1")
    deadline = time.monotonic() + 10
    while not isinstance(result := await alive.admit(ask, "t1"), Held):
        assert time.monotonic() < deadline, result
        await asyncio.sleep(0.05)
    raw = aioredis.Redis.from_url(redis_server.url)
    assert [b"t1"] == await raw.hkeys("llm-proxy:auth:{key_a}:held")  # the dead hold is gone
    await raw.aclose()
    await alive.close()


async def test_scripts_are_loaded_again_when_redis_forgot_them(redis_server: RedisServer) -> None:
    counters = RedisCounters(redis_server.url)
    ask = Ask("key_a", tokens=0, cost_nanos=0, rpm=2)
    assert isinstance(await counters.admit(ask, "t1"), Held)
    raw = aioredis.Redis.from_url(redis_server.url)
    await raw.script_flush()
    await raw.aclose()
    assert isinstance(await counters.admit(ask, "t2"), Held)
    third = await counters.admit(ask, "t3")  # the window kept counting across the reload
    assert isinstance(third, Denied) and Over.RPM == third.over
    await counters.close()
