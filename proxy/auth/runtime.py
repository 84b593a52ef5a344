"""Everything ``auth: {mode: keys}`` needs in one process, built from the config.

The app opens one ``AuthRuntime`` in its cleanup_ctx (``await AuthRuntime.open(config, ...)``)
and closes it at shutdown (the ledger writer gets a last chance to write its queue). The CLI
uses ``make_store`` alone to reach the same store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..config import Config, Storage
from ..pricing import PriceTable
from .cache import KeyCache
from .gate import Gate
from .ledger import LedgerWriter
from .limits import Limiter
from .manage import KeyManager
from .sqlite_store import SqliteStore
from .store import Store

__all__ = ["AuthRuntime", "make_store"]

OnError = Callable[[str, Exception], None]
"""(component: ``store``, ``ledger`` or ``limits``, the exception)."""
OnRecover = Callable[[str], None]

_LEASE_MARGIN_S = 60.0


def make_store(storage: Storage) -> Store:
    """The configured store, not yet opened (``await store.open()`` creates and migrates)."""
    if storage.backend == "postgres":
        from .postgres_store import PostgresStore  # asyncpg: only when configured

        assert storage.url is not None  # config validation requires it
        return PostgresStore(storage.url)
    return SqliteStore(storage.path)


@dataclass(slots=True)
class AuthRuntime:
    store: Store
    cache: KeyCache
    limiter: Limiter
    gate: Gate
    ledger: LedgerWriter
    keys: KeyManager

    @classmethod
    async def open(
        cls,
        config: Config,
        prices: PriceTable,
        *,
        on_error: OnError | None = None,
        on_recover: OnRecover | None = None,
    ) -> AuthRuntime:
        """Open the store (raises StoreUnavailable when it cannot be reached at startup)."""
        store = make_store(config.store)
        await store.open()

        def error(component: str) -> Callable[..., None]:
            return lambda *args: on_error(component, args[-1]) if on_error else None

        def recover(component: str) -> Callable[[], None]:
            return lambda: on_recover(component) if on_recover else None

        async def load_spent(key_id: str, since: float) -> int:
            picos = await store.key_spend_picousd(key_id, since)
            return -(-picos // 1000)  # nano-USD, rounded up

        shared = None
        if config.state.backend == "redis" and config.state.url:
            from .limits_redis import RedisCounters  # redis-py only when Redis is configured

            lease = config.timeouts.total_s + _LEASE_MARGIN_S
            shared = RedisCounters(config.state.url, lease_s=lease)
        limiter = Limiter(
            load_spent, shared, on_error=error("limits"), on_recover=recover("limits")
        )
        cache = KeyCache(store, ttl_s=config.auth.cache_ttl_s)
        gate = Gate(
            cache,
            limiter,
            prices,
            default_max_output_tokens=config.auth.default_max_output_tokens,
        )
        ledger = LedgerWriter(store, on_error=error("ledger"), on_recover=recover("ledger"))
        ledger.start()
        keys = KeyManager(store, on_change=cache.forget)
        return cls(store, cache, limiter, gate, ledger, keys)

    async def close(self) -> None:
        await self.ledger.close()
        await self.limiter.close()
        await self.store.close()
