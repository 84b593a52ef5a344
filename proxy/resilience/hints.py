"""Turn provider rate-limit headers into "how long to wait" (pure: no IO; the clock is a parameter).

Providers disagree on units: Azure sends milliseconds, Retry-After is seconds or an HTTP date,
OpenAI sends Go durations ("6m0s", "12ms"), Anthropic sends RFC 3339 instants and epoch seconds.
Everything here returns relative seconds, clamps instants in the past to 0 (clock skew), and never
raises on garbage: unparseable headers are handed back so the caller can log them.
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import re
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

__all__ = [
    "WaitHint",
    "backoff",
    "is_quota_exhausted",
    "parse_decimal",
    "parse_go_duration",
    "parse_retry_after",
    "parse_rfc3339",
    "parse_rfc3339_instant",
    "parse_wait",
    "proactive_cooldown",
]


@dataclass(frozen=True)
class WaitHint:
    """Seconds to wait before the next attempt, and the (lower-case) header that said so."""

    seconds: float
    source: str


# Unsigned decimal only: rejects "1e999", "NaN", "inf", "-5" and "+5" up front.
_DECIMAL = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)
# Longest units first inside the alternation so "12ms" is never read as 12 minutes + "s".
_GO_TOKEN = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|h|m|s)", re.ASCII)
_GO_UNIT_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)

_OPENAI_BUCKETS = ("requests", "tokens", "tokens_usage_based")
_ANTHROPIC_BUCKETS = ("requests", "tokens", "input-tokens", "output-tokens")
_QUOTA_CODES = frozenset(
    {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "billing_error"}
)
_MAX_ERROR_BODY = 64 * 1024


def parse_decimal(s: str) -> float | None:
    """An unsigned finite decimal ("12", "0.5"), or None for anything else ("-1", "NaN")."""
    s = s.strip()
    if not _DECIMAL.fullmatch(s):
        return None
    value = float(s)
    return value if math.isfinite(value) else None


_decimal = parse_decimal


def parse_go_duration(s: str) -> float | None:
    """Seconds in a Go duration ("6m0s", "1h2m3.5s", "12ms", "0"); None if malformed or negative."""
    s = s.strip()
    if s == "0":
        return 0.0
    if not s:
        return None
    total, pos = 0.0, 0
    for match in _GO_TOKEN.finditer(s):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _GO_UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(s) or not math.isfinite(total):
        return None
    return total


def parse_retry_after(s: str, now: float) -> float | None:
    """Seconds from a Retry-After value: delta-seconds (int or float) or an HTTP date.

    A negative delta is malformed (RFC 9110 allows digits only) and yields None; a date in the
    past means clock skew and yields 0.
    """
    delta = _decimal(s)
    if delta is not None:
        return delta
    try:
        when = email.utils.parsedate_to_datetime(s.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime and "-0000" carry no zone; HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def parse_rfc3339(s: str, now: float) -> float | None:
    """Seconds until an RFC 3339 instant (zone required), 0 if it is already past."""
    when = parse_rfc3339_instant(s)
    return None if when is None else max(0.0, when - now)


def parse_rfc3339_instant(s: str) -> float | None:
    """Epoch seconds of an RFC 3339 instant (zone required), or None if malformed."""
    match = _RFC3339.fullmatch(s.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    micro = int((match.group(7) or ".0")[1:].ljust(6, "0")[:6])
    zone = match.group(8)
    try:
        tz = UTC
        if zone not in ("Z", "z"):
            sign = 1 if zone[0] == "+" else -1
            tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        when = datetime(year, month, day, hour, minute, min(second, 59), micro, tzinfo=tz)
    except ValueError:
        return None
    return when.timestamp()


def _epoch(s: str, now: float) -> float | None:
    """Seconds until an epoch-seconds instant (anthropic-ratelimit-unified-reset), 0 if past."""
    value = _decimal(s)
    if value is None:
        return None
    return max(0.0, value - now)


def backoff(
    attempt: int, base_s: float = 0.5, cap_s: float = 8.0, rng: random.Random | None = None
) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)].

    `attempt` counts from 0. Full jitter spreads a herd of clients that failed together.
    """
    ceiling = min(cap_s, base_s * 2.0 ** min(max(attempt, 0), 64))
    return (rng or random).uniform(0.0, ceiling)


class _Reader:
    """Lower-cased header view that records values it could not parse."""

    def __init__(self, headers: Mapping[str, str], now: float) -> None:
        self.h = {str(k).lower(): str(v) for k, v in headers.items()}
        self.now = now
        self.unparsed: list[str] = []

    def get(self, name: str, parse: Callable[[str], float | None]) -> float | None:
        raw = self.h.get(name)
        if raw is None:
            return None
        value = parse(raw)
        if value is None:
            self.unparsed.append(f"{name}: {raw}")
        return value

    def count(self, name: str) -> float | None:
        """A limit/remaining counter; Azure's "-1" ("unknown") is kept as -1, not garbage."""
        raw = self.h.get(name)
        if raw is not None and raw.strip() == "-1":
            return -1.0
        return self.get(name, _decimal)


_Family = tuple[tuple[str, ...], Callable[[str, str], str], Callable[[str], float | None]]


def _bucket_resets(
    r: _Reader, family: _Family
) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    """(resets of exhausted buckets, all usable resets) as (seconds, header name) pairs.

    A reset of 0 or -1 is unknown, not "now" (Azure sends "reset: 0" with "limit: -1"), and a
    bucket counts as exhausted only if remaining is 0 and the limit is not a -1/0 sentinel.
    """
    buckets, names, parse = family
    exhausted: list[tuple[float, str]] = []
    known: list[tuple[float, str]] = []
    for bucket in buckets:
        name = names(bucket, "reset")
        raw = r.h.get(name)
        if raw is None or raw.strip() in ("0", "-1"):
            continue
        seconds = r.get(name, parse)
        if seconds is None or seconds <= 0:
            continue
        known.append((seconds, name))
        limit = r.count(names(bucket, "limit"))
        if r.count(names(bucket, "remaining")) == 0 and (limit is None or limit > 0):
            exhausted.append((seconds, name))
    return exhausted, known


def _families(now: float) -> tuple[_Family, _Family]:
    return (
        (_OPENAI_BUCKETS, _openai_name, _go_or_seconds),
        (_ANTHROPIC_BUCKETS, _anthropic_name, lambda s: parse_rfc3339(s, now)),
    )


def _openai_name(bucket: str, kind: str) -> str:
    return f"x-ratelimit-{kind}-{bucket}"


def _anthropic_name(bucket: str, kind: str) -> str:
    return f"anthropic-ratelimit-{bucket}-{kind}"


def parse_wait(
    headers: Mapping[str, str], now: float | None = None
) -> tuple[WaitHint | None, list[str]]:
    """The server's wait hint and the "name: value" strings that could not be parsed.

    Sources, first usable one wins: retry-after-ms / x-ms-retry-after-ms, retry-after, OpenAI
    x-ratelimit-reset-*, Anthropic anthropic-ratelimit-*-reset, anthropic-ratelimit-unified-reset.
    Within the OpenAI and Anthropic families the reset of an exhausted bucket (remaining == 0)
    wins (the latest if several); otherwise the latest present reset, since any of them may be
    the one that tripped. A reset that is 0, -1 or already past gives no hint (Azure uses 0/-1
    for "unknown"), so the next source is tried; only retry-after(-ms) can yield 0 seconds.
    """
    r = _Reader(headers, time.time() if now is None else now)
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        ms = r.get(name, _decimal)
        if ms is not None:
            return WaitHint(ms / 1000.0, name), r.unparsed
    seconds = r.get("retry-after", lambda s: parse_retry_after(s, r.now))
    if seconds is not None:
        return WaitHint(seconds, "retry-after"), r.unparsed
    for family in _families(r.now):
        exhausted, known = _bucket_resets(r, family)
        if exhausted or known:
            seconds, name = max(exhausted or known)
            return WaitHint(seconds, name), r.unparsed
    unified = "anthropic-ratelimit-unified-reset"
    raw = r.h.get(unified)
    if raw is not None and raw.strip() not in ("0", "-1"):
        seconds = r.get(unified, lambda s: _epoch(s, r.now))
        if seconds is not None and seconds > 0:
            return WaitHint(seconds, unified), r.unparsed
    return None, r.unparsed


def _go_or_seconds(s: str) -> float | None:
    """OpenAI-compatible resets: Go durations, or bare seconds from some compatible servers."""
    value = parse_go_duration(s)
    return value if value is not None else _decimal(s)


def proactive_cooldown(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to hold off an upstream that just told us a bucket is empty, even on a 2xx.

    Looks only at exhausted buckets (remaining == 0 with a usable reset); requests and tokens
    both count, since a request needs at least one token. None when nothing is exhausted.
    """
    r = _Reader(headers, now)
    waits = [seconds for family in _families(now) for seconds, _ in _bucket_resets(r, family)[0]]
    return max(waits) if waits else None


def is_quota_exhausted(status: int, body: bytes) -> bool:
    """True when retrying cannot help: the account is out of quota or credit (402, or an error
    code such as OpenAI's insufficient_quota). Gzipped bodies (Anthropic gzips errors) are read.
    """
    if status == 402:
        return True
    if status < 400:
        return False
    text = _inflate(body)
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return any(code.encode() in text for code in _QUOTA_CODES)
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, str):  # some OpenAI-compatible servers send a bare code
        return error in _QUOTA_CODES
    if not isinstance(error, dict):
        return False
    return any(error.get(field) in _QUOTA_CODES for field in ("code", "type"))


def _inflate(body: bytes) -> bytes:
    """Body bytes, gunzipped if they carry the gzip magic; at most 64 KiB either way."""
    if body[:2] != b"\x1f\x8b":
        return body[:_MAX_ERROR_BODY]
    try:
        return zlib.decompressobj(wbits=47).decompress(body, _MAX_ERROR_BODY)
    except zlib.error:
        return b""
