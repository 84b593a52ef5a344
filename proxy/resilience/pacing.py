"""The live model of one scope's limits: the provider's latest snapshot less what this proxy
has sent since (pure: the clock is a parameter).

Until a scope's first answer is observed nothing is known about its limits, so one request
goes alone to learn them (a burst of unknown size would overrun a small limit at once).
Each admission takes its estimated cost from the level at once. The provider counts a request
when it arrives, and an answer's headers describe the buckets at that moment: reservations up
to the answered one (by ``seq``) are inside that snapshot, later ones are not yet, so a new
snapshot becomes the level less the later reservations still pending. Without this the proxy
either double counts (and under-uses the limit) or forgets its own traffic (and gets 429s in
bursts).

The same rules run in Redis as Lua (pacing_store.py); keep the two in step.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import Pacing
from .ratelimits import (
    DEFAULT_WINDOW_S,
    NO_COST,
    Cost,
    Delay,
    LimitSnapshot,
    WaitReason,
    admission_delay,
    bucket_level,
)

__all__ = [
    "Admitted",
    "PacePolicy",
    "PacingModel",
    "Reservation",
    "Wait",
    "estimate_cost",
    "output_cap",
]

PROBE_WAIT_S = 1.0
"""The wait told while a scope's first request is out: the others go when its answer is
observed (which wakes the queue), so this only paces re-checks and budget decisions."""
PROBE_HOLD_S = 30.0
"""A first request older than this (its process died?) no longer holds the others back."""
_OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
_NO_DELAY = Delay(0.0, None)


@dataclass(frozen=True, slots=True)
class PacePolicy:
    """How hard to drive a scope; per route, so passed with each call."""

    target_utilisation: float = 0.95
    """Admit only while (1 - target) x limit stays in each bucket: room for header lag,
    estimate errors and other users of the same key. Steady throughput is still the refill."""
    window_s: float = DEFAULT_WINDOW_S
    reservation_ttl_s: float = 900.0
    """A reservation never settled (its process died) stops counting after this long."""

    @classmethod
    def of(cls, pacing: Pacing, reservation_ttl_s: float = 900.0) -> PacePolicy:
        """The policy of a route's ``pacing:`` config; ``reservation_ttl_s`` should cover the
        longest an attempt can take (``timeouts.total_s``)."""
        return cls(pacing.target_utilisation, pacing.window_s, reservation_ttl_s)


@dataclass(frozen=True, slots=True)
class Reservation:
    """Capacity taken for one attempt; settle or release it exactly once."""

    scope_key: str
    id: str
    cost: Cost
    reserved_at: float
    seq: int
    """Order of reservations in the scope (shared by all processes with Redis): an answer
    to reservation n speaks for every reservation up to n."""
    shared: bool = False
    """Made in the shared store (Redis), so it must be settled there too."""


@dataclass(frozen=True, slots=True)
class Admitted:
    reservation: Reservation
    held_s: float = 0.0
    """How long the request waited in the queue before it was admitted."""
    held_for: WaitReason | None = None
    """What it waited for (None when admitted at once)."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Not now: the scope is expected to have room in ``seconds``."""

    seconds: float
    reason: WaitReason


def output_cap(body: Mapping[str, Any] | None) -> int | None:
    """The request's own output cap, whichever API spelling it uses."""
    if not body:
        return None
    for name in _OUTPUT_FIELDS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def estimate_cost(input_tokens: int, body: Mapping[str, Any] | None, output_reserve: int) -> Cost:
    """One request's cost: the input estimate plus its output cap (the providers count
    ``max_tokens`` at admission), or the route's output reserve when it sets none."""
    cap = output_cap(body)
    return Cost(float(input_tokens), float(output_reserve if cap is None else cap))


@dataclass(slots=True)
class _ScopeState:
    level: LimitSnapshot | None = None
    """The buckets as this proxy believes them now: the newest snapshot minus what was
    reserved after it (may go below zero: a debt the refill pays off)."""
    basis: int = 0
    """``seq`` of the reservation whose answer gave the newest snapshot."""
    seq: int = 0
    retry_at: float = 0.0
    seen: bool = False
    """An answer came back (with or without rate-limit headers)."""
    pending: dict[str, Reservation] = field(default_factory=dict)


class PacingModel:
    """Every scope's state in one process; each method is synchronous so that
    check-and-reserve is atomic on the event loop."""

    def __init__(self) -> None:
        self._scopes: dict[str, _ScopeState] = {}
        self._prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)

    def _new_id(self) -> str:
        """Unique in this process (a random prefix, then a counter): a random id per
        attempt cost a system call."""
        return f"{self._prefix}{next(self._ids):x}"

    def keys(self) -> list[str]:
        """Every scope this model has state for (dashboards and gauges)."""
        return list(self._scopes)

    def admit(
        self, key: str, cost: Cost, now: float, policy: PacePolicy, *, force: bool = False
    ) -> Admitted | Wait:
        """Reserve ``cost`` if the scope has room now, else say how long until it should.
        ``force`` reserves without asking (a request that goes anyway is still counted)."""
        delay = self.delay(key, cost, now, policy)
        if delay.reason is not None and not force:
            return Wait(delay.seconds, delay.reason)
        state = self._scopes.setdefault(key, _ScopeState())
        reservation = Reservation(key, self._new_id(), cost, now, state.seq + 1)
        self.hold(reservation, policy, now)
        return Admitted(reservation)

    def delay(self, key: str, cost: Cost, now: float, policy: PacePolicy) -> Delay:
        """Seconds until ``cost`` would be admitted; reserves nothing."""
        state = self._scopes.get(key)
        if state is None:
            return Delay(0.0, None)
        if not state.seen and _probing(state, now):
            return Delay(PROBE_WAIT_S, WaitReason.PROBE)
        if state.level is None and not state.retry_at:
            return _NO_DELAY  # answered, but never with a limit: nothing to wait for
        level = state.level or LimitSnapshot(observed_at=now)
        return admission_delay(
            replace(level, retry_at=state.retry_at or None, retry_rounding_s=0.0),
            cost,
            now,
            window_s=policy.window_s,
            target_utilisation=policy.target_utilisation,
        )

    def hold(self, reservation: Reservation, policy: PacePolicy, now: float) -> None:
        """Take ``reservation`` from the level; also how a Redis store mirrors the
        reservations it made, so that an outage keeps knowing about them."""
        state = self._scopes.setdefault(reservation.scope_key, _ScopeState())
        _expire(state, now, policy)
        state.seq = max(state.seq, reservation.seq)
        state.pending[reservation.id] = reservation
        if state.level is not None:
            state.level = _shift(state.level, now, policy.window_s, reservation.cost, -1.0)

    def observe(
        self, key: str, snapshot: LimitSnapshot, basis: int | None, policy: PacePolicy
    ) -> None:
        """Take an answer's snapshot; ``basis`` is the ``seq`` of the answered reservation
        (None when the attempt reserved nothing). The newest basis replaces the level, less
        what was reserved after it; an older one (a slow answer overtaken, or one without a
        reservation) may only lower the level, never raise it."""
        state = self._scopes.setdefault(key, _ScopeState())
        state.seen = True
        if snapshot.not_before is not None:
            state.retry_at = max(state.retry_at, snapshot.not_before)
        if not snapshot.buckets:
            return
        _expire(state, snapshot.observed_at, policy)
        if state.level is None or (basis is not None and basis >= state.basis):
            after = basis or 0
            state.pending = {k: r for k, r in state.pending.items() if r.seq > after}
            state.basis = max(state.basis, after)
            state.level = _less_pending(snapshot, state.pending.values(), after)
            return
        theirs = _less_pending(snapshot, state.pending.values(), basis or 0)
        now = max(snapshot.observed_at, state.level.observed_at)
        state.level = _lower(state.level, theirs, now, policy.window_s)

    def settle(
        self, reservation: Reservation, actual: Cost, now: float, policy: PacePolicy
    ) -> None:
        """The attempt is over and cost ``actual`` (``NO_COST``: never sent, or refused).
        Unless an answer's snapshot has absorbed it already, the level is corrected from
        the estimate to ``actual``."""
        state = self._scopes.get(reservation.scope_key)
        if state is None or state.pending.pop(reservation.id, None) is None:
            return
        if state.level is not None:
            refund = _difference(reservation.cost, actual)
            state.level = _shift(state.level, now, policy.window_s, refund, 1.0)

    def level(self, key: str) -> LimitSnapshot | None:
        state = self._scopes.get(key)
        return None if state is None else state.level

    def in_flight(self, key: str) -> int:
        state = self._scopes.get(key)
        return 0 if state is None else len(state.pending)


def _probing(state: _ScopeState, now: float) -> bool:
    """A first request is out and recent: the scope's limits are about to be known."""
    return any(now - r.reserved_at < PROBE_HOLD_S for r in state.pending.values())


def _expire(state: _ScopeState, now: float, policy: PacePolicy) -> None:
    """Forget reservations never settled (their process died): their cost was taken from
    the level when they were made, and the refill has long given it back."""
    oldest = now - policy.reservation_ttl_s
    if any(r.reserved_at < oldest for r in state.pending.values()):
        state.pending = {k: r for k, r in state.pending.items() if r.reserved_at >= oldest}


def _difference(a: Cost, b: Cost) -> Cost:
    return Cost(
        a.input_tokens - b.input_tokens, a.output_tokens - b.output_tokens, a.requests - b.requests
    )


def _shift(
    level: LimitSnapshot, now: float, window_s: float, cost: Cost, sign: float
) -> LimitSnapshot:
    """The level re-based at ``now`` with ``sign * cost`` added to every bucket."""
    buckets = {
        name: replace(
            b,
            remaining=bucket_level(b, level.observed_at, now, window_s) + sign * cost.amount(name),
        )
        for name, b in level.buckets.items()
    }
    return replace(level, observed_at=max(now, level.observed_at), buckets=buckets)


def _less_pending(
    snapshot: LimitSnapshot, pending: Iterable[Reservation], after: int
) -> LimitSnapshot:
    """The snapshot less what was reserved after the answered reservation."""
    debt = NO_COST
    for reservation in pending:
        if reservation.seq > after:
            debt = debt + reservation.cost
    buckets = {
        name: replace(b, remaining=b.remaining - debt.amount(name))
        for name, b in snapshot.buckets.items()
    }
    return replace(snapshot, buckets=buckets, retry_at=None)


def _lower(
    mine: LimitSnapshot, theirs: LimitSnapshot, now: float, window_s: float
) -> LimitSnapshot:
    """``mine`` re-based at ``now``, each bucket lowered to ``theirs`` where that is less."""
    buckets = {}
    for name, b in mine.buckets.items():
        level = bucket_level(b, mine.observed_at, now, window_s)
        other = theirs.buckets.get(name)
        if other is not None:
            level = min(level, bucket_level(other, theirs.observed_at, now, window_s))
        buckets[name] = replace(b, remaining=level)
    return replace(mine, observed_at=now, buckets=buckets)
