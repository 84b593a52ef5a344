"""Chat completion -> Responses ``response`` object, and the pieces the stream reuses."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..wire import as_object

__all__ = [
    "ResponseContext",
    "function_call_item",
    "message_item",
    "reasoning_item",
    "response_from_chat",
    "responses_usage",
    "status_for",
    "text_part",
]


@dataclass(frozen=True, slots=True)
class ResponseContext:
    """What a response object repeats from its request, and the ids it is born with."""

    request: Mapping[str, Any]
    response_id: str = field(default_factory=lambda: f"resp_{secrets.token_hex(16)}")
    created_at: int = field(default_factory=lambda: int(time.time()))

    @property
    def suffix(self) -> str:
        return self.response_id.removeprefix("resp_")

    def response(
        self,
        status: str,
        output: Sequence[Mapping[str, Any]],
        usage: Mapping[str, Any] | None = None,
        *,
        model: str | None = None,
        incomplete: str | None = None,
        error: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        req = self.request
        reasoning = as_object(req.get("reasoning"))
        text = as_object(req.get("text")) or {"format": {"type": "text"}}
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": req.get("instructions"),
            "max_output_tokens": req.get("max_output_tokens"),
            "model": model or req.get("model") or "",
            "output": list(output),
            "parallel_tool_calls": req.get("parallel_tool_calls", True),
            "previous_response_id": req.get("previous_response_id"),
            "reasoning": {"effort": reasoning.get("effort"), "summary": None},
            "store": req.get("store", True),
            "temperature": req.get("temperature", 1.0),
            "text": text,
            "tool_choice": req.get("tool_choice", "auto"),
            "tools": req.get("tools", []),
            "top_p": req.get("top_p", 1.0),
            "truncation": req.get("truncation", "disabled"),
            "usage": dict(usage) if usage is not None else None,
            "user": req.get("user"),
            "metadata": req.get("metadata") or {},
        }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def responses_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Chat usage -> Responses usage: both count cached tokens inside the input total."""
    prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    cached = _int(as_object(usage.get("prompt_tokens_details")).get("cached_tokens"))
    reasoning = _int(as_object(usage.get("completion_tokens_details")).get("reasoning_tokens"))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": _int(usage.get("total_tokens")) or prompt + completion,
    }


def status_for(finish_reason: Any) -> tuple[str, str | None]:
    """(status, incomplete reason) for a chat ``finish_reason``."""
    if finish_reason == "length":
        return "incomplete", "max_output_tokens"
    if finish_reason == "content_filter":
        return "incomplete", "content_filter"
    return "completed", None


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(
    item_id: str, parts: Sequence[Mapping[str, Any]], status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": list(parts),
    }


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def reasoning_item(item_id: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [{"type": "reasoning_text", "text": text}]
    return {"id": item_id, "type": "reasoning", "summary": [], "content": content}


def _reasoning_text(message: Mapping[str, Any]) -> str:
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def response_from_chat(ctx: ResponseContext, completion: Mapping[str, Any]) -> dict[str, Any]:
    choices = completion.get("choices")
    choice = as_object(choices[0]) if isinstance(choices, list) and choices else {}
    message = as_object(choice.get("message"))
    output: list[dict[str, Any]] = []
    thinking = _reasoning_text(message)
    if thinking:
        output.append(reasoning_item(f"rs_{ctx.suffix}", thinking))
    parts: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, str) and content:
        parts.append(text_part(content))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        output.append(message_item(f"msg_{ctx.suffix}", parts))
    for n, call in enumerate(message.get("tool_calls") or ()):
        function = as_object(as_object(call).get("function"))
        output.append(
            function_call_item(
                f"fc_{ctx.suffix}_{n}",
                str(as_object(call).get("id", "")),
                str(function.get("name", "")),
                str(function.get("arguments", "")),
            )
        )
    status, incomplete = status_for(choice.get("finish_reason"))
    return ctx.response(
        status,
        output,
        responses_usage(as_object(completion.get("usage"))),
        model=str(completion.get("model") or ""),
        incomplete=incomplete,
    )
