"""JSON helpers: the same values with or without the optional orjson speed-up."""

from __future__ import annotations

import json

import pytest

from proxy.translate.wire import dumps, loads_object, sse


@pytest.mark.parametrize(
    "value",
    [
        {"text": "héllo ✓", "n": 1.5, "none": None, "list": [1, "x"]},
        {"huge": 2**80},
        {"nested": {"deep": [{"a": -(2**70)}]}},
    ],
)
def test_dumps_and_loads_keep_values(value: dict[str, object]) -> None:
    raw = dumps(value)
    compact = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    assert (compact, value) == (raw, loads_object(raw))


@pytest.mark.parametrize("raw", [b"[1, 2]", b"3", b"{bad", b"", b'"s"'])
def test_loads_object_is_none_for_anything_but_an_object(raw: bytes) -> None:
    assert None is loads_object(raw)


def test_sse_event_framing() -> None:
    assert (b'event: ping\ndata: {"type":"ping"}\n\n', b"data: {}\n\n") == (
        sse({"type": "ping"}, "ping"),
        sse({}),
    )
