"""Typed records of what happened to a request, one per concern.

The attempt loop and the plugins write these onto the :class:`~proxy.exchange.Exchange`; the
log line, the metrics and every other reporter read them. Nothing passes between components
through string-keyed dicts, so a reporter cannot depend on which plugin happened to run first.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .usage import Usage

T = TypeVar("T")


class AttemptReason(enum.StrEnum):
    """Why an attempt ended the way it did (the log line prints the value)."""

    ANSWERED = "answered"
    """The upstream's answer is the one the client gets (any status not in ``retry_on``)."""
    RETRYABLE_STATUS = "retryable_status"
    """A status in ``retry_on`` (429, 5xx, 529): retried, fallen back from, or passed on."""
    QUOTA_EXHAUSTED = "quota_exhausted"
    """A 429/402 saying the account is out of quota: retrying cannot help."""
    UNREACHABLE = "unreachable"
    """No connection could be made: the request never reached the upstream."""
    TIMEOUT = "timeout"
    """Sent, but no response head within ``first_byte_s``: it may still be running upstream."""
    BAD_RESPONSE = "bad_response"
    """The upstream answered with a malformed status line or headers."""
    COOLING_DOWN = "cooling_down"
    """Not sent: the upstream's shared cooldown outlasts what this request may wait."""
    STREAM_FAILED = "stream_failed"
    """A 200 stream that failed before its first content (see ``StreamFailure``)."""
    ERROR_BODY = "error_body"
    """A 200 JSON answer carrying an error instead of a completion (when the route says so)."""


class StreamFailure(enum.StrEnum):
    """How a stream failed before its first content."""

    ERROR_EVENT = "error_event"
    CUT = "cut"
    IDLE = "idle"
    EMPTY = "empty"


@dataclass(slots=True)
class Attempt:
    """One try of one upstream (or a decision to skip it)."""

    upstream: str
    reason: AttemptReason
    status: int | None = None
    hint: str | None = None
    """Where the wait after this attempt came from: a header name, or ``backoff``."""
    waited_s: float = 0.0
    """Time slept after this attempt before the next one."""
    started: float | None = None
    """``time.monotonic()`` when it was sent (None when it was not)."""
    duration_s: float = 0.0
    """From sending to the response head (or the failure)."""
    detail: str | None = None
    """A short human explanation for failures (never a secret, never a traceback)."""
    stream_failure: StreamFailure | None = None
    event_type: str | None = None
    """The in-stream error's type, for a stream that failed on an error event."""
    held_bytes: int | None = None
    """Bytes held (never sent to the client) when the stream failed before content."""

    @property
    def sent(self) -> bool:
        return self.reason is not AttemptReason.COOLING_DOWN


class HoldKind(enum.StrEnum):
    """Why a request was held before sending (not a wait after a failed attempt)."""

    COOLDOWN = "cooldown"
    """A shared cooldown, set by another request's 429/503/529, was waited out."""
    PACING = "pacing"
    """A pacer held the request to stay under a rate limit."""


@dataclass(frozen=True, slots=True)
class Hold:
    """One hold before an attempt: traces show it as an event, dashboards as pacing state."""

    kind: HoldKind
    scope: str
    """What was held on: the upstream name (a pacer may name a finer scope)."""
    started: float
    """``time.monotonic()`` when the hold began."""
    waited_s: float


@dataclass(slots=True)
class RetryOutcome:
    """What the attempt loop spent on one request besides the attempts themselves."""

    waited_s: float = 0.0
    """All sleeps: upstream wait hints, backoff and shared cooldowns."""
    cooldown_waits: list[str] = field(default_factory=list)
    """Upstreams whose cooldown (set by another request's 429) this request waited out."""
    exhausted: bool = False
    """The proxy already retried and gives up: the client is told not to retry again."""
    holds: list[Hold] = field(default_factory=list)
    """Holds before sending, in order (cooldown waits now; pacing appends its own)."""


@dataclass(slots=True)
class UsageOutcome:
    """Tokens, time to first token and cost of a request, as accounted after it ended."""

    model: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    finish_reasons: tuple[str, ...] = ()
    """Why generation stopped, one per choice, as the provider said (``stop``, ``end_turn``)."""


@dataclass(slots=True)
class ContextOutcome:
    """What the context budget decided: how the prompt was counted and what was trimmed."""

    prompt_tokens_est: int
    count_method: str
    budget: int
    trimmed_messages: int = 0


class SlotKey(Generic[T]):
    """A typed key for one plugin's private per-request state on the exchange."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"SlotKey({self.name!r})"
