"""The attempt loop: scoped cooldowns and pacing, waits from the upstream's hints, retries,
fallback, the commit point, and fixes for refused requests.

Everything here happens before the first response byte goes to the client, so a stream is
never retried or spliced. A client that disconnects cancels the handler and so any wait.
The loop returns what the handler should do: an :class:`Answer` (with the upstream that
really produced it) or a :class:`GiveUp` (with the proxy's own error).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from ..config import Retry, Timeouts, Upstream
from ..crossing import client_view
from ..errors import ProxyError, RateLimited, UpstreamTimeout
from ..exchange import Exchange
from ..forward import LiveResponse, open_attempt, read_head
from ..outcomes import Attempt, AttemptReason, Hold, HoldKind
from ..plugins import Refusal
from ..translate import ResponseStore
from .commit import Committed, HoldLimits, hold_until_content
from .gate import Go, OverBudget, ScopeGate
from .hints import backoff, is_quota_exhausted, parse_wait
from .legs import Answer, Dispatch, Failed, GiveUp, Leg, Reply, body_for, make_leg
from .pacer import PRIORITY_HEADER, parse_priority
from .scope import credential_of

__all__ = ["MAX_WAIT_HEADER", "Answer", "AttemptLoop", "Dispatch", "GiveUp", "body_for"]

MAX_WAIT_HEADER = "x-proxy-max-wait"
_REFUSALS = frozenset({400, 413, 422})
_OVERLOAD_EVENTS = frozenset({"overloaded_error", "rate_limit_error", "rate_limit_exceeded"})
_MAX_ERROR_BODY = 1 << 20


def wait_budget(ex: Exchange, retry: Retry) -> float:
    """The route's wait budget, lowered (never raised) by the client's ``x-proxy-max-wait``."""
    raw = ex.request.headers.get(MAX_WAIT_HEADER)
    if raw is not None:
        try:
            asked = float(raw)
        except ValueError:
            asked = math.nan
        if math.isfinite(asked) and asked >= 0:
            return min(retry.max_wait_s, asked)
    return retry.max_wait_s


class AttemptLoop:
    """Tries a route's upstreams in priority order within a retry budget."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        timeouts: Timeouts,
        gate: ScopeGate,
        logger: Any,
        responses: ResponseStore | None = None,
        on_refusal: Callable[[Exchange, Refusal], Awaitable[bool]] | None = None,
    ) -> None:
        self.session = session
        self.timeouts = timeouts
        self.gate = gate
        self.log = logger
        self.responses = responses
        """Responses API conversations, for clients served through a translation."""
        self.on_refusal = on_refusal
        """The plugins' chance to fix a request an upstream refused (context length...)."""

    async def dispatch(self, ex: Exchange) -> Dispatch:
        return await _Run(self, ex).go()


class _Run:
    """One request's walk through the upstreams; holds what it has spent so far."""

    def __init__(self, loop: AttemptLoop, ex: Exchange) -> None:
        assert ex.route is not None
        self.loop, self.ex = loop, ex
        self.retry = ex.route.config.retry
        self.pacing = ex.route.config.pacing
        self.upstreams = ex.route.config.upstreams
        self.budget = wait_budget(ex, self.retry)
        self.index = 0
        self.kept: Reply | None = None
        self.error: ProxyError | None = None
        self.fixed_once = False
        headers = ex.request.headers
        credential = credential_of(headers)
        self.client = loop.gate.fingerprint(credential) if credential else ex.request.remote or ""
        """Whose turn it is in a fair queue: the client's own credential, else its address."""
        self.priority = parse_priority(headers.get(PRIORITY_HEADER))

    @property
    def has_fallback(self) -> bool:
        return self.index + 1 < len(self.upstreams)

    @property
    def left_s(self) -> float:
        return self.budget - self.ex.retry.waited_s - self.ex.retry.held_s

    async def go(self) -> Dispatch:
        try:
            while self.index < len(self.upstreams):
                reply = await self._try_upstream(self.upstreams[self.index])
                if reply is not None:
                    self._discard_kept()
                    return await self._deliver(reply)
                self.index += 1
            return await self._give_up()
        except BaseException:
            self._discard_kept()
            raise

    async def _give_up(self) -> Dispatch:
        """The best the client can get: the last upstream error answer, else the proxy's."""
        sent = sum(1 for a in self.ex.attempts if a.sent)
        if self.budget > 0 and (sent > 1 or self._quota_exhausted()):
            self.ex.retry.exhausted = True  # the SDK should not multiply our retries
        if self.kept is not None:
            kept, self.kept = self.kept, None
            return await self._deliver(kept)
        assert self.error is not None
        return GiveUp(self.error)

    async def _deliver(self, reply: Reply) -> Answer:
        """The answer in the client's API (translated back when the attempt was)."""
        if reply.plan is None:
            return Answer(reply.response, reply.upstream, reply.translation)
        response = await client_view(reply.plan, reply.response)
        return Answer(response, reply.upstream, reply.translation, reply.plan.settle)

    def _quota_exhausted(self) -> bool:
        return any(a.reason is AttemptReason.QUOTA_EXHAUSTED for a in self.ex.attempts)

    async def _try_upstream(self, upstream: Upstream) -> Reply | None:
        """Attempts on one upstream; None means "go on to the next one"."""
        n = 0
        while n < self.retry.max_attempts:
            leg = await self._leg(upstream)
            if not isinstance(leg, Leg):
                if isinstance(leg, Reply):
                    return leg
                self._keep(leg)
                return None
            go = await self._admit(leg, retrying=n > 0)
            if go is None:
                return None
            result = await self._attempt(leg, go, n)
            if isinstance(result, Reply):
                return result
            self._keep(result)
            if result.fixed:
                continue  # the same request, fixed: again at once, not counted as a retry
            n += 1
            if not result.fall_back:
                self.index = len(self.upstreams)  # nothing after this may be tried
            if not result.retry_same or n >= self.retry.max_attempts:
                return None
            if result.wait_s > self.left_s:
                return None
            await self._sleep(result.wait_s)
        return None

    async def _leg(self, upstream: Upstream) -> Leg | Reply | Failed:
        """This upstream's request, or the proxy's own answer when it needs no upstream."""
        try:
            leg = await make_leg(self.ex, upstream, self.loop.gate, self.loop.responses)
        except ProxyError as error:  # the request cannot be put in this upstream's API
            self.ex.attempts.append(
                Attempt(upstream.name, AttemptReason.LOCAL, detail=error.message)
            )
            return Failed(0.0, retry_same=False, error=error)
        if isinstance(leg, Reply):
            status = leg.response.status
            self.ex.attempts.append(Attempt(upstream.name, AttemptReason.LOCAL, status))
        return leg

    def _keep(self, failed: Failed) -> None:
        if failed.answer is not None:
            self._discard_kept()
            self.kept = failed.answer
        if failed.error is not None:
            self.error = failed.error

    def _discard_kept(self) -> None:
        if self.kept is not None:
            self.kept.response.close()
            self.kept = None

    async def _admit(self, leg: Leg, *, retrying: bool) -> Go | None:
        """Wait for the leg's scopes to have room, or move on: a first attempt goes to a
        fallback with room at once; a retry waits (within the budget) for the upstream that
        asked for it; the last upstream ends with an honest proxy-made 429 when the wait
        would outlast the budget."""
        budget = 0.0
        if retrying or not self.has_fallback:
            budget = max(0.0, min(self.left_s, self.pacing.max_queue_wait_s))
        decision = await self.loop.gate.admit(
            leg.claim, budget_s=budget, client=self.client, priority=self.priority
        )
        if isinstance(decision, Go):
            self._book_hold(decision, leg)
            return decision
        self.ex.attempts.append(
            Attempt(leg.upstream.name, AttemptReason.COOLING_DOWN, detail=decision.reason)
        )
        if self.kept is None:
            self.error = _rate_limited(leg.upstream, decision)
        self.ex.retry.ratelimited = decision.kind.value
        return None

    def _book_hold(self, go: Go, leg: Leg) -> None:
        retry = self.ex.retry
        if go.held_for == "cooldown":
            retry.cooldown_waits.append(leg.upstream.name)
        if go.held_s > 0:
            retry.held_s += go.held_s
            retry.held_for = go.held_for
            kind = HoldKind.COOLDOWN if go.held_for == "cooldown" else HoldKind.PACING
            scope = leg.claim.scopes.model or leg.claim.scopes.upstream
            started = time.monotonic() - go.held_s
            retry.holds.append(Hold(kind, scope.label, started, go.held_s))

    async def _attempt(self, leg: Leg, go: Go, n: int) -> Reply | Failed:
        """Send once and classify the answer."""
        t0 = time.monotonic()
        record = Attempt(leg.upstream.name, AttemptReason.ANSWERED, started=t0)
        self.ex.attempts.append(record)
        gate = self.loop.gate
        try:
            live = await open_attempt(
                self.loop.session, leg.upstream, leg.outgoing, self.loop.timeouts
            )
        except ProxyError as error:
            failed = self._failed_to_send(record, error, n, t0)
            if record.reason is AttemptReason.UNREACHABLE:
                await gate.release(leg.claim, go.reservation)
            else:
                await gate.spent(leg.claim, go.reservation)
            return failed
        except BaseException:
            await asyncio.shield(gate.spent(leg.claim, go.reservation))
            raise
        record.status = live.status
        record.duration_s = time.monotonic() - t0
        fallback_wait = self._backoff_value(n)
        await gate.observe(leg.claim, go.reservation, live.status, live.headers, fallback_wait)
        if live.status in self.retry.retry_on:
            return await self._retryable(record, leg, live, fallback_wait)
        if live.status == 200:
            return await self._accept_ok(record, leg, live, n)
        if live.status in _REFUSALS and self.loop.on_refusal is not None and not self.fixed_once:
            return await self._refused(record, leg, live)
        return leg.reply(live)

    async def _refused(self, record: Attempt, leg: Leg, live: LiveResponse) -> Reply | Failed:
        """A client error the plugins may be able to fix (a context-length error)."""
        assert self.loop.on_refusal is not None
        answer = await read_head(live, _MAX_ERROR_BODY, self.loop.timeouts.idle_s)
        refusal = Refusal(leg.upstream, live.status, live.headers, answer.head)
        if not await self.loop.on_refusal(self.ex, refusal):
            return leg.reply(answer)
        self.fixed_once = True
        record.reason = AttemptReason.REFUSED_FIXED
        return Failed(0.0, retry_same=True, answer=leg.reply(answer), fixed=True)

    async def _accept_ok(
        self, record: Attempt, leg: Leg, live: LiveResponse, n: int
    ) -> Reply | Failed:
        """A 200 may still fail before it carries anything: a stream's head is held until
        its first content (the commit point), and an error body can be recognised."""
        assert self.ex.route is not None
        streaming = self.ex.route.config.streaming
        family = leg.held_family(live) if streaming.commit_point else None
        if family is not None:
            limits = HoldLimits(
                streaming.max_hold_s,
                streaming.max_hold_bytes,
                streaming.first_content_s or self.loop.timeouts.first_byte_s,
            )
            held = await hold_until_content(live, family, limits)
            if isinstance(held, Committed):
                self.ex.t_commit = time.monotonic()
                return leg.reply(held.response)
            record.reason = AttemptReason.STREAM_FAILED
            record.stream_failure, record.event_type = held.failure, held.event_type
            record.held_bytes = held.held_bytes
            wait = self._backoff(record, n)
            if held.event_type in _OVERLOAD_EVENTS:
                scope = leg.claim.scopes.upstream
                await self.loop.gate.cooldowns.cool(scope.key, time.time() + wait)
            return Failed(wait, retry_same=True, answer=leg.reply(held.response))
        if streaming.error_bodies and "json" in live.headers.get("Content-Type", ""):
            answer = await read_head(live, _MAX_ERROR_BODY, self.loop.timeouts.idle_s)
            if _is_error_body(answer.head):
                record.reason = AttemptReason.ERROR_BODY
                wait = self._backoff(record, n)
                return Failed(wait, retry_same=True, answer=leg.reply(answer))
            return leg.reply(answer)
        return leg.reply(live)

    def _failed_to_send(self, record: Attempt, error: ProxyError, n: int, t0: float) -> Failed:
        record.duration_s = time.monotonic() - t0
        record.detail = error.message
        if isinstance(error, UpstreamTimeout):
            record.reason = AttemptReason.TIMEOUT
            again = self.retry.on_timeout
            return Failed(self._backoff(record, n), again, fall_back=again, error=error)
        if error.status == 502 and error.code == "upstream_bad_response":
            record.reason = AttemptReason.BAD_RESPONSE
            return Failed(0.0, retry_same=False, error=error)
        record.reason = AttemptReason.UNREACHABLE
        return Failed(self._backoff(record, n), retry_same=True, error=error)

    async def _retryable(
        self, record: Attempt, leg: Leg, live: LiveResponse, fallback_wait: float
    ) -> Failed:
        """A status in ``retry_on``: read its body (kept whole for the client) and its hints.

        When the answer concerns a paced scope, the pacer holds the next attempt until the
        provider's window admits it; sleeping here as well would wait twice.
        """
        record.reason = AttemptReason.RETRYABLE_STATUS
        answer = await read_head(live, _MAX_ERROR_BODY, self.loop.timeouts.idle_s)
        if is_quota_exhausted(live.status, answer.head):
            record.reason = AttemptReason.QUOTA_EXHAUSTED
            return Failed(0.0, retry_same=False, answer=leg.reply(answer))
        hint, _ = parse_wait(live.headers)
        if self.loop.gate.paces(leg.claim, live.status, live.headers):
            record.hint = hint.source if hint is not None else "pacing"
            return Failed(0.0, retry_same=True, answer=leg.reply(answer))
        if hint is not None:
            record.hint, wait = hint.source, hint.seconds
        else:
            record.hint, wait = "backoff", fallback_wait
        return Failed(wait, retry_same=True, answer=leg.reply(answer))

    def _backoff_value(self, n: int) -> float:
        return backoff(n, self.retry.backoff_base_s, self.retry.backoff_cap_s)

    def _backoff(self, record: Attempt, n: int) -> float:
        record.hint = "backoff"
        return self._backoff_value(n)

    async def _sleep(self, seconds: float) -> None:
        """Wait as the last attempt's answer asked; booked on that attempt."""
        seconds = max(0.0, seconds)
        if self.ex.attempts:
            self.ex.attempts[-1].waited_s += seconds
        self.ex.retry.waited_s += seconds
        await asyncio.sleep(seconds)


def _rate_limited(upstream: Upstream, hold: OverBudget) -> RateLimited:
    """The honest proxy-made 429: when the scope is expected to admit this request."""
    seconds = max(0.0, hold.seconds)
    return RateLimited(
        f"upstream {upstream.name!r} is rate limited ({hold.kind.value} limit, "
        f"{hold.reason}) for {seconds:.1f}s more",
        headers={
            "retry-after": str(math.ceil(seconds)),
            "retry-after-ms": str(math.ceil(seconds * 1000)),
            "x-proxy-ratelimited": hold.kind.value,
        },
    )


def _is_error_body(body: bytes) -> bool:
    """An OpenAI-compatible 200 that carries an error object, or a choice that failed."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return False
    if not isinstance(doc, dict):
        return False
    if doc.get("error") and not doc.get("choices"):
        return True
    choices = doc.get("choices")
    return isinstance(choices, list) and any(
        isinstance(c, dict) and c.get("finish_reason") == "error" for c in choices
    )
