"""Shared per-upstream cooldowns (proxy.resilience.cooldown): memory and a real Redis."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest
import redis.asyncio as aioredis

from proxy.resilience.cooldown import (
    MemoryCooldownStore,
    RedisCooldownStore,
    make_store,
)
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture is used by name

T = TypeVar("T")
PREFIX = "test:cooldown:"
HANG_GUARD_S = 10.0  # only to fail instead of hanging forever; not a timing assertion


class FakeClock:
    """Wall-clock time plus an offset the test moves forward instead of sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


async def guarded(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, HANG_GUARD_S)


# ---------------------------------------------------------------- memory


async def test_memory_unknown_key_is_not_cooling() -> None:
    assert 0.0 == await MemoryCooldownStore().until("openai")


async def test_memory_cool_sets_the_instant() -> None:
    store = MemoryCooldownStore()
    until = time.time() + 30
    await store.cool("openai", until)
    assert until == await store.until("openai")


async def test_memory_cool_only_extends_never_shortens() -> None:
    store = MemoryCooldownStore()
    now = time.time()
    await store.cool("openai", now + 30)
    await store.cool("openai", now + 10)
    assert now + 30 == await store.until("openai")
    await store.cool("openai", now + 40)
    assert now + 40 == await store.until("openai")


async def test_memory_keys_are_independent() -> None:
    store = MemoryCooldownStore()
    until = time.time() + 30
    await store.cool("openai", until)
    assert (until, 0.0) == (await store.until("openai"), await store.until("anthropic"))


async def test_memory_cooldown_expires_after_its_instant() -> None:
    clock = FakeClock()
    store = MemoryCooldownStore(clock)
    await store.cool("openai", clock() + 5)
    clock.advance(6)
    assert 0.0 == await store.until("openai")


async def test_memory_ignores_instants_already_past_or_not_finite() -> None:
    store = MemoryCooldownStore()
    await store.cool("a", time.time() - 1)
    await store.cool("b", float("nan"))
    await store.cool("c", float("inf"))
    assert [0.0, 0.0, 0.0] == [await store.until(k) for k in "abc"]


async def test_memory_sweeps_expired_entries_when_it_grows() -> None:
    clock = FakeClock()
    store = MemoryCooldownStore(clock)
    for i in range(300):
        await store.cool(f"old{i}", clock() + 1)
    clock.advance(2)
    for i in range(300):
        await store.cool(f"new{i}", clock() + 60)
    assert 300 >= len(store._until)
    assert clock() + 60 > await store.until("new299") > 0.0


# ---------------------------------------------------------------- make_store


def test_make_store_memory() -> None:
    assert isinstance(make_store("memory", None), MemoryCooldownStore)


async def test_make_store_redis_does_not_connect_until_used() -> None:
    store = make_store("redis", "redis://127.0.0.1:1/0")
    assert isinstance(store, RedisCooldownStore)
    await store.close()


@pytest.mark.parametrize(("backend", "url"), [("redis", None), ("redis", ""), ("memcached", "x")])
def test_make_store_rejects_bad_config(backend: str, url: str | None) -> None:
    with pytest.raises(ValueError, match=backend if backend != "redis" else "url"):
        make_store(backend, url)


# ---------------------------------------------------------------- redis


class Errors:
    """Records on_error / on_recover calls."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, Exception]] = []
        self.recoveries = 0

    def on_error(self, op: str, exc: Exception) -> None:
        self.errors.append((op, exc))

    def on_recover(self) -> None:
        self.recoveries += 1


StoreFactory = Callable[..., RedisCooldownStore]


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[StoreFactory]:
    """Builds RedisCooldownStores on the test server (like separate processes) and closes them."""
    made: list[RedisCooldownStore] = []

    def make(**kwargs: object) -> RedisCooldownStore:
        store = RedisCooldownStore(redis_server.url, prefix=PREFIX, **kwargs)  # type: ignore[arg-type]
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_redis_unknown_key_is_not_cooling(stores: StoreFactory) -> None:
    assert 0.0 == await stores().until("openai")


async def test_redis_two_instances_see_each_others_cooldown(stores: StoreFactory) -> None:
    a, b = stores(), stores()
    until = time.time() + 30
    await a.cool("openai", until)
    assert until == await b.until("openai")
    assert 0.0 == await b.until("anthropic")


async def test_redis_cool_only_extends_across_instances(stores: StoreFactory) -> None:
    a, b, reader = stores(), stores(), stores()
    now = time.time()
    await a.cool("openai", now + 30)
    await b.cool("openai", now + 10)
    assert now + 30 == await reader.until("openai")
    await b.cool("openai", now + 45)
    assert now + 45 == await reader.until("openai")


async def test_redis_concurrent_cools_keep_the_maximum(stores: StoreFactory) -> None:
    writers = [stores() for _ in range(4)]
    now = time.time()
    instants = [now + 10 + i * 0.5 for i in range(80)]
    random.Random(3).shuffle(instants)
    await asyncio.gather(
        *(writers[i % 4].cool("openai", until) for i, until in enumerate(instants))
    )
    assert max(instants) == await stores().until("openai")


async def test_redis_burst_beyond_the_pool_is_not_an_outage(stores: StoreFactory) -> None:
    """300 concurrent reads queue for the pool's connections; none is reported as lost."""
    errors: list[str] = []
    store = stores(on_error=lambda op, exc: errors.append(f"{op}: {exc!r}"), timeout_s=5)
    await store.cool("scope-7", time.time() + 30)
    results = await asyncio.gather(*(store.until(f"scope-{i % 10}") for i in range(300)))
    assert ([], 30, False) == (errors, sum(r > 0 for r in results), store.degraded)


async def test_redis_key_expires_at_the_instant(stores: StoreFactory, raw: aioredis.Redis) -> None:
    store = stores()
    await store.cool("openai", time.time() + 0.5)
    assert 1 == await raw.exists(PREFIX + "openai")
    await asyncio.sleep(0.7)
    assert None is await raw.get(PREFIX + "openai")
    assert 0.0 == await stores().until("openai")


async def test_redis_expiry_is_set_absolutely_to_the_cooldown_instant(
    stores: StoreFactory, raw: aioredis.Redis
) -> None:
    until = time.time() + 120.25
    await stores().cool("openai", until)
    assert math.ceil(until * 1000) == await raw.pexpiretime(PREFIX + "openai")


async def test_redis_garbage_value_reads_as_not_cooling_and_is_overwritten(
    stores: StoreFactory, raw: aioredis.Redis
) -> None:
    await raw.set(PREFIX + "openai", b"garbage")
    store = stores()
    assert 0.0 == await store.until("openai")
    until = time.time() + 30
    await store.cool("openai", until)
    assert until == await stores().until("openai")


async def test_redis_outage_degrades_to_memory_and_reports_once(
    redis_server: RedisServer, stores: StoreFactory
) -> None:
    errors = Errors()
    store = stores(on_error=errors.on_error, retry_after_s=0.0)
    before = time.time() + 60
    await store.cool("openai", before)
    redis_server.stop()

    assert before == await guarded(store.until("openai"))
    during = time.time() + 30
    await guarded(store.cool("anthropic", during))
    assert during == await guarded(store.until("anthropic"))
    for _ in range(5):
        await guarded(store.until("groq"))

    assert store.degraded
    assert ["until"] == [op for op, _ in errors.errors]


async def test_redis_recovers_after_restart_but_not_before_the_retry_pause(
    redis_server: RedisServer, stores: StoreFactory
) -> None:
    clock, errors = FakeClock(), Errors()
    store = stores(
        on_error=errors.on_error, on_recover=errors.on_recover, retry_after_s=1.0, clock=clock
    )
    other = stores()
    redis_server.stop()
    await guarded(store.cool("openai", clock() + 60))
    assert store.degraded

    redis_server.start()  # same port, empty data
    await guarded(store.cool("early", clock() + 60))
    assert (True, 0.0) == (store.degraded, await other.until("early"))

    clock.advance(1.5)
    until = clock() + 60
    await guarded(store.cool("late", until))
    assert (False, 1, 1) == (store.degraded, errors.recoveries, len(errors.errors))
    assert until == await other.until("late")


async def test_redis_hung_server_times_out_and_degrades(
    redis_server: RedisServer, stores: StoreFactory
) -> None:
    errors = Errors()
    store = stores(on_error=errors.on_error)
    until = time.time() + 60
    redis_server.pause()
    try:
        await guarded(store.cool("openai", until))
        assert until == await guarded(store.until("openai"))
    finally:
        redis_server.resume()
    assert store.degraded
    assert ["cool"] == [op for op, _ in errors.errors]


async def test_redis_store_close_is_safe_when_redis_is_gone(
    redis_server: RedisServer, stores: StoreFactory
) -> None:
    store = stores()
    await store.cool("openai", time.time() + 5)
    redis_server.stop()
    await guarded(store.close())
