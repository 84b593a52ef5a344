"""A provider's rate-limit headers as a typed snapshot, and the honest wait it implies (pure).

OpenAI and Anthropic both refill their buckets continuously (a token bucket, not a fixed
window): a bucket of ``limit`` per ``window_s`` gains ``limit / window_s`` per second. Their
reset headers give the time until the bucket is FULL again, which is the wrong answer to "when
may the next request go": a request of cost ``c`` fits once ``(c - remaining) / rate`` seconds
have passed. Answering the full-refill time made clients wait 60 s where 1 s would do.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from .hints import parse_decimal, parse_go_duration, parse_retry_after, parse_rfc3339_instant

__all__ = [
    "DEFAULT_WINDOW_S",
    "Bucket",
    "BucketLimit",
    "Cost",
    "Delay",
    "LimitSnapshot",
    "WaitReason",
    "admission_delay",
    "bucket_level",
    "parse_snapshot",
]

DEFAULT_WINDOW_S = 60.0
"""Both providers state their limits per minute (RPM, TPM, ITPM, OTPM)."""
_Parse = Callable[[str], float | None]
_FIT_SLACK_S = 1e-6
_SKEW_TOLERANCE_S = 2.0
"""A Date header has 1 s resolution; only a larger disagreement is clock skew."""


class Bucket(StrEnum):
    REQUESTS = "requests"
    TOKENS = "tokens"
    """OpenAI: input + output. Anthropic (older answers without the split): the same."""
    INPUT_TOKENS = "input-tokens"
    OUTPUT_TOKENS = "output-tokens"


class WaitReason(StrEnum):
    """Why a request cannot go yet: the bucket that binds, the provider's own Retry-After,
    other requests queued ahead of it, or a first request still out to learn the limits."""

    REQUESTS = "requests"
    TOKENS = "tokens"
    INPUT_TOKENS = "input-tokens"
    OUTPUT_TOKENS = "output-tokens"
    RETRY_AFTER = "retry-after"
    QUEUE = "queue"
    PROBE = "probe"


@dataclass(frozen=True, slots=True)
class Cost:
    """What one request takes from each bucket, estimated before sending."""

    input_tokens: float = 0.0
    output_tokens: float = 0.0
    """``max_tokens`` (or the route's output reserve): what the providers count at admission."""
    requests: float = 1.0

    def amount(self, bucket: Bucket) -> float:
        if bucket is Bucket.REQUESTS:
            return self.requests
        if bucket is Bucket.INPUT_TOKENS:
            return self.input_tokens
        if bucket is Bucket.OUTPUT_TOKENS:
            return self.output_tokens
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.requests + other.requests,
        )


NO_COST = Cost(0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class BucketLimit:
    limit: float
    remaining: float
    """At ``LimitSnapshot.observed_at``; never above ``limit``."""
    reset_at: float | None
    """Epoch seconds (this host's clock) when the bucket is full again; None when not given."""


@dataclass(frozen=True, slots=True)
class LimitSnapshot:
    """What one answer's headers said, with instants converted to this host's clock."""

    observed_at: float
    buckets: Mapping[Bucket, BucketLimit] = field(default_factory=dict)
    retry_at: float | None = None
    """From retry-after(-ms): no request before this instant. None when the answer had none."""
    retry_rounding_s: float = 0.0
    """How much the Retry-After value was rounded up: 1 s for whole seconds (what OpenAI and
    Anthropic send), 0 for milliseconds or fractions."""
    skew_s: float = 0.0
    """Provider clock minus ours, from its Date header (0 within the header's resolution)."""
    unparsed: tuple[str, ...] = ()
    """"name: value" of rate-limit headers that could not be read, for a warning log."""

    @property
    def empty(self) -> bool:
        return not self.buckets and self.retry_at is None

    @property
    def not_before(self) -> float | None:
        """The earliest instant the provider may admit anything. With bucket headers to
        tell the rest, a whole-second Retry-After is a bound rounded up, not the instant:
        a refill of 1.2 s is sent as "2", and waiting the 2 s under-uses the limit."""
        if self.retry_at is None:
            return None
        if not self.buckets:
            return self.retry_at
        return max(self.observed_at, self.retry_at - self.retry_rounding_s)


@dataclass(frozen=True, slots=True)
class Delay:
    """Seconds until a cost fits, and what binds (None when it fits now)."""

    seconds: float
    reason: WaitReason | None


def bucket_level(bucket: BucketLimit, observed_at: float, now: float, window_s: float) -> float:
    """The bucket's content at ``now``: continuous refill at limit/window, capped at limit."""
    rate = bucket.limit / window_s
    return min(bucket.limit, bucket.remaining + rate * max(0.0, now - observed_at))


def admission_delay(
    snapshot: LimitSnapshot,
    cost: Cost,
    now: float,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    target_utilisation: float = 1.0,
    in_flight: Cost = NO_COST,
) -> Delay:
    """Seconds from ``now`` until ``cost`` fits in every bucket while keeping
    ``(1 - target_utilisation) * limit`` in reserve, ``in_flight`` (sent but not yet in any
    snapshot) already taken. A cost above a bucket's limit waits for a full bucket only, so
    that the provider answers it (OpenAI's "request too large") instead of a wait forever."""
    seconds = 0.0
    reason: WaitReason | None = None
    not_before = snapshot.not_before
    if not_before is not None and not_before > now:
        seconds, reason = not_before - now, WaitReason.RETRY_AFTER
    for name in Bucket:  # a fixed order, as in the Redis script, so ties name the same bucket
        bucket = snapshot.buckets.get(name)
        if bucket is None:
            continue
        reserve = (1.0 - target_utilisation) * bucket.limit
        need = min(cost.amount(name) + reserve, bucket.limit) + in_flight.amount(name)
        level = bucket_level(bucket, snapshot.observed_at, now, window_s)
        wait = (need - level) * window_s / bucket.limit
        if wait <= _FIT_SLACK_S:  # float noise: 1 - 0.95 != 0.05, epoch + 0.6 is inexact
            continue
        if wait > seconds:
            seconds, reason = wait, WaitReason(name.value)
    return Delay(seconds, reason)


# ---------------------------------------------------------------- parsing


def _openai_name(bucket: str, kind: str) -> str:
    return f"x-ratelimit-{kind}-{bucket}"


def _anthropic_name(bucket: str, kind: str) -> str:
    return f"anthropic-ratelimit-{bucket}-{kind}"


class _Headers:
    """Lower-cased header view that records values it could not parse."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.h = {str(k).lower(): str(v).strip() for k, v in headers.items()}
        self.unparsed: list[str] = []

    def number(self, name: str) -> float | None:
        """A counter; "-1" is Azure's "unknown" and yields None without a complaint."""
        raw = self.h.get(name)
        if raw is None or raw == "-1":
            return None
        value = parse_decimal(raw)
        if value is None:
            self.unparsed.append(f"{name}: {raw}")
        return value

    def raw(self, name: str) -> str | None:
        return self.h.get(name)

    def bad(self, name: str) -> None:
        self.unparsed.append(f"{name}: {self.h[name]}")


def _read_openai(h: _Headers, now: float) -> dict[Bucket, BucketLimit]:
    found: dict[Bucket, BucketLimit] = {}
    for suffix, bucket in (
        ("requests", Bucket.REQUESTS),
        ("tokens", Bucket.TOKENS),
        ("tokens_usage_based", Bucket.TOKENS),
    ):
        if bucket in found:
            continue
        reset_name = _openai_name(suffix, "reset")
        seconds = _reset(h, reset_name, _go_or_seconds)
        reset_at = None if seconds is None else now + seconds
        limit = _counted(h, _openai_name(suffix, "limit"), _openai_name(suffix, "remaining"))
        if limit is not None:
            found[bucket] = BucketLimit(limit[0], limit[1], reset_at)
    return found


def _read_anthropic(h: _Headers, skew_s: float) -> dict[Bucket, BucketLimit]:
    found: dict[Bucket, BucketLimit] = {}
    for bucket in Bucket:
        instant = _reset(h, _anthropic_name(bucket.value, "reset"), parse_rfc3339_instant)
        reset_at = None if instant is None else instant - skew_s
        limit = _counted(
            h, _anthropic_name(bucket.value, "limit"), _anthropic_name(bucket.value, "remaining")
        )
        if limit is not None:
            found[bucket] = BucketLimit(limit[0], limit[1], reset_at)
    if Bucket.INPUT_TOKENS in found or Bucket.OUTPUT_TOKENS in found:
        # With the split, "tokens" repeats whichever of the two is most restrictive: it is
        # not a bucket of its own, and pacing input+output against it would double count.
        found.pop(Bucket.TOKENS, None)
    return found


def _counted(h: _Headers, limit_name: str, remaining_name: str) -> tuple[float, float] | None:
    """(limit, remaining), or None when either is missing or a sentinel (limit -1/0,
    remaining -1): an unknown bucket, neither "unlimited" nor "empty"."""
    limit, remaining = h.number(limit_name), h.number(remaining_name)
    if limit is None or remaining is None or limit <= 0:
        return None
    return limit, min(remaining, limit)


def _reset(h: _Headers, name: str, parse: _Parse) -> float | None:
    """A reset value; "0" and "-1" are Azure's "unknown", not "now"."""
    raw = h.raw(name)
    if raw is None or raw in ("0", "-1"):
        return None
    value = parse(raw)
    if value is None:
        h.bad(name)
    return value


def _go_or_seconds(s: str) -> float | None:
    """OpenAI-compatible resets: Go durations, or bare seconds from some compatible servers."""
    value = parse_go_duration(s)
    return value if value is not None else parse_decimal(s)


def _skew(h: _Headers, now: float) -> float:
    """Provider clock minus ours from its Date header, 0 within the header's resolution."""
    raw = h.raw("date")
    if raw is None:
        return 0.0
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0
    skew = when.timestamp() + 0.5 - now  # the header truncates to the second
    return skew if math.isfinite(skew) and abs(skew) > _SKEW_TOLERANCE_S else 0.0


def _retry_at(h: _Headers, now: float, skew_s: float) -> tuple[float | None, float]:
    """(instant, rounding) from retry-after-ms / x-ms-retry-after-ms / retry-after."""
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        raw = h.raw(name)
        if raw is not None:
            ms = parse_decimal(raw)
            if ms is not None:
                return now + ms / 1000.0, 0.0
            h.bad(name)
    raw = h.raw("retry-after")
    if raw is None:
        return None, 0.0
    seconds = parse_retry_after(raw, now + skew_s)
    if seconds is None:
        h.bad("retry-after")
        return None, 0.0
    whole = raw.isdigit() or parse_decimal(raw) is None  # delta-seconds or an HTTP date
    return now + seconds, 1.0 if whole else 0.0


_LIMIT_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "retry-after", "x-ms-retry-after")


def speaks_of_limits(headers: Mapping[str, str]) -> bool:
    """A header the snapshot reads is present (the Date header matters only beside one)."""
    return any(str(name).lower().startswith(_LIMIT_PREFIXES) for name in headers)


def parse_snapshot(headers: Mapping[str, str], now: float) -> LimitSnapshot:
    """Every rate-limit fact in one answer's headers, observed at ``now`` (this host's clock).

    Buckets whose limit is missing, -1 or 0, or whose remaining is missing or -1, are left
    out (unknown, not "unlimited" nor "empty"). Absolute instants (Anthropic's RFC 3339
    resets, HTTP-date Retry-After) are moved onto our clock when the Date header shows skew.
    """
    if not speaks_of_limits(headers):
        return LimitSnapshot(observed_at=now)  # most answers: nothing to parse, Date included
    h = _Headers(headers)
    skew = _skew(h, now)
    buckets = _read_openai(h, now)
    anthropic = _read_anthropic(h, skew)
    retry_at, rounding = _retry_at(h, now, skew)
    for bucket, limit in anthropic.items():
        buckets.setdefault(bucket, limit)
    return LimitSnapshot(
        observed_at=now,
        buckets=buckets,
        retry_at=retry_at,
        retry_rounding_s=rounding,
        skew_s=skew,
        unparsed=tuple(h.unparsed),
    )
