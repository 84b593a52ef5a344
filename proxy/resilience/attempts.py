"""The attempt loop: shared cooldowns, waits from the upstream's hints, retries, fallback.

Everything here happens before the first response byte goes to the client, so a stream is
never retried or spliced. A client that disconnects cancels the handler and so any wait.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from ..config import Retry, Timeouts, Upstream
from ..errors import ProxyError
from ..exchange import Exchange
from ..forward import open_attempt
from .cooldown import CooldownStore
from .hints import backoff, is_quota_exhausted, parse_wait, proactive_cooldown

MAX_WAIT_HEADER = "x-proxy-max-wait"
_OVERLOAD = frozenset({429, 503, 529})
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


class BufferedResponse:
    """An upstream error answer already read (to inspect it), replayed to the client unchanged."""

    def __init__(self, resp: aiohttp.ClientResponse, body: bytes) -> None:
        self.status = resp.status
        self.reason = resp.reason
        self.headers = resp.headers
        self.content_length = len(body) if "Content-Length" in resp.headers else None
        self._body = body
        self.content = self

    async def readany(self) -> bytes:
        body, self._body = self._body, b""
        return body

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class CoolingDown(ProxyError):
    """Every upstream is cooling down longer than the request may wait: a provider-shaped 429
    with the remaining time, so the client's SDK backs off on its own."""

    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"
    code = "rate_limit_exceeded"


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
    except ValueError:
        return ex.body
    if isinstance(data, dict) and data.get("model") in upstream.models:
        data["model"] = upstream.models[data["model"]]
        return json.dumps(data, ensure_ascii=False).encode()
    return ex.body


class AttemptLoop:
    """Dispatcher that tries a route's upstreams in priority order within a retry budget."""

    def __init__(
        self, session: aiohttp.ClientSession, timeouts: Timeouts, store: CooldownStore, logger: Any
    ) -> None:
        self._session = session
        self._timeouts = timeouts
        self._store = store
        self._log = logger

    async def open(self, ex: Exchange) -> aiohttp.ClientResponse:
        run = _Run(self, ex)
        try:
            return await run.go()
        finally:
            ex.log["attempts"] = ex.attempts
            ex.log["retry_wait_ms"] = round(run.waited * 1000, 1)
            first = ex.route.config.upstreams[0].name
            ex.log["fallback"] = any(a["upstream"] != first for a in ex.attempts)
            ex.log["cooldown_waits"] = run.cooldown_waits
            if ex.upstream is not None:
                ex.response_headers["x-proxy-upstream"] = ex.upstream.name
            ex.response_headers["x-proxy-attempts"] = str(len(ex.attempts))


class _Run:
    """One request's walk through the upstreams; holds what it has spent so far."""

    def __init__(self, loop: AttemptLoop, ex: Exchange) -> None:
        self.loop, self.ex = loop, ex
        self.retry = ex.route.config.retry
        self.upstreams = ex.route.config.upstreams
        self.budget = wait_budget(ex, self.retry)
        self.waited = 0.0
        self.index = 0
        self.last: BufferedResponse | None = None
        self.last_error: ProxyError | None = None
        self.cooldown_waits: list[str] = []
        """Upstreams this request waited on because another request's 429 cooled them."""

    @property
    def has_fallback(self) -> bool:
        return self.index + 1 < len(self.upstreams)

    async def go(self) -> Any:
        while self.index < len(self.upstreams):
            answer = await self._try_upstream(self.upstreams[self.index])
            if answer is not None:
                return answer
            self.index += 1
        if self.last is not None:
            return self.last
        assert self.last_error is not None
        if len(self.ex.attempts) > 1:  # the proxy already retried: the SDK should not again
            self.last_error.headers["x-should-retry"] = "false"
        raise self.last_error

    async def _try_upstream(self, upstream: Upstream) -> Any:
        """Attempts on one upstream; None means "fall back to the next one"."""
        self.ex.upstream = upstream
        for n in range(self.retry.max_attempts):
            if not await self._respect_cooldown(upstream):
                return None
            wait = await self._attempt(upstream, n)
            if wait is None:
                return self._answer
            if wait > self.budget - self.waited or n + 1 >= self.retry.max_attempts:
                return None if self.has_fallback else self.last
            await self._sleep(wait)
        return None

    async def _respect_cooldown(self, upstream: Upstream) -> bool:
        """Wait out a shared cooldown, or say False to fall back (or give up, at the last)."""
        remaining = await self.loop._store.until(cooldown_key(upstream)) - time.time()
        if remaining <= 0:
            return True
        if self.has_fallback:
            self._record(upstream, None, "cooling down", 0.0)
            return False
        if remaining > self.budget - self.waited:
            self._record(upstream, None, "cooling down", 0.0)
            if self.last is not None:
                return False
            raise CoolingDown(
                f"upstream {upstream.name!r} is rate limited for {remaining:.1f}s more",
                headers={
                    "retry-after": str(math.ceil(remaining)),
                    "retry-after-ms": str(math.ceil(remaining * 1000)),
                },
            )
        self.cooldown_waits.append(upstream.name)
        await self._sleep(remaining, hinted=False)
        return True

    async def _attempt(self, upstream: Upstream, n: int) -> float | None:
        """Send once. None: ``self._answer`` is final. A number: seconds to wait before a retry."""
        t0 = time.monotonic()
        try:
            resp = await open_attempt(
                self.loop._session,
                self.ex,
                upstream,
                body_for(self.ex, upstream),
                self.loop._timeouts,
            )
        except ProxyError as error:  # unreachable or no first byte in time
            self.last_error = error
            self._record(upstream, None, type(error).__name__, t0)
            return backoff(n, self.retry.backoff_base_s, self.retry.backoff_cap_s)
        await self._note_limits(upstream, resp.headers)
        if resp.status not in self.retry.retry_on:
            self._record(upstream, resp.status, "ok" if resp.status < 400 else "passed", t0)
            self._answer: Any = resp
            return None
        body = await self._read_error(resp)
        self.last = BufferedResponse(resp, body)
        if is_quota_exhausted(resp.status, body):
            self._record(upstream, resp.status, "quota exhausted", t0)
            return math.inf
        hint, unparsed = parse_wait(resp.headers)
        for raw in unparsed:
            self.loop._log.warning(
                "unparseable rate-limit header", upstream=upstream.name, header=raw
            )
        wait = (
            hint.seconds
            if hint
            else backoff(n, self.retry.backoff_base_s, self.retry.backoff_cap_s)
        )
        if resp.status in _OVERLOAD:
            await self.loop._store.cool(cooldown_key(upstream), time.time() + wait)
        self._record(upstream, resp.status, hint.source if hint else "backoff", t0)
        return wait

    async def _note_limits(self, upstream: Upstream, headers: CIMultiDictProxy[str]) -> None:
        """Cool down proactively when the upstream says a bucket is empty, even on success."""
        if not any(_is_zero(headers.get(name)) for name in _REMAINING):
            return  # the common case, decided without parsing every rate-limit header
        seconds = proactive_cooldown(headers, time.time())
        if seconds:
            await self.loop._store.cool(cooldown_key(upstream), time.time() + seconds)

    async def _read_error(self, resp: aiohttp.ClientResponse) -> bytes:
        try:
            return await resp.content.read(_MAX_ERROR_BODY)
        except (aiohttp.ClientError, OSError):
            return b""
        finally:
            resp.release()

    async def _sleep(self, seconds: float, *, hinted: bool = True) -> None:
        """Wait; a hinted wait (after an attempt's answer) is booked on that attempt."""
        seconds = max(0.0, seconds)
        if hinted and self.ex.attempts:
            last = self.ex.attempts[-1]
            last["waited_ms"] = round(last["waited_ms"] + seconds * 1000, 1)
        self.waited += seconds
        await asyncio.sleep(seconds)

    def _record(self, upstream: Upstream, status: int | None, reason: str, t0: float) -> None:
        self.ex.attempts.append(
            {
                "upstream": upstream.name,
                "status": status,
                "reason": reason,
                "waited_ms": 0.0,
                "ms": round((time.monotonic() - t0) * 1000, 1) if t0 else 0.0,
            }
        )
