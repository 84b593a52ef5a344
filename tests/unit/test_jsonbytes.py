"""Rewritten bodies keep whatever text the client's JSON held."""

from __future__ import annotations

import json

from proxy.jsonbytes import json_bytes
from proxy.resilience.scope import LimitKind, Scope


def test_utf8_is_kept_and_lone_surrogates_keep_their_escape() -> None:
    assert '{"a":"héllo"}'.encode() == json_bytes({"a": "héllo"})
    lone = json.loads('{"a": "x\\ud800y"}')
    assert b'{"a":"x\\ud800y"}' == json_bytes(lone)
    assert lone == json.loads(json_bytes(lone))


def test_a_scope_key_survives_a_model_name_with_a_lone_surrogate() -> None:
    scope = Scope("up", "fp", LimitKind.MODEL, "m\udfff")
    assert scope == Scope.from_key(scope.key)


# ---------------------------------------------------------------- request bodies

import math  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from proxy.jsonbytes import loads_body  # noqa: E402

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (1 and 1.0 differ; so do 0.0 and -0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return math.copysign(1, a) == math.copysign(1, b) and (a == b or (a != a and b != b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@settings(max_examples=300)
@given(JSON, st.booleans())
def test_a_body_parses_to_what_json_loads_gives(value: Any, ascii_only: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert same(json.loads(raw), loads_body(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b"123456789012345678901234567890",
        b'{"seed": -9223372036854775809, "n": 18446744073709551616}',
        b"[1e400, -0, -0.0, 0.1000000000000000055511151231257827]",
        b'{"a": 1, "a": 2}',
        b'"\\ud800"',
        b"\xef\xbb\xbf{}",
        b"[NaN, Infinity]",
    ],
)
def test_what_orjson_reads_otherwise_is_read_as_json_reads_it(raw: bytes) -> None:
    assert same(json.loads(raw), loads_body(raw))


@pytest.mark.parametrize("raw", [b"{", b'{"a": 1,}', b"\xff", b"[" * 100_000])
def test_a_bad_body_fails_as_json_loads_fails(raw: bytes) -> None:
    with pytest.raises((ValueError, RecursionError)) as expected:
        json.loads(raw)
    with pytest.raises(expected.type) as got:
        loads_body(raw)
    assert str(expected.value) == str(got.value)
