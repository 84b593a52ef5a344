"""Redis-backed versions of two stores that otherwise live in one process's memory: Responses
API conversations (``previous_response_id`` served through a translation) and the samples of
learned token corrections. Every process sharing the Redis then continues the same
conversations and learns from every response; while Redis is away each keeps serving from
its own memory (writes go to both, reads prefer Redis)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .context.correction import MemorySampleStore
from .jsonbytes import json_bytes
from .redis_link import RedisLink
from .translate import MemoryResponseStore, StoredConversation


class RedisResponseStore:
    """A :class:`~proxy.translate.ResponseStore` whose entries expire in Redis after ``ttl_s``."""

    def __init__(
        self, link: RedisLink, ttl_s: float = 3600.0, prefix: str = "llm-proxy:responses:"
    ) -> None:
        self._link = link
        self._ttl_ms = int(ttl_s * 1000)
        self._prefix = prefix
        self._local = MemoryResponseStore(ttl_s)

    async def get(self, response_id: str) -> StoredConversation | None:
        raw = await self._link.call("get", lambda: self._link.redis.get(self._prefix + response_id))
        if raw is None:
            return await self._local.get(response_id)
        try:
            items = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(items, list):
            return None
        return StoredConversation(tuple(i for i in items if isinstance(i, dict)))

    async def put(self, response_id: str, items: Sequence[Mapping[str, Any]]) -> None:
        await self._local.put(response_id, items)
        payload = json_bytes(list(items))
        key = self._prefix + response_id
        await self._link.call("put", lambda: self._link.redis.set(key, payload, px=self._ttl_ms))


class RedisSampleStore:
    """A :class:`~proxy.context.correction.SampleStore`: the last ``keep`` values per key in a
    Redis list, so every process learns from every response."""

    def __init__(
        self, link: RedisLink, ttl_s: float = 7 * 24 * 3600, prefix: str = "llm-proxy:samples:"
    ) -> None:
        self._link = link
        self._ttl_s = int(ttl_s)
        self._prefix = prefix
        self._local = MemorySampleStore()

    async def add(self, key: str, value: float, keep: int) -> None:
        await self._local.add(key, value, keep)
        name = self._prefix + key

        async def push() -> Any:
            pipe = self._link.redis.pipeline(transaction=True)
            pipe.lpush(name, repr(value)).ltrim(name, 0, keep - 1).expire(name, self._ttl_s)
            return await pipe.execute()

        await self._link.call("add", push)

    async def recent(self, key: str) -> Sequence[float]:
        name = self._prefix + key
        raw = await self._link.call("recent", lambda: self._link.redis.lrange(name, 0, -1))
        if raw is None:
            return await self._local.recent(key)
        values = []
        for item in reversed(raw):  # LPUSH keeps the newest first; the store's order is oldest
            try:
                values.append(float(item))
            except ValueError:
                continue
        return values
