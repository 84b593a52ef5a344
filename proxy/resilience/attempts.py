"""The attempt loop: shared cooldowns, waits from the upstream's hints, retries, fallback.

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
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from ..config import Retry, Timeouts, Upstream
from ..errors import ProxyError, RateLimited, UpstreamTimeout
from ..exchange import Exchange
from ..forward import LiveResponse, ReplayResponse, UpstreamResponse, open_attempt, read_head
from ..outcomes import Attempt, AttemptReason, Hold, HoldKind
from ..stream_content import StreamFamily, stream_family
from .commit import Committed, HoldLimits, hold_until_content
from .cooldown import CooldownStore
from .hints import backoff, is_quota_exhausted, parse_wait, proactive_cooldown

MAX_WAIT_HEADER = "x-proxy-max-wait"
_OVERLOAD = frozenset({429, 503, 529})
_OVERLOAD_EVENTS = frozenset({"overloaded_error", "rate_limit_error", "rate_limit_exceeded"})
_MAX_ERROR_BODY = 1 << 20
_REMAINING = (
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-remaining-tokens_usage_based",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-output-tokens-remaining",
)


@dataclass(frozen=True, slots=True)
class Answer:
    """Relay ``response`` to the client; ``upstream`` is the one that sent it."""

    response: UpstreamResponse
    upstream: Upstream


@dataclass(frozen=True, slots=True)
class GiveUp:
    """No upstream answered: the client gets the proxy's own ``error``."""

    error: ProxyError


Dispatch = Answer | GiveUp


@dataclass(frozen=True, slots=True)
class _Failed:
    """An attempt that did not produce the final answer, and what it allows next."""

    wait_s: float
    retry_same: bool
    """Trying this upstream again may help (never after a timeout, quota or malformed answer)."""
    fall_back: bool = True
    """Trying the next upstream may help (not after a timeout unless the route allows it)."""
    answer: ReplayResponse | None = None
    """The upstream's own error answer, kept in case nothing better comes."""
    error: ProxyError | None = None


def _held_family(ex: Exchange, live: LiveResponse) -> StreamFamily | None:
    """The grammar of a stream whose head can be held: an uncompressed SSE answer on an
    endpoint whose events the proxy knows. Anything else commits on its first byte."""
    headers = live.headers
    if not headers.get("Content-Type", "").startswith("text/event-stream"):
        return None
    if headers.get("Content-Encoding", "identity").lower() != "identity":
        return None
    assert ex.route is not None
    return stream_family(ex.route.provider.name, ex.tail)


def _is_json(live: LiveResponse) -> bool:
    return "json" in live.headers.get("Content-Type", "")


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


def _is_zero(value: str | None) -> bool:
    """ "0", "0.0", " 00 ": a bucket reported empty (the full parse decides what it means)."""
    return value is not None and value.strip() != "" and value.strip().strip("0.") == ""


def cooldown_key(upstream: Upstream) -> str:
    return f"{upstream.name}@{upstream.base_url}"


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


def body_for(ex: Exchange, upstream: Upstream) -> bytes:
    """The body for this upstream: the model field mapped only when a mapping applies."""
    if not upstream.models:
        return ex.body
    try:
        data = json.loads(ex.body)
    except (ValueError, RecursionError):
        return ex.body
    if isinstance(data, dict) and data.get("model") in upstream.models:
        data["model"] = upstream.models[data["model"]]
        return json.dumps(data, ensure_ascii=False).encode()
    return ex.body


class AttemptLoop:
    """Tries a route's upstreams in priority order within a retry budget."""

    def __init__(
        self, session: aiohttp.ClientSession, timeouts: Timeouts, store: CooldownStore, logger: Any
    ) -> None:
        self.session = session
        self.timeouts = timeouts
        self.store = store
        self.log = logger

    async def dispatch(self, ex: Exchange) -> Dispatch:
        return await _Run(self, ex).go()


class _Run:
    """One request's walk through the upstreams; holds what it has spent so far."""

    def __init__(self, loop: AttemptLoop, ex: Exchange) -> None:
        assert ex.route is not None
        self.loop, self.ex = loop, ex
        self.retry = ex.route.config.retry
        self.upstreams = ex.route.config.upstreams
        self.budget = wait_budget(ex, self.retry)
        self.index = 0
        self.kept: tuple[ReplayResponse, Upstream] | None = None
        self.error: ProxyError | None = None

    @property
    def has_fallback(self) -> bool:
        return self.index + 1 < len(self.upstreams)

    @property
    def left_s(self) -> float:
        return self.budget - self.ex.retry.waited_s

    async def go(self) -> Dispatch:
        try:
            while self.index < len(self.upstreams):
                answer = await self._try_upstream(self.upstreams[self.index])
                if answer is not None:
                    self._discard_kept()
                    return answer
                self.index += 1
            return self._give_up()
        except BaseException:
            self._discard_kept()
            raise

    def _give_up(self) -> Dispatch:
        """The best the client can get: the last upstream error answer, else the proxy's."""
        sent = sum(1 for a in self.ex.attempts if a.sent)
        if self.budget > 0 and (sent > 1 or self._quota_exhausted()):
            self.ex.retry.exhausted = True  # the SDK should not multiply our retries
        if self.kept is not None:
            response, upstream = self.kept
            return Answer(response, upstream)
        assert self.error is not None
        return GiveUp(self.error)

    def _quota_exhausted(self) -> bool:
        return any(a.reason is AttemptReason.QUOTA_EXHAUSTED for a in self.ex.attempts)

    async def _try_upstream(self, upstream: Upstream) -> Answer | None:
        """Attempts on one upstream; None means "go on to the next one"."""
        for n in range(self.retry.max_attempts):
            if not await self._respect_cooldown(upstream):
                return None
            result = await self._attempt(upstream, n)
            if isinstance(result, Answer):
                return result
            self._keep(result, upstream)
            if not result.fall_back:
                self.index = len(self.upstreams)  # nothing after this may be tried
            if not result.retry_same or n + 1 >= self.retry.max_attempts:
                return None
            if result.wait_s > self.left_s:
                return None
            await self._sleep(result.wait_s, booked=True)
        return None

    def _keep(self, failed: _Failed, upstream: Upstream) -> None:
        if failed.answer is not None:
            self._discard_kept()
            self.kept = (failed.answer, upstream)
        if failed.error is not None:
            self.error = failed.error

    def _discard_kept(self) -> None:
        if self.kept is not None:
            self.kept[0].close()
            self.kept = None

    async def _respect_cooldown(self, upstream: Upstream) -> bool:
        """Wait out a shared cooldown, or say False to fall back (or give up, at the last)."""
        remaining = await self.loop.store.until(cooldown_key(upstream)) - time.time()
        if remaining <= 0:
            return True
        if self.has_fallback or remaining > self.left_s:
            self.ex.attempts.append(Attempt(upstream.name, AttemptReason.COOLING_DOWN))
            if self.kept is None:
                self.error = RateLimited(
                    f"upstream {upstream.name!r} is rate limited for {remaining:.1f}s more",
                    headers={
                        "retry-after": str(math.ceil(remaining)),
                        "retry-after-ms": str(math.ceil(remaining * 1000)),
                        "x-proxy-ratelimited": "upstream",
                    },
                )
            return False
        self.ex.retry.cooldown_waits.append(upstream.name)
        hold = Hold(HoldKind.COOLDOWN, upstream.name, time.monotonic(), max(0.0, remaining))
        self.ex.retry.holds.append(hold)
        await self._sleep(remaining, booked=False)
        return True

    async def _attempt(self, upstream: Upstream, n: int) -> Answer | _Failed:
        """Send once and classify the answer."""
        t0 = time.monotonic()
        record = Attempt(upstream.name, AttemptReason.ANSWERED, started=t0)
        self.ex.attempts.append(record)
        try:
            live = await open_attempt(
                self.loop.session,
                self.ex,
                upstream,
                body_for(self.ex, upstream),
                self.loop.timeouts,
            )
        except ProxyError as error:
            return self._failed_to_send(record, error, n, t0)
        record.status = live.status
        record.duration_s = time.monotonic() - t0
        await self._note_limits(upstream, live.headers)
        if live.status in self.retry.retry_on:
            return await self._retryable(record, upstream, live, n)
        if live.status == 200:
            return await self._accept_ok(record, upstream, live, n)
        return Answer(live, upstream)

    async def _accept_ok(
        self, record: Attempt, upstream: Upstream, live: LiveResponse, n: int
    ) -> Answer | _Failed:
        """A 200 may still fail before it carries anything: a stream's head is held until
        its first content (the commit point), and an error body can be recognised."""
        assert self.ex.route is not None
        streaming = self.ex.route.config.streaming
        family = _held_family(self.ex, live) if streaming.commit_point else None
        if family is not None:
            limits = HoldLimits(
                streaming.max_hold_s,
                streaming.max_hold_bytes,
                streaming.first_content_s or self.loop.timeouts.first_byte_s,
            )
            held = await hold_until_content(live, family, limits)
            if isinstance(held, Committed):
                self.ex.t_commit = time.monotonic()
                return Answer(held.response, upstream)
            record.reason = AttemptReason.STREAM_FAILED
            record.stream_failure, record.event_type = held.failure, held.event_type
            record.held_bytes = held.held_bytes
            wait = self._backoff(record, n)
            if held.event_type in _OVERLOAD_EVENTS:
                await self.loop.store.cool(cooldown_key(upstream), time.time() + wait)
            return _Failed(wait, retry_same=True, answer=held.response)
        if streaming.error_bodies and _is_json(live):
            answer = await read_head(live, _MAX_ERROR_BODY, self.loop.timeouts.idle_s)
            if _is_error_body(answer.head):
                record.reason = AttemptReason.ERROR_BODY
                return _Failed(self._backoff(record, n), retry_same=True, answer=answer)
            return Answer(answer, upstream)
        return Answer(live, upstream)

    def _failed_to_send(self, record: Attempt, error: ProxyError, n: int, t0: float) -> _Failed:
        record.duration_s = time.monotonic() - t0
        record.detail = error.message
        if isinstance(error, UpstreamTimeout):
            record.reason = AttemptReason.TIMEOUT
            again = self.retry.on_timeout
            return _Failed(self._backoff(record, n), again, fall_back=again, error=error)
        if error.status == 502 and error.code == "upstream_bad_response":
            record.reason = AttemptReason.BAD_RESPONSE
            return _Failed(0.0, retry_same=False, error=error)
        record.reason = AttemptReason.UNREACHABLE
        return _Failed(self._backoff(record, n), retry_same=True, error=error)

    async def _retryable(
        self, record: Attempt, upstream: Upstream, live: LiveResponse, n: int
    ) -> _Failed:
        """A status in ``retry_on``: read its body (kept whole for the client) and its hints."""
        record.reason = AttemptReason.RETRYABLE_STATUS
        answer = await read_head(live, _MAX_ERROR_BODY, self.loop.timeouts.idle_s)
        if is_quota_exhausted(live.status, answer.head):
            record.reason = AttemptReason.QUOTA_EXHAUSTED
            return _Failed(0.0, retry_same=False, answer=answer)
        hint, unparsed = parse_wait(live.headers)
        for raw in unparsed:
            self.loop.log.warning(
                "unparseable rate-limit header", upstream=upstream.name, header=raw
            )
        if hint is not None:
            record.hint, wait = hint.source, hint.seconds
        else:
            wait = self._backoff(record, n)
        if live.status in _OVERLOAD:
            await self.loop.store.cool(cooldown_key(upstream), time.time() + wait)
        return _Failed(wait, retry_same=True, answer=answer)

    def _backoff(self, record: Attempt, n: int) -> float:
        record.hint = "backoff"
        return backoff(n, self.retry.backoff_base_s, self.retry.backoff_cap_s)

    async def _note_limits(self, upstream: Upstream, headers: CIMultiDictProxy[str]) -> None:
        """Cool down proactively when the upstream says a bucket is empty, even on success."""
        if not any(_is_zero(headers.get(name)) for name in _REMAINING):
            return  # the common case, decided without parsing every rate-limit header
        seconds = proactive_cooldown(headers, time.time())
        if seconds:
            await self.loop.store.cool(cooldown_key(upstream), time.time() + seconds)

    async def _sleep(self, seconds: float, *, booked: bool) -> None:
        """Wait; a wait asked for by an attempt's answer is booked on that attempt."""
        seconds = max(0.0, seconds)
        if booked and self.ex.attempts:
            self.ex.attempts[-1].waited_s += seconds
        self.ex.retry.waited_s += seconds
        await asyncio.sleep(seconds)
