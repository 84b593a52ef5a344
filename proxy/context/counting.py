"""Raw counts of whole request bodies for the three chat APIs, split the way trimming cuts.

"Raw" means the model's own tokenizer when the registry knows it (exact for OpenAI models),
else cl100k_base with no inflation: the number ``correction.py`` learns to correct. Counts
come as ``fixed + sum(items)``, where items are the elements trimming may drop (``messages``
for chat and Anthropic, ``input`` for the Responses API), so a trimmed body's count is known
without counting it again. :class:`BodyCounter` counts items only when asked (a body far over
its budget needs its newest items counted, not the ones trimming drops unseen).

The Responses API (``input`` items) is counted like chat messages: 3 tokens per item plus
its text; ``function_call`` counts name and arguments, ``function_call_output`` its output,
``reasoning`` its summary text and a quarter of its encrypted content's length (opaque: the
provider bills the reasoning tokens it stands for, which the proxy cannot see); ``instructions``
and tools are fixed (tools by the cookbook rule when flat, else by their JSON).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, overload

import tiktoken

from proxy.context import images
from proxy.context.scripts import ScriptClass, add_weights, dominant, script_weights
from proxy.context.tokens import (
    _anthropic_fixed,
    _anthropic_message_tally,
    _openai_fixed_tally,
    _openai_functions,
    _openai_message_tally,
    _Tally,
    get_encoding,
)
from proxy.models import DEFAULT_REGISTRY, ModelRegistry

__all__ = ["Api", "BodyCounter", "RawCount", "api_for", "raw_count"]


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
    return BodyCounter(body, api, registry).raw()


class BodyCounter:
    """One body's raw count, item by item on demand: ``fixed`` at once, ``costs[i]`` when first
    read (then kept). For a model without its own tokenizer each counted item also leaves its
    script weights, so the class of any counted part is known without looking at the rest."""

    def __init__(
        self,
        body: Mapping[str, Any],
        api: Api,
        registry: ModelRegistry = DEFAULT_REGISTRY,
        *,
        known: RawCount | None = None,
    ) -> None:
        """``known``: this body's full count, already made (nothing is counted again)."""
        model = body.get("model") if isinstance(body.get("model"), str) else None
        tokenizer = registry.facts(model).tokenizer
        self.exact = tokenizer.exact
        self._enc = get_encoding(tokenizer.encoding)
        self._item = _ITEM[api]
        value = body.get("input" if api is Api.RESPONSES else "messages")
        self.items: list[Any] = value if isinstance(value, list) else []
        self.fixed = _FIXED[api](self._enc, body) if known is None else known.fixed
        """Everything trimming never drops (for a string ``input``: all of it)."""
        outside = [] if api is Api.CHAT else [body.get(_OUTSIDE_TEXT[api])]
        if not isinstance(value, list):
            outside.append(value)
        self._outside = {} if self.exact else script_weights(outside)
        self._costs: list[int | None] = [None] * len(self.items)
        if known is not None:
            if len(known.items) != len(self.items):
                raise ValueError("one cost per item")
            self._costs = list(known.items)
        self._weights: list[dict[ScriptClass, int] | None] = [None] * len(self.items)
        self.counted = 0
        """Items counted so far (those given as ``known`` are not)."""
        self.costs: Sequence[int] = _LazyCosts(self)
        """Item costs as a sequence (trimming takes one); each counted when first read."""

    def cost(self, i: int) -> int:
        found = self._costs[i]
        if found is None:
            found = self._costs[i] = self._item(self._enc, self.items[i])
            self.counted += 1
        return found

    def script(self, items: Iterable[int] | None = None) -> ScriptClass:
        """The class of what is outside the items plus ``items`` (all of them by default),
        as :func:`scripts.script_of` gives it; LATIN for a model counted exactly."""
        if self.exact:
            return ScriptClass.LATIN
        weights = dict(self._outside)
        for i in range(len(self.items)) if items is None else items:
            found = self._weights[i]
            if found is None:
                found = self._weights[i] = script_weights(self.items[i])
            add_weights(weights, found)
        return dominant(weights)

    def raw(self, items: Sequence[int] | None = None) -> RawCount:
        """The count of the body made of ``items`` (all by default) and what is outside them."""
        picked = range(len(self.items)) if items is None else items
        costs = tuple(self.cost(i) for i in picked)
        return RawCount(self.fixed, costs, self.exact, self.script(picked))


_OUTSIDE_TEXT = {Api.MESSAGES: "system", Api.RESPONSES: "instructions"}
"""Text outside the items that the script class weighs (chat's system prompts are items)."""


class _LazyCosts(Sequence[int]):
    def __init__(self, counter: BodyCounter) -> None:
        self._counter = counter

    def __len__(self) -> int:
        return len(self._counter.items)

    @overload
    def __getitem__(self, i: int) -> int: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[int]: ...

    def __getitem__(self, i: int | slice) -> int | Sequence[int]:
        if isinstance(i, slice):
            return [self._counter.cost(j) for j in range(len(self))[i]]
        return self._counter.cost(range(len(self))[i])


# ---------------------------------------------------------------- Responses API

_PER_ITEM = 3
_REPLY_PRIMING = 3


def _responses_fixed(enc: tiktoken.Encoding, body: Mapping[str, Any]) -> int:
    """Priming, instructions, tools, the schema, and ``input`` when it is one string."""
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
    return tally.total(1.0)


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


_ITEM: Mapping[Api, Callable[[tiktoken.Encoding, Any], int]] = {
    Api.CHAT: lambda enc, msg: _openai_message_tally(enc, msg).total(1.0),
    Api.MESSAGES: lambda enc, msg: _anthropic_message_tally(enc, msg).total(1.0),
    Api.RESPONSES: _input_item,
}
_FIXED: Mapping[Api, Callable[[tiktoken.Encoding, Mapping[str, Any]], int]] = {
    Api.CHAT: lambda enc, body: _openai_fixed_tally(enc, body).total(1.0),
    Api.MESSAGES: lambda enc, body: _anthropic_fixed(enc, body, 1.0),
    Api.RESPONSES: _responses_fixed,
}
