"""The shared store: PostgreSQL through an asyncpg pool, for several proxy instances.

The same SQL as SQLite (placeholders numbered here). Migrations run under a transaction-scoped
advisory lock, so instances starting together apply each version once. A server that is down,
restarting or out of connections is StoreUnavailable; the pool reconnects on the next call.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

try:
    import asyncpg  # type: ignore[import-untyped]
except ImportError as exc:  # an optional extra: say how to get it
    raise ImportError(
        "store.backend postgres needs asyncpg: pip install 'llm-proxy[postgres]'"
    ) from exc

from . import store as sql
from .keys import KeyRecord
from .store import (
    KeyConflict,
    SpendGroup,
    SpendLine,
    StoreError,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from .ledger import LedgerRow

__all__ = ["PostgresStore"]

_MIGRATION_LOCK = 0x6C6C6D70  # "llmp": pg_advisory_xact_lock key for schema migrations
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, cannot connect now, cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
)


@functools.cache
def _numbered(query: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...``."""
    counter = iter(range(1, 1000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", query)


class PostgresStore:
    """Implements proxy.auth.store.Store on a PostgreSQL database given by ``url``."""

    backend = "postgres"

    def __init__(self, url: str, *, timeout_s: float = 5.0, max_connections: int = 4) -> None:
        self._url = url
        self._timeout = timeout_s
        self._max = max_connections
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=self._max,
                timeout=self._timeout,
                command_timeout=self._timeout,
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(sql.SCHEMA_VERSION_DDL)
            done = {r[0] for r in await conn.fetch("SELECT version FROM schema_version")}
            for migration in sql.migrations(self.backend):
                if migration.version not in done:
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_version (version, name, applied) VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        time.time(),
                    )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; the one place asyncpg exceptions become store errors."""
        if self._pool is None:
            raise StoreUnavailable("store is not open")
        try:
            async with self._pool.acquire(timeout=self._timeout) as conn:
                yield conn
        except asyncpg.UniqueViolationError as exc:
            raise KeyConflict(str(exc)) from exc
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc!r}") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"PostgreSQL: {exc!r}") from exc

    async def _one(self, query: str, *params: Any) -> Any:
        async with self._conn() as conn:
            return await conn.fetchrow(_numbered(query), *params)

    async def create_key(self, record: KeyRecord) -> None:
        async with self._conn() as conn:
            await conn.execute(_numbered(sql.INSERT_KEY), *sql.key_params(record))

    async def get_by_hash(self, key_hash: str) -> KeyRecord | None:
        row = await self._one(sql.SELECT_KEY_BY_HASH, key_hash)
        return None if row is None else sql.key_from_row(row)

    async def find_key(self, ref: str) -> KeyRecord | None:
        row = await self._one(sql.SELECT_KEY_BY_ID, ref)
        if row is None:
            row = await self._one(sql.SELECT_KEY_BY_NAME, ref)
        return None if row is None else sql.key_from_row(row)

    async def list_keys(self) -> list[KeyRecord]:
        async with self._conn() as conn:
            return [sql.key_from_row(r) for r in await conn.fetch(_numbered(sql.SELECT_KEYS))]

    async def rotate_key(self, key_id: str, key_hash: str, hint: str, at: float) -> KeyRecord:
        async with self._conn() as conn:
            await conn.execute(_numbered(sql.ROTATE_KEY), key_hash, hint, at, key_id)
        record = await self._by_id(key_id)
        return sql.checked_update(record, key_id, record is not None and record.rotated == at)

    async def revoke_key(self, key_id: str, at: float) -> KeyRecord:
        async with self._conn() as conn:
            await conn.execute(_numbered(sql.REVOKE_KEY), at, key_id)
        return sql.checked_update(await self._by_id(key_id), key_id)

    async def _by_id(self, key_id: str) -> KeyRecord | None:
        row = await self._one(sql.SELECT_KEY_BY_ID, key_id)
        return None if row is None else sql.key_from_row(row)

    async def insert_ledger(self, rows: Sequence[LedgerRow]) -> None:
        if not rows:
            return
        async with self._conn() as conn, conn.transaction():
            await conn.executemany(
                _numbered(sql.INSERT_LEDGER), [sql.ledger_params(r) for r in rows]
            )

    async def spend(
        self, by: SpendGroup, since: float, key_id: str | None = None
    ) -> list[SpendLine]:
        params: tuple[Any, ...] = (since,) if key_id is None else (since, key_id)
        async with self._conn() as conn:
            rows = await conn.fetch(_numbered(sql.spend_query(by, key_id is not None)), *params)
        return [sql.spend_from_row(tuple(r)) for r in rows]

    async def key_spend_picousd(self, key_id: str, since: float) -> int:
        row = await self._one(sql.KEY_SPEND, key_id, since)
        return int(row[0])
