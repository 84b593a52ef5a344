"""Prompts and completions as span attributes, only when ``otel.capture_content`` is on.

Off by default: message content is the most sensitive thing the proxy sees, so nothing here
runs unless the operator asked for it. The shapes follow the GenAI conventions' JSON schema
(``{"role", "parts": [{"type": "text", "content"}]}``), recorded as JSON strings.
"""

from __future__ import annotations

import json
from typing import Any

from .semconv import INPUT_MESSAGES, OUTPUT_MESSAGES, SYSTEM_INSTRUCTIONS, Attributes

MAX_PART_CHARS = 16_384
"""Each text part is cut here: a span is no place for a whole book."""
MAX_BODY_BYTES = 1 << 20
"""Larger request bodies are not parsed on the loop for capture; the span says so."""


def _text(value: str) -> str:
    return value if len(value) <= MAX_PART_CHARS else value[:MAX_PART_CHARS] + "...[truncated]"


def _part(item: Any) -> dict[str, Any]:
    """One content block of any provider as a convention part."""
    if isinstance(item, str):
        return {"type": "text", "content": _text(item)}
    if not isinstance(item, dict):
        return {"type": "unknown"}
    kind = item.get("type")
    if isinstance(item.get("text"), str):
        return {"type": "text", "content": _text(item["text"])}
    if kind == "tool_use":
        return {
            "type": "tool_call",
            "id": item.get("id"),
            "name": item.get("name"),
            "arguments": item.get("input"),
        }
    if kind == "tool_result":
        content = item.get("content")
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        return {
            "type": "tool_call_response",
            "id": item.get("tool_use_id"),
            "response": _text(text),
        }
    return {"type": kind if isinstance(kind, str) else "unknown"}


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return [_part(item) for item in content]
    return [] if content is None else [_part(content)]


def _message(message: Any) -> dict[str, Any]:
    if not isinstance(message, dict):
        return {"role": "unknown", "parts": _parts(message)}
    parts = _parts(message.get("content"))
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict) and isinstance(call.get("function"), dict):
            fn = call["function"]
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("id"),
                    "name": fn.get("name"),
                    "arguments": fn.get("arguments"),
                }
            )
    if message.get("role") == "tool":
        text = message.get("content")
        parts = [
            {
                "type": "tool_call_response",
                "id": message.get("tool_call_id"),
                "response": _text(text) if isinstance(text, str) else None,
            }
        ]
    return {"role": message.get("role", "unknown"), "parts": parts}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def input_attributes(body: bytes) -> Attributes:
    """The messages (and system instructions) of the request as sent upstream."""
    if len(body) > MAX_BODY_BYTES:
        return {"llm_proxy.content.omitted": "request body too large"}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    attrs: Attributes = {}
    messages = data.get("messages")
    if messages is None:  # Responses API "input", completions "prompt", embeddings "input"
        given = data.get("input", data.get("prompt"))
        messages = given if isinstance(given, list) else [{"role": "user", "content": given}]
    if isinstance(messages, list):
        attrs[INPUT_MESSAGES] = _dumps([_message(m) for m in messages])
    system = data.get("system", data.get("instructions"))
    if system is not None:
        attrs[SYSTEM_INSTRUCTIONS] = _dumps(_parts(system))
    return attrs


def output_attributes(text: str, finish_reasons: tuple[str, ...]) -> Attributes:
    """The generated text as one assistant message."""
    message = {
        "role": "assistant",
        "parts": [{"type": "text", "content": _text(text)}] if text else [],
        "finish_reason": finish_reasons[0] if finish_reasons else "error",
    }
    return {OUTPUT_MESSAGES: _dumps([message])}
