"""Secrets, hashes, budgets, route/model permissions and time specs: pure functions."""

from __future__ import annotations

import hashlib

import pytest
from multidict import CIMultiDict

from proxy.auth.keys import (
    Budget,
    BudgetPeriod,
    KeyLimits,
    KeyRecord,
    hash_secret,
    looks_like_secret,
    new_key_id,
    new_secret,
    parse_budget,
)
from proxy.auth.limits import Period, budget_period, usd_to_nanos
from proxy.auth.timespec import parse_duration, parse_expires, parse_since
from proxy.auth.wire import client_secret, requested_output_tokens

T0 = 1_760_000_000.0  # 2025-10-09 08:53:20 UTC


def test_secrets_are_prefixed_url_safe_and_carry_32_random_bytes() -> None:
    secrets = {new_secret() for _ in range(200)}
    assert 200 == len(secrets)
    for secret in secrets:
        assert secret.startswith("lp-")
        assert 46 == len(secret)  # "lp-" + base64url of 32 bytes, unpadded
        assert looks_like_secret(secret)


@pytest.mark.parametrize(
    "value",
    ["", "lp-", "sk-" + "a" * 43, "lp-" + "a" * 42, "lp-" + "a" * 44, "lp-" + "a" * 42 + "/"],
)
def test_malformed_secrets_are_recognised_without_a_lookup(value: str) -> None:
    assert not looks_like_secret(value)


def test_the_hash_is_keyed_stable_and_not_a_plain_digest() -> None:
    secret = new_secret()
    assert hash_secret(secret) == hash_secret(secret)
    assert 64 == len(hash_secret(secret))
    assert hash_secret(secret) != hashlib.blake2b(secret.encode(), digest_size=32).hexdigest()
    assert hash_secret(secret) != hashlib.sha256(secret.encode()).hexdigest()
    assert hash_secret(secret) != hash_secret(new_secret())


def test_key_ids_are_public_and_distinct() -> None:
    ids = {new_key_id() for _ in range(100)}
    assert 100 == len(ids) and all(i.startswith("key_") for i in ids)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50/month", Budget(50.0, BudgetPeriod.MONTH)),
        ("2.5/day", Budget(2.5, BudgetPeriod.DAY)),
        ("$100/total", Budget(100.0, BudgetPeriod.TOTAL)),
        ("100", Budget(100.0, BudgetPeriod.TOTAL)),
        (" 7 / Day ", Budget(7.0, BudgetPeriod.DAY)),
    ],
)
def test_parse_budget(text: str, expected: Budget) -> None:
    assert expected == parse_budget(text)


@pytest.mark.parametrize("text", ["", "50/week", "abc/month", "0/day", "-5/day"])
def test_parse_budget_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_budget(text)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rpm"):
        KeyLimits(rpm=0)


KEY = KeyRecord(
    id="key_1", name="a", key_hash="h", secret_hint="lp-abcd", created=T0,
    routes=("/openai",), models=("gpt-4o*", "o3"),
)  # fmt: skip


@pytest.mark.parametrize(
    ("model", "allowed"),
    [
        ("gpt-4o", True),
        ("gpt-4o-mini-2024-07-18", True),
        ("GPT-4o", True),
        ("o3", True),
        ("o3-pro", False),
        ("gpt-5", False),
        (None, True),  # a request naming no model (GET /v1/models) is not model-restricted
    ],
)
def test_model_patterns(model: str | None, allowed: bool) -> None:
    assert allowed == KEY.allows_model(model)


def test_routes_are_matched_exactly_and_empty_means_all() -> None:
    assert (True, False, False) == (
        KEY.allows_route("/openai"), KEY.allows_route("/anthropic"), KEY.allows_route("/open")
    )  # fmt: skip
    anything = KeyRecord("key_2", "b", "h2", "lp-efgh", T0)
    assert anything.allows_route("/anthropic") and anything.allows_model("claude-opus-4")


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (BudgetPeriod.DAY, Period("d2025-10-09", 1759968000.0, 1760054400.0)),
        (BudgetPeriod.MONTH, Period("m2025-10", 1759276800.0, 1761955200.0)),
        (BudgetPeriod.TOTAL, Period("total", 0.0, None)),
    ],
)
def test_budget_periods_are_utc_calendar_periods(kind: BudgetPeriod, expected: Period) -> None:
    assert expected == budget_period(kind, T0)


def test_december_rolls_into_january() -> None:
    dec = budget_period(BudgetPeriod.MONTH, 1766000000.0)  # 2025-12-17
    assert ("m2025-12", 1764547200.0, 1767225600.0) == (dec.id, dec.start, dec.end)


@pytest.mark.parametrize(
    ("usd", "up", "nanos"),
    [(0.0125, False, 12_500_000), (0.0125, True, 12_500_000), (1e-10, True, 1), (1e-10, False, 0)],
)
def test_usd_to_nanos(usd: float, up: bool, nanos: int) -> None:
    assert nanos == usd_to_nanos(usd, up=up)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("12h", 43200), ("7d", 604800), ("2w", 1209600)],
)
def test_durations(text: str, seconds: float) -> None:
    assert seconds == parse_duration(text)


def test_since_and_expires_take_durations_or_dates() -> None:
    assert T0 - 7 * 86400 == parse_since("7d", T0)
    assert T0 + 30 * 86400 == parse_expires("30d", T0)
    assert 1759276800.0 == parse_since("2025-10-01", T0)
    assert 1759280400.0 == parse_expires("2025-10-01T01:00:00+00:00", T0)
    with pytest.raises(ValueError):
        parse_since("last week", T0)


@pytest.mark.parametrize(
    ("headers", "secret"),
    [
        ({"Authorization": "Bearer lp-abc"}, "lp-abc"),
        ({"Authorization": "bearer  lp-abc "}, "lp-abc"),
        ({"x-api-key": "lp-abc"}, "lp-abc"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, None),
        ({"Authorization": "Bearer "}, None),
        ({}, None),
    ],
)
def test_the_client_key_is_read_where_sdks_put_it(
    headers: dict[str, str], secret: str | None
) -> None:
    assert secret == client_secret(CIMultiDict(headers))


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        ({"max_tokens": 1024}, 1024),
        ({"max_completion_tokens": 300, "max_tokens": 1024}, 300),
        ({"max_output_tokens": 2048}, 2048),
        ({"max_tokens": None}, None),
        ({"max_tokens": True}, None),
        ({}, None),
        (None, None),
    ],
)
def test_the_requested_output_cap(body: dict[str, object] | None, tokens: int | None) -> None:
    assert tokens == requested_output_tokens(body)
