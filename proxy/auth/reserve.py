"""What a request may cost at most, read from its bytes at admission, without counting tokens.

The gate reserves this worst case against tpm and the budget until the request settles, so it
must never be below what the provider bills, or concurrent requests could overshoot a budget by
more than what is in flight. Input: the byte bound of ``context.tokens.token_bound`` (every
token of a byte-level tokenizer covers >= 1 byte of text; message and tool overhead is paid
for by JSON punctuation; media at the proxy's per-item maximum). It is loose (about 4x English
text) but costs a scan of the body instead of a tokenization, and holds for every model,
including those the proxy has no tokenizer for. Output: the request's own cap times the
number of choices it asks for; without a cap, the configured default (the gate's), which an
uncapped answer can exceed: that excess is the only overshoot the budget can see.

A compressed body is decoded first (bounded), or its bytes would bound nothing, and the model a
key may be restricted to is read from the decoded JSON, never from a regex over the bytes.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

from ..context.tokens import token_bound
from .wire import requested_output_tokens

__all__ = ["BodyUnreadable", "WorstCase", "decode_body", "parse_object", "worst_case"]

_NO_OUTPUT_PATHS = ("/embeddings", "/count_tokens", "/moderations")
"""Endpoints that bill input only: nothing to reserve for output."""
_INFLATE_STEP = 64 << 10


class BodyUnreadable(ValueError):
    """A compressed body that does not decode within the size limit."""


@dataclass(frozen=True, slots=True)
class WorstCase:
    model: str | None
    """The model the client asked for (None: the body names none, or is not JSON)."""
    input_tokens: int
    max_output_tokens: int | None
    """None: the request sets no cap (the gate reserves its default)."""


def decode_body(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` without its Content-Encoding (gzip, deflate; identity), at most ``limit``
    bytes decoded, in bounded steps so a zip bomb costs CPU up to the limit, never memory."""
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding not in ("gzip", "x-gzip", "deflate"):
            raise BodyUnreadable(f"unsupported Content-Encoding {coding!r}")
        body = _inflate(body, 47 if coding != "deflate" else 15, limit)
    return body


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out: list[bytes] = []
    size = 0
    try:
        piece = inflater.decompress(data, _INFLATE_STEP)
        while piece:
            size += len(piece)
            if size > limit:
                raise BodyUnreadable(f"the decoded body exceeds {limit} bytes")
            out.append(piece)
            piece = inflater.decompress(inflater.unconsumed_tail, _INFLATE_STEP)
    except zlib.error as exc:
        raise BodyUnreadable(f"the body does not decode: {exc}") from None
    if not inflater.eof:
        raise BodyUnreadable("the compressed body is truncated")
    return b"".join(out)


def parse_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None (not JSON, or not an object)."""
    if not body:
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def worst_case(body: bytes, data: dict[str, Any] | None, tail: str) -> WorstCase:
    """``body`` decoded (no Content-Encoding), ``data`` the same parsed (None: not a JSON
    object), ``tail`` the path after the route prefix."""
    model = data.get("model") if data is not None else None
    bound = token_bound(body)
    if bound is None:  # \\u00XX escapes could hide a media marker: bound the plain spelling
        plain = body
        if data is not None:
            plain = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        bound = token_bound(plain, plain=True)
        assert bound is not None
    output: int | None = 0
    if not tail.rstrip("/").endswith(_NO_OUTPUT_PATHS):
        output = requested_output_tokens(data)
        choices = data.get("n") if data is not None else None
        if output is not None and _count(choices) > 1:
            output *= _count(choices)
    return WorstCase(model if isinstance(model, str) else None, bound, output)


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1
