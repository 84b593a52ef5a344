"""Hold requests that would exceed a scope's limit in a fair queue, and release them as the
provider's buckets refill.

Per scope, the first request that does not fit starts a pump that admits waiters one at a
time in a fair order: higher ``x-proxy-priority`` first, then round-robin across clients,
FIFO within a client, so one busy client cannot starve the others. A request is told at once
when its expected wait exceeds its budget (the caller answers an honest 429 whose Retry-After
is that wait), and a waiter still queued at its deadline is told then.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from .pacing import Admitted, PacePolicy, Reservation
from .pacing_store import PacingStore
from .ratelimits import (
    DEFAULT_WINDOW_S,
    NO_COST,
    Bucket,
    Cost,
    LimitSnapshot,
    WaitReason,
    bucket_level,
)
from .scope import Scope

__all__ = ["PRIORITY_HEADER", "Pacer", "Refused", "parse_priority"]

PRIORITY_HEADER = "x-proxy-priority"
_PRIORITY_RANGE = (-100, 100)
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Refused:
    """Not admitted within the request's budget: answer a proxy-made 429 with
    Retry-After = ``retry_after_s`` (when the scope is expected to admit it)."""

    retry_after_s: float
    reason: WaitReason
    held_s: float = 0.0


def parse_priority(value: str | None) -> int:
    """``x-proxy-priority``: an integer, higher served first; absent or malformed is 0."""
    if value is None:
        return 0
    try:
        priority = int(value.strip())
    except ValueError:
        return 0
    low, high = _PRIORITY_RANGE
    return max(low, min(high, priority))


@dataclass(eq=False, slots=True)
class _Waiter:
    cost: Cost
    policy: PacePolicy
    client: str
    priority: int
    arrived: float
    deadline: float
    reason: WaitReason
    future: asyncio.Future[Admitted | Refused] = field(repr=False)


class _FairQueue:
    """priority -> client -> FIFO of waiters; clients take turns within a priority."""

    def __init__(self) -> None:
        self._levels: dict[int, OrderedDict[str, deque[_Waiter]]] = {}

    def __len__(self) -> int:
        return sum(len(q) for level in self._levels.values() for q in level.values())

    def __iter__(self) -> Iterator[_Waiter]:
        for priority in sorted(self._levels, reverse=True):
            for fifo in self._levels[priority].values():
                yield from fifo

    def push(self, waiter: _Waiter) -> None:
        level = self._levels.setdefault(waiter.priority, OrderedDict())
        level.setdefault(waiter.client, deque()).append(waiter)

    def head(self) -> _Waiter | None:
        if not self._levels:
            return None
        level = self._levels[max(self._levels)]
        return next(iter(level.values()))[0]

    def pop_head(self) -> None:
        """Remove the head; its client goes to the back of its priority's turn order."""
        priority = max(self._levels)
        level = self._levels[priority]
        client, fifo = next(iter(level.items()))
        fifo.popleft()
        if fifo:
            level.move_to_end(client)
        else:
            del level[client]
        if not level:
            del self._levels[priority]

    def remove(self, waiter: _Waiter) -> None:
        level = self._levels.get(waiter.priority)
        fifo = None if level is None else level.get(waiter.client)
        if level is None or fifo is None or waiter not in fifo:
            return
        fifo.remove(waiter)
        if not fifo:
            del level[waiter.client]
        if not level:
            del self._levels[waiter.priority]

    def cost_ahead(self, priority: int) -> Cost:
        """What is queued that would go before a new waiter of ``priority`` (an upper bound:
        a new client may be served before another client's later requests)."""
        total = NO_COST
        for waiter in self:
            if waiter.priority >= priority:
                total = total + waiter.cost
        return total


class Pacer:
    """Admission for every scope over one ``PacingStore``; one per process.

    ``clock`` gives epoch seconds (the store's instants are shared across hosts) and
    ``sleep`` waits; tests inject a virtual pair.
    """

    def __init__(
        self,
        store: PacingStore,
        *,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        window_s: float = DEFAULT_WINDOW_S,
    ) -> None:
        self.store = store
        self._window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._queues: dict[str, _FairQueue] = {}
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._background: set[asyncio.Task[None]] = set()

    def remaining(self, scope: Scope) -> dict[Bucket, float]:
        """Each known bucket's level now, as this process sees it (a metrics gauge)."""
        level = self.store.local_level(scope.key)
        if level is None:
            return {}
        now = self._clock()
        return {
            name: bucket_level(b, level.observed_at, now, self._window_s)
            for name, b in level.buckets.items()
        }

    def queue_length(self, scope: Scope) -> int:
        queue = self._queues.get(scope.key)
        return 0 if queue is None else len(queue)

    async def acquire(
        self,
        scope: Scope,
        cost: Cost,
        policy: PacePolicy,
        *,
        budget_s: float,
        client: str = "",
        priority: int = 0,
    ) -> Admitted | Refused:
        """Admit now, after a wait of at most ``budget_s`` in the fair queue, or refuse with
        the honest wait. Cancelling the caller (client gone) leaves the queue cleanly."""
        key, now = scope.key, self._clock()
        queue = self._queues.get(key)
        if queue is None:
            decision = await self.store.admit(key, cost, now, policy)
            if isinstance(decision, Admitted):
                return decision
            wait, reason = decision.seconds, decision.reason
        else:
            delay = await self.store.delay(key, queue.cost_ahead(priority) + cost, now, policy)
            wait, reason = delay.seconds, WaitReason.QUEUE if delay.reason is None else delay.reason
        if wait > budget_s:
            if reason is not WaitReason.PROBE:
                return Refused(wait, reason)
            # all it would wait for is a first request's answer: no evidence of a limit
            forced = await self.store.admit(key, cost, now, policy, force=True)
            assert isinstance(forced, Admitted)
            return forced
        future: asyncio.Future[Admitted | Refused] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(cost, policy, client, priority, now, now + budget_s, reason, future)
        self._queues.setdefault(key, _FairQueue()).push(waiter)
        self._start_pump(key)
        try:
            return await future
        except asyncio.CancelledError:
            self._abandon(key, waiter)
            raise

    async def observe(
        self,
        scope: Scope,
        snapshot: LimitSnapshot,
        reservation: Reservation | None,
        policy: PacePolicy,
    ) -> None:
        """Feed an answer's rate-limit snapshot (2xx or 429 alike); ``reservation`` is the
        attempt's own (None if it had none). Wakes the scope's queue. An answer without
        rate-limit headers still tells a new scope (or one whose shared state expired while
        idle) that its first request came back, so feed every answer."""
        await self.store.observe(scope.key, snapshot, reservation, policy)
        self._wake(scope.key)

    async def settle(self, reservation: Reservation, actual: Cost, policy: PacePolicy) -> None:
        """The attempt is over; ``actual`` is its cost (``NO_COST`` when nothing was spent)."""
        await self.store.settle(reservation, actual, self._clock(), policy)
        self._wake(reservation.scope_key)

    async def release(self, reservation: Reservation, policy: PacePolicy) -> None:
        """The attempt was never sent."""
        await self.settle(reservation, NO_COST, policy)

    async def close(self) -> None:
        """Stop the pumps (waiters still queued are cancelled)."""
        tasks = [*self._pumps.values(), *self._background]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for queue in self._queues.values():
            for waiter in queue:
                waiter.future.cancel()
        self._queues.clear()

    # ---------------------------------------------------------------- the pump

    def _start_pump(self, key: str) -> None:
        self._wake(key)
        task = self._pumps.get(key)
        if task is None or task.done():
            self._pumps[key] = asyncio.create_task(self._pump(key), name=f"pacer {key}")

    def _wake(self, key: str) -> None:
        event = self._wakeups.get(key)
        if event is not None:
            event.set()

    async def _pump(self, key: str) -> None:
        queue = self._queues[key]
        event = self._wakeups.setdefault(key, asyncio.Event())
        try:
            while len(queue):
                event.clear()
                nap = await self._serve(key, queue)
                if nap is not None:
                    await self._nap(event, nap)
        finally:
            if not len(queue):
                self._queues.pop(key, None)
                self._wakeups.pop(key, None)
            self._pumps.pop(key, None)

    async def _serve(self, key: str, queue: _FairQueue) -> float | None:
        """Admit or refuse the head; return how long to nap before trying again (None: go
        on at once)."""
        waiter = queue.head()
        assert waiter is not None
        if waiter.future.done():  # cancelled by its caller
            queue.pop_head()
            return None
        now = self._clock()
        decision = await self.store.admit(key, waiter.cost, now, waiter.policy)
        if isinstance(decision, Admitted):
            queue.pop_head()
            held = Admitted(decision.reservation, now - waiter.arrived, waiter.reason)
            if waiter.future.done():  # cancelled while the store answered
                self._give_back(decision.reservation, waiter.policy)
            else:
                waiter.future.set_result(held)
            return None
        if now + decision.seconds > waiter.deadline:
            queue.pop_head()
            await self._give_up(key, waiter, decision.seconds, decision.reason, now)
            return None
        await self._refuse_overdue(key, queue, now)
        deadlines = [w.deadline - now for w in queue if w is not waiter]
        return max(0.0, min([decision.seconds, *deadlines]))

    async def _refuse_overdue(self, key: str, queue: _FairQueue, now: float) -> None:
        """Tell waiters behind the head whose budget ran out, with their current estimate."""
        ahead = NO_COST
        for waiter in list(queue):
            ahead = ahead + waiter.cost
            if waiter.future.done() or waiter.deadline > now:
                continue
            delay = await self.store.delay(key, ahead, now, waiter.policy)
            queue.remove(waiter)
            await self._give_up(key, waiter, delay.seconds, delay.reason or WaitReason.QUEUE, now)

    async def _give_up(
        self, key: str, waiter: _Waiter, seconds: float, reason: WaitReason, now: float
    ) -> None:
        """The waiter's budget is spent: refuse it with the wait it still faces, unless all
        it waits for is a first request's answer (then it goes, unpaced but counted)."""
        held = now - waiter.arrived
        if reason is not WaitReason.PROBE:
            _resolve(waiter, Refused(seconds, reason, held))
            return
        decision = await self.store.admit(key, waiter.cost, now, waiter.policy, force=True)
        assert isinstance(decision, Admitted)
        if waiter.future.done():
            self._give_back(decision.reservation, waiter.policy)
        else:
            waiter.future.set_result(Admitted(decision.reservation, held, reason))

    async def _nap(self, event: asyncio.Event, seconds: float) -> None:
        """Sleep ``seconds`` or until something local changes (an answer, a settle, an arrival)."""
        sleeper = asyncio.ensure_future(self._sleep(max(0.0, seconds)))
        waker = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _abandon(self, key: str, waiter: _Waiter) -> None:
        queue = self._queues.get(key)
        if queue is not None:
            queue.remove(waiter)
        future = waiter.future
        if future.done() and not future.cancelled():
            result = future.result()
            if isinstance(result, Admitted):
                self._give_back(result.reservation, waiter.policy)

    def _give_back(self, reservation: Reservation, policy: PacePolicy) -> None:
        task = asyncio.ensure_future(self.release(reservation, policy))
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _resolve(waiter: _Waiter, result: Admitted | Refused) -> None:
    if not waiter.future.done():
        waiter.future.set_result(result)
