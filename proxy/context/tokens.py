"""Offline token counting for OpenAI chat and Anthropic messages requests.

Encodings come from ``bpe.py`` (files shipped in ``encodings/``, never the network).

OpenAI chat (the cookbook's ``num_tokens_from_messages``): 3 tokens per message, the tokens
of every string field (role, content, name, tool_call_id...), +1 per ``name``, +3 to prime the
reply. Tool definitions use the cookbook's ``num_tokens_for_tools`` rule when the schema is
flat (name/description/properties with type, description, enum); other JSON (nested schemas,
``tool_calls``, ``response_format`` schemas, unknown parts) counts each key + 1 and each
string/scalar value, which over-counts the provider's own rendering. Images use the tile rule
(see ``images.py``).

Method: "exact" only for plain string messages with a model whose tokenizer is known and no
tools, functions, tool messages, response schema or non-string content; everything else is
"estimate" (OpenAI itself calls the cookbook formula an estimate). For models outside the
known families and for Anthropic (no public tokenizer), text counts from ``cl100k_base`` are
multiplied by ``safety_factor`` and rounded up per message; image/document estimates are not
multiplied. ``count_*`` always equals ``fixed_tokens + sum(message_tokens)``, so trimming and
counting agree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import tiktoken

from proxy.context import images
from proxy.context.bpe import (
    EncodingFileError,
    all_loaded,
    count_chunked,
    get_encoding,
)
from proxy.models import DEFAULT_REGISTRY, ModelRegistry

__all__ = [
    "ANTHROPIC_TOOL_PROMPT_TOKENS",
    "EncodingFileError",
    "Provider",
    "TokenCount",
    "all_loaded",
    "count_anthropic_messages",
    "count_openai_chat",
    "count_request",
    "count_text",
    "encoding_for_model",
    "fixed_tokens",
    "get_encoding",
    "may_exceed",
    "message_tokens",
    "token_bound",
]

Provider = Literal["openai", "anthropic"]


@dataclass(frozen=True)
class TokenCount:
    tokens: int
    method: Literal["exact", "estimate"]


def encoding_for_model(
    model: str | None, registry: ModelRegistry = DEFAULT_REGISTRY
) -> tuple[tiktoken.Encoding, bool]:
    """(encoding, exact): exact is True when the encoding is the model's own tokenizer.

    The registry decides (``proxy.models``); unknown models and Claude get ``cl100k_base``,
    the raw estimator that ``correction.py`` turns into bounds.
    """
    tokenizer = registry.facts(model).tokenizer
    return get_encoding(tokenizer.encoding), tokenizer.exact


def _count(enc: tiktoken.Encoding, text: str) -> int:
    return count_chunked(enc, text)


def count_text(text: str, model: str | None = None) -> int:
    """Tokens of ``text`` in the model's encoding (no inflation)."""
    return _count(encoding_for_model(model)[0], text)


@dataclass
class _Tally:
    """Running count: text (tokenizer-based, inflatable), media (rule-based), estimated flag."""

    enc: tiktoken.Encoding
    text: int = 0
    media: int = 0
    estimated: bool = False

    def add_text(self, value: str) -> None:
        self.text += _count(self.enc, value)

    def add_json(self, value: Any) -> None:
        """Each key + 1, each string, 1 per other scalar: never more than its JSON bytes.

        Iterative, so a body nested as deep as json.loads allows cannot hit the recursion limit.
        """
        self.estimated = True
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                self.add_text(item)
            elif isinstance(item, Mapping):
                for key, sub in item.items():
                    self.text += _count(self.enc, str(key)) + 1
                    stack.append(sub)
            elif isinstance(item, list):
                stack.extend(item)
            else:
                self.text += 1

    def add_media(self, tokens: int) -> None:
        self.media += tokens
        self.estimated = True

    def total(self, factor: float) -> int:
        return _scale(self.text, factor) + self.media


def _scale(tokens: int, factor: float) -> int:
    if factor == 1.0:
        return tokens
    return math.ceil(round(tokens * factor, 6))  # round: 100 * 1.2 must give 120, not 121


# ---------------------------------------------------------------- OpenAI chat

_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3
_ESTIMATED_ROLES = frozenset({"tool", "function"})


def _openai_part(tally: _Tally, part: Any) -> None:
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind == "text" and isinstance(part.get("text"), str):
        tally.add_text(part["text"])
    elif kind == "image_url":
        image = part.get("image_url")
        image = image if isinstance(image, Mapping) else {"url": image}
        url = image.get("url")
        size = images.data_url_image_size(url) if isinstance(url, str) else None
        tally.add_media(images.openai_image_tokens(image.get("detail"), size))
    elif kind == "input_audio" and isinstance(part.get("input_audio"), Mapping):
        data = part["input_audio"].get("data")
        # ~10 tokens/s at >= 16 kbit/s: decoded bytes / 200 (a rough bound, bytes-limited)
        tally.add_media(len(data) * 3 // 4 // 200 if isinstance(data, str) else 0)
    elif kind == "file":
        tally.add_media(images.DOCUMENT_DEFAULT_TOKENS)
    else:
        tally.add_json(part)


def _openai_message_tally(enc: tiktoken.Encoding, msg: Any) -> _Tally:
    tally = _Tally(enc, text=_PER_MESSAGE)
    if not isinstance(msg, Mapping):
        tally.add_json(msg)
        return tally
    role = msg.get("role")
    tally.estimated = isinstance(role, str) and role in _ESTIMATED_ROLES
    for key, value in msg.items():
        if isinstance(value, str):
            tally.add_text(value)
            tally.text += _PER_NAME if key == "name" else 0
        elif key == "content" and isinstance(value, list):
            tally.estimated = True
            for part in value:
                _openai_part(tally, part)
        elif value is not None:
            tally.add_json(value)
    return tally


_FLAT_PROPERTY_KEYS = frozenset({"type", "description", "enum"})
_FLAT_PARAMETER_KEYS = frozenset({"type", "properties", "required", "additionalProperties"})


def _is_flat_function(fn: Mapping[str, Any]) -> bool:
    if not isinstance(fn.get("name"), str) or not isinstance(fn.get("description", ""), str):
        return False
    if not set(fn) <= {"name", "description", "parameters", "strict"}:
        return False
    params = fn.get("parameters", {})
    if not isinstance(params, Mapping) or not set(params) <= _FLAT_PARAMETER_KEYS:
        return False
    props = params.get("properties", {})
    return isinstance(props, Mapping) and all(
        isinstance(p, Mapping)
        and set(p) <= _FLAT_PROPERTY_KEYS
        and isinstance(p.get("type"), str)
        and isinstance(p.get("description", ""), str)
        and isinstance(p.get("enum", []), list)
        and all(isinstance(item, str) for item in p.get("enum", []))
        for p in props.values()
    )


def _cookbook_function(tally: _Tally, fn: Mapping[str, Any]) -> None:
    """The cookbook's num_tokens_for_tools rule for one flat function."""
    tally.add_text(f"{fn['name']}:{fn.get('description', '').removesuffix('.')}")
    props = fn.get("parameters", {}).get("properties", {})
    if props:
        tally.text += 3  # prop_init
    for key, prop in props.items():
        tally.text += 3  # prop_key
        if "enum" in prop:
            tally.text -= 3  # enum_init
            for item in prop["enum"]:
                tally.text += 3
                tally.add_text(item)
        desc = prop.get("description", "").removesuffix(".")
        tally.add_text(f"{key}:{prop['type']}:{desc}")


def _openai_functions(tally: _Tally, functions: list[Any]) -> None:
    func_init = 10 if tally.enc.name == "cl100k_base" else 7
    for fn in functions:
        tally.text += func_init if isinstance(fn, Mapping) else 0
        if isinstance(fn, Mapping) and _is_flat_function(fn):
            _cookbook_function(tally, fn)
        else:
            tally.add_json(fn)
    tally.text += 12  # func_end
    tally.estimated = True


def _openai_fixed_tally(enc: tiktoken.Encoding, body: Mapping[str, Any]) -> _Tally:
    tally = _Tally(enc, text=_REPLY_PRIMING)
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        fns = [
            t.get("function") if isinstance(t, Mapping) and "function" in t else t for t in tools
        ]
        _openai_functions(tally, fns)
    functions = body.get("functions")
    if isinstance(functions, list) and functions:
        _openai_functions(tally, functions)
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        tally.add_json(fmt.get("json_schema"))
    return tally


def _model_of(body: Any, model: str | None) -> str | None:
    if model is None and isinstance(body, Mapping) and isinstance(body.get("model"), str):
        return body["model"]
    return model


def count_openai_chat(
    body: Mapping[str, Any], model: str | None = None, safety_factor: float = 1.2
) -> TokenCount:
    """Prompt tokens of a chat-completions body; ``model`` defaults to ``body["model"]``."""
    enc, exact = encoding_for_model(_model_of(body, model))
    factor = 1.0 if exact else safety_factor
    tallies = [_openai_fixed_tally(enc, body)]
    tallies += [_openai_message_tally(enc, m) for m in _messages(body)]
    tokens = sum(t.total(factor) for t in tallies)
    estimated = not exact or any(t.estimated for t in tallies)
    return TokenCount(tokens, "estimate" if estimated else "exact")


# ---------------------------------------------------------------- Anthropic messages

# Anthropic adds a tool-use system prompt whenever tools are present (346 tokens for
# tool_choice auto/none on current models, per its tool-use pricing docs).
ANTHROPIC_TOOL_PROMPT_TOKENS = 346


def _anthropic_block(tally: _Tally, block: Any, in_result: bool = False) -> None:
    kind = block.get("type") if isinstance(block, Mapping) else None
    if kind == "tool_result" and in_result:  # not valid nesting; no recursion on it
        kind = None
    source = block.get("source") if isinstance(block, Mapping) else None
    source = source if isinstance(source, Mapping) else {}
    if kind == "text" and isinstance(block.get("text"), str):
        tally.add_text(block["text"])
    elif kind == "image":
        data = source.get("data") if source.get("type") == "base64" else None
        size = images.base64_image_size(data) if isinstance(data, str) else None
        tally.add_media(images.anthropic_image_tokens(size))
    elif kind == "document" and source.get("type") == "text":
        tally.add_text(str(source.get("data", "")))
    elif kind == "document":
        tally.add_media(images.DOCUMENT_DEFAULT_TOKENS)
    elif kind == "thinking" and isinstance(block.get("thinking"), str):
        tally.add_text(block["thinking"])  # the signature is opaque and not counted
    elif kind == "tool_result":
        _anthropic_content(tally, block.get("content", ""), in_result=True)
    else:  # tool_use (name + input JSON), server tools, unknown blocks
        tally.add_json(block)


def _anthropic_content(tally: _Tally, content: Any, in_result: bool = False) -> None:
    if isinstance(content, str):
        tally.add_text(content)
    elif isinstance(content, list):
        for block in content:
            _anthropic_block(tally, block, in_result)
    elif content is not None:
        tally.add_json(content)


def _anthropic_message_tally(enc: tiktoken.Encoding, msg: Any) -> _Tally:
    tally = _Tally(enc, text=_PER_MESSAGE, estimated=True)
    if isinstance(msg, Mapping):
        _anthropic_content(tally, msg.get("content"))
    else:
        tally.add_json(msg)
    return tally


def _anthropic_fixed(enc: tiktoken.Encoding, body: Mapping[str, Any], factor: float) -> int:
    tally = _Tally(enc, estimated=True)
    _anthropic_content(tally, body.get("system"))
    tools = body.get("tools")
    has_tools = isinstance(tools, list) and bool(tools)
    if has_tools:
        tally.add_json(tools)
    return tally.total(factor) + (ANTHROPIC_TOOL_PROMPT_TOKENS if has_tools else 0)


def count_anthropic_messages(body: Mapping[str, Any], safety_factor: float = 1.2) -> TokenCount:
    """Input tokens of a messages body: always an estimate (Claude's tokenizer is private)."""
    enc = encoding_for_model(None)[0]
    tokens = _anthropic_fixed(enc, body, safety_factor) + sum(
        _anthropic_message_tally(enc, m).total(safety_factor) for m in _messages(body)
    )
    return TokenCount(tokens, "estimate")


# ---------------------------------------------------------------- shared entry points


def _messages(body: Any) -> list[Any]:
    messages = body.get("messages") if isinstance(body, Mapping) else None
    return messages if isinstance(messages, list) else []


def count_request(
    body: Mapping[str, Any], provider: Provider, safety_factor: float = 1.2
) -> TokenCount:
    """Input tokens of a request body for ``provider`` ("openai" chat or "anthropic")."""
    if provider == "anthropic":
        return count_anthropic_messages(body, safety_factor)
    return count_openai_chat(body, safety_factor=safety_factor)


def message_tokens(
    msg: Mapping[str, Any], provider: Provider, model: str | None, safety_factor: float = 1.2
) -> int:
    """One message's share of ``count_request`` (the per-message cost for trimming)."""
    if provider == "anthropic":
        enc = encoding_for_model(None)[0]
        return _anthropic_message_tally(enc, msg).total(safety_factor)
    enc, exact = encoding_for_model(model)
    return _openai_message_tally(enc, msg).total(1.0 if exact else safety_factor)


def fixed_tokens(body: Mapping[str, Any], provider: Provider, safety_factor: float = 1.2) -> int:
    """Tokens outside ``messages``: reply priming, tools, functions, schemas, Anthropic system.

    ``count_request(...).tokens == fixed_tokens(...) + sum(message_tokens(m) for m)``.
    """
    if provider == "anthropic":
        return _anthropic_fixed(encoding_for_model(None)[0], body, safety_factor)
    enc, exact = encoding_for_model(_model_of(body, None))
    return _openai_fixed_tally(enc, body).total(1.0 if exact else safety_factor)


# ---------------------------------------------------------------- cheap upper bound

_MEDIA_MARKERS = (b'"image_url"', b'"image"', b'"file"', b'"document"')
_ESCAPED_ASCII = re.compile(rb"\\u00[2-7][0-9a-fA-F]")


def may_exceed(body: bytes, budget_tokens: int, safety_factor: float = 1.2) -> bool:
    """False only when ``count_request`` of this body cannot exceed ``budget_tokens``.

    ``body`` is the raw, uncompressed JSON. It takes bytes, not a length, because images
    and attachments cost tokens their bytes do not pay for (a 40-byte image URL costs 765).

    Why it is sound: every token covers >= 1 byte of text (also when long texts are counted
    in pieces), and a JSON string spends >= 1 byte per byte of the text it encodes (escapes
    only add bytes). Every token added that is not text (3 per message, +1 per name, +1 per
    JSON key, 1 per other scalar, 3 for priming, the cookbook's per-tool/per-property
    constants) is paid for by JSON punctuation the text counts do not use: ``{"role":""}`` is
    11 such bytes for 3 tokens. Rounding up after inflation adds < 1 token per message, also
    covered. So text-derived tokens <= max(1, safety_factor) * len(body). Not byte-derived:
    image/file/document defaults (<= ``images.MAX_MEDIA_TOKENS`` each, at most one per marker
    occurrence) and Anthropic's tool prompt, both added. ASCII spelled with ``\\u00XX``
    escapes could hide a marker, so such a body is always counted. Domain: bodies of the
    provider's shape (messages and tools are JSON objects); a list of bare numbers as messages
    may out-count its bytes, and the provider rejects it anyway.
    """
    if math.ceil(max(1.0, safety_factor) * len(body)) > budget_tokens:
        return True  # over on bytes alone: no need to look for media markers
    bound = token_bound(body, safety_factor)
    return bound is None or bound > budget_tokens


def token_bound(body: bytes, safety_factor: float = 1.0, *, plain: bool = False) -> int | None:
    """The bound :func:`may_exceed` compares (see its docstring for why it holds); None when
    ``\\u00XX`` escapes could hide a media marker: re-encode the parsed JSON without ASCII
    escapes and ask again with ``plain`` (a marker can no longer hide).

    With ``safety_factor`` 1 it bounds what a provider bills for the text: every token of a
    byte-level tokenizer covers >= 1 byte. Media are bounded by ``images.MAX_MEDIA_TOKENS``
    each, the proxy's own per-item maximum.
    """
    if not plain and _ESCAPED_ASCII.search(body):
        return None
    media = sum(body.count(marker) for marker in _MEDIA_MARKERS)
    return (
        math.ceil(max(1.0, safety_factor) * len(body))
        + media * images.MAX_MEDIA_TOKENS
        + ANTHROPIC_TOOL_PROMPT_TOKENS
    )
