"""The ledger writer: off the request path, batched, spooled through outages, drops counted."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable

import pytest

from proxy.auth.ledger import LedgerRow, LedgerStats, LedgerWriter
from proxy.auth.store import SpendGroup, Store
from proxy.pricing import PriceTable
from proxy.usage import Usage
from tests.auth_support import (
    Outage,
    outage,
    pg_database,
    pg_server,
    row,
    store,
    store_factory,
)

__all__ = ["outage", "pg_database", "pg_server", "store", "store_factory"]  # fixtures, used by name

Make = Callable[..., LedgerWriter]


@pytest.fixture
async def writers(store: Store) -> AsyncIterator[Make]:
    made: list[LedgerWriter] = []

    def make(**kwargs: object) -> LedgerWriter:
        options: dict = {"linger_s": 0.01, "retry_s": 0.02, **kwargs}
        writer = LedgerWriter(store, **options)
        writer.start()
        made.append(writer)
        return writer

    yield make
    for writer in made:
        await writer.close(timeout_s=1.0)


async def stored(store: Store) -> int:
    lines = await store.spend(SpendGroup.KEY, 0.0)
    return sum(line.attempts for line in lines)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_submit_is_a_plain_call_that_cannot_wait() -> None:
    assert not inspect.iscoroutinefunction(LedgerWriter.submit)


async def test_rows_are_written_in_batches_off_the_request_path(
    store: Store, writers: Make
) -> None:
    writer = writers(batch_rows=100)
    accepted = [writer.submit(row(request_id=f"r{i}")) for i in range(250)]
    assert all(accepted)
    assert 0 == writer.stats.written  # nothing written during the submitting: no await happened
    await writer.flush()
    assert LedgerStats(queued=0, spooled=0, written=250, dropped=0, lost=0) == writer.stats
    assert 250 == await stored(store)


async def test_rows_spool_while_the_store_is_down_and_are_written_when_it_is_back(
    store: Store, writers: Make, outage: Outage
) -> None:
    events: list[str] = []
    writer = writers(
        on_error=lambda exc: events.append("down"), on_recover=lambda: events.append("up")
    )
    writer.submit(row(request_id="before"))
    await writer.flush()
    outage.begin()
    for i in range(40):
        assert writer.submit(row(request_id=f"during-{i}"))
    await writer.flush()
    assert (40, 1, True) == (writer.stats.spooled, writer.stats.written, writer.degraded)
    assert writer.submit(row(request_id="still-during"))  # the queue keeps accepting
    outage.end()
    await until(lambda: writer.stats.written == 42)
    assert LedgerStats(queued=0, spooled=0, written=42, dropped=0, lost=0) == writer.stats
    assert ["down", "up"] == events
    assert 42 == await stored(store)


async def test_a_full_queue_drops_and_counts_instead_of_waiting(writers: Make) -> None:
    writer = writers(queue_rows=10, batch_rows=100, linger_s=5.0)
    accepted = [writer.submit(row(request_id=f"r{i}")) for i in range(15)]
    assert [True] * 10 + [False] * 5 == accepted
    await writer.flush()
    assert (10, 5) == (writer.stats.written, writer.stats.dropped)


async def test_a_full_spool_drops_and_counts(writers: Make, outage: Outage, store: Store) -> None:
    writer = writers(spool_rows=5, batch_rows=100)
    outage.begin()
    for i in range(8):
        writer.submit(row(request_id=f"r{i}"))
    await writer.flush()
    assert (5, 3) == (writer.stats.spooled, writer.stats.dropped)
    outage.end()
    await until(lambda: writer.stats.written == 5)
    assert 5 == await stored(store)


async def test_close_writes_what_is_queued(store: Store) -> None:
    writer = LedgerWriter(store, linger_s=10.0)
    writer.start()
    for i in range(3):
        writer.submit(row(request_id=f"r{i}"))
    await writer.close()
    assert (3, 0) == (writer.stats.written, writer.stats.lost)
    assert 3 == await stored(store)
    assert not writer.submit(row(request_id="late"))


async def test_close_while_the_store_is_down_counts_the_rows_as_lost(
    store: Store, outage: Outage
) -> None:
    writer = LedgerWriter(store, linger_s=0.01, retry_s=0.02)
    writer.start()
    outage.begin()
    for i in range(3):
        writer.submit(row(request_id=f"r{i}"))
    await writer.close(timeout_s=0.5)
    assert (0, 3) == (writer.stats.written, writer.stats.lost)


async def test_rows_from_usage_keep_the_providers_counts_and_price_each_kind_once(
    store: Store, writers: Make
) -> None:
    """Anthropic: 100 fresh + 3000 cache read + 500 cache write input tokens, 200 output.
    Usage's convention makes input 3600; the cost prices each part once."""
    usage = Usage(prompt_tokens=3600, completion_tokens=200, cached_tokens=3000,
                  cache_creation_tokens=500, source="upstream")  # fmt: skip
    cost = PriceTable().cost("claude-sonnet-4-5", usage)
    assert 0.0003 + 0.0009 + 0.001875 + 0.003 == pytest.approx(cost, abs=1e-15)
    writer = writers()
    writer.submit(LedgerRow.from_usage(
        usage, cost_usd=cost, request_id="r1", attempt=0, key_id="key_a", route="/anthropic",
        upstream="anthropic", model_requested="claude-sonnet-4-5",
        model_served="claude-sonnet-4-5-20250929", status=200, latency_ms=80.0,
    ))  # fmt: skip
    await writer.flush()
    (line,) = await store.spend(SpendGroup.MODEL, 0.0)
    assert ("claude-sonnet-4-5-20250929", 3600, 3000, 500, 200) == (
        line.group, line.input_tokens, line.cached_read_tokens, line.cache_write_tokens,
        line.output_tokens,
    )  # fmt: skip
    assert 6_075_000_000 == line.cost_picousd  # $0.006075 exactly
