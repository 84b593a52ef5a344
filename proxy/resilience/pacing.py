"""The live model of one scope's limits: the provider's latest snapshot plus what this proxy
has sent that the snapshot cannot yet know about (pure: the clock is a parameter).

Why reservations and a "basis": the provider counts a request when it arrives, and an answer's
headers describe the buckets at that moment. A request reserved before the one whose answer
brought the snapshot is already inside it; one reserved later is not, and stays "in flight"
until a newer snapshot absorbs it or it settles. Without this the proxy either double counts
(and under-uses the limit) or forgets its own traffic (and gets 429s in bursts).

The same rules run in Redis as Lua (pacing_store.py); keep the two in step.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .ratelimits import (
    DEFAULT_WINDOW_S,
    NO_COST,
    Bucket,
    BucketLimit,
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

_OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


@dataclass(frozen=True, slots=True)
class PacePolicy:
    """How hard to drive a scope; per route, so passed with each call."""

    target_utilisation: float = 0.95
    """Admit only while (1 - target) x limit stays in each bucket: room for header lag,
    estimate errors and other users of the same key. Steady throughput is still the refill."""
    window_s: float = DEFAULT_WINDOW_S
    reservation_ttl_s: float = 900.0
    """A reservation never settled (its process died) stops counting after this long."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """Capacity taken for one attempt; settle or release it exactly once."""

    scope_key: str
    id: str
    cost: Cost
    reserved_at: float
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
    snapshot: LimitSnapshot | None = None
    basis: float = -math.inf
    """``reserved_at`` of the request whose answer gave the snapshot."""
    retry_at: float = 0.0
    pending: dict[str, Reservation] = field(default_factory=dict)


class PacingModel:
    """Every scope's state in one process; ``admit``/``observe``/``settle`` are synchronous
    so that check-and-reserve is atomic on the event loop."""

    def __init__(self) -> None:
        self._scopes: dict[str, _ScopeState] = {}

    def admit(self, key: str, cost: Cost, now: float, policy: PacePolicy) -> Admitted | Wait:
        """Reserve ``cost`` if the scope has room now, else say how long until it should."""
        delay = self.delay(key, cost, now, policy)
        if delay.reason is not None:
            return Wait(delay.seconds, delay.reason)
        reservation = Reservation(key, secrets.token_hex(8), cost, now)
        self.hold(reservation, policy, now)
        return Admitted(reservation)

    def delay(self, key: str, cost: Cost, now: float, policy: PacePolicy) -> Delay:
        """Seconds until ``cost`` would be admitted; reserves nothing."""
        state = self._scopes.get(key)
        if state is None:
            return Delay(0.0, None)
        self._expire(state, now, policy)
        in_flight = NO_COST
        for reservation in state.pending.values():
            if reservation.reserved_at >= state.basis:
                in_flight = in_flight + reservation.cost
        snapshot = state.snapshot or LimitSnapshot(observed_at=now)
        snapshot = replace(snapshot, retry_at=state.retry_at or None)
        return admission_delay(
            snapshot,
            cost,
            now,
            window_s=policy.window_s,
            target_utilisation=policy.target_utilisation,
            in_flight=in_flight,
        )

    def hold(self, reservation: Reservation, policy: PacePolicy, now: float) -> None:
        """Record a reservation made elsewhere (Redis), so an outage keeps knowing about it."""
        state = self._scopes.setdefault(reservation.scope_key, _ScopeState())
        self._expire(state, now, policy)
        state.pending[reservation.id] = reservation

    def observe(
        self,
        key: str,
        snapshot: LimitSnapshot,
        basis: float,
        policy: PacePolicy,
        answered: str | None = None,
    ) -> None:
        """Take an answer's snapshot; ``basis`` is the ``reserved_at`` of the answered
        reservation (id ``answered``). The newest basis replaces the model and absorbs the
        answered reservation and those made before it; an older one (a slow answer
        overtaken) may only lower levels, never raise them."""
        state = self._scopes.setdefault(key, _ScopeState())
        if snapshot.retry_at is not None:
            state.retry_at = max(state.retry_at, snapshot.retry_at)
        if not snapshot.buckets:
            return
        if state.snapshot is None or basis >= state.basis:
            state.snapshot, state.basis = snapshot, basis
            state.pending = {
                rid: r
                for rid, r in state.pending.items()
                if r.reserved_at >= basis and rid != answered
            }
            return
        now = max(snapshot.observed_at, state.snapshot.observed_at)
        state.snapshot = _lower(state.snapshot, snapshot, now, policy.window_s)

    def settle(
        self, reservation: Reservation, actual: Cost, now: float, policy: PacePolicy
    ) -> None:
        """The attempt is over. If no snapshot has absorbed it yet, its ``actual`` cost is
        taken from the model's levels (no answer headers to tell us otherwise)."""
        state = self._scopes.get(reservation.scope_key)
        if state is None or state.pending.pop(reservation.id, None) is None:
            return
        if state.snapshot is not None and actual != NO_COST:
            state.snapshot = _charge(state.snapshot, actual, now, policy.window_s)

    def release(self, reservation: Reservation) -> None:
        """The attempt was never sent: give the capacity back."""
        state = self._scopes.get(reservation.scope_key)
        if state is not None:
            state.pending.pop(reservation.id, None)

    def snapshot(self, key: str) -> LimitSnapshot | None:
        state = self._scopes.get(key)
        return None if state is None else state.snapshot

    def in_flight(self, key: str) -> int:
        state = self._scopes.get(key)
        return 0 if state is None else len(state.pending)

    def _expire(self, state: _ScopeState, now: float, policy: PacePolicy) -> None:
        oldest = now - policy.reservation_ttl_s
        if any(r.reserved_at < oldest for r in state.pending.values()):
            state.pending = {k: r for k, r in state.pending.items() if r.reserved_at >= oldest}


def _rebased(snapshot: LimitSnapshot, now: float, window_s: float) -> dict[Bucket, BucketLimit]:
    return {
        name: replace(b, remaining=bucket_level(b, snapshot.observed_at, now, window_s))
        for name, b in snapshot.buckets.items()
    }


def _charge(snapshot: LimitSnapshot, cost: Cost, now: float, window_s: float) -> LimitSnapshot:
    buckets = {
        name: replace(b, remaining=b.remaining - cost.amount(name))
        for name, b in _rebased(snapshot, now, window_s).items()
    }
    return replace(snapshot, observed_at=now, buckets=buckets)


def _lower(
    current: LimitSnapshot, stale: LimitSnapshot, now: float, window_s: float
) -> LimitSnapshot:
    mine, theirs = _rebased(current, now, window_s), _rebased(stale, now, window_s)
    buckets = {
        name: replace(b, remaining=min(b.remaining, theirs[name].remaining))
        if name in theirs
        else b
        for name, b in mine.items()
    }
    return replace(current, observed_at=now, buckets=buckets)
