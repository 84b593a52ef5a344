"""Reading an upstream answer's raw wire data for the usage tap: cheap looks at an event's
text before parsing it, parsing one event or many at once, incremental decompression, and the
texts of a JSON body. Pure functions, no state.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterator

from .jsonbytes import loads_json

_INFLATE_STEP = 64 << 10  # decompress in bounded pieces: a zip bomb costs CPU, never memory
CHAT_TEXT_KEYS = ("content", "refusal", "reasoning_content", "reasoning")


def loads_object(data: str | bytes) -> dict | None:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def loads_many(datas: list[str]) -> list[dict | None]:
    """Each event's data as an object, parsed as one JSON array: the decoder's cost per call
    is most of what a small event costs. One parse each when the joined text is not one
    value per event (malformed data, or data that is several values)."""
    if len(datas) > 1:
        try:
            values = loads_json("[" + ",".join(datas) + "]")
        except (ValueError, RecursionError):
            values = None
        if isinstance(values, list) and len(values) == len(datas):
            return [v if isinstance(v, dict) else None for v in values]
    return [loads_object(d) for d in datas]


def only_text(data: str) -> bool:
    """Cheap test on raw event data: no usage object, finish reason or error in it, so all
    it can add is generated text."""
    return not may_have_usage(data) and not has_finish_reason(data) and '"error"' not in data


def error_type(payload: object) -> str:
    """``overloaded_error`` from Anthropic's envelope, ``server_error`` from OpenAI's, ..."""
    if isinstance(payload, dict):
        inner = payload.get("error")
        if isinstance(inner, dict):
            payload = inner
        elif isinstance(inner, str) and inner:
            return inner
        for key in ("type", "code"):
            value = payload.get(key)
            if isinstance(value, str) and value and value != "error":
                return value
    return "error"


USAGE_OBJECT = re.compile(r'"usage"[ \t\r\n:]*\{')
"""A ``"usage"`` key whose value is an object (not ``null``)."""
FINISH_REASON = re.compile(r'"finish_reason"[ \t\r\n:]*"')
"""A ``"finish_reason"`` key whose value is a string (not ``null``)."""


def has_finish_reason(data: str) -> bool:
    """Cheap test on raw event data, without parsing it."""
    return FINISH_REASON.search(data) is not None


def responses_finish(response: dict) -> str | None:
    """A Responses API status as a finish reason, in Chat Completions' words."""
    status = response.get("status")
    if status == "completed":
        return "stop"
    if status == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return reason if isinstance(reason, str) and reason else "length"
    if status in ("failed", "cancelled"):
        return "error"
    return None


def may_have_usage(data: str) -> bool:
    """Cheap test on raw event data, without parsing it."""
    return USAGE_OBJECT.search(data) is not None


class Inflater:
    """Incremental gzip/deflate decoder for the tap's copy of a compressed body."""

    def __init__(self, raw_fallback: bool) -> None:
        self._d = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header, detected
        # "deflate" is sometimes sent raw (no zlib header): keep the first bytes until the
        # header check has passed, so they can be replayed into a raw decoder.
        self._probe: bytes | None = b"" if raw_fallback else None

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._probe is None:
            out = self._d.decompress(data, _INFLATE_STEP)
        else:
            self._probe += data
            try:
                out = self._d.decompress(data, _INFLATE_STEP)
            except zlib.error:
                self._d = zlib.decompressobj(-zlib.MAX_WBITS)
                out, self._probe = self._d.decompress(self._probe, _INFLATE_STEP), None
            if self._probe is not None and (out or len(self._probe) > 16):
                self._probe = None  # the header was valid: no fallback needed any more
        yield out
        while self._d.unconsumed_tail:
            yield self._d.decompress(self._d.unconsumed_tail, _INFLATE_STEP)

    def flush(self) -> bytes:
        return self._d.flush()


def make_inflater(content_encoding: str | None) -> tuple[Inflater | None, bool]:
    """(inflater or None, readable). Brotli/zstd/stacked codings are not readable here."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None, True
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return Inflater(raw_fallback=codings[0] == "deflate"), True
    return None, False


def body_texts(obj: dict) -> Iterator[str]:
    """Generated text of a complete response: Chat Completions, Responses or Messages."""
    for choice in obj.get("choices") or ():
        if isinstance(choice, dict):
            message = choice.get("message")
            if isinstance(message, dict):
                yield from strings_of(message, CHAT_TEXT_KEYS)
                for call in message.get("tool_calls") or ():
                    if isinstance(call, dict) and isinstance(call.get("function"), dict):
                        yield from strings_of(call["function"], ("name", "arguments"))
            yield from strings_of(choice, ("text",))
    for item in obj.get("output") or ():  # Responses API
        if isinstance(item, dict):
            yield from strings_of(item, ("name", "arguments"))
            for key in ("content", "summary"):  # message parts, reasoning summary
                parts = item.get(key)
                for part in parts if isinstance(parts, list) else ():
                    if isinstance(part, dict):
                        yield from strings_of(part, ("text", "refusal"))
    content = obj.get("content")
    for block in content if isinstance(content, list) else ():  # Anthropic Messages
        if isinstance(block, dict):
            yield from strings_of(block, ("text", "thinking"))
            if block.get("type") == "tool_use" and "input" in block:
                yield json.dumps(block["input"], ensure_ascii=False)


def strings_of(obj: dict, keys: tuple[str, ...]) -> Iterator[str]:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str) and value:
            yield value
