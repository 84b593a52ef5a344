"""The facade the auth plugin calls: may this client make this request, and the bookkeeping
once it is over.

At request arrival (``on_request``), before anything goes upstream::

    outcome = await gate.check(secret, route="/openai", model="gpt-4o",
                               input_tokens=812, max_output_tokens=1024)
    if isinstance(outcome, Refusal):
        raise refusal_error(outcome)          # provider-shaped 401/403/429/503, see errors.py

At completion (``on_complete``), exactly once per admitted request, whatever happened
(success, upstream error, client disconnect, cancellation)::

    await outcome.settle(usage, cost_usd)     # usage/cost of all attempts; settle() = release

``check`` is ``identify`` (the key, from the cache) then ``admit`` (route, model, limits,
budget); a caller that parses the body to learn the model calls them apart, so an unknown key
is refused before the body is parsed (proxy/plugins/auth.py).

``secret`` is what the client sent: ``wire.client_secret(request.headers)``. ``input_tokens``
is the request counted offline (proxy.context.tokens), ``max_output_tokens`` the body's cap:
``wire.requested_output_tokens(body)``; None reserves ``default_max_output_tokens``. Together
they are the worst case reserved against tpm and the budget until ``settle``. ``route`` is the
route's prefix (``/openai``), ``model`` the model the client asked for (None: the request names
none, and model restrictions do not apply).

Ledger rows are separate: one ``LedgerRow.from_usage(...)`` per attempt that reached a provider,
handed to ``LedgerWriter.submit`` (never waits), see ledger.py.
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..pricing import PriceTable
from ..usage import Usage
from .cache import KeyCache
from .keys import BudgetPeriod, KeyRecord, hash_secret, looks_like_secret
from .limits import Ask, Denied, Held, Limiter, Over, Period, budget_period, usd_to_nanos
from .store import StoreUnavailable

__all__ = ["Admission", "Gate", "Refusal", "RefusalKind"]


class RefusalKind(enum.Enum):
    MISSING_KEY = "missing_api_key"
    INVALID_KEY = "invalid_api_key"
    REVOKED_KEY = "key_revoked"
    EXPIRED_KEY = "key_expired"
    ROUTE_NOT_ALLOWED = "route_not_allowed"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    PRICE_UNKNOWN = "model_price_unknown"
    """The key has a budget and the model has no price: its spend could not be counted."""
    REQUESTS_PER_MINUTE = "requests_per_minute"
    TOKENS_PER_MINUTE = "tokens_per_minute"
    TOKENS_ABOVE_LIMIT = "request_above_tokens_per_minute"
    CONCURRENCY = "concurrency"
    BUDGET_EXCEEDED = "budget_exceeded"
    STORE_UNAVAILABLE = "auth_store_unavailable"


@dataclass(frozen=True, slots=True)
class _Shape:
    status: int
    code: str
    openai_type: str
    anthropic_type: str
    retry: bool
    """False: the response says ``x-should-retry: false`` (SDKs must not loop on it)."""


_AUTH = ("invalid_request_error", "authentication_error")
_DENY = ("invalid_request_error", "permission_error")
_SHAPES = {
    RefusalKind.MISSING_KEY: _Shape(401, "invalid_api_key", *_AUTH, retry=False),
    RefusalKind.INVALID_KEY: _Shape(401, "invalid_api_key", *_AUTH, retry=False),
    RefusalKind.REVOKED_KEY: _Shape(401, "invalid_api_key", *_AUTH, retry=False),
    RefusalKind.EXPIRED_KEY: _Shape(401, "invalid_api_key", *_AUTH, retry=False),
    RefusalKind.ROUTE_NOT_ALLOWED: _Shape(403, "route_not_allowed", *_DENY, retry=False),
    RefusalKind.MODEL_NOT_ALLOWED: _Shape(403, "model_not_allowed", *_DENY, retry=False),
    RefusalKind.PRICE_UNKNOWN: _Shape(403, "model_price_unknown", *_DENY, retry=False),
    RefusalKind.REQUESTS_PER_MINUTE: _Shape(
        429, "rate_limit_exceeded", "requests", "rate_limit_error", retry=True
    ),
    RefusalKind.TOKENS_PER_MINUTE: _Shape(
        429, "rate_limit_exceeded", "tokens", "rate_limit_error", retry=True
    ),
    RefusalKind.TOKENS_ABOVE_LIMIT: _Shape(
        429, "rate_limit_exceeded", "tokens", "rate_limit_error", retry=False
    ),
    RefusalKind.CONCURRENCY: _Shape(
        429, "concurrency_limit_exceeded", "requests", "rate_limit_error", retry=True
    ),
    RefusalKind.BUDGET_EXCEEDED: _Shape(
        429, "budget_exceeded", "insufficient_quota", "rate_limit_error", retry=False
    ),
    RefusalKind.STORE_UNAVAILABLE: _Shape(
        503, "auth_store_unavailable", "server_error", "api_error", retry=True
    ),
}
_BY_OVER = {
    Over.BUDGET: RefusalKind.BUDGET_EXCEEDED,
    Over.TOKENS_ABOVE_LIMIT: RefusalKind.TOKENS_ABOVE_LIMIT,
    Over.RPM: RefusalKind.REQUESTS_PER_MINUTE,
    Over.TPM: RefusalKind.TOKENS_PER_MINUTE,
    Over.CONCURRENCY: RefusalKind.CONCURRENCY,
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is not admitted; nothing may be sent upstream for it."""

    kind: RefusalKind
    message: str
    retry_after_s: float | None = None
    """Seconds until the window admits this request (rate kinds only); None: no hint."""
    key_id: str | None = None

    @property
    def status(self) -> int:
        return _SHAPES[self.kind].status

    @property
    def code(self) -> str:
        return _SHAPES[self.kind].code

    @property
    def openai_type(self) -> str:
        return _SHAPES[self.kind].openai_type

    @property
    def anthropic_type(self) -> str:
        return _SHAPES[self.kind].anthropic_type

    def headers(self) -> dict[str, str]:
        """``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms`` when there is a
        wait hint; ``x-should-retry: false`` when waiting cannot help."""
        if not _SHAPES[self.kind].retry:
            return {"x-should-retry": "false"}
        if self.retry_after_s is None:
            return {}
        wait = max(self.retry_after_s, 0.0)
        return {
            "Retry-After": str(max(1, math.ceil(wait))),
            "retry-after-ms": str(math.ceil(wait * 1000)),
        }


class Admission:
    """An admitted request. ``settle`` exactly once when it is over (later calls do nothing)."""

    __slots__ = ("_gate", "_held", "_settled", "key")

    def __init__(self, gate: Gate, key: KeyRecord, held: Held | None) -> None:
        self._gate = gate
        self.key = key
        self._held = held
        self._settled = False

    @property
    def key_id(self) -> str:
        return self.key.id

    async def settle(self, usage: Usage | None = None, cost_usd: float | None = None) -> None:
        """Replace the reservation with what was used: ``usage`` tokens (prompt + completion,
        as billed; estimates included) and ``cost_usd`` (None or nothing: no charge known).
        Called without arguments it just releases the reservation (failed before upstream)."""
        if self._settled:
            return
        self._settled = True
        if self._held is None:
            return
        tokens = (usage.total_tokens or 0) if usage is not None else 0
        cost = usd_to_nanos(cost_usd) if cost_usd is not None and cost_usd > 0 else 0
        settling = self._gate._settle(self.key, self._held, tokens, cost)
        if self._held.shared:  # a Redis round trip: finish it even if our caller is cancelled
            await asyncio.shield(settling)
        else:
            await settling


class Gate:
    """Key check, route/model permission, limits and budget: one call at arrival."""

    def __init__(
        self,
        cache: KeyCache,
        limiter: Limiter,
        prices: PriceTable,
        *,
        default_max_output_tokens: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cache = cache
        self._limiter = limiter
        self._prices = prices
        self._default_out = default_max_output_tokens
        self._clock = clock
        self._periods: dict[BudgetPeriod, Period] = {}  # the current one of each kind

    @property
    def cache(self) -> KeyCache:
        """The key cache (``KeyManager(on_change=gate.cache.forget)`` for instant local revokes)."""
        return self._cache

    async def check(
        self,
        secret: str | None,
        route: str,
        model: str | None,
        *,
        input_tokens: int = 0,
        max_output_tokens: int | None = None,
    ) -> Admission | Refusal:
        key = await self.identify(secret)
        if isinstance(key, Refusal):
            return key
        return await self.admit(
            key, route, model, input_tokens=input_tokens, max_output_tokens=max_output_tokens
        )

    async def admit(
        self,
        key: KeyRecord,
        route: str,
        model: str | None,
        *,
        input_tokens: int = 0,
        max_output_tokens: int | None = None,
    ) -> Admission | Refusal:
        """``check`` for a key already identified: a caller that must read the request body
        to know its model and worst case identifies first, so an unknown key costs no parse."""
        if not key.allows_route(route):
            return Refusal(
                RefusalKind.ROUTE_NOT_ALLOWED,
                f"this key may not use the route {route}",
                key_id=key.id,
            )
        if not key.allows_model(model):
            return Refusal(
                RefusalKind.MODEL_NOT_ALLOWED,
                f"this key may not use the model {model}",
                key_id=key.id,
            )
        limits = key.limits
        if (
            limits.rpm is None
            and limits.tpm is None
            and limits.max_concurrent is None
            and limits.budget is None
        ):
            return Admission(self, key, None)
        output = self._default_out if max_output_tokens is None else max_output_tokens
        ask = self._ask(key, model, max(0, input_tokens), max(0, output))
        if isinstance(ask, Refusal):
            return ask
        try:
            outcome = await self._limiter.admit(ask)
        except StoreUnavailable:
            return _unavailable(key.id)
        if isinstance(outcome, Denied):
            return _denied(key, outcome)
        return Admission(self, key, outcome)

    async def identify(self, secret: str | None) -> KeyRecord | Refusal:
        """The active key for ``secret`` (from the cache), or why there is none."""
        if not secret:
            return Refusal(RefusalKind.MISSING_KEY, "no API key provided")
        if not looks_like_secret(secret):
            return Refusal(RefusalKind.INVALID_KEY, "invalid API key")
        try:
            key = await self._cache.get(hash_secret(secret))
        except StoreUnavailable:
            return _unavailable(None)
        if key is None:
            return Refusal(RefusalKind.INVALID_KEY, "invalid API key")
        if key.revoked is not None:
            return Refusal(RefusalKind.REVOKED_KEY, "this API key was revoked", key_id=key.id)
        if key.expires is not None and self._clock() >= key.expires:
            return Refusal(RefusalKind.EXPIRED_KEY, "this API key has expired", key_id=key.id)
        return key

    def _ask(
        self, key: KeyRecord, model: str | None, tokens_in: int, tokens_out: int
    ) -> Ask | Refusal:
        limits = key.limits
        budget_nanos, cost_nanos, period = None, 0, None
        if limits.budget is not None:
            worst = Usage(prompt_tokens=tokens_in, completion_tokens=tokens_out, source="estimate")
            cost = self._prices.cost(model, worst)
            if cost is None:
                return Refusal(
                    RefusalKind.PRICE_UNKNOWN,
                    f"this key has a budget and the model {model} has no price"
                    " (add it under pricing: in the config)",
                    key_id=key.id,
                )
            budget_nanos = usd_to_nanos(limits.budget.amount_usd)
            cost_nanos = usd_to_nanos(cost, up=True)
            period = self._period(limits.budget.period)
        return Ask(
            key_id=key.id,
            tokens=tokens_in + tokens_out,
            cost_nanos=cost_nanos,
            rpm=limits.rpm,
            tpm=limits.tpm,
            max_concurrent=limits.max_concurrent,
            budget_nanos=budget_nanos,
            period=period,
        )

    def _period(self, kind: BudgetPeriod) -> Period:
        """The budget period now; computed once per period, not per request."""
        now = self._clock()
        period = self._periods.get(kind)
        if period is None or now < period.start or (period.end is not None and now >= period.end):
            period = self._periods[kind] = budget_period(kind, now)
        return period

    async def _settle(self, key: KeyRecord, held: Held, tokens: int, cost_nanos: int) -> None:
        budget = key.limits.budget
        period = None if budget is None else self._period(budget.period)
        await self._limiter.settle(held, tokens, cost_nanos, period)


def _unavailable(key_id: str | None) -> Refusal:
    return Refusal(
        RefusalKind.STORE_UNAVAILABLE, "the key store is unavailable; try again", key_id=key_id
    )


def _denied(key: KeyRecord, denied: Denied) -> Refusal:
    kind = _BY_OVER[denied.over]
    messages = {
        RefusalKind.BUDGET_EXCEEDED: f"budget exceeded: this key's {key.limits.budget} budget"
        " cannot cover this request's worst-case cost",
        RefusalKind.TOKENS_ABOVE_LIMIT: "this request needs more tokens than the key's"
        f" {key.limits.tpm} tokens per minute",
        RefusalKind.REQUESTS_PER_MINUTE: f"rate limit: {key.limits.rpm} requests per minute",
        RefusalKind.TOKENS_PER_MINUTE: f"rate limit: {key.limits.tpm} tokens per minute",
        RefusalKind.CONCURRENCY: f"rate limit: {key.limits.max_concurrent} concurrent requests",
    }
    return Refusal(kind, messages[kind], denied.retry_after_s, key_id=key.id)
