"""Wait hints from provider rate-limit headers (proxy.resilience.hints)."""

from __future__ import annotations

import gzip
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.resilience.hints import (
    WaitHint,
    backoff,
    is_quota_exhausted,
    parse_go_duration,
    parse_retry_after,
    parse_rfc3339,
    parse_wait,
    proactive_cooldown,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
NOW_DT = datetime.fromtimestamp(NOW, tz=UTC)


def http_date(offset_s: float) -> str:
    """IMF-fixdate `offset_s` seconds from NOW."""
    return (NOW_DT + timedelta(seconds=offset_s)).strftime("%a, %d %b %Y %H:%M:%S GMT")


def rfc3339(offset_s: float, fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    return (NOW_DT + timedelta(seconds=offset_s)).strftime(fmt)


GARBAGE = ["soon", "", "   ", "1e999", "NaN", "inf", "-inf", "-5", "+5", "0x10", "5 s", "\u0663"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("12ms", 0.012),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("1h2m3s", 3723.0),
        ("0.5s", 0.5),
        ("0s", 0.0),
        ("0", 0.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("2m0.25s", 120.25),
        ("1s500ms", 1.5),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("100ns", 1e-7),
        (" 7s ", 7.0),
    ],
)
def test_go_duration_parses_every_unit(text: str, expected: float) -> None:
    assert expected == pytest.approx(parse_go_duration(text))


def test_go_duration_reads_12ms_as_milliseconds_not_minutes() -> None:
    assert 0.012 == pytest.approx(parse_go_duration("12ms"))


@pytest.mark.parametrize(
    "text", [*GARBAGE, "12", "1.5", "-1s", "1x", "s", "ms", "1e3s", "6m0", "1h 2m", "h1", ".s"]
)
def test_go_duration_rejects_garbage_without_raising(text: str) -> None:
    assert parse_go_duration(text) is None


def _go_format(h: int, m: int, s_milli: int, ms: int) -> tuple[str, float]:
    text = ""
    if h:
        text += f"{h}h"
    if m:
        text += f"{m}m"
    if s_milli:
        whole, frac = divmod(s_milli, 1000)
        text += f"{whole}.{frac:03d}s" if frac else f"{whole}s"
    if ms:
        text += f"{ms}ms"
    return text or "0s", h * 3600 + m * 60 + s_milli / 1000 + ms / 1000


@given(
    h=st.integers(0, 10_000),
    m=st.integers(0, 59),
    s_milli=st.integers(0, 59_999),
    ms=st.integers(0, 999),
)
def test_go_duration_round_trips_generated_combinations(
    h: int, m: int, s_milli: int, ms: int
) -> None:
    text, expected = _go_format(h, m, s_milli, ms)
    assert expected == pytest.approx(parse_go_duration(text), rel=1e-12, abs=1e-9)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30", 30.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (" 2 ", 2.0),
        (".5", 0.5),
        (http_date(120), 120.0),
        (http_date(-30), 0.0),  # past date: clock skew, clamp to 0
        ("Tuesday, 14-Nov-23 22:15:20 GMT", 120.0),  # RFC 850
        ("Tue Nov 14 22:15:20 2023", 120.0),  # asctime, no zone: GMT
    ],
)
def test_retry_after_reads_seconds_and_http_dates(text: str, expected: float) -> None:
    assert expected == pytest.approx(parse_retry_after(text, NOW))


@pytest.mark.parametrize("text", [*GARBAGE, "Mon, 32 Dec 2023 25:00:00 GMT", "14 Nov 2023"])
def test_retry_after_rejects_garbage_and_negative_deltas(text: str) -> None:
    assert parse_retry_after(text, NOW) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (rfc3339(30), 30.0),
        (rfc3339(30, "%Y-%m-%dT%H:%M:%S.123456789Z"), 30.123456),
        (rfc3339(30, "%Y-%m-%dt%H:%M:%Sz"), 30.0),
        ("2023-11-14T23:13:50+01:00", 30.0),
        ("2023-11-14T21:13:50-01:00", 30.0),
        (rfc3339(-5), 0.0),  # past: clock skew, clamp to 0
    ],
)
def test_rfc3339_gives_seconds_until_the_instant(text: str, expected: float) -> None:
    assert expected == pytest.approx(parse_rfc3339(text, NOW))


@pytest.mark.parametrize(
    "text", [*GARBAGE, "2023-11-14T22:13:50", "2023-11-14", "2023-13-14T22:13:50Z", "30"]
)
def test_rfc3339_rejects_garbage_and_zoneless_times(text: str) -> None:
    assert parse_rfc3339(text, NOW) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, WaitHint(1.5, "retry-after-ms")),
        ({"x-ms-retry-after-ms": "250.5"}, WaitHint(0.2505, "x-ms-retry-after-ms")),
        ({"Retry-After": "7"}, WaitHint(7.0, "retry-after")),
        ({"RETRY-AFTER": http_date(90)}, WaitHint(90.0, "retry-after")),
        ({"retry-after": "0"}, WaitHint(0.0, "retry-after")),
        ({"retry-after-ms": "2000", "retry-after": "9"}, WaitHint(2.0, "retry-after-ms")),
        ({"retry-after": "9", "x-ratelimit-reset-requests": "1s"}, WaitHint(9.0, "retry-after")),
        (
            {"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-reset-tokens": "12ms"},
            WaitHint(360.0, "x-ratelimit-reset-requests"),
        ),
        (
            {
                "x-ratelimit-remaining-requests": "10",
                "x-ratelimit-reset-requests": "6m0s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "12ms",
            },
            WaitHint(0.012, "x-ratelimit-reset-tokens"),
        ),
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "2s",
                "x-ratelimit-remaining-tokens": "5000",
                "x-ratelimit-reset-tokens": "1m0s",
            },
            WaitHint(2.0, "x-ratelimit-reset-requests"),
        ),
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "2s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "3s",
            },
            WaitHint(3.0, "x-ratelimit-reset-tokens"),
        ),
        ({"x-ratelimit-reset-tokens": "1.5"}, WaitHint(1.5, "x-ratelimit-reset-tokens")),
        (
            {
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": rfc3339(20),
                "anthropic-ratelimit-tokens-remaining": "0",
                "anthropic-ratelimit-tokens-reset": rfc3339(40),
                "anthropic-ratelimit-output-tokens-remaining": "900",
                "anthropic-ratelimit-output-tokens-reset": rfc3339(50),
            },
            WaitHint(40.0, "anthropic-ratelimit-tokens-reset"),
        ),
        (
            {
                "anthropic-ratelimit-input-tokens-reset": rfc3339(10),
                "anthropic-ratelimit-output-tokens-reset": rfc3339(25),
            },
            WaitHint(25.0, "anthropic-ratelimit-output-tokens-reset"),
        ),
        (
            {"anthropic-ratelimit-unified-reset": str(int(NOW) + 3600)},
            WaitHint(3600.0, "anthropic-ratelimit-unified-reset"),
        ),
        (
            {"retry-after": "11", "anthropic-ratelimit-requests-reset": rfc3339(60)},
            WaitHint(11.0, "retry-after"),
        ),
    ],
)
def test_parse_wait_picks_the_first_usable_source(
    headers: dict[str, str], expected: WaitHint
) -> None:
    hint, unparsed = parse_wait(headers, now=NOW)
    assert hint is not None
    assert (expected.source, pytest.approx(expected.seconds)) == (hint.source, hint.seconds)
    assert [] == unparsed


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"content-type": "application/json"},
        # Azure Responses API: -1 / 0 mean "unknown", not "reset now"
        {"x-ratelimit-limit-tokens": "-1", "x-ratelimit-reset-tokens": "0"},
        {"x-ratelimit-reset-requests": "-1", "x-ratelimit-remaining-requests": "-1"},
        {"anthropic-ratelimit-unified-reset": "0"},
        {"anthropic-ratelimit-requests-reset": rfc3339(-10)},  # already past
    ],
)
def test_parse_wait_has_no_hint_when_nothing_is_known(headers: dict[str, str]) -> None:
    assert (None, []) == parse_wait(headers, now=NOW)


def test_parse_wait_ignores_azure_unknown_tokens_reset_and_uses_requests_reset() -> None:
    headers = {
        "x-ratelimit-limit-tokens": "-1",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "0",
        "x-ratelimit-reset-requests": "4s",
    }
    assert (WaitHint(4.0, "x-ratelimit-reset-requests"), []) == parse_wait(headers, now=NOW)


def test_parse_wait_does_not_treat_remaining_zero_with_limit_minus_one_as_exhausted() -> None:
    headers = {
        "x-ratelimit-limit-tokens": "-1",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "1s",
        "x-ratelimit-remaining-requests": "5",
        "x-ratelimit-reset-requests": "8s",
    }
    assert (WaitHint(8.0, "x-ratelimit-reset-requests"), []) == parse_wait(headers, now=NOW)


@pytest.mark.parametrize("value", GARBAGE)
def test_parse_wait_returns_garbage_as_unparsed_and_falls_through(value: str) -> None:
    headers = {"Retry-After-Ms": value, "retry-after": value, "x-ratelimit-reset-requests": "3s"}
    hint, unparsed = parse_wait(headers, now=NOW)
    assert WaitHint(3.0, "x-ratelimit-reset-requests") == hint
    assert [f"retry-after-ms: {value}", f"retry-after: {value}"] == unparsed


def test_parse_wait_reports_every_unparseable_header_it_read() -> None:
    headers = {
        "x-ratelimit-reset-requests": "soon",
        "x-ratelimit-reset-tokens": "5s",
        "x-ratelimit-remaining-tokens": "lots",
        "anthropic-ratelimit-unified-reset": "NaN",
    }
    hint, unparsed = parse_wait(headers, now=NOW)
    assert WaitHint(5.0, "x-ratelimit-reset-tokens") == hint
    assert ["x-ratelimit-reset-requests: soon", "x-ratelimit-remaining-tokens: lots"] == unparsed


def test_parse_wait_reports_garbage_even_when_no_hint_is_found() -> None:
    headers = {"anthropic-ratelimit-unified-reset": "tomorrow", "retry-after": "soon"}
    assert (
        None,
        ["retry-after: soon", "anthropic-ratelimit-unified-reset: tomorrow"],
    ) == parse_wait(headers, now=NOW)


def test_parse_wait_accepts_a_case_insensitive_multidict() -> None:
    headers = CIMultiDict({"X-RateLimit-Reset-Requests": "1m0s"})
    assert (WaitHint(60.0, "x-ratelimit-reset-requests"), []) == parse_wait(headers, now=NOW)


def test_parse_wait_reads_the_clock_when_now_is_omitted() -> None:
    hint, _ = parse_wait({"anthropic-ratelimit-unified-reset": "1"})
    assert hint is None  # epoch 1 is long past, so no usable reset


class _TopOfRange(random.Random):
    """An rng whose uniform(a, b) returns b, exposing the backoff ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_ceiling_doubles_from_base_up_to_cap() -> None:
    ceilings = [backoff(n, rng=_TopOfRange()) for n in range(7)]
    assert [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0] == ceilings


@pytest.mark.parametrize("attempt", [-3, 0, 1, 2, 5, 63, 64, 10_000])
def test_backoff_stays_within_zero_and_ceiling(attempt: int) -> None:
    rng = random.Random(1234)
    ceiling = 8.0 if attempt >= 4 else 0.5 * 2 ** max(attempt, 0)
    for _ in range(200):
        value = backoff(attempt, rng=rng)
        assert 0.0 <= value <= ceiling


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    first = [backoff(n, base_s=0.1, cap_s=2.0, rng=random.Random(7)) for n in range(10)]
    second = [backoff(n, base_s=0.1, cap_s=2.0, rng=random.Random(7)) for n in range(10)]
    assert first == second


def test_backoff_is_jittered_not_constant() -> None:
    rng = random.Random(42)
    assert len({backoff(3, rng=rng) for _ in range(20)}) > 1


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20s"}, 20.0),
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m0s"}, 60.0),
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "2s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "5s",
            },
            5.0,
        ),
        (
            {
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": rfc3339(15),
            },
            15.0,
        ),
        ({"x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "20s"}, None),
        ({"x-ratelimit-remaining-requests": "0"}, None),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "0s"}, None),
        (
            {
                "x-ratelimit-limit-tokens": "-1",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "9s",
            },
            None,
        ),
        ({"x-ratelimit-remaining-requests": "zero", "x-ratelimit-reset-requests": "1s"}, None),
        ({"retry-after": "30"}, None),
        ({}, None),
    ],
)
def test_proactive_cooldown_only_for_exhausted_buckets(
    headers: dict[str, str], expected: float | None
) -> None:
    assert expected == proactive_cooldown(headers, NOW)


def _openai_error(code: str, err_type: str = "insufficient_quota") -> bytes:
    return json.dumps({"error": {"message": "x", "type": err_type, "code": code}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, _openai_error("insufficient_quota"), True),
        (429, _openai_error("billing_hard_limit_reached", "requests"), True),
        (429, _openai_error("rate_limit_exceeded", "requests"), False),
        (402, b"", True),
        (
            400,
            b'{"type":"error","error":{"type":"billing_error","message":"credit too low"}}',
            True,
        ),
        (429, b'{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}', False),
        (429, gzip.compress(_openai_error("insufficient_quota")), True),
        (429, b"<html>insufficient_quota</html>", True),
        (429, b"<html>Too Many Requests</html>", False),
        (429, b"", False),
        (429, b"\x1f\x8bnot really gzip", False),
        (429, b"[1, 2]", False),
        (429, b'{"error": "insufficient_quota"}', True),
        (429, b'{"error": "rate limited"}', False),
        (200, _openai_error("insufficient_quota"), False),
    ],
)
def test_is_quota_exhausted_recognises_quota_and_billing_errors(
    status: int, body: bytes, expected: bool
) -> None:
    assert expected == is_quota_exhausted(status, body)
