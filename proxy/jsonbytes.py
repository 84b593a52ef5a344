"""JSON as bytes for a body the proxy rewrites, whatever text the client's JSON held."""

from __future__ import annotations

import json
from typing import Any

_UTF8 = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_ASCII = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


def json_bytes(obj: Any) -> bytes:
    """Compact JSON in UTF-8; a lone surrogate (``"\\ud800"`` is valid JSON, but no UTF-8)
    keeps its ``\\u`` escape instead, as the client wrote it."""
    try:
        return _UTF8(obj).encode()
    except UnicodeEncodeError:
        return _ASCII(obj).encode()
