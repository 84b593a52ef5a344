"""A Redis connection pool with the one outage rule every Redis-backed store follows
(cooldowns, pacing, and, sharing one link, Responses API conversations and learned token
corrections).

A store never raises on a Redis failure: the call is skipped, the store answers from local
memory, the outage is reported once, and Redis is tried again after ``retry_after_s``, not on
every call. redis-py is imported only here, and only when a Redis backend is configured: it
imports OpenTelemetry when that is installed, which the proxy must not load unless told to.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
OnLoss = Callable[[str, Exception], None]
OnRecover = Callable[[], None]


class RedisLink:
    """A small blocking pool (a burst queues for a few connections instead of failing past
    redis-py's default 100, or opening dozens that miss the short timeout)."""

    def __init__(
        self,
        url: str,
        *,
        on_loss: OnLoss | None = None,
        on_recover: OnRecover | None = None,
        timeout_s: float = 0.25,
        retry_after_s: float = 1.0,
        max_connections: int = 8,
        pool_wait_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        self.failures: tuple[type[Exception], ...] = (TimeoutError, RedisError, OSError)
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_wait_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),  # a dead Redis costs one short timeout, no backoff
            retry_on_timeout=False,
        )
        self.redis: Any = aioredis.Redis(connection_pool=pool)
        self._on_loss = on_loss
        self._on_recover = on_recover
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._down = False
        self._next_try = 0.0

    @property
    def down(self) -> bool:
        return self._down

    async def call(self, op: str, fn: Callable[[], Awaitable[T]]) -> T | None:
        """Run one Redis command, or skip it while Redis is down; never raises."""
        if self._down and self._clock() < self._next_try:
            return None
        try:
            result = await fn()
        except self.failures as exc:
            self._next_try = self._clock() + self._retry_after_s
            if not self._down:
                self._down = True
                if self._on_loss is not None:
                    self._on_loss(op, exc)
            return None
        if self._down:
            self._down = False
            if self._on_recover is not None:
                self._on_recover()
        return result

    async def close(self) -> None:
        try:
            await self.redis.aclose()
            await self.redis.connection_pool.disconnect()
        except self.failures as exc:
            if self._on_loss is not None:
                self._on_loss("close", exc)
