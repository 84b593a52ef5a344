"""JSON as bytes for a body the proxy rewrites, whatever text the client's JSON held, and the
one optional orjson import: JSON is most of a translator's CPU per event and most of what a
log line costs, so orjson is used when installed (extra "orjson"), the stdlib otherwise and
for what orjson refuses (integers beyond 64 bits, lone surrogates)."""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is not installed
    orjson = None  # type: ignore[assignment]

__all__ = ["compact_json", "json_bytes", "loads_body", "loads_json", "orjson"]

_UTF8 = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_ASCII = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


def json_bytes(obj: Any) -> bytes:
    """Compact JSON in UTF-8; a lone surrogate (``"\\ud800"`` is valid JSON, but no UTF-8)
    keeps its ``\\u`` escape instead, as the client wrote it."""
    try:
        return _UTF8(obj).encode()
    except UnicodeEncodeError:
        return _ASCII(obj).encode()


def compact_json(obj: Any) -> bytes:
    """Compact JSON, as the providers send it (no spaces, UTF-8 kept)."""
    if orjson is not None:
        try:
            return orjson.dumps(obj)
        except TypeError:  # integers beyond 64 bits, lone surrogates: the stdlib takes them
            pass
    return json_bytes(obj)


def loads_json(raw: bytes | str) -> Any:
    """Parsed JSON; raises ValueError (or RecursionError) as ``json.loads`` does."""
    if orjson is not None:
        try:
            return orjson.loads(raw)
        except ValueError:  # invalid, or valid JSON orjson refuses (huge integers)
            pass
    return json.loads(raw)


_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"0" * 9)
_LONG_NUMBER = b"0" * 19
"""orjson reads an integer of 2**64 or more as a float where json keeps it exact; every such
integer has 19 digits or more."""


def loads_body(raw: bytes) -> Any:
    """A request body, parsed to the values ``json.loads`` gives and failing as it fails, by
    orjson when it cannot differ (no run of 19 digits anywhere): about half the CPU on a large
    body, which is parsed on the event loop (the parse holds the GIL, so a thread would not
    spare the loop)."""
    if orjson is not None and _LONG_NUMBER not in raw.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:  # invalid, or what only json takes (NaN, a lone surrogate)
            pass
    return json.loads(raw)
