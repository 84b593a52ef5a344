"""Pacing stores (proxy.resilience.pacing_store): the same rules in memory and in Redis (Lua),
two processes sharing one redis-server pace as one, and an outage falls back to local pacing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import aiohttp
import pytest

from proxy.fake_upstream import FakeUpstream, Limits
from proxy.resilience.pacer import Pacer, Refused
from proxy.resilience.pacing import Admitted, PacePolicy, Wait
from proxy.resilience.pacing_store import (
    MemoryPacingStore,
    PacingStore,
    RedisPacingStore,
    make_pacing_store,
)
from proxy.resilience.ratelimits import (
    NO_COST,
    Bucket,
    BucketLimit,
    Cost,
    Delay,
    LimitSnapshot,
    WaitReason,
    parse_snapshot,
)
from proxy.resilience.scope import LimitKind, Scope
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture is used by name

T = TypeVar("T")
NOW = 1_700_000_000.0
SCOPE = Scope("openai", "abc", LimitKind.MODEL, "gpt-4o")
KEY = SCOPE.key
FULL = PacePolicy(target_utilisation=1.0)
DEFAULT = PacePolicy()
ONE = Cost()
HANG_GUARD_S = 10.0  # fails a hung test; never a timing assertion


class VirtualTime:
    """Epoch clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def requests_snapshot(limit: float, remaining: float, at: float = NOW) -> LimitSnapshot:
    return LimitSnapshot(at, {Bucket.REQUESTS: BucketLimit(limit, remaining, None)})


async def guarded(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, HANG_GUARD_S)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[PacingStore]:
    """Each scenario runs on both backends with the same expectations."""
    if request.param == "memory":
        made: PacingStore = MemoryPacingStore()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        made = RedisPacingStore(server.url, on_loss=_fail_on_loss)
    yield made
    await made.close()


def _fail_on_loss(op: str, exc: Exception) -> None:
    raise AssertionError(f"redis lost during {op}: {exc!r}")


async def admit_many(
    store: PacingStore, n: int, cost: Cost, now: float, policy: PacePolicy
) -> list[Admitted | Wait]:
    return [await store.admit(KEY, cost, now, policy) for _ in range(n)]


# ---------------------------------------------------------------- same rules on both backends


async def test_a_new_scope_sends_one_request_until_an_answer_is_seen(store: PacingStore) -> None:
    first = await store.admit(KEY, ONE, NOW, DEFAULT)
    assert isinstance(first, Admitted)
    assert Wait(1.0, WaitReason.PROBE) == await store.admit(KEY, ONE, NOW, DEFAULT)
    assert Delay(1.0, WaitReason.PROBE) == await store.delay(KEY, ONE, NOW, DEFAULT)
    # an answer without any rate-limit header: nothing to pace on, everything goes
    await store.observe(KEY, LimitSnapshot(NOW), first.reservation, DEFAULT)
    assert 50 == sum(
        isinstance(d, Admitted) for d in await admit_many(store, 50, ONE, NOW, DEFAULT)
    )


async def test_a_first_request_that_never_returns_holds_the_scope_30s(store: PacingStore) -> None:
    assert isinstance(await store.admit(KEY, ONE, NOW, DEFAULT), Admitted)
    assert isinstance(await store.admit(KEY, ONE, NOW + 29, DEFAULT), Wait)
    assert isinstance(await store.admit(KEY, ONE, NOW + 31, DEFAULT), Admitted)


async def test_force_reserves_without_checking(store: PacingStore) -> None:
    await store.observe(KEY, requests_snapshot(60, 0), None, FULL)
    forced = await store.admit(KEY, ONE, NOW, FULL, force=True)
    assert isinstance(forced, Admitted)
    # it was counted: the bucket is one request in debt
    assert Wait(pytest.approx(2.0), WaitReason.REQUESTS) == await store.admit(KEY, ONE, NOW, FULL)


async def test_a_failed_first_request_lets_the_next_one_probe(store: PacingStore) -> None:
    first = await store.admit(KEY, ONE, NOW, DEFAULT)
    assert isinstance(first, Admitted)
    await store.settle(first.reservation, NO_COST, NOW, DEFAULT)  # connect error: no answer
    assert isinstance(await store.admit(KEY, ONE, NOW, DEFAULT), Admitted)
    assert isinstance(await store.admit(KEY, ONE, NOW, DEFAULT), Wait)


async def test_limit_times_target_then_the_exact_wait(store: PacingStore) -> None:
    await store.observe(KEY, requests_snapshot(100, 100), None, DEFAULT)
    decisions = await admit_many(store, 96, ONE, NOW, DEFAULT)
    assert 95 == sum(isinstance(d, Admitted) for d in decisions)
    assert Wait(pytest.approx(0.6), WaitReason.REQUESTS) == decisions[-1]
    assert Delay(pytest.approx(0.6), WaitReason.REQUESTS) == await store.delay(
        KEY, ONE, NOW, DEFAULT
    )
    assert isinstance(await store.admit(KEY, ONE, NOW + 0.6, DEFAULT), Admitted)


async def test_delay_reserves_nothing(store: PacingStore) -> None:
    await store.observe(KEY, requests_snapshot(60, 1), None, FULL)
    for _ in range(3):
        assert Delay(0.0, None) == await store.delay(KEY, ONE, NOW, FULL)
    assert isinstance(await store.admit(KEY, ONE, NOW, FULL), Admitted)
    assert Delay(1.0, WaitReason.REQUESTS) == await store.delay(KEY, ONE, NOW, FULL)


async def test_tokens_and_the_anthropic_split(store: PacingStore) -> None:
    snapshot = LimitSnapshot(
        NOW,
        {
            Bucket.REQUESTS: BucketLimit(50, 50, None),
            Bucket.INPUT_TOKENS: BucketLimit(10000, 10000, None),
            Bucket.OUTPUT_TOKENS: BucketLimit(1000, 1000, None),
        },
    )
    await store.observe(KEY, snapshot, None, FULL)
    assert isinstance(await store.admit(KEY, Cost(9000, 500), NOW, FULL), Admitted)
    assert Wait(pytest.approx(6.0), WaitReason.OUTPUT_TOKENS) == await store.admit(
        KEY, Cost(0, 600), NOW, FULL
    )
    assert Wait(pytest.approx(6.0), WaitReason.INPUT_TOKENS) == await store.admit(
        KEY, Cost(2000, 0), NOW, FULL
    )


async def test_answer_absorbs_its_own_and_earlier_reservations(store: PacingStore) -> None:
    await store.observe(KEY, requests_snapshot(60, 3), None, FULL)
    _first, second, third = await admit_many(store, 3, ONE, NOW, FULL)
    assert isinstance(second, Admitted) and isinstance(third, Admitted)
    assert Wait(1.0, WaitReason.REQUESTS) == await store.admit(KEY, ONE, NOW, FULL)
    # second's answer says 1 left: first and second are in it, third (same instant) is not
    await store.observe(KEY, requests_snapshot(60, 1, NOW), second.reservation, FULL)
    assert Wait(1.0, WaitReason.REQUESTS) == await store.admit(KEY, ONE, NOW, FULL)
    await store.settle(third.reservation, NO_COST, NOW, FULL)  # third failed: nothing spent
    assert isinstance(await store.admit(KEY, ONE, NOW, FULL), Admitted)


async def test_an_overtaken_answer_only_lowers(store: PacingStore) -> None:
    await store.observe(KEY, requests_snapshot(60, 30), None, FULL)
    await store.observe(KEY, requests_snapshot(60, 50), None, FULL)
    decisions = await admit_many(store, 31, ONE, NOW, FULL)
    assert 30 == sum(isinstance(d, Admitted) for d in decisions)
    await store.observe(KEY, requests_snapshot(60, 0, NOW), None, FULL)
    assert Wait(pytest.approx(31.0), WaitReason.REQUESTS) == await store.admit(KEY, ONE, NOW, FULL)


async def test_settle_charges_what_no_answer_reported(store: PacingStore) -> None:
    snapshot = LimitSnapshot(NOW, {Bucket.TOKENS: BucketLimit(6000, 6000, None)})
    await store.observe(KEY, snapshot, None, FULL)
    decision = await store.admit(KEY, Cost(1000, 4000), NOW, FULL)
    assert isinstance(decision, Admitted)
    await store.settle(decision.reservation, Cost(1000, 200), NOW, FULL)
    assert isinstance(await store.admit(KEY, Cost(4800, 0), NOW, FULL), Admitted)
    assert Wait(pytest.approx(0.01), WaitReason.TOKENS) == await store.admit(
        KEY, Cost(1, 0), NOW, FULL
    )


async def test_settle_twice_charges_once(store: PacingStore) -> None:
    await store.observe(KEY, requests_snapshot(60, 2), None, FULL)
    decision = await store.admit(KEY, ONE, NOW, FULL)
    assert isinstance(decision, Admitted)
    await store.settle(decision.reservation, ONE, NOW, FULL)
    await store.settle(decision.reservation, ONE, NOW, FULL)
    assert isinstance(await store.admit(KEY, ONE, NOW, FULL), Admitted)


async def test_retry_after_holds_the_scope(store: PacingStore) -> None:
    await store.observe(KEY, LimitSnapshot(NOW, retry_at=NOW + 7), None, FULL)
    assert Wait(7.0, WaitReason.RETRY_AFTER) == await store.admit(KEY, ONE, NOW, FULL)
    assert isinstance(await store.admit(KEY, ONE, NOW + 7, FULL), Admitted)


async def test_a_rounded_retry_after_counts_once(store: PacingStore) -> None:
    """ "retry-after: 5" with bucket headers: from 4 s on (the rounding), not 3 or 5."""
    snapshot = LimitSnapshot(
        NOW, {Bucket.REQUESTS: BucketLimit(60, 10, None)}, retry_at=NOW + 5, retry_rounding_s=1.0
    )
    await store.observe(KEY, snapshot, None, FULL)
    assert Wait(4.0, WaitReason.RETRY_AFTER) == await store.admit(KEY, ONE, NOW, FULL)
    assert isinstance(await store.admit(KEY, ONE, NOW + 4, FULL), Admitted)


async def test_unsettled_reservations_are_forgotten_after_their_ttl(store: PacingStore) -> None:
    policy = PacePolicy(target_utilisation=1.0, reservation_ttl_s=30)
    await store.observe(KEY, requests_snapshot(60, 60), None, policy)
    assert isinstance(await store.admit(KEY, ONE, NOW, policy), Admitted)
    assert isinstance(await store.admit(KEY, ONE, NOW + 29, policy), Admitted)
    # an answer without a reservation has both pending subtracted; past the TTL only one
    await store.observe(KEY, requests_snapshot(60, 10, NOW + 31), None, policy)
    results = await admit_many(store, 10, ONE, NOW + 31, policy)
    assert 9 == sum(isinstance(d, Admitted) for d in results)
    assert Wait(pytest.approx(1.0), WaitReason.REQUESTS) == results[-1]


async def test_scopes_are_independent(store: PacingStore) -> None:
    await store.observe(KEY, requests_snapshot(60, 0), None, FULL)
    other = Scope("openai", "def", LimitKind.MODEL, "gpt-4o").key
    assert isinstance(await store.admit(KEY, ONE, NOW, FULL), Wait)
    assert isinstance(await store.admit(other, ONE, NOW, FULL), Admitted)


# ---------------------------------------------------------------- shared through Redis


async def test_two_processes_sharing_redis_admit_as_one(redis_server: RedisServer) -> None:
    """Two proxies (each its own store and pacer) offered 2 x 150 requests at once against
    a 200-request bucket: together they admit 200 x 0.95, not that each."""
    # generous timeouts: this asserts sharing, and a slow CI box must not fall back to local
    stores = [
        RedisPacingStore(redis_server.url, on_loss=_fail_on_loss, timeout_s=5) for _ in range(2)
    ]
    pacers = [Pacer(s, clock=lambda: NOW) for s in stores]
    await pacers[0].observe(SCOPE, requests_snapshot(200, 200), None, DEFAULT)
    results = await guarded(
        asyncio.gather(
            *(p.acquire(SCOPE, ONE, DEFAULT, budget_s=0) for _ in range(150) for p in pacers)
        )
    )
    admitted = [r for r in results if isinstance(r, Admitted)]
    assert 190 == len(admitted)
    assert all(r.reservation.shared for r in admitted)
    assert {True} == {isinstance(r, Refused) for r in results if not isinstance(r, Admitted)}
    for s in stores:
        await s.close()


async def test_one_process_sees_the_others_answers(redis_server: RedisServer) -> None:
    first, second = RedisPacingStore(redis_server.url), RedisPacingStore(redis_server.url)
    await first.observe(KEY, requests_snapshot(60, 0), None, FULL)
    assert Wait(1.0, WaitReason.REQUESTS) == await second.admit(KEY, ONE, NOW, FULL)
    await first.close()
    await second.close()


async def test_prefixes_isolate_deployments(redis_server: RedisServer) -> None:
    one = RedisPacingStore(redis_server.url, prefix="one:")
    two = RedisPacingStore(redis_server.url, prefix="two:")
    await one.observe(KEY, requests_snapshot(60, 0), None, FULL)
    assert isinstance(await two.admit(KEY, ONE, NOW, FULL), Admitted)
    await one.close()
    await two.close()


async def test_processes_agree_on_the_fingerprint_secret(redis_server: RedisServer) -> None:
    first, second = RedisPacingStore(redis_server.url), RedisPacingStore(redis_server.url)
    secret = await first.shared_secret()
    assert secret is not None and 64 == len(secret)
    assert secret == await second.shared_secret()
    await first.close()
    await second.close()


# ---------------------------------------------------------------- Redis outages


class Events:
    def __init__(self) -> None:
        self.lost: list[str] = []
        self.recovered = 0

    def on_loss(self, op: str, exc: Exception) -> None:
        self.lost.append(op)

    def on_recover(self) -> None:
        self.recovered += 1


async def test_redis_down_paces_locally_and_reports_loss_and_recovery_once(
    redis_server: RedisServer,
) -> None:
    events = Events()
    store = RedisPacingStore(
        redis_server.url, on_loss=events.on_loss, on_recover=events.on_recover, retry_after_s=0.0
    )
    await store.observe(KEY, requests_snapshot(10, 10), None, FULL)
    assert 4 == sum(isinstance(d, Admitted) for d in await admit_many(store, 4, ONE, NOW, FULL))
    redis_server.stop()
    # the local mirror knows the snapshot and the 4 reservations: 6 more, then the honest wait
    during = await admit_many(store, 7, ONE, NOW, FULL)
    assert 6 == sum(isinstance(d, Admitted) for d in during)
    assert Wait(pytest.approx(6.0), WaitReason.REQUESTS) == during[-1]
    assert not any(d.reservation.shared for d in during if isinstance(d, Admitted))
    assert (["admit"], 0, True) == (events.lost, events.recovered, store.degraded)
    redis_server.start()  # an empty Redis: it knows nothing any more
    assert isinstance(await store.admit(KEY, ONE, NOW, FULL), Admitted)
    assert (["admit"], 1, False) == (events.lost, events.recovered, store.degraded)
    await store.close()


async def test_redis_down_skips_redis_until_the_retry_pause(redis_server: RedisServer) -> None:
    """After a failure, calls do not each pay a connection attempt: Redis is tried again
    only after ``retry_after_s``."""
    events = Events()
    store = RedisPacingStore(
        redis_server.url, on_loss=events.on_loss, on_recover=events.on_recover, retry_after_s=3600
    )
    await store.observe(KEY, requests_snapshot(60, 60), None, FULL)
    redis_server.stop()
    assert isinstance(await store.admit(KEY, ONE, NOW, FULL), Admitted)
    redis_server.start()
    for _ in range(5):
        assert isinstance(await store.admit(KEY, ONE, NOW, FULL), Admitted)
    assert (["admit"], 0, True) == (events.lost, events.recovered, store.degraded)
    await store.close()


async def test_hung_redis_costs_one_timeout_then_local(redis_server: RedisServer) -> None:
    events = Events()
    store = RedisPacingStore(
        redis_server.url,
        on_loss=events.on_loss,
        on_recover=events.on_recover,
        timeout_s=0.2,
        retry_after_s=0.0,
    )
    await store.observe(KEY, requests_snapshot(60, 60), None, FULL)
    redis_server.pause()
    try:
        decision = await guarded(store.admit(KEY, ONE, NOW, FULL))
    finally:
        redis_server.resume()
    assert isinstance(decision, Admitted) and not decision.reservation.shared
    assert ["admit"] == events.lost
    await store.close()


async def test_secret_is_none_while_redis_is_down(redis_server: RedisServer) -> None:
    events = Events()
    store = RedisPacingStore(redis_server.url, on_loss=events.on_loss)
    redis_server.stop()
    assert None is await store.shared_secret()
    assert ["secret"] == events.lost
    await store.close()


async def test_pacer_keeps_serving_through_an_outage(redis_server: RedisServer) -> None:
    events = Events()
    store = RedisPacingStore(
        redis_server.url, on_loss=events.on_loss, on_recover=events.on_recover, retry_after_s=0.0
    )
    pacer = Pacer(store, clock=lambda: NOW)
    await pacer.observe(SCOPE, requests_snapshot(60, 60), None, FULL)
    redis_server.stop()
    result = await guarded(pacer.acquire(SCOPE, ONE, FULL, budget_s=0))
    assert isinstance(result, Admitted)
    await pacer.settle(result.reservation, ONE, FULL)
    assert 1 == len(events.lost)
    await store.close()


# ---------------------------------------------------------------- construction


def test_make_pacing_store() -> None:
    assert isinstance(make_pacing_store("memory", None), MemoryPacingStore)
    assert isinstance(make_pacing_store("redis", "redis://127.0.0.1:1/0"), RedisPacingStore)
    with pytest.raises(ValueError, match="needs a url"):
        make_pacing_store("redis", None)
    with pytest.raises(ValueError, match="unknown pacing backend"):
        make_pacing_store("etcd", None)


async def test_two_paced_processes_share_the_fakes_limit_without_a_429(
    redis_server: RedisServer, aiohttp_server: Any
) -> None:
    """Two proxies' pacers, each with its own Redis store, drive 2 x 30 requests at a fake
    allowing 30 per minute: the fake sends no 429 (pacing each on its own, both would send
    28 at once). Elapsed time is not asserted: both pumps' naps advance the one virtual
    clock, so it over-counts (the single-process test checks the throughput)."""
    time = VirtualTime()
    fake = FakeUpstream(limits=Limits(rpm=30), clock=time)
    server = await aiohttp_server(fake.make_app())
    url = str(server.make_url("/v1/chat/completions"))
    stores = [
        RedisPacingStore(redis_server.url, on_loss=_fail_on_loss, timeout_s=5) for _ in range(2)
    ]
    pacers = [Pacer(s, clock=time, sleep=time.sleep) for s in stores]
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}

    async def one(pacer: Pacer, session: aiohttp.ClientSession) -> int:
        decision = await pacer.acquire(SCOPE, ONE, DEFAULT, budget_s=600)
        assert isinstance(decision, Admitted) and decision.reservation.shared
        async with session.post(url, json=body) as resp:
            await resp.read()
            snapshot = parse_snapshot(resp.headers, time())
        await pacer.observe(SCOPE, snapshot, decision.reservation, DEFAULT)
        await pacer.settle(decision.reservation, ONE, DEFAULT)
        return resp.status

    async with aiohttp.ClientSession() as session:
        statuses = await guarded(
            asyncio.gather(*(one(p, session) for _ in range(30) for p in pacers))
        )
    assert ([200] * 60, 0) == (statuses, fake.limiter.counts().limited)
    for s in stores:
        await s.close()
