"""The Gate facade on a real store (SQLite and PostgreSQL): who may send what, and when."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from proxy.auth.cache import KeyCache
from proxy.auth.errors import refusal_error
from proxy.auth.gate import Admission, Gate, Refusal, RefusalKind
from proxy.auth.keys import Budget, BudgetPeriod, KeyLimits, hash_secret, new_secret
from proxy.auth.limits import Limiter
from proxy.auth.limits_redis import RedisCounters
from proxy.auth.manage import KeyManager
from proxy.auth.store import Store
from proxy.pricing import PriceTable
from proxy.providers import ANTHROPIC, OPENAI
from proxy.usage import Usage
from tests.auth_support import (
    FakeClock,
    StoreFactory,
    make_store,
    pg_database,
    pg_server,
    row,
    store,
    store_factory,
)
from tests.pg_server import PgServer
from tests.redis_server import RedisServer, redis_server

__all__ = [
    "pg_database",
    "pg_server",
    "redis_server",
    "store",
    "store_factory",
]  # fixtures, used by name

WORST = 0.0125  # gpt-4o: 1000 input tokens at $2.50/M + 1000 output tokens at $10/M


def make_gate(
    store: Store,
    clock: Callable[[], float] = time.time,
    *,
    redis_url: str | None = None,
    ttl_s: float = 5.0,
) -> Gate:
    async def load_spent(key_id: str, since: float) -> int:
        return -(-await store.key_spend_picousd(key_id, since) // 1000)

    shared = RedisCounters(redis_url, timeout_s=5.0) if redis_url else None  # slow != down
    return Gate(
        KeyCache(store, ttl_s=ttl_s, clock=clock),
        Limiter(load_spent, shared, clock=clock),
        PriceTable(),
        clock=clock,
    )


async def new_key(store: Store, **limits: Any) -> str:
    routes = limits.pop("routes", ())
    models = limits.pop("models", ())
    expires = limits.pop("expires", None)
    made = await KeyManager(store).create(
        "team-a", KeyLimits(**limits), routes=routes, models=models, expires=expires
    )
    return made.secret


async def check(gate: Gate, secret: str | None, **kwargs: Any) -> Admission | Refusal:
    args: dict[str, Any] = {"input_tokens": 1000, "max_output_tokens": 1000}
    args.update(kwargs)
    route = args.pop("route", "/openai")
    model = args.pop("model", "gpt-4o")
    return await gate.check(secret, route, model, **args)


def kind(outcome: Admission | Refusal) -> RefusalKind | None:
    return outcome.kind if isinstance(outcome, Refusal) else None


# ---------------------------------------------------------------- identity


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        (None, RefusalKind.MISSING_KEY),
        ("", RefusalKind.MISSING_KEY),
        ("sk-proj-abc", RefusalKind.INVALID_KEY),
        ("lp-" + "x" * 43, RefusalKind.INVALID_KEY),
    ],
)
async def test_missing_malformed_and_unknown_keys_are_refused_with_401(
    store: Store, secret: str | None, expected: RefusalKind
) -> None:
    await new_key(store)
    outcome = await check(make_gate(store), secret)
    assert isinstance(outcome, Refusal)
    assert (expected, 401) == (outcome.kind, outcome.status)


async def test_an_unknown_key_reaches_the_store_once_per_ttl_not_per_request(store: Store) -> None:
    clock = FakeClock()
    gate = make_gate(store, clock)
    cache_of = gate.cache
    unknown = new_secret()
    outcomes = await asyncio.gather(*(check(gate, unknown) for _ in range(100)))
    assert {RefusalKind.INVALID_KEY} == {kind(o) for o in outcomes}
    assert 1 == cache_of.store_queries
    await check(gate, "not-a-key-at-all")  # malformed: never looked up
    assert 1 == cache_of.store_queries
    clock.advance(5.0)
    await check(gate, unknown)
    assert 2 == cache_of.store_queries


async def test_a_valid_key_is_admitted_and_says_which_key_it_is(store: Store) -> None:
    secret = await new_key(store)
    outcome = await check(make_gate(store), secret)
    assert isinstance(outcome, Admission)
    assert "team-a" == outcome.key.name
    await outcome.settle()


async def test_a_revoke_reaches_a_second_instance_within_the_cache_ttl(
    store: Store, store_factory: StoreFactory
) -> None:
    """Instance 1 revokes (and forgets the key at once); instance 2, on its own connection to
    the same database, still admits until its cached copy is ttl_s old, then refuses."""
    clock = FakeClock()
    other_store = await store_factory.open()
    here, there = make_gate(store, clock), make_gate(other_store, clock)
    secret = await new_key(store)
    assert isinstance(await check(here, secret), Admission)
    assert isinstance(await check(there, secret), Admission)
    await KeyManager(store, on_change=here.cache.forget).revoke("team-a")
    assert RefusalKind.REVOKED_KEY == kind(await check(here, secret))
    clock.advance(4.9)
    assert isinstance(await check(there, secret), Admission)  # within the stated bound
    clock.advance(0.1)
    assert RefusalKind.REVOKED_KEY == kind(await check(there, secret))
    await other_store.close()


async def test_a_rotated_key_works_at_once_and_the_old_secret_stops_within_the_ttl(
    store: Store,
) -> None:
    clock = FakeClock()
    gate = make_gate(store, clock)
    old = await new_key(store)
    assert isinstance(await check(gate, old), Admission)
    new = (await KeyManager(store).rotate("team-a")).secret
    assert isinstance(await check(gate, new), Admission)
    clock.advance(5.0)
    assert RefusalKind.INVALID_KEY == kind(await check(gate, old))


async def test_an_expired_key_is_refused_at_its_expiry(store: Store) -> None:
    clock = FakeClock()
    secret = await new_key(store, expires=clock() + 100)
    gate = make_gate(store, clock)
    assert isinstance(await check(gate, secret), Admission)
    clock.advance(100)
    assert RefusalKind.EXPIRED_KEY == kind(await check(gate, secret))


# ---------------------------------------------------------------- permissions


@pytest.mark.parametrize(
    ("route", "model", "expected"),
    [
        ("/openai", "gpt-4o-mini", None),
        ("/openai", None, None),
        ("/anthropic", "gpt-4o", RefusalKind.ROUTE_NOT_ALLOWED),
        ("/openai", "o3", RefusalKind.MODEL_NOT_ALLOWED),
    ],
)
async def test_routes_and_models_outside_the_key_are_refused_with_403(
    store: Store, route: str, model: str | None, expected: RefusalKind | None
) -> None:
    secret = await new_key(store, routes=("/openai",), models=("gpt-4o*",))
    outcome = await check(make_gate(store), secret, route=route, model=model)
    assert expected == kind(outcome)
    assert 403 == outcome.status if isinstance(outcome, Refusal) else True


async def test_a_budgeted_key_cannot_use_a_model_without_a_price(store: Store) -> None:
    secret = await new_key(store, budget=Budget(10.0, BudgetPeriod.DAY))
    outcome = await check(make_gate(store), secret, model="my-private-model")
    assert RefusalKind.PRICE_UNKNOWN == kind(outcome)


# ---------------------------------------------------------------- limits and budgets


@pytest.fixture(params=["memory", "redis"])
async def gates(
    request: pytest.FixtureRequest, store: Store, store_factory: StoreFactory
) -> AsyncIterator[list[Gate]]:
    """Two proxy instances on the same store: sharing Redis, or (memory) one gate twice."""
    if request.param == "memory":
        one = make_gate(store)
        yield [one, one]
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    other = await store_factory.open()
    yield [make_gate(store, redis_url=server.url), make_gate(other, redis_url=server.url)]
    await other.close()


async def test_rpm_admits_exactly_n_under_50_concurrent_clients(
    store: Store, gates: list[Gate]
) -> None:
    secret = await new_key(store, rpm=20)
    outcomes = await asyncio.gather(*(check(gates[i % 2], secret) for i in range(50)))
    refused = [o for o in outcomes if isinstance(o, Refusal)]
    assert (20, 30) == (50 - len(refused), len(refused))
    assert {RefusalKind.REQUESTS_PER_MINUTE} == {r.kind for r in refused}
    for refusal in refused:
        headers = refusal.headers()
        assert 1 <= int(headers["Retry-After"]) <= 60
        assert 429 == refusal.status


async def test_a_budget_refusal_says_budget_exceeded_and_not_to_retry(
    store: Store, gates: list[Gate]
) -> None:
    secret = await new_key(store, budget=Budget(0.03, BudgetPeriod.DAY))
    first, second = [await check(g, secret) for g in gates]
    assert isinstance(first, Admission) and isinstance(second, Admission)  # 2 x 0.0125 held
    third = await check(gates[0], secret)
    assert isinstance(third, Refusal)
    assert (429, "budget_exceeded", {"x-should-retry": "false"}) == (
        third.status, third.code, third.headers()
    )  # fmt: skip
    used = Usage(prompt_tokens=1000, completion_tokens=20, source="upstream")
    await first.settle(used, PriceTable().cost("gpt-4o", used))  # $0.0027 of $0.0125
    assert isinstance(await check(gates[1], secret), Admission)  # 0.0027 + 2 x 0.0125 fits


async def test_failed_requests_release_their_reservation(store: Store, gates: list[Gate]) -> None:
    secret = await new_key(store, max_concurrent=1, budget=Budget(0.03, BudgetPeriod.MONTH))
    held = await check(gates[0], secret)
    assert isinstance(held, Admission)
    assert RefusalKind.CONCURRENCY == kind(await check(gates[1], secret))
    await held.settle()  # the upstream failed before any usage: nothing to pay
    await held.settle()  # a second settle is a no-op
    again = [await check(gates[1], secret)]
    assert isinstance(again[0], Admission)  # the slot and the $0.0125 came back
    await again[0].settle()
    again.append(await check(gates[0], secret))
    assert isinstance(again[1], Admission)  # nothing was charged: 0 + 0.0125 <= 0.03


async def test_spend_in_the_ledger_counts_against_the_budget_after_a_restart(
    store: Store,
) -> None:
    secret = await new_key(store, budget=Budget(1.0, BudgetPeriod.TOTAL))
    (key,) = await store.list_keys()
    await store.insert_ledger([row(key_id=key.id, cost_usd=0.99, ts=time.time())])
    outcome = await check(make_gate(store), secret)  # a fresh process: counters are empty
    assert RefusalKind.BUDGET_EXCEEDED == kind(outcome)


async def test_max_tokens_missing_reserves_the_default_output(store: Store) -> None:
    secret = await new_key(store, tpm=5000)
    gate = make_gate(store)
    first = await check(gate, secret, max_output_tokens=None)  # 1000 + 4096 > 5000
    assert RefusalKind.TOKENS_ABOVE_LIMIT == kind(first)
    assert isinstance(await check(gate, secret, max_output_tokens=3000), Admission)


# ---------------------------------------------------------------- store outages


async def test_while_the_store_is_down_cached_keys_serve_and_unknown_ones_get_503(
    pg_server: PgServer, pg_database: str
) -> None:
    """PostgreSQL stopped (SQLite reads in WAL mode do not fail while a writer holds the lock)."""
    store = make_store("postgres", pg_database)
    await store.open()
    clock = FakeClock()
    secret = await new_key(store)
    made = await KeyManager(store).create("team-b", KeyLimits(budget=Budget(5, BudgetPeriod.DAY)))
    gate = make_gate(store, clock)
    assert isinstance(await check(gate, secret), Admission)
    await gate.cache.get(hash_secret(made.secret))  # known, but its spend was never read
    pg_server.stop()
    try:
        clock.advance(10)  # past the TTL: the refresh fails, the stale record serves
        assert isinstance(await check(gate, secret), Admission)
        queries = gate.cache.store_queries
        assert isinstance(await check(gate, secret), Admission)
        assert queries == gate.cache.store_queries  # not asked again before another TTL
        assert RefusalKind.STORE_UNAVAILABLE == kind(await check(gate, new_secret()))
        # the budget needs the ledger's spend, which cannot be read: refused, not guessed
        assert RefusalKind.STORE_UNAVAILABLE == kind(await check(gate, made.secret))
    finally:
        pg_server.start()
        await store.close()


# ---------------------------------------------------------------- rendering


@pytest.mark.parametrize(
    ("provider", "body"),
    [
        (OPENAI, {"error": {"message": "rate limit: 20 requests per minute",
                            "type": "requests", "param": None, "code": "rate_limit_exceeded"}}),
        (ANTHROPIC, {"type": "error", "error": {"type": "rate_limit_error",
                                                "message": "rate limit: 20 requests per minute"}}),
    ],
)  # fmt: skip
def test_a_refusal_renders_in_the_provider_shape_with_retry_after(
    provider: Any, body: dict[str, Any]
) -> None:
    refusal = Refusal(RefusalKind.REQUESTS_PER_MINUTE, "rate limit: 20 requests per minute", 7.2)
    response = refusal_error(refusal).render(provider, "req-1")
    assert 429 == response.status
    assert body == json.loads(response.body)  # type: ignore[arg-type]
    assert ("8", "7200") == (response.headers["Retry-After"], response.headers["retry-after-ms"])


@pytest.mark.parametrize(
    ("kind_", "status", "openai_type", "anthropic_type"),
    [
        (RefusalKind.INVALID_KEY, 401, "invalid_request_error", "authentication_error"),
        (RefusalKind.MODEL_NOT_ALLOWED, 403, "invalid_request_error", "permission_error"),
        (RefusalKind.BUDGET_EXCEEDED, 429, "insufficient_quota", "rate_limit_error"),
        (RefusalKind.STORE_UNAVAILABLE, 503, "server_error", "api_error"),
    ],
)
def test_refusal_kinds_map_to_provider_statuses_and_types(
    kind_: RefusalKind, status: int, openai_type: str, anthropic_type: str
) -> None:
    refusal = Refusal(kind_, "no")
    openai = json.loads(refusal_error(refusal).render(OPENAI, "rid").body)  # type: ignore[arg-type]
    anthropic = json.loads(refusal_error(refusal).render(ANTHROPIC, "rid").body)  # type: ignore[arg-type]
    assert (status, openai_type, anthropic_type) == (
        refusal.status, openai["error"]["type"], anthropic["error"]["type"]
    )  # fmt: skip
    assert refusal.code == openai["error"]["code"]
