"""The default store: one SQLite file next to the config, created on first start.

WAL mode, so the CLI can read and write while the server runs; a busy timeout, so a short lock
held by the other process waits instead of failing. A lock held longer than that, a full disk or
an unreadable file is StoreUnavailable (the ledger writer spools and retries).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

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

__all__ = ["SqliteStore"]


_ROWS_PER_INSERT = 100
"""19 parameters a row: 1,900 per statement, far below SQLite's 32,766."""


class SqliteStore:
    """Implements proxy.auth.store.Store on a file (``":memory:"`` is refused: the CLI and the
    server must reach the same data)."""

    backend = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self._busy_ms = int(busy_timeout_s * 1000)
        self._db: aiosqlite.Connection | None = None
        # One connection: a write transaction must not absorb another task's statements.
        self._writing = asyncio.Lock()

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
        self._db = db
        async with self._errors():
            await db.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            await self._use_wal(db)
            await db.execute("PRAGMA synchronous = NORMAL")
            await self._migrate(db)

    async def _use_wal(self, db: aiosqlite.Connection) -> None:
        """Switch the file to WAL (it stays so). The switch needs the file to itself and
        SQLite answers "database is locked" at once rather than waiting out busy_timeout, so
        processes opening a new store together (workers starting, the CLI beside them) take
        turns here, within the same timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._busy_ms / 1000
        while True:
            try:
                async with db.execute("PRAGMA journal_mode = WAL") as cur:
                    await cur.fetchall()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        await db.execute(sql.SCHEMA_VERSION_DDL)
        await db.execute("BEGIN IMMEDIATE")  # the write lock: one migrating process at a time
        try:
            async with db.execute("SELECT version FROM schema_version") as cur:
                done = {row[0] for row in await cur.fetchall()}
            for migration in sql.migrations(self.backend):
                if migration.version in done:
                    continue
                for statement in migration.statements():
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)",
                    (migration.version, migration.name, time.time()),
                )
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    @asynccontextmanager
    async def _errors(self, write: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """The one place sqlite3 exceptions become store errors; ``write`` serialises."""
        if self._db is None:
            raise StoreUnavailable("store is not open")
        try:
            if write:
                async with self._writing:
                    yield self._db
            else:
                yield self._db
        except sqlite3.IntegrityError as exc:
            raise KeyConflict(str(exc)) from exc
        except (sqlite3.OperationalError, ValueError, OSError) as exc:
            # locked, disk full, unreadable file; ValueError: aiosqlite's "no active connection"
            raise StoreUnavailable(f"{self.path}: {exc}") from exc
        except sqlite3.Error as exc:  # a bug (bad SQL, wrong bindings), not an outage
            raise StoreError(f"{self.path}: {exc!r}") from exc

    async def _one(self, query: str, params: Sequence[Any]) -> Any:
        async with self._errors() as db, db.execute(query, params) as cur:
            return await cur.fetchone()

    async def create_key(self, record: KeyRecord) -> None:
        async with self._errors(write=True) as db:
            await db.execute(sql.INSERT_KEY, sql.key_params(record))

    async def get_by_hash(self, key_hash: str) -> KeyRecord | None:
        row = await self._one(sql.SELECT_KEY_BY_HASH, (key_hash,))
        return None if row is None else sql.key_from_row(row)

    async def find_key(self, ref: str) -> KeyRecord | None:
        row = await self._one(sql.SELECT_KEY_BY_ID, (ref,))
        if row is None:
            row = await self._one(sql.SELECT_KEY_BY_NAME, (ref,))
        return None if row is None else sql.key_from_row(row)

    async def list_keys(self) -> list[KeyRecord]:
        async with self._errors() as db, db.execute(sql.SELECT_KEYS) as cur:
            return [sql.key_from_row(row) for row in await cur.fetchall()]

    async def rotate_key(self, key_id: str, key_hash: str, hint: str, at: float) -> KeyRecord:
        async with self._errors(write=True) as db:
            await db.execute(sql.ROTATE_KEY, (key_hash, hint, at, key_id))
        record = await self._by_id(key_id)
        return sql.checked_update(record, key_id, record is not None and record.rotated == at)

    async def revoke_key(self, key_id: str, at: float) -> KeyRecord:
        async with self._errors(write=True) as db:
            await db.execute(sql.REVOKE_KEY, (at, key_id))
        return sql.checked_update(await self._by_id(key_id), key_id)

    async def _by_id(self, key_id: str) -> KeyRecord | None:
        row = await self._one(sql.SELECT_KEY_BY_ID, (key_id,))
        return None if row is None else sql.key_from_row(row)

    async def insert_ledger(self, rows: Sequence[LedgerRow]) -> None:
        if not rows:
            return
        async with self._errors(write=True) as db:
            await db.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(rows), _ROWS_PER_INSERT):
                    chunk = rows[start : start + _ROWS_PER_INSERT]
                    params = [v for r in chunk for v in sql.ledger_params(r)]
                    await db.execute(sql.insert_ledger_rows(len(chunk)), params)
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                raise

    async def spend(
        self, by: SpendGroup, since: float, key_id: str | None = None
    ) -> list[SpendLine]:
        params: tuple[Any, ...] = (since,) if key_id is None else (since, key_id)
        query = sql.spend_query(by, key_id is not None)
        async with self._errors() as db, db.execute(query, params) as cur:
            return [sql.spend_from_row(row) for row in await cur.fetchall()]

    async def key_spend_picousd(self, key_id: str, since: float) -> int:
        row = await self._one(sql.KEY_SPEND, (key_id, since))
        return int(row[0])
