"""The store protocol, the same suite against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from proxy.auth.keys import Budget, BudgetPeriod, KeyLimits, KeyRecord
from proxy.auth.store import (
    KeyConflict,
    KeyNotFound,
    KeyRevoked,
    SpendGroup,
    SpendLine,
    Store,
    StoreUnavailable,
    migrations,
)
from tests.auth_support import (
    Outage,
    StoreFactory,
    outage,
    pg_database,
    pg_server,
    row,
    store,
    store_factory,
)

__all__ = ["outage", "pg_database", "pg_server", "store", "store_factory"]  # fixtures, used by name

DAY = 86400.0
T0 = 1_760_000_000.0  # 2025-10-09 08:53:20 UTC


def record(name: str = "team-a", key_hash: str = "h-a", **overrides: object) -> KeyRecord:
    fields: dict[str, object] = dict(
        id=f"key_{name}", name=name, key_hash=key_hash, secret_hint="lp-abcd", created=T0,
        limits=KeyLimits(rpm=60, tpm=200_000, max_concurrent=4,
                         budget=Budget(50.0, BudgetPeriod.MONTH)),
        routes=("/openai",), models=("gpt-4o*",),
    )  # fmt: skip
    fields.update(overrides)
    return KeyRecord(**fields)  # type: ignore[arg-type]


async def schema_versions(factory: StoreFactory) -> list[int]:
    if factory.backend == "sqlite":
        with sqlite3.connect(factory.where) as db:
            return [r[0] for r in db.execute("SELECT version FROM schema_version ORDER BY 1")]
    conn = await asyncpg.connect(factory.where)
    try:
        return [r[0] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY 1")]
    finally:
        await conn.close()


# ---------------------------------------------------------------- migrations


def test_migrations_are_numbered_files_for_each_backend() -> None:
    for backend in ("sqlite", "postgres"):
        found = migrations(backend)
        assert [1] == [m.version for m in found][:1]
        assert sorted(m.version for m in found) == [m.version for m in found]
        assert all(m.statements() for m in found)


async def test_first_open_creates_and_migrates_once_even_when_opened_concurrently(
    store_factory: StoreFactory,
) -> None:
    stores = await asyncio.gather(*(store_factory.open() for _ in range(3)))
    again = await store_factory.open()  # a restart: nothing left to apply
    for each in (*stores, again):
        await each.close()
    expected = [m.version for m in migrations(store_factory.backend)]
    assert expected == await schema_versions(store_factory)


async def test_many_processes_opening_a_new_sqlite_store_at_once_all_succeed(
    tmp_path: Path,
) -> None:
    """Workers starting together each open the store; switching a new file to WAL needs it
    to itself, and SQLite refuses at once instead of waiting out busy_timeout (1 open in 36
    failed before the opens took turns)."""
    from proxy.auth.sqlite_store import SqliteStore

    for attempt in range(20):
        stores = [SqliteStore(tmp_path / str(attempt) / "llm-proxy.db") for _ in range(6)]
        try:
            assert [None] * 6 == await asyncio.gather(*(s.open() for s in stores))
        finally:
            for store in stores:
                await store.close()


async def test_sqlite_file_and_its_folder_are_created_on_first_open(tmp_path: Path) -> None:
    from proxy.auth.sqlite_store import SqliteStore

    path = tmp_path / "state" / "llm-proxy.db"
    made = SqliteStore(path)
    await made.open()
    await made.close()
    assert path.is_file()


# ---------------------------------------------------------------- keys


async def test_a_created_key_is_found_by_hash_id_and_name(store: Store) -> None:
    key = record()
    await store.create_key(key)
    assert key == await store.get_by_hash("h-a")
    assert key == await store.find_key("key_team-a")
    assert key == await store.find_key("team-a")
    assert None is await store.get_by_hash("h-unknown")
    assert None is await store.find_key("nobody")


async def test_a_key_without_limits_round_trips(store: Store) -> None:
    key = record(limits=KeyLimits(), routes=(), models=(), expires=T0 + DAY)
    await store.create_key(key)
    assert key == await store.get_by_hash("h-a")


async def test_names_and_hashes_are_unique(store: Store) -> None:
    await store.create_key(record())
    with pytest.raises(KeyConflict):
        await store.create_key(record(id="key_other", key_hash="h-other"))
    with pytest.raises(KeyConflict):
        await store.create_key(record(name="team-b", id="key_b"))


async def test_list_is_in_creation_order(store: Store) -> None:
    keys = [record(f"team-{i}", f"h-{i}", created=T0 + i) for i in (2, 0, 1)]
    for key in keys:
        await store.create_key(key)
    assert ["team-0", "team-1", "team-2"] == [k.name for k in await store.list_keys()]


async def test_rotate_replaces_the_hash_and_keeps_the_key(store: Store) -> None:
    await store.create_key(record())
    rotated = await store.rotate_key("key_team-a", "h-new", "lp-wxyz", T0 + 5)
    assert ("h-new", "lp-wxyz", T0 + 5) == (rotated.key_hash, rotated.secret_hint, rotated.rotated)
    assert record().limits == rotated.limits
    assert None is await store.get_by_hash("h-a")
    assert rotated == await store.get_by_hash("h-new")


async def test_revoke_is_idempotent_and_a_revoked_key_cannot_be_rotated(store: Store) -> None:
    await store.create_key(record())
    first = await store.revoke_key("key_team-a", T0 + 10)
    second = await store.revoke_key("key_team-a", T0 + 20)
    assert (T0 + 10, T0 + 10) == (first.revoked, second.revoked)
    assert T0 + 10 == (await store.get_by_hash("h-a")).revoked  # type: ignore[union-attr]
    with pytest.raises(KeyRevoked):
        await store.rotate_key("key_team-a", "h-new", "lp-wxyz", T0 + 30)


async def test_rotate_or_revoke_of_an_unknown_key_is_not_found(store: Store) -> None:
    with pytest.raises(KeyNotFound):
        await store.rotate_key("key_nobody", "h", "lp-0000", T0)
    with pytest.raises(KeyNotFound):
        await store.revoke_key("key_nobody", T0)


# ---------------------------------------------------------------- ledger and spend


async def test_ledger_rows_replayed_after_an_ambiguous_failure_are_stored_once(
    store: Store,
) -> None:
    batch = [row(request_id="r1"), row(request_id="r1", attempt=1), row(request_id="r2")]
    await store.insert_ledger(batch)
    await store.insert_ledger(batch)
    (line,) = await store.spend(SpendGroup.KEY, 0.0)
    assert (2, 3) == (line.requests, line.attempts)


async def test_a_reused_client_request_id_does_not_hide_a_row(store: Store) -> None:
    """x-request-id comes from the client: two requests may carry the same one."""
    await store.insert_ledger([row(request_id="same", cost_usd=1.0)])
    await store.insert_ledger([row(request_id="same", cost_usd=2.0)])
    (line,) = await store.spend(SpendGroup.KEY, 0.0)
    assert (1, 2, 3 * 10**12) == (line.requests, line.attempts, line.cost_picousd)


async def test_costs_sum_exactly(store: Store) -> None:
    """10,000 rows of $0.000001 + $0.1 each sum to exactly $1000.01 (floats would drift)."""
    rows = [row(request_id=f"r{i}", cost_usd=0.100001) for i in range(10_000)]
    await store.insert_ledger(rows)
    (line,) = await store.spend(SpendGroup.KEY, 0.0)
    assert 1000_010_000_000_000 == line.cost_picousd


async def test_spend_groups_by_key_model_route_and_day(store: Store) -> None:
    await store.insert_ledger([
        row(request_id="a", key_id="key_a", model_served="gpt-4o", route="/openai",
            cost_usd=1.0, ts=T0),
        row(request_id="b", key_id="key_a", model_served="claude-sonnet-4-5",
            route="/anthropic", cost_usd=2.0, ts=T0 + DAY, input_tokens=10,
            cached_read_tokens=None, cache_write_tokens=5, output_tokens=3, reasoning_tokens=1),
        row(request_id="c", key_id="key_b", model_served=None, model_requested="gpt-4o",
            cost_usd=None, ts=T0 + DAY),
        row(request_id="d", key_id=None, model_served="gpt-4o", cost_usd=0.5, ts=T0 + DAY),
    ])  # fmt: skip
    by_key = {line.group: line for line in await store.spend(SpendGroup.KEY, 0.0)}
    assert ["-", "key_a", "key_b"] == list(by_key)
    assert SpendLine("key_a", 2, 2, 1010, 200, 5, 103, 1, 3 * 10**12, 0) == by_key["key_a"]
    assert (0, 1) == (by_key["key_b"].cost_picousd, by_key["key_b"].unpriced)
    by_model = {x.group: x.cost_usd for x in await store.spend(SpendGroup.MODEL, 0.0)}
    assert {"claude-sonnet-4-5": 2.0, "gpt-4o": 1.5} == by_model
    by_route = {x.group: x.attempts for x in await store.spend(SpendGroup.ROUTE, 0.0)}
    assert {"/anthropic": 1, "/openai": 3} == by_route
    by_day = {x.group: x.cost_usd for x in await store.spend(SpendGroup.DAY, 0.0)}
    assert {"2025-10-09": 1.0, "2025-10-10": 2.5} == by_day


async def test_spend_since_and_for_one_key(store: Store) -> None:
    await store.insert_ledger([
        row(request_id="old", key_id="key_a", cost_usd=1.0, ts=T0),
        row(request_id="new", key_id="key_a", cost_usd=2.0, ts=T0 + 100),
        row(request_id="other", key_id="key_b", cost_usd=4.0, ts=T0 + 100),
    ])  # fmt: skip
    lines = await store.spend(SpendGroup.ROUTE, T0 + 50, key_id="key_a")
    assert [("/openai", 2 * 10**12)] == [(x.group, x.cost_picousd) for x in lines]
    assert 2 * 10**12 == await store.key_spend_picousd("key_a", T0 + 50)
    assert 3 * 10**12 == await store.key_spend_picousd("key_a", 0.0)
    assert 0 == await store.key_spend_picousd("key_nobody", 0.0)


# ---------------------------------------------------------------- outages


async def test_an_unavailable_store_raises_store_unavailable(store: Store, outage: Outage) -> None:
    outage.begin()
    with pytest.raises(StoreUnavailable):
        await store.insert_ledger([row()])
    outage.end()
    await store.insert_ledger([row()])
    assert 1 == (await store.spend(SpendGroup.KEY, 0.0))[0].attempts
