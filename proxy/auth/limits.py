"""Per-key requests/min, tokens/min, concurrency and budgets, exact under concurrency.

Window: a **sliding log** of 60 seconds. A request admitted at t counts against rpm and tpm for
exactly [t, t + 60 s). rpm admits a request when fewer than rpm requests were admitted in the
last 60 s, so any 60-second span holds at most rpm admissions and a steady client gets exactly
rpm per minute (no fixed-window doubling at a boundary, no GCRA smoothing below the number).
A refusal's ``retry_after_s`` is the time until enough entries leave the window for this request
to fit: for rpm, when the (n - rpm + 1)-th oldest entry expires; for tpm, when the oldest
entries holding the excess tokens expire.

Reservations: admission records the request's worst case (``tokens`` = input + max output,
``cost_nanos`` = that priced) in the window and in the key's in-flight holds; ``settle`` replaces
them with the real numbers. A budget admits a request only if spent + held + this worst case
fits, so concurrent requests overshoot a budget only by what they use beyond their reservations
(nothing, when max_tokens is given and the input count is exact).

Where counters live: this process's memory (``MemoryCounters``), or Redis (``RedisCounters``,
one Lua script per admission/settlement, so N instances enforce one limit). ``Limiter`` picks
Redis while it answers and degrades to memory when it does not (``on_error``/``on_recover``);
each hold settles where it was admitted. Budgets survive restarts: the first admission of a key
in a period seeds the spent counter from the ledger (``load_spent``).

Money is integer nano-USD here (Lua numbers are doubles: exact to 2**53 nano-USD, ~$9M).
"""

from __future__ import annotations

import calendar
import datetime as dt
import enum
import itertools
import math
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from .keys import BudgetPeriod

__all__ = [
    "WINDOW_S",
    "Ask",
    "Counters",
    "Denied",
    "Held",
    "Limiter",
    "MemoryCounters",
    "Over",
    "Period",
    "Unseeded",
    "budget_period",
    "usd_to_nanos",
]

WINDOW_S = 60.0
NANO = 10**9
Clock = Callable[[], float]


def usd_to_nanos(usd: float, *, up: bool = False) -> int:
    """Integer nano-USD; ``up`` rounds a reservation up so it never undercounts."""
    scaled = usd * NANO
    return math.ceil(scaled - 1e-6) if up else round(scaled)


@dataclass(frozen=True, slots=True)
class Period:
    """One budget period: ``id`` names its counter; [start, end) in epoch seconds, UTC."""

    id: str
    start: float
    end: float | None


def budget_period(kind: BudgetPeriod, now: float) -> Period:
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    if kind is BudgetPeriod.DAY:
        start = calendar.timegm(day.timetuple())
        return Period(f"d{day.isoformat()}", float(start), float(start + 86400))
    if kind is BudgetPeriod.MONTH:
        first = day.replace(day=1)
        nxt = (first + dt.timedelta(days=32)).replace(day=1)
        start, end = calendar.timegm(first.timetuple()), calendar.timegm(nxt.timetuple())
        return Period(f"m{first:%Y-%m}", float(start), float(end))
    return Period("total", 0.0, None)


@dataclass(slots=True)
class Ask:
    """One admission: the key's limits (None: no limit) and the request's worst case.

    Not frozen, like Held: one of each per request on the hot path, and a frozen dataclass
    takes twice as long to build. Treat both as read-only."""

    key_id: str
    tokens: int
    cost_nanos: int
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    budget_nanos: int | None = None
    period: Period | None = None
    """The budget period now (set when ``budget_nanos`` is)."""


class Over(enum.Enum):
    BUDGET = "budget"
    TOKENS_ABOVE_LIMIT = "tokens_above_limit"
    """The request alone needs more than tpm: no wait would admit it."""
    RPM = "rpm"
    TPM = "tpm"
    CONCURRENCY = "concurrency"


@dataclass(frozen=True, slots=True)
class Denied:
    over: Over
    retry_after_s: float | None
    """When the window admits this request; None for BUDGET and TOKENS_ABOVE_LIMIT (waiting
    does not help) and CONCURRENCY (it depends on when in-flight requests finish)."""


@dataclass(slots=True)
class Held:
    """An admitted request's reservation; settle it exactly once."""

    key_id: str
    ticket: str
    tokens: int
    cost_nanos: int
    shared: bool
    """Admitted by Redis (settles there) rather than this process's memory."""


@dataclass(frozen=True, slots=True)
class Unseeded:
    """The key's spent counter for this period is not known yet: seed it, then ask again."""

    period: Period


class Counters(Protocol):
    async def admit(self, ask: Ask, ticket: str) -> Held | Denied | Unseeded: ...

    async def seed(self, key_id: str, period: Period, spent_nanos: int) -> None:
        """Set the period's spent counter unless another caller already did."""
        ...

    async def settle(self, held: Held, tokens: int, cost_nanos: int, period: Period | None) -> None:
        """Real usage replaces the reservation; the cost joins ``period``'s spent counter
        (if that counter is seeded; else the ledger seeds it later)."""
        ...

    async def close(self) -> None: ...


# -- memory ----------------------------------------------------------------------------


class _Entry:
    __slots__ = ("gone", "t", "tokens")

    def __init__(self, t: float, tokens: int) -> None:
        self.t = t
        self.tokens = tokens
        self.gone = False


@dataclass(slots=True)
class _KeyState:
    log: deque[_Entry] = field(default_factory=deque)
    tokens: int = 0
    live: dict[str, tuple[_Entry, int]] = field(default_factory=dict)
    held_nanos: int = 0
    period_id: str | None = None
    spent_nanos: int = 0


class MemoryCounters:
    """One process's counters. Admission runs without an await, so it is atomic."""

    def __init__(self, window_s: float = WINDOW_S, clock: Clock = time.time) -> None:
        self._window = window_s
        self._clock = clock
        self._keys: dict[str, _KeyState] = {}

    async def admit(self, ask: Ask, ticket: str) -> Held | Denied | Unseeded:
        return self.admit_now(ask, ticket)

    def admit_now(self, ask: Ask, ticket: str) -> Held | Denied | Unseeded:
        now = self._clock()
        state = self._state(ask.key_id)
        self._trim(state, now)
        if ask.budget_nanos is not None and ask.period is not None:
            if state.period_id != ask.period.id:
                return Unseeded(ask.period)
            if state.spent_nanos + state.held_nanos + ask.cost_nanos > ask.budget_nanos:
                return Denied(Over.BUDGET, None)
        refused = self._rate_refusal(state, ask, now)
        if refused is not None:
            return refused
        if ask.max_concurrent is not None and len(state.live) >= ask.max_concurrent:
            return Denied(Over.CONCURRENCY, None)
        entry = _Entry(now, ask.tokens)
        state.log.append(entry)
        state.tokens += ask.tokens
        state.live[ticket] = (entry, ask.cost_nanos)
        state.held_nanos += ask.cost_nanos
        return Held(ask.key_id, ticket, ask.tokens, ask.cost_nanos, shared=False)

    def _state(self, key_id: str) -> _KeyState:
        state = self._keys.get(key_id)
        if state is None:
            state = self._keys[key_id] = _KeyState()
        return state

    def _trim(self, state: _KeyState, now: float) -> None:
        horizon = now - self._window
        log = state.log
        while log and log[0].t <= horizon:
            entry = log.popleft()
            entry.gone = True
            state.tokens -= entry.tokens

    def _rate_refusal(self, state: _KeyState, ask: Ask, now: float) -> Denied | None:
        if ask.tpm is not None and ask.tokens > ask.tpm:
            return Denied(Over.TOKENS_ABOVE_LIMIT, None)
        wait, over = 0.0, None
        log = state.log
        if ask.rpm is not None and len(log) >= ask.rpm:
            wait, over = log[len(log) - ask.rpm].t + self._window - now, Over.RPM
        if ask.tpm is not None and state.tokens + ask.tokens > ask.tpm:
            need, freed = state.tokens + ask.tokens - ask.tpm, 0
            for entry in log:
                freed += entry.tokens
                if freed >= need:
                    if entry.t + self._window - now > wait:
                        wait, over = entry.t + self._window - now, Over.TPM
                    break
        return None if over is None else Denied(over, wait)

    async def seed(self, key_id: str, period: Period, spent_nanos: int) -> None:
        state = self._state(key_id)
        if state.period_id != period.id:
            state.period_id, state.spent_nanos = period.id, spent_nanos

    async def settle(self, held: Held, tokens: int, cost_nanos: int, period: Period | None) -> None:
        self.settle_now(held, tokens, cost_nanos, period)

    def settle_now(self, held: Held, tokens: int, cost_nanos: int, period: Period | None) -> None:
        state = self._keys.get(held.key_id)
        if state is None:
            return
        live = state.live.pop(held.ticket, None)
        if live is not None:
            entry, reserved = live
            state.held_nanos -= reserved
            if not entry.gone:
                state.tokens += tokens - entry.tokens
                entry.tokens = tokens
        if period is not None and state.period_id == period.id:
            state.spent_nanos += cost_nanos

    async def close(self) -> None:
        self._keys.clear()


# -- the facade: shared when possible, local when not -------------------------------------

LoadSpent = Callable[[str, float], Awaitable[int]]
"""(key id, period start) -> nano-USD already spent in the period, from the ledger."""
OnError = Callable[[str, Exception], None]


class Limiter:
    """Admits and settles through Redis when given one, else (and while it is down) memory.

    ``load_spent`` may raise (the store is down): admission of a budgeted key that needs a seed
    then raises too, and the caller refuses the request rather than guess the spend.
    """

    def __init__(
        self,
        load_spent: LoadSpent,
        shared: Counters | None = None,
        *,
        local: MemoryCounters | None = None,
        on_error: OnError | None = None,
        on_recover: Callable[[], None] | None = None,
        retry_after_s: float = 1.0,
        clock: Clock = time.time,
        unsettled_max: int = 10_000,
    ) -> None:
        self._load_spent = load_spent
        self._shared = shared
        self._local = local or MemoryCounters(clock=clock)
        self._on_error = on_error
        self._on_recover = on_recover
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._down = False
        self._next_try = 0.0
        self._unsettled: deque[tuple[Held, int, int, Period | None]] = deque(maxlen=unsettled_max)
        # tickets: unique across instances (random prefix) and cheap (a counter)
        self._ticket_prefix = secrets.token_hex(6) + "-"
        self._tickets = itertools.count()

    @property
    def degraded(self) -> bool:
        return self._down

    async def admit(self, ask: Ask) -> Held | Denied:
        ticket = self._ticket_prefix + str(next(self._tickets))
        if self._shared is None:  # the common single-process case, without the detours
            result = self._local.admit_now(ask, ticket)
        else:
            result = await self._admit_once(ask, ticket)
        if isinstance(result, Unseeded):
            spent = await self._load_spent(ask.key_id, result.period.start)
            await self._seed(ask.key_id, result.period, spent)
            result = await self._admit_once(ask, ticket)
            if isinstance(result, Unseeded):  # Redis went away meanwhile: memory needs it too
                await self._local.seed(ask.key_id, result.period, spent)
                result = self._local.admit_now(ask, ticket)
        assert not isinstance(result, Unseeded)  # seeded just above
        return result

    async def _seed(self, key_id: str, period: Period, spent: int) -> None:
        if self._shared is not None and not self._use_local():
            try:
                await self._shared.seed(key_id, period, spent)
                return
            except Exception as exc:
                self._mark_down("seed", exc)
        await self._local.seed(key_id, period, spent)

    async def _admit_once(self, ask: Ask, ticket: str) -> Held | Denied | Unseeded:
        if self._shared is None or self._use_local() or not await self._replay():
            return self._local.admit_now(ask, ticket)
        try:
            result = await self._shared.admit(ask, ticket)
        except Exception as exc:  # Redis down or slow: serve from memory, retry later
            self._mark_down("admit", exc)
            return self._local.admit_now(ask, ticket)
        self._mark_up()
        return result

    async def settle(self, held: Held, tokens: int, cost_nanos: int, period: Period | None) -> None:
        """Never raises: a settlement Redis cannot take now is replayed when it is back."""
        if not held.shared or self._shared is None:
            self._local.settle_now(held, tokens, cost_nanos, period)
            return
        late = (held, tokens, cost_nanos, period)
        if self._use_local() or not await self._replay():
            self._unsettled.append(late)
            return
        try:
            await self._shared.settle(held, tokens, cost_nanos, period)
        except Exception as exc:
            self._mark_down("settle", exc)
            self._unsettled.append(late)
            return
        self._mark_up()

    async def _replay(self) -> bool:
        """Settlements Redis missed while down, oldest first, before anything new goes there
        (so a recovered Redis frees those slots first). False: Redis failed again."""
        assert self._shared is not None
        while self._unsettled:
            held, tokens, cost, period = self._unsettled[0]
            try:
                await self._shared.settle(held, tokens, cost, period)
            except Exception as exc:
                self._mark_down("settle", exc)
                return False
            self._unsettled.popleft()
        return True

    def _use_local(self) -> bool:
        return self._down and self._clock() < self._next_try

    def _mark_down(self, op: str, exc: Exception) -> None:
        self._next_try = self._clock() + self._retry_after_s
        if not self._down:
            self._down = True
            if self._on_error is not None:
                self._on_error(op, exc)

    def _mark_up(self) -> None:
        if self._down:
            self._down = False
            if self._on_recover is not None:
                self._on_recover()

    async def close(self) -> None:
        await self._local.close()
        if self._shared is not None:
            await self._shared.close()
