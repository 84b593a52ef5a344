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
    REFUSED_FIXED = "refused_fixed"
    """A client error a plugin could fix (a context-length error: trimmed), sent again."""
    LOCAL = "answered_locally"
    """Not sent: the proxy answered for this upstream (an endpoint its API lacks, a local
    token count) or could not put the request in its API."""


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
        return self.reason not in (AttemptReason.COOLING_DOWN, AttemptReason.LOCAL)


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
    held_s: float = 0.0
    """Time held before sending until the scope had room (pacing queue or a cooldown)."""
    held_for: str | None = None
    """What it was held for: the bucket that bound (requests, tokens...), retry-after,
    queue, probe (a scope's first request out), or cooldown."""
    ratelimited: str | None = None
    """The scope kind (``model``, ``upstream``) that made the proxy refuse with its own 429."""
    holds: list[Hold] = field(default_factory=list)
    """Each hold before sending, in order (traces show them as events)."""


@dataclass(frozen=True, slots=True)
class TranslationOutcome:
    """The answer crossed API families: the client's API, the upstream's, and what the
    translation could not carry over (``dropped``) or chose itself (``notes``)."""

    client: str
    upstream: str
    dropped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


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
    """The point estimate of what went upstream (after a trim, of the trimmed body). Refused
    (400 context_length_exceeded): what the newest turn, the pinned messages and the rest
    that is never trimmed need on their own."""
    count_method: str
    """``tiktoken`` (exact), ``prior``, ``learned`` or ``count_tokens``."""
    budget: int
    trimmed_messages: int = 0
    low: int | None = None
    """The most favourable count: trimming happens only when even this is over budget.
    Refused: of the part counted before the refusal was certain (the body is counted newest
    first, only as far as the decision needs), so a lower bound of the whole body's."""
    high: int | None = None
    """The least favourable count, of the same part as ``low``."""
    retried: bool = False
    """Trimmed after the upstream's own context-length error, and sent once more."""
    breakpoints_dropped: int = 0
    """Anthropic ``cache_control`` breakpoints the trim removed (the prompt cache restarts)."""


@dataclass(frozen=True, slots=True)
class ClientKeyOutcome:
    """Keys mode: whose key the request came with, and why it was refused (if it was)."""

    key_id: str | None
    """The proxy key's id (never its secret); None when no known key was presented."""
    refused: str | None = None
    """The refusal's kind (``invalid_api_key``, ``budget_exceeded``...); None: admitted."""


class SlotKey(Generic[T]):
    """A typed key for one plugin's private per-request state on the exchange."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"SlotKey({self.name!r})"
