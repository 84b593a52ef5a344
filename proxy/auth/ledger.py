"""The spend ledger: one row per attempt that reached a provider, written off the request path.

``LedgerWriter.submit(row)`` is a plain function call that never waits: the row joins a bounded
in-memory queue, and one background task writes queued rows in batches (one transaction each).
When the store is unavailable the batch and everything queued move to a bounded **in-memory**
spool, retried every ``retry_s``; they are written, oldest first, once the store answers again
(a row already stored is skipped, so a retried batch never double-counts). The spool does not
survive a restart: rows still unwritten when ``close()`` gives up are counted in ``lost``.
A row that finds the queue or the spool full is counted in ``dropped``. Nothing here raises into
the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..usage import Usage, UsageSource
from .store import Store

__all__ = ["LedgerRow", "LedgerStats", "LedgerWriter"]


@dataclass(slots=True)
class LedgerRow:
    """One attempt that reached a provider, its tokens as the provider reported them.

    Not frozen, like limits.Ask: one or more per request on the hot path, and a frozen
    dataclass of this many fields takes twice as long to build. Treat it as read-only.

    Token fields follow proxy.usage.Usage (one convention for every provider):
    ``input_tokens`` is all input, cache reads and writes included; ``cached_read_tokens`` and
    ``cache_write_tokens`` are parts of it; ``output_tokens`` is all output, reasoning included;
    ``reasoning_tokens`` a part of it. ``cost_usd`` comes from PriceTable.cost, which prices each
    kind once (None: unknown model price or no usage). ``usage_source`` says whether the counts
    were reported (``upstream``) or counted by the proxy (``estimate``, e.g. a client that hung
    up mid-stream: the tokens streamed so far). ``ts`` is epoch seconds at completion.
    """

    request_id: str
    attempt: int
    key_id: str | None
    route: str
    upstream: str
    model_requested: str | None
    model_served: str | None
    input_tokens: int | None
    cached_read_tokens: int | None
    cache_write_tokens: int | None
    output_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    usage_source: UsageSource
    status: int | None
    latency_ms: float
    ts: float
    row_id: str = field(default_factory=lambda: os.urandom(16).hex())
    """Unique per row, made here: what makes a replayed batch idempotent. Not the request id,
    which a client may choose (x-request-id) and reuse."""

    @classmethod
    def from_usage(
        cls,
        usage: Usage,
        *,
        cost_usd: float | None,
        request_id: str,
        attempt: int,
        key_id: str | None,
        route: str,
        upstream: str,
        model_requested: str | None,
        model_served: str | None,
        status: int | None,
        latency_ms: float,
        ts: float | None = None,
    ) -> LedgerRow:
        return cls(  # positional: this runs once per attempt on the request path
            request_id,
            attempt,
            key_id,
            route,
            upstream,
            model_requested,
            model_served,
            usage.prompt_tokens,
            usage.cached_tokens,
            usage.cache_creation_tokens,
            usage.completion_tokens,
            usage.reasoning_tokens,
            cost_usd,
            usage.source,
            status,
            latency_ms,
            time.time() if ts is None else ts,
        )


@dataclass(frozen=True, slots=True)
class LedgerStats:
    queued: int
    """Submitted, not yet tried."""
    spooled: int
    """Tried while the store was unavailable; waiting for it."""
    written: int
    dropped: int
    """Refused at submit (queue full) or at spooling (spool full): never written."""
    lost: int
    """Still unwritten when close() gave up (the spool is in memory)."""


OnError = Callable[[Exception], None]


class LedgerWriter:
    """Batches rows into the store from one task; see the module docstring for the guarantees.

    ``on_error(exc)`` is called once when the store becomes unavailable, ``on_recover()`` once
    when a write succeeds again; both run inline and must not raise.
    """

    def __init__(
        self,
        store: Store,
        *,
        queue_rows: int = 10_000,
        spool_rows: int = 100_000,
        batch_rows: int = 500,
        linger_s: float = 0.2,
        retry_s: float = 1.0,
        on_error: OnError | None = None,
        on_recover: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._queue: deque[LedgerRow] = deque()
        self._spool: deque[LedgerRow] = deque()
        self._queue_max = queue_rows
        self._spool_max = spool_rows
        self._batch = batch_rows
        self._linger = linger_s
        self._retry = retry_s
        self._on_error = on_error
        self._on_recover = on_recover
        self._wake = asyncio.Event()  # a row arrived, or close() was called
        self._full = asyncio.Event()  # a full batch is waiting: stop lingering
        self._progress = asyncio.Event()  # a write attempt finished
        self._down = False
        self._busy = False
        self._closing = False
        self._flushing = 0  # callers waiting in flush(): write without lingering
        self._task: asyncio.Task[None] | None = None
        self._written = self._dropped = self._lost = 0

    @property
    def stats(self) -> LedgerStats:
        return LedgerStats(
            len(self._queue), len(self._spool), self._written, self._dropped, self._lost
        )

    @property
    def degraded(self) -> bool:
        """True while the store is unavailable and rows go to the spool."""
        return self._down

    def start(self) -> None:
        """Start the writing task (inside the running loop, e.g. in a cleanup_ctx)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def submit(self, row: LedgerRow) -> bool:
        """Queue one row; never waits. False: the queue was full and the row was dropped."""
        if self._closing or len(self._queue) >= self._queue_max:
            self._dropped += 1
            return False
        self._queue.append(row)
        self._wake.set()
        if len(self._queue) >= self._batch:
            self._full.set()
        return True

    async def flush(self) -> None:
        """Until every row submitted so far was tried once (written, or spooled)."""
        if self._task is None:
            raise RuntimeError("LedgerWriter.start() was not called")
        self._flushing += 1
        try:
            while self._queue or self._busy:
                self._progress.clear()
                self._full.set()
                self._wake.set()
                await self._progress.wait()
        finally:
            self._flushing -= 1

    async def close(self, timeout_s: float = 5.0) -> None:
        """Write what is left for up to ``timeout_s``, then stop; the rest counts as lost."""
        self._closing = True
        self._wake.set()
        self._full.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._lost += len(self._queue) + len(self._spool)
        self._queue.clear()
        self._spool.clear()

    async def _run(self) -> None:
        while True:
            await self._wait_for_rows()
            if not self._queue and not self._spool:
                return  # closing, and nothing left
            self._busy = True
            try:
                ok = await self._write_one_batch()
            finally:
                self._busy = False
                self._progress.set()
            if not ok:
                await self._pause(self._retry)
                if self._closing and self._down:
                    return  # one last try failed: close() counts what is left

    async def _wait_for_rows(self) -> None:
        while not self._queue and not self._spool and not self._closing:
            self._wake.clear()
            await self._wake.wait()
        if len(self._queue) < self._batch and not (self._spool or self._closing or self._flushing):
            self._full.clear()
            await self._pause(self._linger, self._full)

    async def _pause(self, seconds: float, event: asyncio.Event | None = None) -> None:
        """Sleep, cut short by ``event`` or by close()."""
        event = event or self._wake
        if self._closing:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    async def _write_one_batch(self) -> bool:
        source = self._spool if self._spool else self._queue
        batch = [source[i] for i in range(min(self._batch, len(source)))]
        try:
            await self._store.insert_ledger(batch)
        except Exception as exc:  # StoreError, or a store bug: neither may kill the writer
            self._spool_after_failure(batch, from_queue=source is self._queue)
            if not self._down:
                self._down = True
                if self._on_error is not None:
                    self._on_error(exc)
            return False
        for _ in batch:
            source.popleft()
        self._written += len(batch)
        if self._down:
            self._down = False
            if self._on_recover is not None:
                self._on_recover()
        return True

    def _spool_after_failure(self, batch: list[LedgerRow], from_queue: bool) -> None:
        """Everything not yet written moves to the spool, so the queue keeps accepting rows."""
        if not from_queue:
            batch = []  # already in the spool
        else:
            for _ in batch:
                self._queue.popleft()
        moving = [*batch, *self._queue]
        self._queue.clear()
        room = self._spool_max - len(self._spool)
        self._spool.extend(moving[:room])
        self._dropped += max(0, len(moving) - room)
