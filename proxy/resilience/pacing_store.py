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
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from ..redis_link import OnLoss, OnRecover, RedisLink
from .pacing import (
    PROBE_HOLD_S,
    PROBE_WAIT_S,
    Admitted,
    PacePolicy,
    PacingModel,
    Reservation,
    Wait,
)
from .ratelimits import Bucket, Cost, Delay, LimitSnapshot, WaitReason

__all__ = ["MemoryPacingStore", "PacingStore", "RedisPacingStore", "make_pacing_store"]

T = TypeVar("T")

_BUCKETS = tuple(Bucket)

# KEYS: the state hash (obs: instant of the level, basis, seq, retry, and per bucket
# L:<bucket> limit and R:<bucket> level at obs), the reservations hash (id ->
# "reserved_at|seq|input|output|requests") and their order (zset id -> seq).
# Same rules as PacingModel.
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
local function level(L, R, obs, now, window)
  return math.min(L, R + L / window * math.max(0, now - obs))
end
local function record(raw)
  local at, seq, i, o, r = string.match(raw, '^([^|]+)|([^|]+)|([^|]+)|([^|]+)|([^|]+)$')
  return tonumber(at), tonumber(seq), amounts(tonumber(i), tonumber(o), tonumber(r))
end
local function forget(id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
-- drop reservations older than `oldest`, oldest first (by seq)
local function expire(oldest)
  while true do
    local first = redis.call('ZRANGE', KEYS[3], 0, 0)
    if #first == 0 then return end
    local raw = redis.call('HGET', KEYS[2], first[1])
    if raw and record(raw) >= oldest then return end
    forget(first[1])
  end
end
-- an answer to reservation `after` speaks for it and every earlier one
local function absorb(after)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', after)) do forget(id) end
end
-- what was reserved after seq `after` and is still pending
local function debt_after(after)
  local debt = amounts(0, 0, 0)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. after, '+inf')) do
    local raw = redis.call('HGET', KEYS[2], id)
    if raw then
      local _, _, cost = record(raw)
      for _, b in ipairs(names) do debt[b] = debt[b] + cost[b] end
    end
  end
  return debt
end
local function keep(ms)
  for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ms) end
end
-- re-base every bucket at `now` and add sign * cost
local function shift(key, st, now, window, cost, sign)
  if not st['obs'] then return end
  for _, b in ipairs(names) do
    local L = st['L:' .. b]
    if L then
      local lv = level(L, st['R:' .. b], st['obs'], now, window) + sign * cost[b]
      redis.call('HSET', key, 'R:' .. b, num(lv))
    end
  end
  redis.call('HSET', key, 'obs', num(math.max(now, st['obs'])))
end
"""

# ARGV: now, window, target, ttl, input, output, requests, id, keep_ms, probe hold, probe
# wait, force ('1': reserve without checking). An empty id only estimates.
# Returns {1|0, seconds, reason, seq}.
_ADMIT_LUA = (
    _PRELUDE
    + """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local target, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local cost = amounts(tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
local st = load(KEYS[1])
local force = ARGV[12] == '1'
if not st['seen'] and not force then  -- a first request is out: one at a time until its answer
  for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    local raw = redis.call('HGET', KEYS[2], id)
    if raw and now - record(raw) < tonumber(ARGV[10]) then
      return {0, ARGV[11], 'probe', 0}
    end
  end
end
local seconds, reason = 0, ''
local retry = st['retry'] or 0
if retry > now then seconds, reason = retry - now, 'retry-after' end
if st['obs'] then
  for _, b in ipairs(names) do
    local L = st['L:' .. b]
    if L then
      local need = math.min(cost[b] + (1 - target) * L, L)
      local lv = level(L, st['R:' .. b], st['obs'], now, window)
      local wait = (need - lv) * window / L
      if wait > 1e-6 and wait > seconds then seconds, reason = wait, b end
    end
  end
end
if reason ~= '' and not force then return {0, num(seconds), reason, 0} end
if ARGV[8] == '' then return {1, '0', '', 0} end
expire(now - ttl)
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local rec = ARGV[1] .. '|' .. seq .. '|' .. ARGV[5] .. '|' .. ARGV[6] .. '|' .. ARGV[7]
redis.call('HSET', KEYS[2], ARGV[8], rec)
redis.call('ZADD', KEYS[3], seq, ARGV[8])
shift(KEYS[1], st, now, window, cost, -1)
keep(ARGV[9])
return {1, '0', '', seq}
"""
)

# ARGV: observed_at, window, basis ('' when none),
# retry_at ('' when none), keep_ms, ttl, now, then limit and remaining per bucket in `names`
# order ('' when absent).
_OBSERVE_LUA = (
    _PRELUDE
    + """
local obs, window, basis = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local retry, oldest = tonumber(ARGV[4]), tonumber(ARGV[7]) - tonumber(ARGV[6])
local st = load(KEYS[1])
redis.call('HSET', KEYS[1], 'seen', 1)
if retry and retry > (st['retry'] or 0) then redis.call('HSET', KEYS[1], 'retry', ARGV[4]) end
local new, any = {}, false
for i, b in ipairs(names) do
  if ARGV[6 + 2 * i] ~= '' then
    new[b] = {tonumber(ARGV[6 + 2 * i]), tonumber(ARGV[7 + 2 * i])}
    any = true
  end
end
if any and ((not st['obs']) or (basis and basis >= (st['basis'] or 0))) then
  local after = basis or 0
  expire(oldest)
  absorb(after)
  local debt = debt_after(after)
  for _, b in ipairs(names) do
    redis.call('HDEL', KEYS[1], 'L:' .. b, 'R:' .. b)
    if new[b] then
      redis.call('HSET', KEYS[1], 'L:' .. b, num(new[b][1]), 'R:' .. b, num(new[b][2] - debt[b]))
    end
  end
  redis.call('HSET', KEYS[1], 'obs', ARGV[1], 'basis', math.max(st['basis'] or 0, after))
elseif any then
  expire(oldest)
  local debt = debt_after(basis or 0)
  local now = math.max(obs, st['obs'])
  for _, b in ipairs(names) do
    local L = st['L:' .. b]
    if L then
      local mine = level(L, st['R:' .. b], st['obs'], now, window)
      if new[b] then
        mine = math.min(mine, level(new[b][1], new[b][2] - debt[b], obs, now, window))
      end
      redis.call('HSET', KEYS[1], 'R:' .. b, num(mine))
    end
  end
  redis.call('HSET', KEYS[1], 'obs', num(now))
end
keep(ARGV[5])
return 1
"""
)

# ARGV: id, now, window, actual input, output, requests.
_SETTLE_LUA = (
    _PRELUDE
    + """
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return 0 end
forget(ARGV[1])
local _, _, est = record(raw)
local actual = amounts(tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
local refund = {}
for _, b in ipairs(names) do refund[b] = est[b] - actual[b] end
shift(KEYS[1], load(KEYS[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), refund, 1)
return 1
"""
)


class PacingStore(Protocol):
    """The pacing state of every scope, keyed by ``Scope.key``."""

    async def admit(
        self, key: str, cost: Cost, now: float, policy: PacePolicy, *, force: bool = False
    ) -> Admitted | Wait:
        """Reserve ``cost`` if the scope has room at ``now`` (or unconditionally with
        ``force``); else the expected wait."""
        ...

    async def delay(self, key: str, cost: Cost, now: float, policy: PacePolicy) -> Delay:
        """Seconds until ``cost`` would fit; reserves nothing."""
        ...

    async def observe(
        self,
        key: str,
        snapshot: LimitSnapshot,
        answered: Reservation | None,
        policy: PacePolicy,
    ) -> None:
        """An answer's snapshot; ``answered`` is the attempt's reservation (None if it
        reserved nothing)."""
        ...

    async def settle(
        self, reservation: Reservation, actual: Cost, now: float, policy: PacePolicy
    ) -> None:
        """The attempt is over; ``actual`` is what it cost (``NO_COST``: nothing was spent)."""
        ...

    def local_level(self, key: str) -> LimitSnapshot | None:
        """This process's view of the scope's buckets (for metrics; no IO)."""
        ...

    def local_keys(self) -> list[str]:
        """Every scope this process has seen (for metrics and the dashboard; no IO)."""
        ...

    async def close(self) -> None: ...


class MemoryPacingStore:
    """One process's pacing state (``PacingModel`` behind the store protocol)."""

    def __init__(self) -> None:
        self.model = PacingModel()

    async def admit(
        self, key: str, cost: Cost, now: float, policy: PacePolicy, *, force: bool = False
    ) -> Admitted | Wait:
        return self.model.admit(key, cost, now, policy, force=force)

    async def delay(self, key: str, cost: Cost, now: float, policy: PacePolicy) -> Delay:
        return self.model.delay(key, cost, now, policy)

    async def observe(
        self,
        key: str,
        snapshot: LimitSnapshot,
        answered: Reservation | None,
        policy: PacePolicy,
    ) -> None:
        self.model.observe(key, snapshot, None if answered is None else answered.seq, policy)

    async def settle(
        self, reservation: Reservation, actual: Cost, now: float, policy: PacePolicy
    ) -> None:
        self.model.settle(reservation, actual, now, policy)

    def local_level(self, key: str) -> LimitSnapshot | None:
        return self.model.level(key)

    def local_keys(self) -> list[str]:
        return self.model.keys()

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
        max_connections: int = 8,
        pool_wait_s: float = 2.0,
    ) -> None:
        self._link = RedisLink(
            url,
            on_loss=on_loss,
            on_recover=on_recover,
            timeout_s=timeout_s,
            retry_after_s=retry_after_s,
            max_connections=max_connections,
            pool_wait_s=pool_wait_s,
        )
        self._redis = self._link.redis
        self._call = self._link.call
        self._admit = self._redis.register_script(_ADMIT_LUA)
        self._observe = self._redis.register_script(_OBSERVE_LUA)
        self._settle = self._redis.register_script(_SETTLE_LUA)
        self._prefix = prefix
        self.local = PacingModel()

    @property
    def degraded(self) -> bool:
        """True while Redis is considered down and pacing is local only."""
        return self._link.down

    def _keys(self, key: str) -> list[str]:
        base = f"{self._prefix}{key}"
        return [base, f"{base}:res", f"{base}:order"]

    async def admit(
        self, key: str, cost: Cost, now: float, policy: PacePolicy, *, force: bool = False
    ) -> Admitted | Wait:
        rid = secrets.token_hex(8)
        args = [*_admit_args(now, cost, policy, rid), "1" if force else ""]
        reply = await self._call("admit", self._script(self._admit, key, args))
        if reply is None:
            return self.local.admit(key, cost, now, policy, force=force)
        admitted, seconds, reason, seq = _decode(reply)
        if not admitted:
            return Wait(float(seconds), WaitReason(reason))
        reservation = Reservation(key, rid, cost, now, seq, shared=True)
        self.local.hold(reservation, policy, now)
        return Admitted(reservation)

    async def delay(self, key: str, cost: Cost, now: float, policy: PacePolicy) -> Delay:
        args = [*_admit_args(now, cost, policy, ""), ""]
        reply = await self._call("delay", self._script(self._admit, key, args))
        if reply is None:
            return self.local.delay(key, cost, now, policy)
        admitted, seconds, reason, _ = _decode(reply)
        return Delay(0.0, None) if admitted else Delay(float(seconds), WaitReason(reason))

    async def observe(
        self,
        key: str,
        snapshot: LimitSnapshot,
        answered: Reservation | None,
        policy: PacePolicy,
    ) -> None:
        self.local.observe(key, snapshot, None if answered is None else answered.seq, policy)
        # a reservation made locally during an outage has no place in Redis's order
        basis = "" if answered is None or not answered.shared else str(answered.seq)
        args: list[Any] = [
            repr(snapshot.observed_at),
            repr(policy.window_s),
            basis,
            "" if snapshot.not_before is None else repr(snapshot.not_before),
            _keep_ms(policy),
            repr(policy.reservation_ttl_s),
            repr(snapshot.observed_at),
        ]
        for bucket in _BUCKETS:
            limit = snapshot.buckets.get(bucket)
            args += ["", ""] if limit is None else [repr(limit.limit), repr(limit.remaining)]
        await self._call("observe", self._script(self._observe, key, args))

    async def settle(
        self, reservation: Reservation, actual: Cost, now: float, policy: PacePolicy
    ) -> None:
        self.local.settle(reservation, actual, now, policy)
        if not reservation.shared:
            return
        args = [reservation.id, repr(now), repr(policy.window_s), *_cost_args(actual)]
        await self._call("settle", self._script(self._settle, reservation.scope_key, args))

    def local_level(self, key: str) -> LimitSnapshot | None:
        """The local mirror: this process's answers and reservations, not the others'."""
        return self.local.level(key)

    def local_keys(self) -> list[str]:
        return self.local.keys()

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
        await self._link.close()

    def _script(self, script: Any, key: str, args: list[Any]) -> Callable[[], Awaitable[Any]]:
        return lambda: script(keys=self._keys(key), args=args)


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
        repr(PROBE_HOLD_S),
        repr(PROBE_WAIT_S),
    ]


def _decode(reply: Any) -> tuple[bool, str, str, int]:
    flag, seconds, reason, seq = reply
    return int(flag) == 1, _text(seconds), _text(reason), int(seq)


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
