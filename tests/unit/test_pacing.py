"""Proactive pacing (proxy.resilience.pacing, pacer): the live model per scope and the fair
admission queue, on the in-memory store with an injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import aiohttp
import pytest

from proxy.fake_upstream import FakeUpstream, Limits
from proxy.resilience.pacer import PRIORITY_HEADER, Pacer, Refused, parse_priority
from proxy.resilience.pacing import (
    Admitted,
    PacePolicy,
    PacingModel,
    Reservation,
    Wait,
    estimate_cost,
    output_cap,
)
from proxy.resilience.pacing_store import MemoryPacingStore
from proxy.resilience.ratelimits import (
    NO_COST,
    Bucket,
    BucketLimit,
    Cost,
    LimitSnapshot,
    WaitReason,
    parse_snapshot,
)
from proxy.resilience.scope import LimitKind, Scope

T = TypeVar("T")
NOW = 1_700_000_000.0
KEY = "openai/abc/model/gpt-4o"
SCOPE = Scope("openai", "abc", LimitKind.MODEL, "gpt-4o")
FULL = PacePolicy(target_utilisation=1.0)
DEFAULT = PacePolicy()
ONE = Cost()  # one request, no tokens
HANG_GUARD_S = 10.0  # fails a hung test; never a timing assertion


def requests_snapshot(limit: float, remaining: float, at: float = NOW) -> LimitSnapshot:
    return LimitSnapshot(at, {Bucket.REQUESTS: BucketLimit(limit, remaining, None)})


class VirtualTime:
    """Epoch clock that only moves when the code under test sleeps."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


async def guarded(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, HANG_GUARD_S)


# ---------------------------------------------------------------- the model


def test_a_new_scope_admits_one_request_to_learn_the_limits() -> None:
    model = PacingModel()
    decision = model.admit(KEY, ONE, NOW, DEFAULT)
    assert isinstance(decision, Admitted)
    assert Reservation(KEY, decision.reservation.id, ONE, NOW, 1) == decision.reservation
    assert Wait(1.0, WaitReason.PROBE) == model.admit(KEY, ONE, NOW, DEFAULT)
    model.observe(KEY, requests_snapshot(60, 59), decision.reservation.seq, DEFAULT)
    assert isinstance(model.admit(KEY, ONE, NOW, DEFAULT), Admitted)


def test_admits_up_to_limit_times_target_then_waits_for_the_refill() -> None:
    model = PacingModel()
    model.observe(KEY, requests_snapshot(100, 100), None, DEFAULT)
    decisions = [model.admit(KEY, ONE, NOW, DEFAULT) for _ in range(100)]
    admitted = [d for d in decisions if isinstance(d, Admitted)]
    assert 95 == len(admitted)
    assert list(range(1, 96)) == [d.reservation.seq for d in admitted]
    # the 96th needs one more request of refill: 60 s / 100 = 0.6 s
    assert Wait(pytest.approx(0.6), WaitReason.REQUESTS) == decisions[95]


def test_an_answer_speaks_for_its_reservation_and_earlier_ones() -> None:
    """The provider already counted requests sent before the answered one; later ones not."""
    model = PacingModel()
    model.observe(KEY, requests_snapshot(60, 60), None, FULL)
    first = model.admit(KEY, ONE, NOW, FULL)
    second = model.admit(KEY, ONE, NOW, FULL)
    third = model.admit(KEY, ONE, NOW, FULL)
    assert isinstance(first, Admitted) and isinstance(second, Admitted)
    assert isinstance(third, Admitted)
    assert (3, requests_snapshot(60, 57)) == (model.in_flight(KEY), model.level(KEY))
    # second's answer: the provider saw first and second and says 2 are left
    model.observe(KEY, requests_snapshot(60, 2, NOW + 0.5), second.reservation.seq, FULL)
    assert 1 == model.in_flight(KEY)  # third is still unknown to the provider
    assert requests_snapshot(60, 1, NOW + 0.5) == model.level(KEY)
    # first's answer arrives late: older than second's, it cannot raise the level
    model.observe(KEY, requests_snapshot(60, 40, NOW + 0.5), first.reservation.seq, FULL)
    assert requests_snapshot(60, 1, NOW + 0.5) == model.level(KEY)


def test_an_overtaken_snapshot_only_lowers_the_level() -> None:
    model = PacingModel()
    model.observe(KEY, requests_snapshot(60, 30), 5, FULL)
    model.observe(KEY, requests_snapshot(60, 50), 3, FULL)  # older basis, more room
    assert requests_snapshot(60, 30) == model.level(KEY)
    model.observe(KEY, requests_snapshot(60, 10), 3, FULL)  # older basis, less room
    assert requests_snapshot(60, 10) == model.level(KEY)
    model.observe(KEY, requests_snapshot(60, 20), None, FULL)  # no reservation: as old
    assert requests_snapshot(60, 10) == model.level(KEY)


def test_settle_corrects_an_unabsorbed_estimate_to_the_actual_cost() -> None:
    model = PacingModel()
    snapshot = LimitSnapshot(NOW, {Bucket.TOKENS: BucketLimit(6000, 6000, None)})
    model.observe(KEY, snapshot, None, FULL)
    decision = model.admit(KEY, Cost(1000, 4000), NOW, FULL)
    assert isinstance(decision, Admitted)
    assert isinstance(model.admit(KEY, Cost(1000, 1001), NOW, FULL), Wait)
    model.settle(decision.reservation, Cost(1000, 200), NOW, FULL)  # no headers came back
    assert 0 == model.in_flight(KEY)
    expected = LimitSnapshot(NOW, {Bucket.TOKENS: BucketLimit(6000, 4800, None)})
    assert expected == model.level(KEY)


def test_settle_after_absorption_changes_nothing() -> None:
    model = PacingModel()
    model.observe(KEY, requests_snapshot(60, 60), None, FULL)
    decision = model.admit(KEY, ONE, NOW, FULL)
    assert isinstance(decision, Admitted)
    model.observe(KEY, requests_snapshot(60, 59, NOW + 1), decision.reservation.seq, FULL)
    model.settle(decision.reservation, NO_COST, NOW + 2, FULL)
    assert requests_snapshot(60, 59, NOW + 1) == model.level(KEY)


def test_settle_with_no_cost_gives_the_capacity_back() -> None:
    model = PacingModel()
    model.observe(KEY, requests_snapshot(60, 1), None, FULL)
    decision = model.admit(KEY, ONE, NOW, FULL)
    assert isinstance(decision, Admitted)
    assert isinstance(model.admit(KEY, ONE, NOW, FULL), Wait)
    model.settle(decision.reservation, NO_COST, NOW, FULL)  # never sent, or a 429
    assert isinstance(model.admit(KEY, ONE, NOW, FULL), Admitted)


def test_a_reservation_never_settled_is_forgotten_after_its_ttl() -> None:
    policy = PacePolicy(target_utilisation=1.0, reservation_ttl_s=30)
    model = PacingModel()
    model.observe(KEY, requests_snapshot(60, 60), None, policy)
    assert isinstance(model.admit(KEY, ONE, NOW, policy), Admitted)
    assert isinstance(model.admit(KEY, ONE, NOW + 29, policy), Admitted)
    assert 2 == model.in_flight(KEY)
    # an answer without a reservation subtracts what is pending: the expired one no more
    model.observe(KEY, requests_snapshot(60, 10, NOW + 31), None, policy)
    assert (1, requests_snapshot(60, 9, NOW + 31)) == (model.in_flight(KEY), model.level(KEY))


def test_retry_after_of_a_429_holds_the_scope() -> None:
    model = PacingModel()
    model.observe(KEY, LimitSnapshot(NOW, retry_at=NOW + 7), None, FULL)
    assert Wait(7.0, WaitReason.RETRY_AFTER) == model.admit(KEY, ONE, NOW, FULL)
    assert isinstance(model.admit(KEY, ONE, NOW + 7, FULL), Admitted)


def test_the_anthropic_split_charges_input_and_output_separately() -> None:
    model = PacingModel()
    snapshot = LimitSnapshot(
        NOW,
        {
            Bucket.INPUT_TOKENS: BucketLimit(10000, 10000, None),
            Bucket.OUTPUT_TOKENS: BucketLimit(1000, 1000, None),
        },
    )
    model.observe(KEY, snapshot, None, FULL)
    assert isinstance(model.admit(KEY, Cost(9000, 500), NOW, FULL), Admitted)
    assert Wait(pytest.approx(6.0), WaitReason.OUTPUT_TOKENS) == model.admit(
        KEY, Cost(0, 600), NOW, FULL
    )
    assert Wait(pytest.approx(6.0), WaitReason.INPUT_TOKENS) == model.admit(
        KEY, Cost(2000, 0), NOW, FULL
    )


@pytest.mark.parametrize(
    ("body", "reserve", "expected"),
    [
        ({"max_tokens": 300}, 4096, Cost(120, 300)),
        ({"max_completion_tokens": 50, "max_tokens": 300}, 4096, Cost(120, 50)),
        ({"max_output_tokens": 70}, 4096, Cost(120, 70)),
        ({"max_tokens": True}, 4096, Cost(120, 4096)),
        ({}, 4096, Cost(120, 4096)),
        (None, 1000, Cost(120, 1000)),
    ],
)
def test_estimate_cost(body: dict | None, reserve: int, expected: Cost) -> None:
    assert expected == estimate_cost(120, body, reserve)


def test_output_cap_ignores_negative_values() -> None:
    assert None is output_cap({"max_tokens": -1})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, 0), ("5", 5), (" -3 ", -3), ("high", 0), ("1e3", 0), ("100000", 100)],
)
def test_parse_priority(raw: str | None, expected: int) -> None:
    assert expected == parse_priority(raw)
    assert "x-proxy-priority" == PRIORITY_HEADER


# ---------------------------------------------------------------- the queue


async def seeded_pacer(
    snapshot: LimitSnapshot, policy: PacePolicy = FULL
) -> tuple[Pacer, VirtualTime]:
    time = VirtualTime()
    pacer = Pacer(MemoryPacingStore(), clock=time, sleep=time.sleep)
    await pacer.observe(SCOPE, snapshot, None, policy)
    return pacer, time


async def test_admission_under_concurrency_never_exceeds_limit_times_target() -> None:
    pacer, _ = await seeded_pacer(requests_snapshot(200, 200), DEFAULT)
    results = await guarded(
        asyncio.gather(*(pacer.acquire(SCOPE, ONE, DEFAULT, budget_s=0) for _ in range(400)))
    )
    admitted = [r for r in results if isinstance(r, Admitted)]
    assert 190 == len(admitted)  # 200 x 0.95
    assert all(isinstance(r, Refused) for r in results if not isinstance(r, Admitted))


async def test_deadline_refusal_gives_the_exact_wait() -> None:
    """60 RPM, empty bucket, 0.95 target: a request needs 1 + 3 (reserve) = 4 requests of
    refill, 4 s; a budget of 3.9 s is refused at once with exactly that."""
    pacer, time = await seeded_pacer(requests_snapshot(60, 0), DEFAULT)
    result = await guarded(pacer.acquire(SCOPE, ONE, DEFAULT, budget_s=3.9))
    assert Refused(pytest.approx(4.0), WaitReason.REQUESTS, 0.0) == result
    assert (NOW, 0) == (time.now, pacer.queue_length(SCOPE))


async def test_a_request_within_budget_is_held_until_the_refill() -> None:
    pacer, time = await seeded_pacer(requests_snapshot(60, 0))
    result = await guarded(pacer.acquire(SCOPE, ONE, FULL, budget_s=5))
    assert isinstance(result, Admitted)
    assert (pytest.approx(1.0), WaitReason.REQUESTS) == (result.held_s, result.held_for)
    assert pytest.approx(NOW + 1) == time.now


async def test_queue_refusal_counts_the_requests_ahead() -> None:
    """Three queued ahead, 1 request/s: the fourth would wait 4 s; with a 3.5 s budget it is
    refused at once, with that honest figure."""
    pacer, _ = await seeded_pacer(requests_snapshot(60, 0))
    held = [asyncio.ensure_future(pacer.acquire(SCOPE, ONE, FULL, budget_s=60)) for _ in range(3)]
    await asyncio.sleep(0)
    assert 3 == pacer.queue_length(SCOPE)
    result = await guarded(pacer.acquire(SCOPE, ONE, FULL, budget_s=3.5))
    assert Refused(pytest.approx(4.0), WaitReason.REQUESTS, 0.0) == result
    assert all(isinstance(r, Admitted) for r in await guarded(asyncio.gather(*held)))


async def test_fair_queue_fifo_per_client_round_robin_across_clients_priority_first() -> None:
    pacer, _ = await seeded_pacer(requests_snapshot(60, 0))
    arrivals = [
        ("a1", "A", 0),
        ("a2", "A", 0),
        ("a3", "A", 0),
        ("b1", "B", 0),
        ("b2", "B", 0),
        ("c1", "C", 0),
        ("p1", "A", 5),
        ("p2", "B", 5),
    ]
    results = await guarded(
        asyncio.gather(
            *(
                pacer.acquire(SCOPE, ONE, FULL, budget_s=60, client=client, priority=priority)
                for _, client, priority in arrivals
            )
        )
    )
    assert all(isinstance(r, Admitted) for r in results)
    order = sorted(
        zip(results, (name for name, _, _ in arrivals), strict=True),
        key=lambda pair: pair[0].reservation.reserved_at,  # type: ignore[union-attr]
    )
    # priority first; then clients take turns, each in its own arrival order
    assert ["p1", "p2", "a1", "b1", "c1", "a2", "b2", "a3"] == [name for _, name in order]


async def test_a_cancelled_waiter_leaves_the_queue_and_the_next_is_served() -> None:
    pacer, _ = await seeded_pacer(requests_snapshot(60, 0))
    first = asyncio.ensure_future(pacer.acquire(SCOPE, ONE, FULL, budget_s=60, client="A"))
    second = asyncio.ensure_future(pacer.acquire(SCOPE, ONE, FULL, budget_s=60, client="B"))
    await asyncio.sleep(0)
    first.cancel()
    result = await guarded(second)
    assert isinstance(result, Admitted)
    assert first.cancelled()
    assert (0, pytest.approx(1.0)) == (pacer.queue_length(SCOPE), result.held_s)


async def test_a_waiter_whose_budget_runs_out_behind_others_is_told_then() -> None:
    """Three ahead at 1 request/s: the fourth expects 4 s and its 4.5 s budget is accepted.
    Then the provider reports 3 requests more used (another process): at its deadline it is
    told, with the wait it would still face."""
    pacer, time = await seeded_pacer(requests_snapshot(60, 0))
    ahead = [asyncio.ensure_future(pacer.acquire(SCOPE, ONE, FULL, budget_s=60)) for _ in range(3)]
    late = asyncio.ensure_future(pacer.acquire(SCOPE, ONE, FULL, budget_s=4.5))
    drained = asyncio.ensure_future(pacer.observe(SCOPE, requests_snapshot(60, -3), None, FULL))
    result = await guarded(late)
    await drained
    # at NOW+4.5: level -3 + 4.5 = 1.5; the first (admitted at +4) is in flight; 3 to go
    assert Refused(pytest.approx(2.5), WaitReason.REQUESTS, pytest.approx(4.5)) == result
    assert pytest.approx(NOW + 4.5) == time.now
    assert all(isinstance(r, Admitted) for r in await guarded(asyncio.gather(*ahead)))


async def test_an_answer_wakes_the_queue() -> None:
    """The clock stands still and sleeps never end: only the answer's headers can release
    the waiter."""
    time = VirtualTime()
    never = asyncio.Event()

    async def sleep_forever(_: float) -> None:
        await never.wait()

    pacer = Pacer(MemoryPacingStore(), clock=time, sleep=sleep_forever)
    await pacer.observe(SCOPE, requests_snapshot(60, 1), None, FULL)
    first = await pacer.acquire(SCOPE, ONE, FULL, budget_s=0)
    assert isinstance(first, Admitted)
    waiter = asyncio.ensure_future(pacer.acquire(SCOPE, ONE, FULL, budget_s=30))
    await asyncio.sleep(0)
    assert (False, 1) == (waiter.done(), pacer.queue_length(SCOPE))
    await pacer.observe(SCOPE, requests_snapshot(60, 10), first.reservation, FULL)
    assert isinstance(await guarded(waiter), Admitted)
    await pacer.close()


async def test_an_answer_without_headers_releases_the_first_contact_queue() -> None:
    time = VirtualTime()
    never = asyncio.Event()

    async def sleep_forever(_: float) -> None:
        await never.wait()

    pacer = Pacer(MemoryPacingStore(), clock=time, sleep=sleep_forever)
    first = await pacer.acquire(SCOPE, ONE, FULL, budget_s=0)
    assert isinstance(first, Admitted)
    waiters = [asyncio.ensure_future(pacer.acquire(SCOPE, ONE, FULL, budget_s=5)) for _ in range(3)]
    await asyncio.sleep(0)
    assert 3 == pacer.queue_length(SCOPE)
    await pacer.observe(SCOPE, LimitSnapshot(NOW), first.reservation, FULL)
    results = await guarded(asyncio.gather(*waiters))
    assert [WaitReason.PROBE] * 3 == [r.held_for for r in results]  # type: ignore[union-attr]


async def test_settle_wakes_the_queue() -> None:
    time = VirtualTime()
    never = asyncio.Event()

    async def sleep_forever(_: float) -> None:
        await never.wait()

    pacer = Pacer(MemoryPacingStore(), clock=time, sleep=sleep_forever)
    await pacer.observe(SCOPE, requests_snapshot(60, 1), None, FULL)
    first = await pacer.acquire(SCOPE, ONE, FULL, budget_s=0)
    assert isinstance(first, Admitted)
    waiter = asyncio.ensure_future(pacer.acquire(SCOPE, ONE, FULL, budget_s=30))
    await asyncio.sleep(0)
    await pacer.release(first.reservation, FULL)  # never sent: its capacity is back
    assert isinstance(await guarded(waiter), Admitted)


async def test_settled_reservations_leave_the_model() -> None:
    pacer, _ = await seeded_pacer(requests_snapshot(60, 60))
    result = await pacer.acquire(SCOPE, ONE, FULL, budget_s=0)
    assert isinstance(result, Admitted)
    store = pacer.store
    assert isinstance(store, MemoryPacingStore)
    assert 1 == store.model.in_flight(SCOPE.key)
    await pacer.settle(result.reservation, NO_COST, FULL)
    assert 0 == store.model.in_flight(SCOPE.key)


def test_reservation_is_a_plain_record() -> None:
    r = Reservation("k", "id", ONE, NOW, 1)
    assert (False, r) == (r.shared, Reservation("k", "id", ONE, NOW, 1))


# ---------------------------------------------------------------- against the rate-limited fake


async def test_paced_clients_never_see_a_429_and_use_the_limit(aiohttp_server: Any) -> None:
    """Three clients offer 3 x 20 requests at once to a fake allowing 30 per minute, through
    the pacer: acquire, send, feed the answer's headers back, settle. Virtual time, shared
    by the fake and the pacer. No 429 is sent, and the 60 requests take about the time the
    limit allows (28 from the full bucket, then one every 2 s), not more."""
    time = VirtualTime()
    fake = FakeUpstream(limits=Limits(rpm=30, tpm=3000), clock=time)
    server = await aiohttp_server(fake.make_app())
    url = str(server.make_url("/v1/chat/completions"))
    pacer = Pacer(MemoryPacingStore(), clock=time, sleep=time.sleep)
    cost = Cost(5, 15)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]}

    async def one(session: aiohttp.ClientSession, client: str) -> int:
        decision = await pacer.acquire(SCOPE, cost, DEFAULT, budget_s=600, client=client)
        assert isinstance(decision, Admitted)
        async with session.post(url, json={**body, "max_tokens": 15}) as resp:
            await resp.read()
            snapshot = parse_snapshot(resp.headers, time())
        await pacer.observe(SCOPE, snapshot, decision.reservation, DEFAULT)
        await pacer.settle(decision.reservation, cost, DEFAULT)
        return resp.status

    async with aiohttp.ClientSession() as session:
        statuses = await guarded(
            asyncio.gather(*(one(session, c) for _ in range(20) for c in "ABC"))
        )
    assert ([200] * 60, 60, 0) == (
        statuses,
        fake.limiter.counts().served,
        fake.limiter.counts().limited,
    )
    # 30 x 0.95 = 28.5 from the full bucket, 31.5 more at 0.5/s: about 63 s of virtual time
    assert 60 <= time.now - NOW <= 66


async def test_remaining_and_queue_length_for_metrics() -> None:
    pacer, time = await seeded_pacer(requests_snapshot(60, 10))
    assert {Bucket.REQUESTS: 10.0} == pacer.remaining(SCOPE)
    assert isinstance(await pacer.acquire(SCOPE, ONE, FULL, budget_s=0), Admitted)
    time.now += 3
    assert {Bucket.REQUESTS: pytest.approx(12.0)} == pacer.remaining(SCOPE)
    other = Scope("openai", "zzz", LimitKind.MODEL, "gpt-4o")
    assert ({}, 0) == (pacer.remaining(other), pacer.queue_length(other))


async def test_a_request_that_cannot_wait_for_the_first_answer_goes_anyway() -> None:
    """Nothing says the provider would refuse it: it is admitted (and counted), not told
    to retry."""
    time = VirtualTime()
    pacer = Pacer(MemoryPacingStore(), clock=time, sleep=time.sleep)
    first = await pacer.acquire(SCOPE, ONE, FULL, budget_s=0)
    second = await pacer.acquire(SCOPE, ONE, FULL, budget_s=0)
    assert isinstance(first, Admitted) and isinstance(second, Admitted)
    assert (1, 2) == (first.reservation.seq, second.reservation.seq)
