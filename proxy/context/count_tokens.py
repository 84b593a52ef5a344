"""Anthropic's free ``POST /v1/messages/count_tokens``: the provider's own input count.

Used only when a route sets ``context.count_tokens_endpoint``, and only for a request the
estimate cannot settle (its low bound is over the budget): one extra round trip buys the
exact count. Answers are cached for ``ttl_s`` by a hash of the URL and the counted fields,
so a client's retries and the error-driven retry do not ask twice; concurrent identical
questions share one request. The endpoint accepts only the fields that shape the prompt, so
``max_tokens``, ``stream``, sampling and metadata are left out of what is sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

__all__ = ["COUNTED_FIELDS", "AnthropicTokenCounter", "CountTokensError"]

COUNTED_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers")
FORWARDED_HEADERS = ("x-api-key", "authorization", "anthropic-version", "anthropic-beta")


class CountTokensError(Exception):
    """The endpoint did not give a count (status, timeout, shape); fall back to the estimate."""


class AnthropicTokenCounter:
    """A per-app client on the app's shared ``aiohttp.ClientSession``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        ttl_s: float = 60.0,
        max_entries: int = 1024,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, asyncio.Future[int]]] = OrderedDict()

    async def count(self, url: str, headers: Mapping[str, str], body: Mapping[str, Any]) -> int:
        """Input tokens of ``body`` as the provider counts them.

        ``url``: the upstream's full count_tokens URL. ``headers``: the upstream request's
        headers (credential already swapped in); only auth and version headers are sent.
        Raises CountTokensError.
        """
        payload = json.dumps(
            {k: body[k] for k in COUNTED_FIELDS if k in body}, separators=(",", ":")
        ).encode()
        key = hashlib.sha256(url.encode() + b"\n" + payload).hexdigest()
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self._ttl_s:
            return await asyncio.shield(cached[1])
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._remember(key, now, future)
        try:
            result = await self._ask(url, headers, payload)
        except BaseException as exc:
            self._cache.pop(key, None)
            future.set_exception(exc if isinstance(exc, CountTokensError) else CountTokensError())
            future.exception()  # retrieved: no "never retrieved" warning if nobody waits
            raise
        future.set_result(result)
        return result

    def _remember(self, key: str, now: float, future: asyncio.Future[int]) -> None:
        self._cache[key] = (now, future)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

    async def _ask(self, url: str, headers: Mapping[str, str], payload: bytes) -> int:
        sent = {k: v for k, v in headers.items() if k.lower() in FORWARDED_HEADERS}
        sent["content-type"] = "application/json"
        try:
            async with self._session.post(
                url, data=payload, headers=sent, timeout=self._timeout
            ) as resp:
                text = await resp.read()
                if resp.status != 200:
                    raise CountTokensError(f"count_tokens answered {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CountTokensError(f"count_tokens failed: {type(exc).__name__}") from None
        try:
            tokens = json.loads(text)["input_tokens"]
        except (ValueError, KeyError, TypeError):
            raise CountTokensError("count_tokens: no input_tokens in the answer") from None
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise CountTokensError("count_tokens: input_tokens is not a count")
        return tokens
