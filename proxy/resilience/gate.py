"""Before each attempt: may this request go to this upstream now, given what the provider told
us about the limits it draws on? After each answer: what the headers say about those limits.

A decision belongs to a scope (see ``scope.py``): the upstream as a whole for overloads, and
one credential's limit for one model for everything else, so key A running out never holds
key B back and model X never model Y. Per-model limits are paced (``pacer.py``): a request
waits in a fair queue until the provider's window has room for it, or is told at once, with
the honest time, that it would not get in within its budget. Overloads cool the upstream.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from ..config import Pacing, Timeouts
from .cooldown import CooldownStore
from .pacer import Pacer, Refused
from .pacing import Admitted, PacePolicy, Reservation
from .ratelimits import Cost, LimitSnapshot, WaitReason, admission_delay, parse_snapshot
from .scope import Fingerprinter, LimitKind, RequestScopes, Scope, answer_scope

_OVERLOAD = frozenset({429, 503, 529})


@dataclass(frozen=True, slots=True)
class Go:
    """Send now. ``reservation`` is the capacity taken (settle it once the answer came)."""

    reservation: Reservation | None = None
    held_s: float = 0.0
    """Time spent waiting for the scope (the fair queue or a cooldown)."""
    held_for: str | None = None


@dataclass(frozen=True, slots=True)
class OverBudget:
    """Not within this request's budget: the scope is expected to admit it in ``seconds``."""

    seconds: float
    kind: LimitKind
    reason: str


@dataclass(frozen=True, slots=True)
class Admission:
    """One request's claim on a scope's capacity."""

    scopes: RequestScopes
    policy: PacePolicy | None
    """None: pacing is off for the route; only cooldowns apply."""
    cost: Cost


class ScopeGate:
    """Cooldowns and pacing for every attempt of every request (one per server)."""

    def __init__(
        self,
        cooldowns: CooldownStore,
        pacer: Pacer | None,
        fingerprint: Fingerprinter,
        timeouts: Timeouts,
        logger: Any,
    ) -> None:
        self.cooldowns = cooldowns
        self.pacer = pacer
        self.fingerprint = fingerprint
        self.total_s = timeouts.total_s
        self.log = logger
        self._policies: dict[Pacing, PacePolicy] = {}

    def policy(self, pacing: Pacing) -> PacePolicy | None:
        """A route's policy, made once per route config (one per attempt showed up in
        profiles)."""
        if not pacing.enabled or self.pacer is None:
            return None
        policy = self._policies.get(pacing)
        if policy is None:
            policy = self._policies[pacing] = PacePolicy.of(pacing, self.total_s)
        return policy

    async def admit(
        self, claim: Admission, *, budget_s: float, client: str, priority: int
    ) -> Go | OverBudget:
        """Wait (at most ``budget_s``) for the claim's scopes to have room, or say how long
        they would need."""
        scopes = claim.scopes
        cooled = await self._cooling(scopes)
        waited = 0.0
        if cooled is not None:
            scope, remaining = cooled
            if remaining > budget_s:
                return OverBudget(remaining, scope.kind, "cooldown")
            t0 = time.monotonic()
            await asyncio.sleep(remaining)
            waited = time.monotonic() - t0
            budget_s -= waited
        if claim.policy is None or scopes.model is None or self.pacer is None:
            return Go(None, waited, "cooldown" if cooled is not None else None)
        decision = await self.pacer.acquire(
            scopes.model,
            claim.cost,
            claim.policy,
            budget_s=max(0.0, budget_s),
            client=client,
            priority=priority,
        )
        if isinstance(decision, Refused):
            return OverBudget(decision.retry_after_s, LimitKind.MODEL, decision.reason.value)
        return _go(decision, waited)

    async def _cooling(self, scopes: RequestScopes) -> tuple[Scope, float] | None:
        """The scope cooling longest, and for how long; None when none is."""
        now = time.time()
        longest: tuple[Scope, float] | None = None
        for scope in scopes.all:
            remaining = await self.cooldowns.until(scope.key) - now
            if remaining > 0 and (longest is None or remaining > longest[1]):
                longest = (scope, remaining)
        return longest

    async def observe(
        self,
        claim: Admission,
        reservation: Reservation | None,
        status: int,
        headers: Any,
        fallback_wait_s: float,
    ) -> None:
        """Learn from an answer's head: pace its model scope, cool an overloaded upstream.

        ``fallback_wait_s``: how long to cool when the answer overloads without saying.
        """
        now = time.time()
        scopes = claim.scopes
        scope = answer_scope(scopes, status, headers)
        snapshot = parse_snapshot(headers, now)
        for raw in snapshot.unparsed:
            self.log.warning("unparseable rate-limit header", scope=scope.label, header=raw)
        if self._paced(claim, scope):
            assert self.pacer is not None and claim.policy is not None
            await self.pacer.observe(scope, snapshot, reservation, claim.policy)
            if reservation is not None:
                await self.pacer.settle(reservation, reservation.cost, claim.policy)
            return
        if reservation is not None and self.pacer is not None and claim.policy is not None:
            # the answer spoke for the whole upstream (an overload), not for the model's
            # limits; the model scope was still answered, so a first request no longer holds
            # the others (nor its own retry) as a probe, and what it reserved is used
            assert scopes.model is not None
            await self.pacer.observe(scopes.model, LimitSnapshot(now), reservation, claim.policy)
            await self.pacer.settle(reservation, reservation.cost, claim.policy)
        if status in _OVERLOAD:
            wait = honest_wait(snapshot, now)
            await self.cooldowns.cool(scope.key, now + (fallback_wait_s if wait is None else wait))
        elif scopes.model is not None and _exhausted(snapshot):
            wait = honest_wait(snapshot, now)  # a bucket reported empty on a success
            if wait:
                await self.cooldowns.cool(scopes.model.key, now + wait)

    def _paced(self, claim: Admission, scope: Scope) -> bool:
        return (
            claim.policy is not None
            and self.pacer is not None
            and claim.scopes.model is not None
            and scope is claim.scopes.model
        )

    async def release(self, claim: Admission, reservation: Reservation | None) -> None:
        """The attempt never reached the upstream (connect error, cancelled before sending)."""
        if reservation is not None and self.pacer is not None and claim.policy is not None:
            await self.pacer.release(reservation, claim.policy)

    async def spent(self, claim: Admission, reservation: Reservation | None) -> None:
        """Sent, but no answer came (a timeout, a cut): count it as used."""
        if reservation is not None and self.pacer is not None and claim.policy is not None:
            await self.pacer.settle(reservation, reservation.cost, claim.policy)

    def paces(self, claim: Admission, status: int, headers: Any) -> bool:
        """True when a retryable answer's wait is the pacer's to enforce (no extra sleep)."""
        return self._paced(claim, answer_scope(claim.scopes, status, headers))


def honest_wait(snapshot: LimitSnapshot, now: float) -> float | None:
    """When the scope admits the next request: the provider's Retry-After, else the time one
    more request fits in its buckets (never the time to a full refill); None when unknown."""
    if snapshot.empty:
        return None
    return admission_delay(snapshot, Cost(1.0, 0.0), now).seconds


def _exhausted(snapshot: LimitSnapshot) -> bool:
    return any(b.remaining <= 0 for b in snapshot.buckets.values())


def _go(admitted: Admitted, waited: float) -> Go:
    held_for = admitted.held_for.value if isinstance(admitted.held_for, WaitReason) else None
    if held_for is None and waited > 0:
        held_for = "cooldown"
    return Go(admitted.reservation, waited + admitted.held_s, held_for)


__all__ = ["Admission", "Go", "LimitSnapshot", "OverBudget", "ScopeGate"]
