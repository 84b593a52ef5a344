"""Real rate limits for the fake: token buckets per credential and model, with the providers'
own headers on every answer and their 429s when a bucket is short.

Like OpenAI and Anthropic, each bucket holds ``limit`` and refills continuously at
``limit / window_s`` per second (no fixed window). A request is admitted only if every bucket
holds its cost: requests 1; tokens its prompt tokens (``content.prompt_tokens``) plus its
output cap (``max_tokens`` and friends, else the chunks it will produce); Anthropic splits
input and output tokens when ``input_tpm``/``output_tpm`` are set.

Headers, as the providers send them:
- OpenAI: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, resets as Go durations
  until the bucket is full again ("1s", "6m0s", "12ms").
- Anthropic: ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,
  remaining,reset}``, resets as RFC 3339 instants (whole seconds, rounded up); with the split,
  ``tokens-*`` repeats the more restrictive of input/output (the smaller share left).
- A 429 adds ``retry-after`` (whole seconds until the request would fit, rounded up).

``skew_s`` moves the fake's wall clock (its absolute instants and its Date header);
``header_lag_s`` makes the headers describe the buckets as they were that long ago.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any

from .content import dumps, embedding_tokens, output_limit, prompt_tokens
from .faults import Provider

__all__ = [
    "Counts",
    "Limits",
    "RateLimiter",
    "Rates",
    "Verdict",
    "check_request",
    "credential_of",
    "go_duration",
]

Clock = Callable[[], float]

LIMITED_PATHS = frozenset(
    {"/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/messages"}
)


@dataclass(frozen=True)
class Rates:
    """Per-minute limits (per ``window_s``); None leaves that bucket out."""

    rpm: float | None = None
    tpm: float | None = None
    """OpenAI's token bucket; Anthropic's combined one when the split is not set."""
    input_tpm: float | None = None
    """Anthropic ITPM (with ``output_tpm``: the split buckets)."""
    output_tpm: float | None = None


@dataclass(frozen=True)
class Limits(Rates):
    """The fake's limits: default ``Rates`` for every (credential, model), ``models``
    overriding them per model name, and the clock quirks."""

    models: Mapping[str, Rates] = field(default_factory=dict)
    window_s: float = 60.0
    skew_s: float = 0.0
    header_lag_s: float = 0.0

    def __post_init__(self) -> None:
        if self.window_s <= 0:
            raise ValueError("window_s must be > 0")
        if self.header_lag_s < 0:
            raise ValueError("header_lag_s must be >= 0")
        for rates in (self, *self.models.values()):
            for name in ("rpm", "tpm", "input_tpm", "output_tpm"):
                value = getattr(rates, name)
                if value is not None and not (isinstance(value, int | float) and value > 0):
                    raise ValueError(f"{name} must be a number > 0, got {value!r}")

    def rates_for(self, model: str) -> Rates:
        return self.models.get(model, self)

    @classmethod
    def from_json(cls, obj: Any) -> Limits:
        """From the control API's JSON: the field names above, ``models`` as an object of
        rate objects; ``{}`` means no limits."""
        if not isinstance(obj, dict):
            raise ValueError("limits must be a JSON object")
        allowed = {"rpm", "tpm", "input_tpm", "output_tpm", "models"}
        allowed |= {"window_s", "skew_s", "header_lag_s"}
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise ValueError(f"unknown limits field(s): {', '.join(unknown)}")
        models = obj.get("models") or {}
        if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
            raise ValueError("models must map model names to rate objects")
        rate_names = {"rpm", "tpm", "input_tpm", "output_tpm"}
        for name, rates in models.items():
            if set(rates) - rate_names:
                raise ValueError(f"models.{name}: unknown field(s)")
        _check_numbers(obj, allowed - {"models"})
        for rates in models.values():
            _check_numbers(rates, rate_names)
        kwargs = {k: v for k, v in obj.items() if k != "models" and v is not None}
        return cls(**kwargs, models={k: Rates(**v) for k, v in models.items()})

    def to_json(self) -> dict[str, Any]:
        def rates(r: Rates) -> dict[str, Any]:
            return {
                "rpm": r.rpm,
                "tpm": r.tpm,
                "input_tpm": r.input_tpm,
                "output_tpm": r.output_tpm,
            }

        return {
            **rates(self),
            "models": {name: rates(r) for name, r in self.models.items()},
            "window_s": self.window_s,
            "skew_s": self.skew_s,
            "header_lag_s": self.header_lag_s,
        }


def _check_numbers(obj: Mapping[str, Any], names: set[str]) -> None:
    for name in names:
        value = obj.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{name}: expected a number, got {value!r}")


@dataclass
class Counts:
    """What one (credential, model) got: answers admitted and 429s sent."""

    served: int = 0
    limited: int = 0


@dataclass(frozen=True)
class Verdict:
    """The limiter's answer for one request: the headers to send either way, and for a
    refused one the 429's body and Retry-After."""

    allowed: bool
    headers: dict[str, str]
    retry_after_s: float = 0.0
    body: bytes = b""


class _Bucket:
    """A continuously refilling bucket, with enough history to report a lagging view."""

    def __init__(self, limit: float, window_s: float, now: float) -> None:
        self.limit = limit
        self.rate = limit / window_s
        self.level = limit
        self.t = now
        self._history: deque[tuple[float, float]] = deque([(now, limit)])

    def level_at(self, now: float) -> float:
        return min(self.limit, self.level + self.rate * max(0.0, now - self.t))

    def take(self, amount: float, now: float) -> None:
        self.level, self.t = self.level_at(now) - amount, now
        self._history.append((now, self.level))

    def seen(self, now: float, lag_s: float) -> float:
        """The level the headers report: as it was ``lag_s`` ago."""
        if lag_s <= 0:
            return self.level_at(now)
        then = now - lag_s
        while len(self._history) > 1 and self._history[1][0] <= then:
            self._history.popleft()
        t, level = self._history[0]
        if t > then:  # the bucket did not exist yet: it was full
            return self.limit
        return min(self.limit, level + self.rate * (then - t))

    def wait_for(self, amount: float, now: float) -> float:
        return max(0.0, (amount - self.level_at(now)) / self.rate)


_OPENAI_KINDS = {"requests": "requests", "tokens": "tokens"}
_PER_MINUTE = {
    "requests": "requests per min (RPM)",
    "tokens": "tokens per min (TPM)",
    "input-tokens": "input tokens per minute",
    "output-tokens": "output tokens per minute",
}


class RateLimiter:
    """Buckets per (credential, model, bucket name), created full on first use."""

    def __init__(self, limits: Limits | None = None, clock: Clock = time.time) -> None:
        self.limits = limits or Limits()
        self.clock = clock
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}
        self._counts: dict[tuple[str, str], Counts] = {}

    @property
    def enabled(self) -> bool:
        limits = self.limits
        return any(_bucket_limits("openai", r) for r in (limits, *limits.models.values())) or any(
            _bucket_limits("anthropic", r) for r in (limits, *limits.models.values())
        )

    def configure(self, limits: Limits) -> None:
        """New limits; every bucket starts full again and the counts restart."""
        self.limits = limits
        self.reset()

    def reset(self) -> None:
        self._buckets.clear()
        self._counts.clear()

    def counts(self, credential: str | None = None, model: str | None = None) -> Counts:
        """Totals over every (credential, model) matching the given ones."""
        total = Counts()
        for (cred, mod), counts in self._counts.items():
            if credential in (None, cred) and model in (None, mod):
                total.served += counts.served
                total.limited += counts.limited
        return total

    def all_counts(self) -> list[dict[str, Any]]:
        return [
            {"credential": c, "model": m, "served": n.served, "limited": n.limited}
            for (c, m), n in sorted(self._counts.items())
        ]

    def provider_now(self) -> float:
        """The fake's own wall clock (skewed), for its Date header and reset instants."""
        return self.clock() + self.limits.skew_s

    def check(
        self, provider: Provider, credential: str, model: str, input_tokens: int, output_tokens: int
    ) -> Verdict | None:
        """Admit (taking the cost from every bucket) or refuse; None when no limit applies."""
        wanted = _bucket_limits(provider, self.limits.rates_for(model))
        if not wanted:
            return None
        now = self.clock()
        costs = _costs(input_tokens, output_tokens)
        buckets = {
            name: self._bucket(credential, model, name, limit, now) for name, limit in wanted
        }
        waits = {name: b.wait_for(costs[name], now) for name, b in buckets.items()}
        counts = self._counts.setdefault((credential, model), Counts())
        short = max(waits, key=lambda name: waits[name])
        if waits[short] > 0:
            counts.limited += 1
            headers = self._headers(provider, buckets, now)
            retry = waits[short]
            headers["retry-after"] = str(max(1, math.ceil(retry)))
            body = _limited_body(provider, model, short, buckets[short], costs[short], now, retry)
            return Verdict(False, headers, retry, body)
        for name, bucket in buckets.items():
            bucket.take(costs[name], now)
        counts.served += 1
        return Verdict(True, self._headers(provider, buckets, now))

    def _bucket(self, credential: str, model: str, name: str, limit: float, now: float) -> _Bucket:
        key = (credential, model, name)
        bucket = self._buckets.get(key)
        if bucket is None or bucket.limit != limit:
            bucket = self._buckets[key] = _Bucket(limit, self.limits.window_s, now)
        return bucket

    def _headers(
        self, provider: Provider, buckets: Mapping[str, _Bucket], now: float
    ) -> dict[str, str]:
        lag = self.limits.header_lag_s
        seen = {name: b.seen(now, lag) for name, b in buckets.items()}
        to_full = {name: (b.limit - seen[name]) / b.rate for name, b in buckets.items()}
        headers = {"date": formatdate(self.provider_now(), usegmt=True)}
        if provider == "openai":
            for name, bucket in buckets.items():
                kind = _OPENAI_KINDS[name]
                headers[f"x-ratelimit-limit-{kind}"] = _int(bucket.limit)
                headers[f"x-ratelimit-remaining-{kind}"] = _int(max(0.0, seen[name]))
                headers[f"x-ratelimit-reset-{kind}"] = go_duration(to_full[name])
            return headers
        labels = {name: name for name in buckets}
        if "input-tokens" in buckets and "output-tokens" in buckets:
            share = {n: seen[n] / buckets[n].limit for n in ("input-tokens", "output-tokens")}
            labels["tokens"] = min(share, key=lambda n: share[n])
        for label, name in labels.items():
            prefix = f"anthropic-ratelimit-{label}"
            headers[f"{prefix}-limit"] = _int(buckets[name].limit)
            headers[f"{prefix}-remaining"] = _int(max(0.0, seen[name]))
            headers[f"{prefix}-reset"] = _rfc3339(self.provider_now() + to_full[name])
        return headers


def _bucket_limits(provider: Provider, rates: Rates) -> list[tuple[str, float]]:
    """(bucket name, limit) for the buckets this provider enforces with these rates."""
    found: list[tuple[str, float | None]] = [("requests", rates.rpm)]
    if provider == "openai":
        found.append(("tokens", rates.tpm))
    elif rates.input_tpm is not None or rates.output_tpm is not None:
        found += [("input-tokens", rates.input_tpm), ("output-tokens", rates.output_tpm)]
    else:
        found.append(("tokens", rates.tpm))
    return [(name, float(limit)) for name, limit in found if limit is not None]


def _costs(input_tokens: int, output_tokens: int) -> dict[str, float]:
    return {
        "requests": 1.0,
        "tokens": float(input_tokens + output_tokens),
        "input-tokens": float(input_tokens),
        "output-tokens": float(output_tokens),
    }


def _int(value: float) -> str:
    return str(math.floor(value + 1e-9))


def go_duration(seconds: float) -> str:
    """A Go ``time.Duration`` string at millisecond precision, rounded up (never promising a
    reset earlier than it is): "0s", "12ms", "1s", "1.5s", "6m0s", "1h2m3.25s"."""
    ms = math.ceil(max(0.0, seconds) * 1000 - 1e-6)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest // 1000}.{rest % 1000:03d}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


def _rfc3339(instant: float) -> str:
    """Whole seconds, rounded up, as Anthropic sends them."""
    return datetime.fromtimestamp(math.ceil(instant - 1e-6), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _limited_body(
    provider: Provider,
    model: str,
    name: str,
    bucket: _Bucket,
    cost: float,
    now: float,
    retry_s: float,
) -> bytes:
    limit = _int(bucket.limit)
    used = str(math.ceil(bucket.limit - max(0.0, bucket.level_at(now)) - 1e-9))
    if provider == "anthropic":
        message = (
            f"This request would exceed the rate limit for your organization (fake) of "
            f"{limit} {_PER_MINUTE[name]}. For details, refer to: "
            "https://docs.claude.com/en/api/rate-limits."
        )
        return dumps({"type": "error", "error": {"type": "rate_limit_error", "message": message}})
    message = (
        f"Rate limit reached for {model} in organization org-fake on {_PER_MINUTE[name]}: "
        f"Limit {limit}, Used {used}, Requested {_int(cost)}. Please try again in "
        f"{go_duration(retry_s)}. Visit https://platform.openai.com/account/rate-limits to "
        "learn more."
    )
    error = {
        "message": message,
        "type": _OPENAI_KINDS[name],
        "param": None,
        "code": "rate_limit_exceeded",
    }
    return dumps({"error": error})


def credential_of(headers: Mapping[str, str]) -> str:
    """The key a request carries (``x-api-key``, ``Authorization: Bearer``, ``api-key``);
    empty when it carries none (all such requests share buckets)."""
    for name in ("x-api-key", "authorization", "api-key"):
        value = headers.get(name, "").strip()
        if name == "authorization" and value[:7].lower() == "bearer ":
            value = value[7:].strip()
        if value:
            return value
    return ""


def check_request(
    limiter: RateLimiter,
    provider: Provider,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    default_chunks: int,
) -> Verdict | None:
    """The verdict for one request to a model endpoint; None when it is not rate limited
    (limits off, another path, or a body the endpoint itself will reject)."""
    if path not in LIMITED_PATHS or not limiter.enabled:
        return None
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), str):
        return None
    if path == "/v1/embeddings":
        input_tokens, output_tokens = embedding_tokens(payload.get("input")), 0
    else:
        input_tokens = prompt_tokens(payload)
        cap = output_limit(payload)
        output_tokens = cap if cap is not None else _chunks(headers, default_chunks)
    return limiter.check(
        provider, credential_of(headers), payload["model"], input_tokens, output_tokens
    )


def _chunks(headers: Mapping[str, str], default: int) -> int:
    """The output the fake will produce without a cap: ``x-fake-chunks`` or its default."""
    try:
        return max(0, int(float(headers.get("x-fake-chunks", default))))
    except ValueError:
        return default
