"""Where pacing state lives: this process (memory) or Redis, shared by every proxy process.

Two processes that pace from their own memory each admit the whole limit, so together they
overshoot it twice. In Redis, check-and-reserve, observe and settle each run as one Lua script
(atomic), implementing the same rules as ``PacingModel``. A Redis store never raises: when
Redis is unreachable it paces from a local model it has kept in step all along (every
snapshot and reservation is mirrored), reports the loss once, and tries Redis again after a
short pause; the first success after that reports the recovery.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .pacing import Admitted, PacePolicy, PacingModel, Reservation, Wait
from .ratelimits import Bucket, Cost, Delay, LimitSnapshot, WaitReason

__all__ = ["MemoryPacingStore", "PacingStore", "RedisPacingStore", "make_pacing_store"]

T = TypeVar("T")
OnLoss = Callable[[str, Exception], None]
OnRecover = Callable[[], None]

_NO_BASIS = -1e308
"""Stands for "before anything" (an answer to a request that reserved nothing)."""
_BUCKETS = tuple(Bucket)

# Shared Lua: read the state hash and the debts of reservations newer than the basis.
_PRELUDE = """
local function num(x) return string.format('%.17g', x) end
local names = {'requests', 'tokens', 'input-tokens', 'output-tokens'}
local function load(key)
  local st = {}
  local raw = redis.call('HGETALL', key)
  for i = 1, #raw, 2 do st[raw[i]] = tonumber(raw[i + 1]) end
  return st
end
local function amounts(i, o, r)
  return {['requests'] = r, ['tokens'] = i + o, ['input-tokens'] = i, ['output-tokens'] = o}
end
local function level(st, b, now, window)
  local L = st['L:' .. b]
  return math.min(L, st['R:' .. b] + L / window * math.max(0, now - st['obs']))
end
"""

# KEYS: state, reservations. ARGV: now, window, target, ttl, in, out, requests, id, keep_ms.
# An empty id only estimates. Returns {1|0, seconds, reason}.
_ADMIT_LUA = (
    _PRELUDE
    + """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local target, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local cost = amounts(tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
local st = load(KEYS[1])
local basis = st['basis'] or -1e308
local di, do_, dr = 0, 0, 0
local res = redis.call('HGETALL', KEYS[2])
for i = 1, #res, 2 do
  local at, ri, ro, rr = string.match(res[i + 1], '^([^|]+)|([^|]+)|([^|]+)|([^|]+)$')
  at = tonumber(at)
  if at < now - ttl then
    redis.call('HDEL', KEYS[2], res[i])
  elseif at >= basis then
    di, do_, dr = di + tonumber(ri), do_ + tonumber(ro), dr + tonumber(rr)
  end
end
local debt = amounts(di, do_, dr)
local seconds, reason = 0, ''
local retry = st['retry'] or 0
if retry > now then seconds, reason = retry - now, 'retry-after' end
if st['obs'] then
  for _, b in ipairs(names) do
    local L = st['L:' .. b]
    if L then
      local need = math.min(cost[b] + (1 - target) * L, L) + debt[b]
      local lv = level(st, b, now, window)
      if need - lv > 1e-9 * L then
        local wait = (need - lv) * window / L
        if wait > seconds then seconds, reason = wait, b end
      end
    end
  end
end
if reason ~= '' then return {0, num(seconds), reason} end
if ARGV[8] ~= '' then
  local record = ARGV[1] .. '|' .. ARGV[5] .. '|' .. ARGV[6] .. '|' .. ARGV[7]
  redis.call('HSET', KEYS[2], ARGV[8], record)
  redis.call('PEXPIRE', KEYS[2], ARGV[9])
end
return {1, '0', ''}
"""
)

# KEYS: state, reservations. ARGV: observed_at, window, basis, retry_at|'', keep_ms,
# then limit, remaining per bucket in `names` order ('' when absent), then the answered id.
_OBSERVE_LUA = (
    _PRELUDE
    + """
local obs, window, basis = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local retry = tonumber(ARGV[4])
local st = load(KEYS[1])
if retry and retry > (st['retry'] or 0) then redis.call('HSET', KEYS[1], 'retry', ARGV[4]) end
local new = {}
local any = false
for i, b in ipairs(names) do
  if ARGV[4 + 2 * i] ~= '' then
    new[b] = {tonumber(ARGV[4 + 2 * i]), tonumber(ARGV[5 + 2 * i])}
    any = true
  end
end
if any then
  if (not st['obs']) or basis >= (st['basis'] or -1e308) then
    for _, b in ipairs(names) do
      redis.call('HDEL', KEYS[1], 'L:' .. b, 'R:' .. b)
      if new[b] then
        redis.call('HSET', KEYS[1], 'L:' .. b, num(new[b][1]), 'R:' .. b, num(new[b][2]))
      end
    end
    redis.call('HSET', KEYS[1], 'obs', ARGV[1], 'basis', ARGV[3])
    local res = redis.call('HGETALL', KEYS[2])
    for i = 1, #res, 2 do
      local at = tonumber(string.match(res[i + 1], '^([^|]+)|'))
      if at < basis or res[i] == ARGV[14] then redis.call('HDEL', KEYS[2], res[i]) end
    end
  else
    local now = math.max(obs, st['obs'])
    for _, b in ipairs(names) do
      if st['L:' .. b] then
        local mine = level(st, b, now, window)
        if new[b] then
          local L, R = new[b][1], new[b][2]
          mine = math.min(mine, math.min(L, R + L / window * math.max(0, now - obs)))
        end
        redis.call('HSET', KEYS[1], 'R:' .. b, num(mine))
      end
    end
    redis.call('HSET', KEYS[1], 'obs', num(now))
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""
)

# KEYS: state, reservations. ARGV: id, now, window, in, out, requests.
_SETTLE_LUA = (
    _PRELUDE
    + """
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
local now, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local cost = amounts(tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
if cost['requests'] == 0 and cost['tokens'] == 0 then return 1 end
local st = load(KEYS[1])
if not st['obs'] then return 1 end
for _, b in ipairs(names) do
  if st['L:' .. b] then
    redis.call('HSET', KEYS[1], 'R:' .. b, num(level(st, b, now, window) - cost[b]))
  end
end
redis.call('HSET', KEYS[1], 'obs', ARGV[2])
return 1
"""
)


class PacingStore(Protocol):
    """The pacing state of every scope, keyed by ``Scope.key``."""

    async def admit(self, key: str, cost: Cost, now: float, policy: PacePolicy) -> Admitted | Wait:
        """Reserve ``cost`` if the scope has room at ``now``; else the expected wait."""
        ...

    async def delay(self, key: str, cost: Cost, now: float, policy: PacePolicy) -> Delay:
        """Seconds until ``cost`` would fit; reserves nothing."""
        ...

    async def observe(
        self,
        key: str,
        snapshot: LimitSnapshot,
        basis: float,
        policy: PacePolicy,
        answered: str | None = None,
    ) -> None:
        """An answer's snapshot; ``basis`` is the ``reserved_at`` of the answered
        reservation (-inf if none) and ``answered`` its id."""
        ...

    async def settle(
        self, reservation: Reservation, actual: Cost, now: float, policy: PacePolicy
    ) -> None:
        """The attempt is over; ``actual`` is what it cost (``NO_COST``: nothing was spent)."""
        ...

    async def close(self) -> None: ...


class MemoryPacingStore:
    """One process's pacing state (``PacingModel`` behind the store protocol)."""

    def __init__(self) -> None:
        self.model = PacingModel()

    async def admit(self, key: str, cost: Cost, now: float, policy: PacePolicy) -> Admitted | Wait:
        return self.model.admit(key, cost, now, policy)

    async def delay(self, key: str, cost: Cost, now: float, policy: PacePolicy) -> Delay:
        return self.model.delay(key, cost, now, policy)

    async def observe(
        self,
        key: str,
        snapshot: LimitSnapshot,
        basis: float,
        policy: PacePolicy,
        answered: str | None = None,
    ) -> None:
        self.model.observe(key, snapshot, basis, policy, answered)

    async def settle(
        self, reservation: Reservation, actual: Cost, now: float, policy: PacePolicy
    ) -> None:
        self.model.settle(reservation, actual, now, policy)

    async def close(self) -> None:
        pass


class RedisPacingStore:
    """Pacing state in Redis (>= 5, Lua scripting), shared by every process on the same URL
    and prefix; a local ``PacingModel`` mirrors it for outages. Callbacks run inline and must
    not raise."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "llm-proxy:pacing:",
        on_loss: OnLoss | None = None,
        on_recover: OnRecover | None = None,
        timeout_s: float = 0.25,
        retry_after_s: float = 1.0,
    ) -> None:
        # No client-side retries: a dead Redis must cost one short timeout, not a backoff loop.
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
        )
        self._admit = self._redis.register_script(_ADMIT_LUA)
        self._observe = self._redis.register_script(_OBSERVE_LUA)
        self._settle = self._redis.register_script(_SETTLE_LUA)
        self._prefix = prefix
        self._on_loss = on_loss
        self._on_recover = on_recover
        self._retry_after_s = retry_after_s
        self.local = PacingModel()
        self._down = False
        self._next_try = -math.inf

    @property
    def degraded(self) -> bool:
        """True while Redis is considered down and pacing is local only."""
        return self._down

    def _keys(self, key: str) -> list[str]:
        return [f"{self._prefix}{key}", f"{self._prefix}{key}:res"]

    async def admit(self, key: str, cost: Cost, now: float, policy: PacePolicy) -> Admitted | Wait:
        rid = secrets.token_hex(8)
        args = _admit_args(now, cost, policy, rid)
        reply = await self._call("admit", self._script(self._admit, key, args))
        if reply is None:
            return self.local.admit(key, cost, now, policy)
        admitted, seconds, reason = _decode(reply)
        if not admitted:
            return Wait(float(seconds), WaitReason(reason))
        reservation = Reservation(key, rid, cost, now, shared=True)
        self.local.hold(reservation, policy, now)
        return Admitted(reservation)

    async def delay(self, key: str, cost: Cost, now: float, policy: PacePolicy) -> Delay:
        args = _admit_args(now, cost, policy, "")
        reply = await self._call("delay", self._script(self._admit, key, args))
        if reply is None:
            return self.local.delay(key, cost, now, policy)
        admitted, seconds, reason = _decode(reply)
        return Delay(0.0, None) if admitted else Delay(float(seconds), WaitReason(reason))

    async def observe(
        self,
        key: str,
        snapshot: LimitSnapshot,
        basis: float,
        policy: PacePolicy,
        answered: str | None = None,
    ) -> None:
        self.local.observe(key, snapshot, basis, policy, answered)
        args: list[Any] = [
            repr(snapshot.observed_at),
            repr(policy.window_s),
            repr(max(basis, _NO_BASIS)),
            "" if snapshot.retry_at is None else repr(snapshot.retry_at),
            _keep_ms(policy),
        ]
        for bucket in _BUCKETS:
            limit = snapshot.buckets.get(bucket)
            args += ["", ""] if limit is None else [repr(limit.limit), repr(limit.remaining)]
        args.append(answered or "")
        await self._call("observe", self._script(self._observe, key, args))

    async def settle(
        self, reservation: Reservation, actual: Cost, now: float, policy: PacePolicy
    ) -> None:
        self.local.settle(reservation, actual, now, policy)
        if not reservation.shared:
            return
        args = [reservation.id, repr(now), repr(policy.window_s), *_cost_args(actual)]
        await self._call("settle", self._script(self._settle, reservation.scope_key, args))

    async def shared_secret(self) -> bytes | None:
        """A fingerprint secret every process on this Redis agrees on (created by the first
        one), or None when Redis is unreachable."""
        name = f"{self._prefix}fingerprint-secret"
        candidate = secrets.token_hex(32)

        async def fetch() -> Any:
            await self._redis.set(name, candidate, nx=True)
            return await self._redis.get(name)

        value = await self._call("secret", fetch)
        return value if isinstance(value, bytes) and value else None

    async def close(self) -> None:
        try:
            await self._redis.aclose()
        except (RedisError, OSError) as exc:
            self._report("close", exc)

    async def _call(self, op: str, fn: Callable[[], Awaitable[T]]) -> T | None:
        """Run one Redis command, or skip it while Redis is down; never raises."""
        if self._down and time.monotonic() < self._next_try:
            return None
        try:
            result = await fn()
        except (TimeoutError, RedisError, OSError) as exc:
            self._next_try = time.monotonic() + self._retry_after_s
            if not self._down:
                self._down = True
                self._report(op, exc)
            return None
        if self._down:
            self._down = False
            if self._on_recover is not None:
                self._on_recover()
        return result

    def _script(self, script: Any, key: str, args: list[Any]) -> Callable[[], Awaitable[Any]]:
        return lambda: script(keys=self._keys(key), args=args)

    def _report(self, op: str, exc: Exception) -> None:
        if self._on_loss is not None:
            self._on_loss(op, exc)


def _cost_args(cost: Cost) -> list[str]:
    return [repr(cost.input_tokens), repr(cost.output_tokens), repr(cost.requests)]


def _keep_ms(policy: PacePolicy) -> int:
    """How long an idle scope's keys live: by then its buckets are full again anyway."""
    return math.ceil(max(policy.reservation_ttl_s, 10 * policy.window_s) * 1000)


def _admit_args(now: float, cost: Cost, policy: PacePolicy, rid: str) -> list[Any]:
    return [
        repr(now),
        repr(policy.window_s),
        repr(policy.target_utilisation),
        repr(policy.reservation_ttl_s),
        *_cost_args(cost),
        rid,
        _keep_ms(policy),
    ]


def _decode(reply: Any) -> tuple[bool, str, str]:
    flag, seconds, reason = reply
    return int(flag) == 1, _text(seconds), _text(reason)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def make_pacing_store(
    backend: str,
    url: str | None,
    on_loss: OnLoss | None = None,
    on_recover: OnRecover | None = None,
) -> PacingStore:
    """The configured store, on the same backend as the cooldowns (``state:`` in config)."""
    if backend == "memory":
        return MemoryPacingStore()
    if backend == "redis":
        if not url:
            raise ValueError("pacing backend 'redis' needs a url (e.g. redis://localhost:6379/0)")
        return RedisPacingStore(url, on_loss=on_loss, on_recover=on_recover)
    raise ValueError(f"unknown pacing backend {backend!r}; expected 'memory' or 'redis'")
