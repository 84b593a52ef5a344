"""Rate-limit snapshots from provider headers, and the honest next-admission time
(proxy.resilience.ratelimits)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.resilience.ratelimits import (
    Bucket,
    BucketLimit,
    Cost,
    Delay,
    LimitSnapshot,
    WaitReason,
    admission_delay,
    bucket_level,
    parse_snapshot,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
NOW_DT = datetime.fromtimestamp(NOW, tz=UTC)
R, T, IN, OUT = Bucket.REQUESTS, Bucket.TOKENS, Bucket.INPUT_TOKENS, Bucket.OUTPUT_TOKENS


def rfc3339(offset_s: float) -> str:
    return (NOW_DT + timedelta(seconds=offset_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


def http_date(offset_s: float) -> str:
    return (NOW_DT + timedelta(seconds=offset_s)).strftime("%a, %d %b %Y %H:%M:%S GMT")


OPENAI = {
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-remaining-requests": "59",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-tokens": "149990",
    "x-ratelimit-reset-tokens": "4ms",
}
ANTHROPIC = {
    "anthropic-ratelimit-requests-limit": "50",
    "anthropic-ratelimit-requests-remaining": "49",
    "anthropic-ratelimit-requests-reset": rfc3339(2),
    "anthropic-ratelimit-input-tokens-limit": "30000",
    "anthropic-ratelimit-input-tokens-remaining": "29000",
    "anthropic-ratelimit-input-tokens-reset": rfc3339(2),
    "anthropic-ratelimit-output-tokens-limit": "8000",
    "anthropic-ratelimit-output-tokens-remaining": "7000",
    "anthropic-ratelimit-output-tokens-reset": rfc3339(8),
    "anthropic-ratelimit-tokens-limit": "8000",
    "anthropic-ratelimit-tokens-remaining": "7000",
    "anthropic-ratelimit-tokens-reset": rfc3339(8),
}


@pytest.mark.parametrize(
    ("headers", "buckets"),
    [
        pytest.param(
            OPENAI,
            {R: BucketLimit(60, 59, NOW + 1), T: BucketLimit(150000, 149990, NOW + 0.004)},
            id="openai",
        ),
        pytest.param(
            {k.upper(): v for k, v in OPENAI.items()},
            {R: BucketLimit(60, 59, NOW + 1), T: BucketLimit(150000, 149990, NOW + 0.004)},
            id="openai-header-case",
        ),
        pytest.param(
            {
                "x-ratelimit-limit-requests": "10000",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "6m0s",
            },
            {R: BucketLimit(10000, 0, NOW + 360)},
            id="openai-go-minutes",
        ),
        pytest.param(
            {
                "x-ratelimit-limit-tokens": "100",
                "x-ratelimit-remaining-tokens": "5",
                "x-ratelimit-reset-tokens": "12ms",
            },
            {T: BucketLimit(100, 5, NOW + 0.012)},
            id="openai-12ms-is-not-12-minutes",
        ),
        pytest.param(
            {
                "x-ratelimit-limit-tokens_usage_based": "1000",
                "x-ratelimit-remaining-tokens_usage_based": "10",
                "x-ratelimit-reset-tokens_usage_based": "1h2m3s",
            },
            {T: BucketLimit(1000, 10, NOW + 3723)},
            id="openai-usage-based-variant",
        ),
        pytest.param(
            {
                "x-ratelimit-limit-tokens": "-1",
                "x-ratelimit-remaining-tokens": "-1",
                "x-ratelimit-reset-tokens": "0",
                "x-ratelimit-limit-requests": "100",
                "x-ratelimit-remaining-requests": "99",
                "x-ratelimit-reset-requests": "0",
            },
            {R: BucketLimit(100, 99, None)},
            id="azure-sentinels-unknown",
        ),
        pytest.param(
            {"x-ratelimit-limit-requests": "0", "x-ratelimit-remaining-requests": "0"},
            {},
            id="limit-zero-is-unknown",
        ),
        pytest.param(
            {"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "-1"},
            {},
            id="remaining-minus-one-is-unknown",
        ),
        pytest.param({"x-ratelimit-limit-requests": "10"}, {}, id="no-remaining"),
        pytest.param(
            {"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "12"},
            {R: BucketLimit(10, 10, None)},
            id="remaining-capped-at-limit",
        ),
        pytest.param(
            {
                "x-ratelimit-limit-requests": "10",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "-1",
            },
            {R: BucketLimit(10, 0, None)},
            id="remaining-zero-is-real",
        ),
        pytest.param(
            {
                "x-ratelimit-limit-requests": "10",
                "x-ratelimit-remaining-requests": "3",
                "x-ratelimit-reset-requests": "2.5",
            },
            {R: BucketLimit(10, 3, NOW + 2.5)},
            id="compatible-server-bare-seconds",
        ),
        pytest.param(
            ANTHROPIC,
            {
                R: BucketLimit(50, 49, NOW + 2),
                IN: BucketLimit(30000, 29000, NOW + 2),
                OUT: BucketLimit(8000, 7000, NOW + 8),
            },
            id="anthropic-split-drops-most-restrictive-tokens",
        ),
        pytest.param(
            {
                "anthropic-ratelimit-tokens-limit": "40000",
                "anthropic-ratelimit-tokens-remaining": "39000",
                "anthropic-ratelimit-tokens-reset": rfc3339(2),
            },
            {T: BucketLimit(40000, 39000, NOW + 2)},
            id="anthropic-combined-tokens-only",
        ),
        pytest.param(
            {
                "anthropic-ratelimit-requests-limit": "50",
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": "2023-11-14T23:13:20+01:00",
            },
            {R: BucketLimit(50, 0, NOW)},
            id="anthropic-offset-zone",
        ),
    ],
)
def test_parse_buckets(headers: dict[str, str], buckets: dict[Bucket, BucketLimit]) -> None:
    snapshot = parse_snapshot(headers, NOW)
    assert buckets == dict(snapshot.buckets)
    assert (NOW, (), 0.0) == (snapshot.observed_at, snapshot.unparsed, snapshot.skew_s)


@pytest.mark.parametrize(
    ("headers", "retry_at"),
    [
        ({"retry-after": "30"}, NOW + 30),
        ({"retry-after": "1.5"}, NOW + 1.5),
        ({"retry-after": http_date(20)}, NOW + 20),
        ({"retry-after": http_date(-20)}, NOW),
        ({"retry-after-ms": "250"}, NOW + 0.25),
        ({"x-ms-retry-after-ms": "1250", "retry-after": "9"}, NOW + 1.25),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], retry_at: float | None) -> None:
    assert retry_at == parse_snapshot(headers, NOW).retry_at


@pytest.mark.parametrize(
    ("headers", "unparsed"),
    [
        (
            {
                "x-ratelimit-limit-requests": "many",
                "x-ratelimit-remaining-requests": "1",
            },
            ("x-ratelimit-limit-requests: many",),
        ),
        (
            {
                "x-ratelimit-limit-requests": "10",
                "x-ratelimit-remaining-requests": "1",
                "x-ratelimit-reset-requests": "soon",
            },
            ("x-ratelimit-reset-requests: soon",),
        ),
        ({"retry-after": "later"}, ("retry-after: later",)),
        (
            {"anthropic-ratelimit-requests-reset": "tomorrow"},
            ("anthropic-ratelimit-requests-reset: tomorrow",),
        ),
    ],
)
def test_garbage_is_reported_not_raised(headers: dict[str, str], unparsed: tuple[str, ...]) -> None:
    assert unparsed == parse_snapshot(headers, NOW).unparsed


@pytest.mark.parametrize(
    ("skew_s", "expected_skew", "error_s"),
    [(0, 0.0, 0.5), (1, 0.0, 1.0), (30, 30.5, 0.5), (-30, -29.5, 0.5), (3600, 3600.5, 0.5)],
)
def test_clock_skew_from_the_date_header_moves_absolute_instants(
    skew_s: float, expected_skew: float, error_s: float
) -> None:
    """A provider clock `skew_s` ahead states its instants `skew_s` later; on our clock the
    bucket is full 5 s from now. Date has 1 s resolution, so a skew under 2 s is not
    corrected (off by up to the skew) and a larger one is corrected within 0.5 s."""
    headers = {
        "date": http_date(skew_s),
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "46",
        "anthropic-ratelimit-requests-reset": rfc3339(skew_s + 5),
        "retry-after": http_date(skew_s + 4),
    }
    snapshot = parse_snapshot(headers, NOW)
    assert expected_skew == snapshot.skew_s
    assert snapshot.buckets[R].reset_at == pytest.approx(NOW + 5, abs=error_s)
    assert snapshot.retry_at == pytest.approx(NOW + 4, abs=error_s)


@pytest.mark.parametrize(
    ("headers", "not_before"),
    [
        pytest.param({"retry-after": "2"}, NOW + 2, id="alone-at-face-value"),
        pytest.param({**OPENAI, "retry-after": "2"}, NOW + 1, id="whole-seconds-rounded-up"),
        pytest.param({**OPENAI, "retry-after": "1.5"}, NOW + 1.5, id="fraction-is-exact"),
        pytest.param({**OPENAI, "retry-after-ms": "1200"}, NOW + 1.2, id="ms-is-exact"),
        pytest.param({**OPENAI, "retry-after": "0"}, NOW, id="zero"),
        pytest.param(OPENAI, None, id="none"),
    ],
)
def test_not_before_allows_for_a_rounded_retry_after(
    headers: dict[str, str], not_before: float | None
) -> None:
    """A 1.2 s refill is sent as "retry-after: 2"; with bucket headers to tell the rest the
    provider may admit from 1 s on, and the bucket arithmetic decides within that second."""
    assert not_before == parse_snapshot(headers, NOW).not_before


def test_relative_resets_ignore_skew() -> None:
    headers = {**OPENAI, "date": http_date(600)}
    assert NOW + 1 == parse_snapshot(headers, NOW).buckets[R].reset_at


# ---------------------------------------------------------------- the honest wait


def snap(**buckets: tuple[float, float]) -> LimitSnapshot:
    names = {"r": R, "t": T, "i": IN, "o": OUT}
    return LimitSnapshot(
        observed_at=NOW,
        buckets={names[k]: BucketLimit(lim, rem, None) for k, (lim, rem) in buckets.items()},
    )


@pytest.mark.parametrize(
    ("snapshot", "cost", "now", "expected"),
    [
        pytest.param(snap(r=(60, 5)), Cost(), NOW, Delay(0.0, None), id="room"),
        pytest.param(snap(r=(60, 0)), Cost(), NOW, Delay(1.0, WaitReason.REQUESTS), id="rpm-1s"),
        pytest.param(
            snap(r=(60, 0)), Cost(), NOW + 0.25, Delay(0.75, WaitReason.REQUESTS), id="refilling"
        ),
        pytest.param(snap(r=(60, 0)), Cost(), NOW + 5, Delay(0.0, None), id="refilled"),
        pytest.param(
            snap(t=(60000, 100)), Cost(900, 100), NOW, Delay(0.9, WaitReason.TOKENS), id="tokens"
        ),
        pytest.param(
            snap(r=(60, 0), t=(60000, 0)),
            Cost(1000, 1000),
            NOW,
            Delay(2.0, WaitReason.TOKENS),
            id="tokens-bind-over-requests",
        ),
        pytest.param(
            snap(i=(6000, 6000), o=(600, 0)),
            Cost(100, 50),
            NOW,
            Delay(5.0, WaitReason.OUTPUT_TOKENS),
            id="anthropic-output-split",
        ),
        pytest.param(
            snap(t=(600, 600)), Cost(5000, 0), NOW, Delay(0.0, None), id="too-large-goes-when-full"
        ),
        pytest.param(
            snap(t=(600, 500)),
            Cost(5000, 0),
            NOW,
            Delay(10.0, WaitReason.TOKENS),
            id="too-large-waits-for-full",
        ),
        pytest.param(
            LimitSnapshot(NOW, {R: BucketLimit(60, 10, None)}, retry_at=NOW + 3),
            Cost(),
            NOW,
            Delay(3.0, WaitReason.RETRY_AFTER),
            id="retry-after-binds",
        ),
        pytest.param(
            LimitSnapshot(NOW, {R: BucketLimit(60, 0, None)}, retry_at=NOW + 0.5),
            Cost(),
            NOW,
            Delay(1.0, WaitReason.REQUESTS),
            id="bucket-binds-over-retry-after",
        ),
    ],
)
def test_admission_delay(snapshot: LimitSnapshot, cost: Cost, now: float, expected: Delay) -> None:
    assert expected == admission_delay(snapshot, cost, now)


def test_next_admission_is_not_the_full_reset() -> None:
    """The issue's case: 60 RPM, empty, reset says 60 s to a full bucket; one request may go
    after 1 s."""
    headers = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1m0s",
    }
    snapshot = parse_snapshot(headers, NOW)
    assert NOW + 60 == snapshot.buckets[R].reset_at
    assert Delay(1.0, WaitReason.REQUESTS) == admission_delay(snapshot, Cost(), NOW)


def test_target_utilisation_keeps_a_reserve() -> None:
    """At 0.95 of 100 requests, 5 stay in reserve: with 6 left one more may go, with 5 not."""
    assert Delay(0.0, None) == admission_delay(
        snap(r=(100, 6)), Cost(), NOW, target_utilisation=0.95
    )
    delay = admission_delay(snap(r=(100, 5)), Cost(), NOW, target_utilisation=0.95)
    assert (WaitReason.REQUESTS, pytest.approx(0.6)) == (delay.reason, delay.seconds)


def test_in_flight_counts_against_the_level() -> None:
    delay = admission_delay(snap(r=(60, 3)), Cost(), NOW, in_flight=Cost(0, 0, 3))
    assert Delay(1.0, WaitReason.REQUESTS) == delay


def test_window_sets_the_refill_rate() -> None:
    assert Delay(2.0, WaitReason.REQUESTS) == admission_delay(
        snap(r=(10, 0)), Cost(), NOW, window_s=20
    )


@pytest.mark.parametrize(
    ("bucket", "expected"),
    [(R, 1.0), (T, 1500.0), (IN, 1000.0), (OUT, 500.0)],
)
def test_cost_amount(bucket: Bucket, expected: float) -> None:
    assert expected == Cost(1000, 500).amount(bucket)


def test_cost_adds() -> None:
    assert Cost(3, 5, 2) == Cost(1, 2) + Cost(2, 3)


@given(
    limit=st.integers(1, 10**6),
    remaining=st.integers(0, 10**6),
    cost=st.integers(0, 10**6),
)
def test_waiting_the_delay_makes_the_cost_fit(limit: int, remaining: int, cost: int) -> None:
    """Property: after the stated delay the bucket holds the cost (or is full)."""
    snapshot = snap(t=(limit, min(limit, remaining)))
    delay = admission_delay(snapshot, Cost(cost, 0), NOW)
    level = bucket_level(snapshot.buckets[T], NOW, NOW + delay.seconds, 60.0)
    assert level >= min(cost, limit) - 1e-6 * limit
