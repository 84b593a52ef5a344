"""Rate-limit scopes (proxy.resilience.scope): which limit a request draws on and which
limit an answer describes, keyed without ever holding the credential."""

from __future__ import annotations

import pytest

from proxy.resilience.scope import (
    ANY_CREDENTIAL,
    NO_CREDENTIAL,
    Fingerprinter,
    LimitKind,
    RequestScopes,
    Scope,
    answer_scope,
    anthropic_model_class,
    credential_of,
    model_key,
    request_scopes,
)

SECRET = b"s" * 32
KEY_A = "sk-test-AAAAAAAAAAAAAAAAAAAA"
KEY_B = "sk-test-BBBBBBBBBBBBBBBBBBBB"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-sonnet-4-5", "claude-sonnet-4"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-sonnet-4-0", "claude-sonnet-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4"),
        ("claude-opus-4-1", "claude-opus-4"),
        ("claude-haiku-4-5", "claude-haiku-4-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-3-7-sonnet-20250219", "claude-sonnet-3-7"),
        ("claude-3-7-sonnet-latest", "claude-sonnet-3-7"),
        ("claude-3-5-sonnet-20241022", "claude-sonnet-3-5"),
        ("claude-3-5-haiku-latest", "claude-haiku-3-5"),
        ("claude-3-haiku-20240307", "claude-haiku-3"),
        ("claude-3-opus-latest", "claude-opus-3"),
        ("Claude-Sonnet-4-5", "claude-sonnet-4"),
        ("anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),
        ("us.anthropic.claude-3-7-sonnet-20250219-v1:0", "claude-sonnet-3-7"),
        ("claude-sonnet-4@20250514", "claude-sonnet-4"),
        ("claude-opus-5-5", "claude-opus-5-5"),
        ("claude-opus-5", "claude-opus-5"),
        ("claude-fable-5-1", "claude-fable-5"),
        ("claude-2.1", "claude-2.1"),
        ("my-finetune", "my-finetune"),
    ],
)
def test_anthropic_model_class(model: str, expected: str) -> None:
    assert expected == anthropic_model_class(model)


@pytest.mark.parametrize(
    ("provider", "model", "expected"),
    [
        ("openai", "gpt-4o-mini", "gpt-4o-mini"),
        ("openai", "GPT-4o ", "gpt-4o"),
        ("openai", "gpt-4o-2024-08-06", "gpt-4o-2024-08-06"),
        ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4"),
    ],
)
def test_model_key(provider: str, model: str, expected: str) -> None:
    assert expected == model_key(provider, model)  # type: ignore[arg-type]


def test_fingerprint_is_stable_per_secret_and_never_the_key() -> None:
    one, same, other = Fingerprinter(SECRET), Fingerprinter(SECRET), Fingerprinter(b"t" * 32)
    assert one(KEY_A) == same(KEY_A)
    assert one(KEY_A) != one(KEY_B)
    assert one(KEY_A) != other(KEY_A)
    assert 16 == len(one(KEY_A))
    assert KEY_A not in one(KEY_A) and "AAAA" not in one(KEY_A)


def test_fingerprint_without_a_secret_is_random_per_instance() -> None:
    assert Fingerprinter()(KEY_A) != Fingerprinter()(KEY_A)


def test_fingerprint_of_no_credential() -> None:
    assert (NO_CREDENTIAL, NO_CREDENTIAL) == (Fingerprinter(SECRET)(None), Fingerprinter()(""))


def test_fingerprinter_repr_hides_the_secret() -> None:
    assert "ssss" not in repr(Fingerprinter(SECRET))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Authorization": f"Bearer {KEY_A}"}, KEY_A),
        ({"authorization": f"bearer  {KEY_A} "}, KEY_A),
        ({"x-api-key": KEY_A}, KEY_A),
        ({"X-Api-Key": KEY_A, "Authorization": f"Bearer {KEY_B}"}, KEY_A),
        ({"api-key": KEY_A}, KEY_A),
        ({"Authorization": "Basic abc"}, "Basic abc"),
        ({"content-type": "application/json"}, None),
        ({"x-api-key": "  "}, None),
    ],
)
def test_credential_of(headers: dict[str, str], expected: str | None) -> None:
    assert expected == credential_of(headers)


def test_same_key_in_either_header_is_one_scope() -> None:
    fp = Fingerprinter(SECRET)
    bearer = request_scopes(
        "u", credential_of({"Authorization": f"Bearer {KEY_A}"}), "m", "openai", fp
    )
    x_api = request_scopes("u", credential_of({"x-api-key": KEY_A}), "m", "openai", fp)
    assert bearer == x_api


def test_request_scopes() -> None:
    fp = Fingerprinter(SECRET)
    scopes = request_scopes("anthropic-main", KEY_A, "claude-sonnet-4-5-20250929", "anthropic", fp)
    expected = RequestScopes(
        upstream=Scope("anthropic-main", ANY_CREDENTIAL, LimitKind.UPSTREAM),
        model=Scope("anthropic-main", fp(KEY_A), LimitKind.MODEL, "claude-sonnet-4"),
    )
    assert expected == scopes
    assert (expected.upstream, expected.model) == scopes.all


def test_request_without_model_has_only_the_upstream_scope() -> None:
    scopes = request_scopes("openai", KEY_A, None, "openai", Fingerprinter(SECRET))
    assert (None, (scopes.upstream,)) == (scopes.model, scopes.all)


def test_keys_differ_by_credential_model_and_upstream() -> None:
    fp = Fingerprinter(SECRET)
    keys = {
        request_scopes(u, k, m, "openai", fp).model.key  # type: ignore[union-attr]
        for u in ("a", "b")
        for k in (KEY_A, KEY_B)
        for m in ("gpt-4o", "gpt-4o-mini")
    }
    assert 8 == len(keys)


def test_key_is_canonical_and_escapes_separators() -> None:
    scope = Scope("up/stream", "abcd", LimitKind.MODEL, "org/model:v1")
    assert "up%2Fstream/abcd/model/org%2Fmodel%3Av1" == scope.key
    assert "openai/%2A/upstream/" == Scope("openai", ANY_CREDENTIAL, LimitKind.UPSTREAM).key


def test_label_has_no_fingerprint() -> None:
    fp = Fingerprinter(SECRET)
    scopes = request_scopes("openai", KEY_A, "gpt-4o", "openai", fp)
    assert ("openai", "openai:gpt-4o") == (scopes.upstream.label, scopes.model.label)  # type: ignore[union-attr]


RL = {"x-ratelimit-remaining-requests": "0"}
ANTHROPIC_RL = {"anthropic-ratelimit-tokens-remaining": "0"}


@pytest.mark.parametrize(
    ("status", "headers", "kind"),
    [
        (200, RL, LimitKind.MODEL),
        (200, {}, LimitKind.MODEL),
        (429, RL, LimitKind.MODEL),
        (429, {}, LimitKind.MODEL),
        (429, ANTHROPIC_RL, LimitKind.MODEL),
        (529, {}, LimitKind.UPSTREAM),
        (529, ANTHROPIC_RL, LimitKind.UPSTREAM),
        (503, {}, LimitKind.UPSTREAM),
        (503, RL, LimitKind.MODEL),
        (500, {}, LimitKind.UPSTREAM),
    ],
)
def test_answer_scope(status: int, headers: dict[str, str], kind: LimitKind) -> None:
    scopes = request_scopes("u", KEY_A, "gpt-4o", "openai", Fingerprinter(SECRET))
    assert kind == answer_scope(scopes, status, headers).kind


def test_answer_scope_without_model_is_the_upstream() -> None:
    scopes = request_scopes("u", KEY_A, None, "openai", Fingerprinter(SECRET))
    assert scopes.upstream == answer_scope(scopes, 429, RL)
