"""What counts as content in each provider's event stream (pure: events in, kinds out).

A stream is worth committing to only once it carries content: an OpenAI chat chunk with
non-empty text, tool calls, refusal or reasoning; a Responses API ``*.delta`` event; an
Anthropic ``content_block_delta``. Role-only chunks, ``message_start``, ``ping`` and empty
``content_block_start`` events come before content on healthy and failing streams alike.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from .sse import SSEEvent


class StreamFamily(enum.StrEnum):
    OPENAI_CHAT = "openai_chat"
    OPENAI_RESPONSES = "openai_responses"
    ANTHROPIC = "anthropic"


class EventKind(enum.Enum):
    NEUTRAL = "neutral"
    CONTENT = "content"
    ERROR = "error"
    END = "end"


@dataclass(frozen=True, slots=True)
class Classified:
    kind: EventKind
    event_type: str | None = None
    """For errors: the provider's error type (``overloaded_error``, ``server_error``...)."""


NEUTRAL = Classified(EventKind.NEUTRAL)
CONTENT = Classified(EventKind.CONTENT)
END = Classified(EventKind.END)

_PATHS: tuple[tuple[str, str, StreamFamily], ...] = (
    ("openai", "/chat/completions", StreamFamily.OPENAI_CHAT),
    ("openai", "/responses", StreamFamily.OPENAI_RESPONSES),
    ("anthropic", "/messages", StreamFamily.ANTHROPIC),
)
_CHAT_TEXT = ("content", "refusal", "reasoning_content", "reasoning")
_RESPONSES_END = frozenset({"response.completed", "response.incomplete"})


def stream_family(provider: str, tail: str) -> StreamFamily | None:
    """The stream grammar of a route's endpoint; None for streams the proxy does not know."""
    path = tail.split("?", 1)[0].rstrip("/")
    for name, suffix, family in _PATHS:
        if provider == name and path.endswith(suffix):
            return family
    return None


def classify(family: StreamFamily, event: SSEEvent) -> Classified:
    if family is StreamFamily.ANTHROPIC:
        return _anthropic(event)
    if family is StreamFamily.OPENAI_RESPONSES:
        return _responses(event)
    return _chat(event)


def _loads(data: str) -> object:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def _error_type(payload: object, default: str) -> str:
    if isinstance(payload, dict):
        inner = payload.get("error")
        if isinstance(inner, str) and inner:
            return inner
        if isinstance(inner, dict):
            payload = inner
        for key in ("type", "code"):
            value = payload.get(key)
            if isinstance(value, str) and value and value != "error":
                return value
    return default


def _anthropic(event: SSEEvent) -> Classified:
    name = event.event
    if name == "content_block_delta":
        return CONTENT
    if name == "error":
        return Classified(EventKind.ERROR, _error_type(_loads(event.data), "error"))
    if name == "message_stop":
        return END
    return NEUTRAL


def _responses(event: SSEEvent) -> Classified:
    name = event.event
    if name == "message":  # a server that omits event names: the type is in the data
        payload = _loads(event.data)
        kind = payload.get("type") if isinstance(payload, dict) else None
        name = kind if isinstance(kind, str) else name
    if name.endswith(".delta"):
        return CONTENT
    if name in ("error", "response.failed"):
        return Classified(EventKind.ERROR, _error_type(_loads(event.data), name))
    if name in _RESPONSES_END:
        return END
    return NEUTRAL


def _chat(event: SSEEvent) -> Classified:
    data = event.data
    if event.event == "error":
        return Classified(EventKind.ERROR, _error_type(_loads(data), "error"))
    if data.strip() == "[DONE]":
        return END
    payload = _loads(data)
    if not isinstance(payload, dict):
        return NEUTRAL
    if payload.get("error"):
        return Classified(EventKind.ERROR, _error_type(payload, "error"))
    choices = payload.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and _delta_has_content(delta):
            return CONTENT
        if isinstance(choice, dict) and isinstance(choice.get("text"), str) and choice["text"]:
            return CONTENT  # legacy /v1/completions
    return NEUTRAL


def _delta_has_content(delta: dict[str, object]) -> bool:
    if any(isinstance(delta.get(k), str) and delta[k] for k in _CHAT_TEXT):
        return True
    return bool(delta.get("tool_calls") or delta.get("function_call"))
