"""Complete (non-streaming) response bodies: OpenAI chat completion <-> Anthropic message."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..wire import as_object
from .common import (
    anthropic_stop,
    anthropic_usage,
    chat_finish,
    chat_usage,
    tool_arguments,
    tool_input,
)

__all__ = ["anthropic_message", "chat_completion", "reasoning_text"]


def reasoning_text(message: Mapping[str, Any]) -> str:
    """Reasoning text of a chat message or delta: OpenAI has no field for it; vLLM,
    DeepSeek and llama.cpp send ``reasoning_content``, Ollama and others ``reasoning``."""
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def anthropic_message(completion: Mapping[str, Any]) -> dict[str, Any]:
    """A chat completion (first choice) -> an Anthropic ``message``."""
    choices = completion.get("choices")
    choice = as_object(choices[0]) if isinstance(choices, list) and choices else {}
    message = as_object(choice.get("message"))
    content: list[dict[str, Any]] = []
    thinking = reasoning_text(message)
    if thinking:
        content.append({"type": "thinking", "thinking": thinking, "signature": ""})
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(str(as_object(p).get("text", "")) for p in text)
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    for call in message.get("tool_calls") or ():
        function = as_object(as_object(call).get("function"))
        content.append(
            {
                "type": "tool_use",
                "id": as_object(call).get("id", ""),
                "name": function.get("name", ""),
                "input": tool_input(function.get("arguments")) or {},
            }
        )
    stop = anthropic_stop(choice.get("finish_reason"))
    if isinstance(refusal, str) and refusal:
        stop = "refusal"
    return {
        "id": completion.get("id", ""),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model", ""),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": anthropic_usage(as_object(completion.get("usage"))),
    }


def chat_completion(message: Mapping[str, Any]) -> dict[str, Any]:
    """An Anthropic ``message`` -> a chat completion with one choice."""
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        block = as_object(block)
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "thinking":
            thinking.append(str(block.get("thinking", "")))
        elif kind == "tool_use":
            function = {
                "name": block.get("name", ""),
                "arguments": tool_arguments(block.get("input")),
            }
            calls.append({"id": block.get("id", ""), "type": "function", "function": function})
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
        "annotations": [],
    }
    if thinking:
        reply["reasoning_content"] = "".join(thinking)
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": message.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": chat_finish(message.get("stop_reason")),
            }
        ],
        "usage": chat_usage(as_object(message.get("usage"))),
    }
