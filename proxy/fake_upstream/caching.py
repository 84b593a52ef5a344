"""Prompt caching as the providers do it, in the fake's own tokens (``content.py`` words).

Each credential (the request's ``Authorization`` or ``x-api-key``) has its own cache, as each
organisation does upstream, and a prefix is cached per model. The prompt is cut into blocks
of ``block_tokens`` (1,024, the providers' minimum cacheable prefix); block k is known by a
hash chained over blocks 0..k, so a hit needs the whole prefix to be identical. A request
reads the longest run of leading blocks seen within ``ttl_s`` and then makes all of its own
blocks known.

- OpenAI (automatic caching): every full block of the prompt is cacheable;
  ``prompt_tokens_details.cached_tokens`` reports the blocks read, ``prompt_tokens`` still
  counts them.
- Anthropic (explicit caching): only the prefix up to the last ``cache_control`` breakpoint
  is cacheable; ``cache_read_input_tokens`` is the blocks read within it,
  ``cache_creation_input_tokens`` the rest of it (written now), and ``input_tokens`` what
  remains. A prefix that ends exactly at a breakpoint seen before is read whole, as Anthropic
  does. No breakpoint, no caching.

Real OpenAI caching also hits at 128-token steps past the first 1,024; the fake's whole
blocks are a slight under-count there.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .content import prompt_sequence

CACHED_PATHS = frozenset({"/v1/chat/completions", "/v1/responses", "/v1/messages"})


@dataclass(frozen=True)
class CacheUse:
    """Prompt tokens read from the cache, and (Anthropic) written to it, by one request."""

    read: int = 0
    written: int = 0


NO_CACHE = CacheUse()


def credential_of(headers: Mapping[str, str]) -> str:
    """Whose cache: a digest of the credential header (never the credential itself)."""
    raw = headers.get("x-api-key") or headers.get("authorization") or ""
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


class PromptCache:
    """Block hashes seen per credential and model, each kept ``ttl_s`` after its last use."""

    def __init__(
        self,
        block_tokens: int = 1024,
        ttl_s: float = 300.0,
        max_blocks: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.block_tokens = block_tokens
        self.ttl_s = ttl_s
        self._max_blocks = max_blocks
        self._clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def clear(self) -> None:
        self._seen.clear()

    def use(self, credential: str, provider: str, payload: dict[str, Any]) -> CacheUse:
        """Account one request: what it reads from the cache, then remember its blocks."""
        tokens, breakpoints = prompt_sequence(payload)
        if provider == "anthropic":
            if not breakpoints:
                return NO_CACHE
            cacheable = max(breakpoints)
        else:
            cacheable = len(tokens)
        if cacheable < self.block_tokens:
            return NO_CACHE
        model = payload.get("model")
        hashes = self._chain(f"{credential}|{provider}|{model}", tokens, cacheable)
        marks = {p: self._mark(hashes, tokens, p) for p in breakpoints if p >= self.block_tokens}
        now = self._clock()
        read_blocks = 0
        for h in hashes:
            if not self._fresh(h, now):
                break
            read_blocks += 1
        read = read_blocks * self.block_tokens
        read = max([read, *(p for p, h in marks.items() if self._fresh(h, now))])
        for h in [*hashes, *marks.values()]:
            self._seen[h] = now
            self._seen.move_to_end(h)
        while len(self._seen) > self._max_blocks:
            self._seen.popitem(last=False)
        written = cacheable - read if provider == "anthropic" else 0
        return CacheUse(read=read, written=written)

    def _fresh(self, h: bytes, now: float) -> bool:
        seen = self._seen.get(h)
        return seen is not None and now - seen <= self.ttl_s

    def _mark(self, hashes: list[bytes], tokens: list[str], position: int) -> bytes:
        """The hash of the exact prefix up to a breakpoint (Anthropic hits at breakpoints)."""
        full = position // self.block_tokens
        rest = "\x00".join(tokens[full * self.block_tokens : position]).encode()
        return hashlib.sha256(b"mark" + hashes[full - 1] + rest).digest()

    def _chain(self, seed: str, tokens: list[str], cacheable: int) -> list[bytes]:
        digest = hashlib.sha256(seed.encode()).digest()
        out = []
        size = self.block_tokens
        for start in range(0, cacheable - size + 1, size):
            block = "\x00".join(tokens[start : start + size]).encode()
            digest = hashlib.sha256(digest + block).digest()
            out.append(digest)
        return out
