"""The typed records at the translation seam: what the attempt loop gets back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .wire import dumps

__all__ = [
    "Dropped",
    "LocalAnswer",
    "StreamTranslator",
    "TranslatedRequest",
    "TranslatedResponse",
    "TranslationOptions",
]


@dataclass(frozen=True, slots=True)
class TranslationOptions:
    default_max_tokens: int = 4096
    """Anthropic requires ``max_tokens``; an OpenAI client may omit it. 4096 fits every
    Claude model's output cap, so the default never makes a valid request invalid."""
    chat_max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    """How the output cap is spelled towards a chat upstream: ``max_tokens`` is understood
    by llama.cpp, vLLM, Ollama and OpenAI's non-reasoning models; OpenAI's o-series and
    GPT-5 want ``max_completion_tokens``."""
    reasoning: bool = True
    """Translate thinking / ``reasoning_effort``. Off for upstream models without reasoning:
    OpenAI answers 400 to ``reasoning_effort`` on a non-reasoning model."""


@dataclass(frozen=True, slots=True)
class TranslatedRequest:
    """What to send upstream instead of the client's request."""

    method: str
    path: str
    """Path after the upstream's base URL (no query string: client queries do not carry over)."""
    body: Mapping[str, Any] | None
    """The JSON body (None for GET). A dict, so model mapping and the context budget can
    still work on it; ``encoded()`` gives the bytes."""
    headers: Mapping[str, str]
    """Headers to set on the upstream request, replacing the client's: always
    ``accept-encoding: identity`` (translators need plain bytes), ``content-type`` for a
    body, ``anthropic-version`` towards Anthropic."""
    dropped: tuple[str, ...] = ()
    """Client fields the upstream has no equivalent for (log them; never silent)."""
    notes: tuple[str, ...] = ()
    """Values the translation chose itself, e.g. ``max_tokens=4096 (client sent none)``."""
    stream: bool = False

    def encoded(self) -> bytes:
        return b"" if self.body is None else dumps(self.body)


@dataclass(frozen=True, slots=True)
class TranslatedResponse:
    """A complete client-family response: status, headers (list of pairs), body bytes."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class LocalAnswer:
    """The request is answered without an upstream call (count_tokens on an OpenAI upstream,
    an unknown ``previous_response_id``)."""

    response: TranslatedResponse
    dropped: tuple[str, ...] = ()


class StreamTranslator(Protocol):
    """Upstream SSE bytes in, client SSE bytes out, event by event.

    ``feed`` returns the client bytes for every upstream event completed so far (often b""
    when a chunk ended mid-event); it never waits for the end. ``finish`` is called once
    when the upstream body ended; it closes the client stream, and when the upstream never
    reached its own end it emits the client family's in-stream error instead of a clean end.
    ``abort`` emits that error with the proxy's reason (idle timeout...). After an error has
    been emitted, further input is ignored.
    """

    status: int
    headers: tuple[tuple[str, str], ...]

    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...

    def abort(self, message: str) -> bytes: ...


@dataclass(slots=True)
class Dropped:
    """Collects dropped field names in first-seen order, each once."""

    names: dict[str, None] = field(default_factory=dict)

    def add(self, name: str) -> None:
        self.names[name] = None

    def unknown(self, obj: Mapping[str, Any], known: frozenset[str], prefix: str = "") -> None:
        for key in obj:
            if key not in known:
                self.names[prefix + key] = None

    def result(self) -> tuple[str, ...]:
        return tuple(self.names)
