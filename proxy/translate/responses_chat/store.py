"""Conversation state for ``previous_response_id``: the Responses API is stateful, a chat
upstream is not, so the proxy keeps each response's items (its input, history included,
plus its output) under the response id for a while."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["MemoryResponseStore", "ResponseStore", "StoredConversation"]


@dataclass(frozen=True, slots=True)
class StoredConversation:
    items: tuple[Mapping[str, Any], ...]
    """Responses input items, oldest first: what a follow-up request continues from."""


class ResponseStore(Protocol):
    """Async so a Redis (or SQL) backend fits; entries expire after the store's TTL."""

    async def get(self, response_id: str) -> StoredConversation | None:
        """The conversation up to and including ``response_id``; None when unknown or expired."""
        ...

    async def put(self, response_id: str, items: Sequence[Mapping[str, Any]]) -> None: ...


class MemoryResponseStore:
    """One process's store: TTL per entry, and the oldest entries evicted past ``max_entries``."""

    def __init__(
        self,
        ttl_s: float = 3600.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, StoredConversation]] = OrderedDict()

    async def get(self, response_id: str) -> StoredConversation | None:
        entry = self._entries.get(response_id)
        if entry is None:
            return None
        expires, conversation = entry
        if expires <= self._clock():
            del self._entries[response_id]
            return None
        return conversation

    async def put(self, response_id: str, items: Sequence[Mapping[str, Any]]) -> None:
        now = self._clock()
        self._entries.pop(response_id, None)
        while self._entries:
            oldest_id, (expires, _) = next(iter(self._entries.items()))
            if expires > now and len(self._entries) < self._max:
                break
            del self._entries[oldest_id]
        self._entries[response_id] = (now + self._ttl_s, StoredConversation(tuple(items)))

    def __len__(self) -> int:
        return len(self._entries)
