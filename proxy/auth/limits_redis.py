"""Per-key counters in Redis: the same semantics as MemoryCounters, one Lua script each.

A script runs as one command, so check-then-reserve is atomic across every instance; the clock is
Redis's own (``TIME``), so instances with skewed clocks still share one window. Keys of one
client key share a hash tag (``{key_id}``) and so one Redis Cluster slot. Per client key:

- ``log`` (zset ticket -> admitted ms) and ``tok`` (hash ticket -> tokens): the 60 s window;
- ``live`` (zset ticket -> lease end ms) and ``held`` (hash ticket -> reserved nano-USD): requests
  in flight. A lease outlives the longest request; an instance that dies holding one frees it
  when the lease ends;
- ``agg`` (hash: ``tokens`` in the window, ``held`` nano-USD in flight), kept incrementally;
- ``spent:<period>``: settled nano-USD in the budget period, seeded from the ledger (``SET NX``).

Every script refreshes the TTL of the first five, so an idle key leaves nothing behind.

Calls are batched: whatever admissions and settlements arrive while one batch is on the wire
go out together as the next pipeline (one write, one read), each script still atomic on its
own. Under load that turns N round trips into one, which is most of the client's CPU cost.
Raises redis errors; ``Limiter`` turns them into a fallback to memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from .limits import WINDOW_S, Ask, Denied, Held, Over, Period, Unseeded

__all__ = ["RedisCounters"]

_FORGET = """
local function forget(zkey, hkey, field, upto)
  local gone = redis.call('ZRANGEBYSCORE', zkey, '-inf', upto)
  if #gone == 0 then return end
  local freed = 0
  for i = 1, #gone do
    freed = freed + (tonumber(redis.call('HGET', hkey, gone[i])) or 0)
    redis.call('HDEL', hkey, gone[i])
  end
  redis.call('ZREMRANGEBYSCORE', zkey, '-inf', upto)
  redis.call('HINCRBY', KEYS[5], field, 0 - freed)  -- never -0: not an integer to Redis
end
"""

# ARGV: ticket, window ms, rpm, tpm, concurrency, budget nano-USD (0: none), tokens, cost, lease ms
# Returns {outcome, wait ms}: 0 admitted, 1 budget, 2 above tpm, 3 rpm, 4 tpm, 5 concurrency,
# 6 budget counter not seeded.
_ADMIT = (
    _FORGET
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ticket, window = ARGV[1], tonumber(ARGV[2])
local rpm, tpm, conc = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local budget, tokens, cost, lease = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]),
  tonumber(ARGV[9])
forget(KEYS[1], KEYS[2], 'tokens', now - window)
forget(KEYS[3], KEYS[4], 'held', now)
if budget > 0 then
  local spent = redis.call('GET', KEYS[6])
  if not spent then return {6, 0} end
  local held = tonumber(redis.call('HGET', KEYS[5], 'held')) or 0
  if tonumber(spent) + held + cost > budget then return {1, 0} end
end
if tpm > 0 and tokens > tpm then return {2, 0} end
local wait, why = 0, 0
if rpm > 0 then
  local n = redis.call('ZCARD', KEYS[1])
  if n >= rpm then
    local e = redis.call('ZRANGE', KEYS[1], n - rpm, n - rpm, 'WITHSCORES')
    wait, why = tonumber(e[2]) + window - now, 3
  end
end
if tpm > 0 then
  local need = (tonumber(redis.call('HGET', KEYS[5], 'tokens')) or 0) + tokens - tpm
  if need > 0 then
    local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
    local freed = 0
    for i = 1, #entries, 2 do
      freed = freed + (tonumber(redis.call('HGET', KEYS[2], entries[i])) or 0)
      if freed >= need then
        local w = tonumber(entries[i + 1]) + window - now
        if w > wait then wait, why = w, 4 end
        break
      end
    end
  end
end
if why > 0 then return {why, wait} end
if conc > 0 and redis.call('ZCARD', KEYS[3]) >= conc then return {5, 0} end
redis.call('ZADD', KEYS[1], now, ticket)
redis.call('HSET', KEYS[2], ticket, tokens)
redis.call('ZADD', KEYS[3], now + lease, ticket)
redis.call('HSET', KEYS[4], ticket, cost)
redis.call('HINCRBY', KEYS[5], 'tokens', tokens)
redis.call('HINCRBY', KEYS[5], 'held', cost)
local ttl = math.max(window, lease)
for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], ttl) end
return {0, 0}
"""
)

# ARGV: ticket, real tokens, real cost nano-USD, ttl ms
_SETTLE = """
local ticket = ARGV[1]
local old = redis.call('HGET', KEYS[2], ticket)
if old then
  redis.call('HSET', KEYS[2], ticket, ARGV[2])
  redis.call('HINCRBY', KEYS[5], 'tokens', tonumber(ARGV[2]) - tonumber(old))
end
if redis.call('ZREM', KEYS[3], ticket) == 1 then
  local held = tonumber(redis.call('HGET', KEYS[4], ticket)) or 0
  redis.call('HDEL', KEYS[4], ticket)
  redis.call('HINCRBY', KEYS[5], 'held', 0 - held)
end
if tonumber(ARGV[3]) > 0 and redis.call('EXISTS', KEYS[6]) == 1 then
  redis.call('INCRBY', KEYS[6], ARGV[3])
end
for i = 1, 5 do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
end
return 1
"""

_DENIALS = {
    1: Over.BUDGET,
    2: Over.TOKENS_ABOVE_LIMIT,
    3: Over.RPM,
    4: Over.TPM,
    5: Over.CONCURRENCY,
}
_SPENT_KEEP_S = 2 * 86400  # a period's counter outlives its end: late settlements land


class _Batcher:
    """EVALSHA calls made while a batch is in flight go out together as the next pipeline."""

    def __init__(self, redis: aioredis.Redis, scripts: dict[str, str]) -> None:
        self._redis = redis
        self._scripts = scripts  # sha1 -> source, loaded again when Redis forgot them
        self._pending: list[tuple[str, list[Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def call(self, sha: str, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((sha, [sha, len(keys), *keys, *args], future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        return future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await self._send(batch)
            except asyncio.CancelledError:
                self._fail(batch, ConnectionError("the Redis batch was cancelled"))
                raise
            except Exception as exc:  # the connection failed: every caller in it hears so
                self._fail(batch, exc)
                continue
            for (_, _, future), result in zip(batch, results, strict=True):
                if future.done():  # its caller went away
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    @staticmethod
    def _fail(batch: list[tuple[str, list[Any], asyncio.Future[Any]]], exc: Exception) -> None:
        for _, _, future in batch:
            if not future.done():
                future.set_exception(exc)

    async def _send(self, batch: list[tuple[str, list[Any], asyncio.Future[Any]]]) -> list[Any]:
        results = await self._pipeline(batch)
        if any(isinstance(r, NoScriptError) for r in results):  # Redis restarted or flushed
            for source in self._scripts.values():
                await self._redis.script_load(source)
            results = await self._pipeline(batch)
        return results

    async def _pipeline(self, batch: list[tuple[str, list[Any], asyncio.Future[Any]]]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for _, command, _ in batch:
            pipe.evalsha(*command)
        return await pipe.execute(raise_on_error=False)


def _sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()


class RedisCounters:
    """Implements proxy.auth.limits.Counters on Redis >= 6.2 (``SET ... PXAT``)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "llm-proxy:auth:",
        window_s: float = WINDOW_S,
        lease_s: float = 960.0,
        timeout_s: float = 0.25,
    ) -> None:
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
        )
        self._admit, self._settle = _sha(_ADMIT), _sha(_SETTLE)
        self._batcher = _Batcher(self._redis, {self._admit: _ADMIT, self._settle: _SETTLE})
        self._prefix = prefix
        self._window_ms = int(window_s * 1000)
        self._lease_ms = int(lease_s * 1000)

    def _keys(self, key_id: str, period: Period | None) -> list[str]:
        base = f"{self._prefix}{{{key_id}}}:"
        spent = base + "spent:" + (period.id if period is not None else "-")
        return [base + "log", base + "tok", base + "live", base + "held", base + "agg", spent]

    async def admit(self, ask: Ask, ticket: str) -> Held | Denied | Unseeded:
        args: list[str | int] = [
            ticket,
            self._window_ms,
            ask.rpm or 0,
            ask.tpm or 0,
            ask.max_concurrent or 0,
            ask.budget_nanos or 0,
            ask.tokens,
            ask.cost_nanos,
            self._lease_ms,
        ]
        keys = self._keys(ask.key_id, ask.period)
        outcome, wait_ms = await self._batcher.call(self._admit, keys, args)
        if outcome == 0:
            return Held(ask.key_id, ticket, ask.tokens, ask.cost_nanos, shared=True)
        if outcome == 6:
            assert ask.period is not None  # a budget comes with its period
            return Unseeded(ask.period)
        over = _DENIALS[int(outcome)]
        waits = over in (Over.RPM, Over.TPM)
        return Denied(over, int(wait_ms) / 1000 if waits else None)

    async def seed(self, key_id: str, period: Period, spent_nanos: int) -> None:
        key = self._keys(key_id, period)[5]
        expire = None
        if period.end is not None:  # never in the past, whatever this host's clock says
            expire = math.ceil((max(period.end, time.time()) + _SPENT_KEEP_S) * 1000)
        await self._redis.set(key, spent_nanos, nx=True, pxat=expire)

    async def settle(self, held: Held, tokens: int, cost_nanos: int, period: Period | None) -> None:
        ttl = max(self._window_ms, self._lease_ms)
        keys = self._keys(held.key_id, period)
        await self._batcher.call(self._settle, keys, [held.ticket, tokens, cost_nanos, ttl])

    async def close(self) -> None:
        await self._redis.aclose()
