"""Helpers for keys-mode tests through the real proxy: its config, keys made the way the CLI
makes them (a second connection to the same store), and the ledger read back with plain SQL."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from proxy.auth.manage import KeyManager
from tests.auth_support import StoreFactory
from tests.conftest import base_config

ADMIN_TOKEN = "admin-token-0123456789abcdef"
UPSTREAM_KEYS = {"openai": "sk-upstream-openai-0001", "anthropic": "sk-ant-upstream-0001"}
PRICING = {
    "gpt-4o": {"input": 2.5, "output": 10.0, "cached_input": 1.25},
    "gpt-4o-mini": {"input": 0.15, "output": 0.6, "cached_input": 0.075},
    "claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "cached_input": 0.3, "cache_write": 3.75},
}
"""USD per million tokens; the proxy's config and the fake's bill use the same numbers."""
LEDGER_COLUMNS = (
    "request_id, attempt, key_id, route, upstream, model_requested, model_served, input_tokens,"
    " cached_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_picousd,"
    " usage_source, status, latency_ms"
)


def store_config(factory: StoreFactory) -> dict[str, Any]:
    if factory.backend == "sqlite":
        return {"backend": "sqlite", "path": factory.where}
    return {"backend": "postgres", "url": factory.where}


def keys_config(
    upstream_url: str, factory: StoreFactory, *, cache_ttl_s: float = 0.5, **overrides: Any
) -> dict[str, Any]:
    """The two default routes with configured upstream keys, in keys mode on ``factory``'s
    store, with the admin token and the test prices."""
    raw = base_config(
        upstream_url,
        auth={"mode": "keys", "cache_ttl_s": cache_ttl_s},
        admin_token=ADMIN_TOKEN,
        store=store_config(factory),
        pricing=PRICING,
    )
    for route in raw["routes"]:
        route["upstreams"][0]["api_key"] = UPSTREAM_KEYS[route["prefix"].strip("/")]
    raw.update(overrides)
    return raw


@contextlib.asynccontextmanager
async def key_manager(factory: StoreFactory) -> AsyncIterator[KeyManager]:
    """A KeyManager on its own connection to the store, as the CLI has."""
    store = await factory.open()
    try:
        yield KeyManager(store)
    finally:
        await store.close()


async def read_ledger(factory: StoreFactory) -> list[dict[str, Any]]:
    """Every ledger row, oldest first, as column -> value."""
    names = [c.strip() for c in LEDGER_COLUMNS.split(",")]
    query = f"SELECT {LEDGER_COLUMNS} FROM ledger ORDER BY id"
    if factory.backend == "sqlite":
        with contextlib.closing(sqlite3.connect(factory.where)) as db:
            return [dict(zip(names, r, strict=True)) for r in db.execute(query).fetchall()]
    conn = await asyncpg.connect(factory.where)
    try:
        return [dict(zip(names, r, strict=True)) for r in await conn.fetch(query)]
    finally:
        await conn.close()


async def ledger_rows(factory: StoreFactory, at_least: int, timeout: float = 10.0) -> list[dict]:
    """The ledger once it holds ``at_least`` rows (rows are written in batches, off the
    request path, after the response ended)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await read_ledger(factory)
        if len(rows) >= at_least or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.05)
