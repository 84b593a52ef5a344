"""Key lookups for the hot path: a local cache in front of the store.

Bound: a key record is re-read from the store at most ``ttl_s`` after it was last read, so a
revoke, rotate or expiry change made on any instance takes effect on every instance within
``ttl_s`` seconds (plus one store round trip). Unknown hashes are cached too (``negative_ttl_s``,
at most ``negative_max`` of them, oldest evicted first), so a client retrying with a wrong key,
or an attacker spraying made-up ones, costs one store query per hash per TTL, not one per request.
Concurrent misses for one hash share a single query.

While the store is unavailable, a record already cached keeps being served (stale; the store is
asked again once per TTL); a hash never seen raises StoreUnavailable.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .keys import KeyRecord
from .store import Store, StoreUnavailable

__all__ = ["KeyCache"]


@dataclass(frozen=True, slots=True)
class _Cached:
    record: KeyRecord | None
    fresh_until: float


class KeyCache:
    def __init__(
        self,
        store: Store,
        *,
        ttl_s: float = 5.0,
        negative_ttl_s: float | None = None,
        negative_max: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl_s
        self._negative_ttl = ttl_s if negative_ttl_s is None else negative_ttl_s
        self._negative_max = negative_max
        self._clock = clock
        self._known: dict[str, _Cached] = {}
        self._unknown: OrderedDict[str, float] = OrderedDict()  # hash -> fresh until
        self._pending: dict[str, asyncio.Future[KeyRecord | None]] = {}
        self.store_queries = 0
        """How many lookups reached the store (tests and the benchmark read it)."""

    @property
    def ttl_s(self) -> float:
        return self._ttl

    async def get(self, key_hash: str) -> KeyRecord | None:
        """The record for ``key_hash``, or None for a hash no key has."""
        now = self._clock()
        cached = self._known.get(key_hash)
        if cached is not None and now < cached.fresh_until:
            return cached.record
        until = self._unknown.get(key_hash)
        if until is not None and now < until:
            return None
        pending = self._pending.get(key_hash)
        if pending is None:
            pending = asyncio.ensure_future(self._load(key_hash))
            self._pending[key_hash] = pending
            pending.add_done_callback(functools.partial(self._loaded, key_hash))
        try:
            return await asyncio.shield(pending)
        except StoreUnavailable:
            if cached is None:
                raise
            # Stale, but the store cannot say otherwise now; ask again after another TTL, so a
            # dead (or hanging) store costs one waiting request per key per TTL, not each one.
            self._known[key_hash] = _Cached(cached.record, self._clock() + self._ttl)
            return cached.record

    def forget(self, key_hash: str) -> None:
        """Drop one hash (this instance just changed that key: no need to wait for the TTL)."""
        self._known.pop(key_hash, None)
        self._unknown.pop(key_hash, None)

    def _loaded(self, key_hash: str, future: asyncio.Future[KeyRecord | None]) -> None:
        self._pending.pop(key_hash, None)
        if not future.cancelled():
            future.exception()  # retrieved: every waiter may have gone (cancelled requests)

    async def _load(self, key_hash: str) -> KeyRecord | None:
        self.store_queries += 1
        record = await self._store.get_by_hash(key_hash)
        now = self._clock()
        if record is None:
            self._known.pop(key_hash, None)
            self._unknown[key_hash] = now + self._negative_ttl
            self._unknown.move_to_end(key_hash)
            while len(self._unknown) > self._negative_max:
                self._unknown.popitem(last=False)
        else:
            self._unknown.pop(key_hash, None)
            self._known[key_hash] = _Cached(record, now + self._ttl)
        return record
