"""Fixtures for the auth tests: one store fixture over both backends, real outages, rows.

``store`` is parametrized over SQLite (a file in tmp_path) and PostgreSQL (a fresh database on
the session's throwaway cluster), so every test that takes it runs against both. ``outage``
makes the store really unavailable: SQLite through another connection holding the write lock
(writes fail after the busy timeout), PostgreSQL by stopping the server.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from proxy.auth.ledger import LedgerRow
from proxy.auth.postgres_store import PostgresStore
from proxy.auth.sqlite_store import SqliteStore
from proxy.auth.store import Store
from tests.pg_server import PgServer, pg_database, pg_server

__all__ = [
    "FakeClock",
    "Outage",
    "make_store",
    "outage",
    "pg_database",
    "pg_server",
    "row",
    "store",
    "store_factory",
]

BACKENDS = ["sqlite", "postgres"]


class FakeClock:
    def __init__(self, now: float = 1_760_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class StoreFactory:
    """Opens more stores on the same database (what a second proxy instance or the CLI does)."""

    backend: str
    where: str

    async def open(self) -> Store:
        made = make_store(self.backend, self.where)
        await made.open()
        return made


def make_store(backend: str, where: str) -> Store:
    if backend == "sqlite":
        return SqliteStore(where, busy_timeout_s=0.2)
    return PostgresStore(where, timeout_s=2.0)


@pytest.fixture(params=BACKENDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    if request.param == "sqlite":
        return StoreFactory("sqlite", str(tmp_path / "llm-proxy.db"))
    return StoreFactory("postgres", request.getfixturevalue("pg_database"))


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[Store]:
    opened = await store_factory.open()
    yield opened
    await opened.close()


class Outage:
    """``begin()`` makes the store unavailable for real, ``end()`` brings it back."""

    def __init__(self, factory: StoreFactory, server: PgServer | None) -> None:
        self._factory = factory
        self._server = server
        self._lock: sqlite3.Connection | None = None

    def begin(self) -> None:
        if self._server is not None:
            self._server.stop()
            return
        self._lock = sqlite3.connect(self._factory.where, isolation_level=None)
        self._lock.execute("BEGIN EXCLUSIVE")

    def end(self) -> None:
        if self._server is not None:
            if not self._server.running:
                self._server.start()
            return
        if self._lock is not None:
            self._lock.execute("ROLLBACK")
            self._lock.close()
            self._lock = None


@pytest.fixture
def outage(request: pytest.FixtureRequest, store_factory: StoreFactory) -> Iterator[Outage]:
    server = request.getfixturevalue("pg_server") if store_factory.backend == "postgres" else None
    made = Outage(store_factory, server)
    yield made
    made.end()


def row(**fields: Any) -> LedgerRow:
    """A ledger row with plausible defaults; ``fields`` override."""
    base: dict[str, Any] = dict(
        request_id="req-1", attempt=0, key_id="key_a", route="/openai", upstream="openai",
        model_requested="gpt-4o", model_served="gpt-4o-2024-08-06", input_tokens=1000,
        cached_read_tokens=200, cache_write_tokens=None, output_tokens=100,
        reasoning_tokens=None, cost_usd=0.00225, usage_source="upstream", status=200,
        latency_ms=12.5, ts=1_760_000_000.0,
    )  # fmt: skip
    base.update(fields)
    return LedgerRow(**base)
