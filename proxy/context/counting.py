"""Raw counts of whole request bodies for the three chat APIs, split the way trimming cuts.

"Raw" means the model's own tokenizer when the registry knows it (exact for OpenAI models),
else cl100k_base with no inflation: the number ``correction.py`` learns to correct. Counts
come as ``fixed + sum(items)``, where items are the elements trimming may drop (``messages``
for chat and Anthropic, ``input`` for the Responses API), so a trimmed body's count is known
without counting it again.

The Responses API (``input`` items) is counted like chat messages: 3 tokens per item plus
its text; ``function_call`` counts name and arguments, ``function_call_output`` its output,
``reasoning`` its summary text and a quarter of its encrypted content's length (opaque: the
provider bills the reasoning tokens it stands for, which the proxy cannot see); ``instructions``
and tools are fixed (tools by the cookbook rule when flat, else by their JSON).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import tiktoken

from proxy.context import images
from proxy.context.scripts import ScriptClass, script_of
from proxy.context.tokens import (
    ANTHROPIC_TOOL_PROMPT_TOKENS,
    _anthropic_content,
    _anthropic_message_tally,
    _openai_fixed_tally,
    _openai_functions,
    _openai_message_tally,
    _Tally,
    get_encoding,
)
from proxy.models import DEFAULT_REGISTRY, ModelRegistry

__all__ = ["Api", "RawCount", "api_for", "raw_count"]


class Api(StrEnum):
    CHAT = "openai_chat"
    RESPONSES = "openai_responses"
    MESSAGES = "anthropic_messages"


_PATHS: Mapping[str, Api] = {
    "/chat/completions": Api.CHAT,
    "/responses": Api.RESPONSES,
    "/messages": Api.MESSAGES,
}


def api_for(provider: str, path: str) -> Api | None:
    """The chat API a request path speaks (``/v1/messages/count_tokens`` is not one)."""
    for suffix, api in _PATHS.items():
        if path.endswith(suffix) and (api is Api.MESSAGES) == (provider == "anthropic"):
            return api
    return None


@dataclass(frozen=True, slots=True)
class RawCount:
    """A body's raw count: ``tokens == fixed + sum(items)``."""

    fixed: int
    """Everything trimming never drops: priming, tools, schemas, system/instructions."""
    items: tuple[int, ...]
    """One cost per element of ``messages`` / ``input`` (0 items for a string input)."""
    exact: bool
    """True when this is the model's own tokenizer (no correction needed)."""
    script: ScriptClass

    @property
    def tokens(self) -> int:
        return self.fixed + sum(self.items)


def raw_count(
    body: Mapping[str, Any], api: Api, registry: ModelRegistry = DEFAULT_REGISTRY
) -> RawCount:
    """Count ``body`` (pure CPU work: run big bodies off the event loop)."""
    model = body.get("model") if isinstance(body.get("model"), str) else None
    tokenizer = registry.facts(model).tokenizer
    enc = get_encoding(tokenizer.encoding)
    if api is Api.MESSAGES:
        fixed, items = _anthropic(enc, body)
        text: Any = [body.get("system"), body.get("messages")]
    elif api is Api.RESPONSES:
        fixed, items = _responses(enc, body)
        text = [body.get("instructions"), body.get("input")]
    else:
        fixed = _openai_fixed_tally(enc, body).total(1.0)
        items = tuple(_openai_message_tally(enc, m).total(1.0) for m in _list(body, "messages"))
        text = body.get("messages")
    script = ScriptClass.LATIN if tokenizer.exact else script_of(text)
    return RawCount(fixed, items, tokenizer.exact, script)


def _list(body: Mapping[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    return value if isinstance(value, list) else []


def _anthropic(enc: tiktoken.Encoding, body: Mapping[str, Any]) -> tuple[int, tuple[int, ...]]:
    tally = _Tally(enc)
    _anthropic_content(tally, body.get("system"))
    tools = body.get("tools")
    has_tools = isinstance(tools, list) and bool(tools)
    if has_tools:
        tally.add_json(tools)
    fixed = tally.total(1.0) + (ANTHROPIC_TOOL_PROMPT_TOKENS if has_tools else 0)
    items = tuple(_anthropic_message_tally(enc, m).total(1.0) for m in _list(body, "messages"))
    return fixed, items


# ---------------------------------------------------------------- Responses API

_PER_ITEM = 3
_REPLY_PRIMING = 3


def _responses(enc: tiktoken.Encoding, body: Mapping[str, Any]) -> tuple[int, tuple[int, ...]]:
    tally = _Tally(enc, text=_REPLY_PRIMING)
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        tally.text += _PER_ITEM
        tally.add_text(instructions)
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        _openai_functions(tally, [_as_function(t) for t in tools])
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, Mapping) else None
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        tally.add_json(fmt.get("schema"))
    inp = body.get("input")
    if isinstance(inp, str):
        tally.text += _PER_ITEM
        tally.add_text(inp)
        return tally.total(1.0), ()
    items = inp if isinstance(inp, list) else []
    return tally.total(1.0), tuple(_input_item(enc, item) for item in items)


def _as_function(tool: Any) -> Any:
    """Responses tools are flat (``{"type": "function", "name", ...}``); others as JSON."""
    if isinstance(tool, Mapping) and tool.get("type") == "function":
        return {k: v for k, v in tool.items() if k != "type"}
    return tool


def _input_item(enc: tiktoken.Encoding, item: Any) -> int:
    tally = _Tally(enc, text=_PER_ITEM)
    if not isinstance(item, Mapping):
        tally.add_json(item)
        return tally.total(1.0)
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if isinstance(role, str):
            tally.add_text(role)
        _response_content(tally, item.get("content"))
    elif kind == "function_call":
        for key in ("name", "arguments"):
            if isinstance(item.get(key), str):
                tally.add_text(item[key])
    elif kind == "function_call_output":
        _response_content(tally, item.get("output"))
    elif kind == "reasoning":
        tally.add_json(item.get("summary"))
        encrypted = item.get("encrypted_content")
        if isinstance(encrypted, str):
            tally.add_media(len(encrypted) // 4)
    else:
        tally.add_json({k: v for k, v in item.items() if k not in ("id", "call_id")})
    return tally.total(1.0)


def _response_content(tally: _Tally, content: Any) -> None:
    if isinstance(content, str):
        tally.add_text(content)
        return
    for part in content if isinstance(content, list) else [content]:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            tally.add_text(part["text"])
        elif kind == "input_image":
            detail = part.get("detail")
            url = part.get("image_url")
            size = images.data_url_image_size(url) if isinstance(url, str) else None
            tally.add_media(images.openai_image_tokens(detail, size))
        elif kind == "input_file":
            tally.add_media(images.DOCUMENT_DEFAULT_TOKENS)
        elif part is not None:
            tally.add_json(part)
