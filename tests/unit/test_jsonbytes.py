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
