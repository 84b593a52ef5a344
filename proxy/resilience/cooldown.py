"""Per-upstream "not before" instants shared by all requests, optionally across processes.

Without a shared cooldown every in-flight request re-hits an upstream that just answered 429
(a thundering herd). Instants are wall-clock epoch seconds (time.time()) so that separate
processes agree on them through Redis. A store never raises: a dead Redis degrades to local
memory and is retried after a short pause. redis-py is imported only when a Redis store is
built: importing it also imports the OpenTelemetry API, which a proxy without tracing skips.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..redis_link import RedisLink

__all__ = [
    "CooldownStore",
    "MemoryCooldownStore",
    "RedisCooldownStore",
    "StateEvents",
    "make_store",
]

Clock = Callable[[], float]
OnError = Callable[[str, Exception], None]

# Extend-only SET with an absolute expiry; atomic because Redis runs a script as one command.
# Values are epoch seconds as text; a non-number already stored counts as 0.
_COOL_LUA = """
local current = tonumber(redis.call('GET', KEYS[1])) or 0
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
  return 1
end
return 0
"""


class CooldownStore(Protocol):
    """Where "upstream X must not be tried before T" lives."""

    async def until(self, key: str) -> float:
        """Epoch seconds `key` is cooling until; 0.0 when it is not cooling."""
        ...

    async def cool(self, key: str, until: float) -> None:
        """Cool `key` until epoch `until`; only ever extends, and forgets it after `until`."""
        ...

    async def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...

    def snapshot(self) -> dict[str, float]:
        """Read-only view for dashboards: key -> epoch ``until`` of every cooldown this
        process knows is still running (never touches the network)."""
        ...


class MemoryCooldownStore:
    """One process's cooldowns in a dict; expired entries are dropped lazily."""

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}
        self._sweep_at = 256

    async def until(self, key: str) -> float:
        return self.until_now(key)

    async def cool(self, key: str, until: float) -> None:
        self.cool_now(key, until)

    async def close(self) -> None:
        self._until.clear()

    def snapshot(self) -> dict[str, float]:
        now = self._clock()
        return {key: until for key, until in self._until.items() if until > now}

    def until_now(self, key: str) -> float:
        """Synchronous `until`, for callers already holding the event loop."""
        value = self._until.get(key, 0.0)
        if value <= self._clock():
            self._until.pop(key, None)
            return 0.0
        return value

    def cool_now(self, key: str, until: float) -> None:
        """Synchronous `cool`: max semantics; instants already past are ignored."""
        now = self._clock()
        if not math.isfinite(until) or until <= now or until <= self._until.get(key, 0.0):
            return
        self._until[key] = until
        if len(self._until) > self._sweep_at:
            self._until = {k: v for k, v in self._until.items() if v > now}
            self._sweep_at = max(256, 2 * len(self._until))


class RedisCooldownStore:
    """Cooldowns in Redis, shared by every process that uses the same URL and prefix.

    Each value is also kept in local memory, so reads return max(redis, local): an outage
    loses nothing this process learned, and a flushed Redis cannot shorten a local cooldown.
    On a Redis failure `on_error(operation, exc)` is called once per outage, calls use memory
    only, and Redis is tried again after `retry_after_s` (not on every call). Cooldowns set
    during an outage stay local (not replayed later). Needs Redis >= 6.2 (SET ... PXAT).
    The callbacks run inline and must not raise.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "llm-proxy:cooldown:",
        on_error: OnError | None = None,
        on_recover: Callable[[], None] | None = None,
        timeout_s: float = 0.25,
        retry_after_s: float = 1.0,
        clock: Clock = time.time,
    ) -> None:
        self._link = RedisLink(
            url,
            on_loss=on_error,
            on_recover=on_recover,
            timeout_s=timeout_s,
            retry_after_s=retry_after_s,
            clock=clock,
        )
        self._redis = self._link.redis
        self._call = self._link.call
        self._cool_script = self._redis.register_script(_COOL_LUA)
        self._prefix = prefix
        self._clock = clock
        self._memory = MemoryCooldownStore(clock)

    @property
    def degraded(self) -> bool:
        """True while Redis is considered down and only local memory is used."""
        return self._link.down

    async def until(self, key: str) -> float:
        local = self._memory.until_now(key)
        raw = await self._call("until", lambda: self._redis.get(self._prefix + key))
        try:
            remote = float(raw) if raw is not None else 0.0
        except ValueError:
            remote = 0.0
        if not math.isfinite(remote) or remote <= self._clock():
            remote = 0.0
        return max(local, remote)

    async def cool(self, key: str, until: float) -> None:
        if not math.isfinite(until) or until <= self._clock():
            return
        self._memory.cool_now(key, until)
        expire_ms = math.ceil(until * 1000)
        await self._call(
            "cool",
            lambda: self._cool_script(keys=[self._prefix + key], args=[repr(until), expire_ms]),
        )

    async def close(self) -> None:
        await self._memory.close()
        await self._link.close()

    def snapshot(self) -> dict[str, float]:
        """This process's cooldowns (local memory): other processes' are only in Redis."""
        return self._memory.snapshot()


class StateEvents:
    """What the operator is told about the shared store: lost (with the operation and error)
    and back, both naming the Redis URL without its password (``display_url``).

    Several stores (cooldowns, pacing) share one Redis and one of these: an outage is told
    once, when the first store notices, and its end once, when the first store is back.
    """

    def __init__(self, logger: Any, display_url: str | None) -> None:
        self._log = logger
        self._url = display_url
        self._down = False

    def lost(self, op: str, exc: Exception) -> None:
        if self._down:
            return
        self._down = True
        self._log.error(
            "shared state unavailable, using local memory",
            url=self._url,
            op=op,
            error=f"{type(exc).__name__}: {exc}",
        )

    def recovered(self) -> None:
        if not self._down:
            return
        self._down = False
        self._log.info("shared state is back", url=self._url)


def make_store(
    backend: str,
    url: str | None,
    on_error: OnError | None = None,
    on_recover: Callable[[], None] | None = None,
) -> CooldownStore:
    """The configured store: "memory" (one process) or "redis" (needs `url`)."""
    if backend == "memory":
        return MemoryCooldownStore()
    if backend == "redis":
        if not url:
            raise ValueError("cooldown backend 'redis' needs a url (e.g. redis://localhost:6379/0)")
        return RedisCooldownStore(url, on_error=on_error, on_recover=on_recover)
    raise ValueError(f"unknown cooldown backend {backend!r}; expected 'memory' or 'redis'")
