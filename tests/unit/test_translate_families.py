"""Naming the client's API from route and path, and choosing passthrough / translation /
404 for an upstream family."""

from __future__ import annotations

import json

import pytest

from proxy.translate import (
    ApiFamily,
    ClientApi,
    Endpoint,
    NotTranslatable,
    Passthrough,
    Translation,
    Unsupported,
    client_api,
    translation_for,
    upstream_path,
)

CHAT, RESPONSES, ANTHROPIC = ApiFamily.OPENAI_CHAT, ApiFamily.OPENAI_RESPONSES, ApiFamily.ANTHROPIC


@pytest.mark.parametrize(
    ("provider", "method", "tail", "expected"),
    [
        ("openai", "POST", "/v1/chat/completions", ClientApi(CHAT, Endpoint.GENERATE)),
        ("openai", "POST", "/chat/completions", ClientApi(CHAT, Endpoint.GENERATE)),
        ("openai", "POST", "/v1/chat/completions/", ClientApi(CHAT, Endpoint.GENERATE)),
        ("openai", "POST", "/v1/responses", ClientApi(RESPONSES, Endpoint.GENERATE)),
        ("openai", "GET", "/v1/models", ClientApi(CHAT, Endpoint.MODELS_LIST)),
        ("openai", "GET", "/v1/models/gpt-4o", ClientApi(CHAT, Endpoint.MODEL_GET, "gpt-4o")),
        ("anthropic", "POST", "/v1/messages", ClientApi(ANTHROPIC, Endpoint.GENERATE)),
        ("anthropic", "POST", "/v1/messages?beta=true", ClientApi(ANTHROPIC, Endpoint.GENERATE)),
        (
            "anthropic",
            "POST",
            "/v1/messages/count_tokens",
            ClientApi(ANTHROPIC, Endpoint.COUNT_TOKENS),
        ),
        ("anthropic", "GET", "/v1/models", ClientApi(ANTHROPIC, Endpoint.MODELS_LIST)),
        ("openai", "POST", "/v1/embeddings", NotTranslatable("openai", "POST", "/v1/embeddings")),
        ("openai", "POST", "/v1/messages", NotTranslatable("openai", "POST", "/v1/messages")),
        ("anthropic", "GET", "/v1/messages", NotTranslatable("anthropic", "GET", "/v1/messages")),
        (
            "openai",
            "GET",
            "/v1/responses/resp_1",
            NotTranslatable("openai", "GET", "/v1/responses/resp_1"),
        ),
    ],
)
def test_client_api(provider: str, method: str, tail: str, expected: object) -> None:
    assert expected == client_api(provider, method, tail)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("family", "endpoint", "expected"),
    [
        (CHAT, Endpoint.GENERATE, "/v1/chat/completions"),
        (RESPONSES, Endpoint.GENERATE, "/v1/responses"),
        (ANTHROPIC, Endpoint.GENERATE, "/v1/messages"),
        (ANTHROPIC, Endpoint.COUNT_TOKENS, "/v1/messages/count_tokens"),
        (CHAT, Endpoint.MODELS_LIST, "/v1/models"),
    ],
)
def test_upstream_path(family: ApiFamily, endpoint: Endpoint, expected: str) -> None:
    assert expected == upstream_path(family, endpoint)


@pytest.mark.parametrize(
    ("client", "upstream", "expected"),
    [
        (ClientApi(CHAT, Endpoint.GENERATE), CHAT, Passthrough),
        (ClientApi(ANTHROPIC, Endpoint.GENERATE), ANTHROPIC, Passthrough),
        (ClientApi(CHAT, Endpoint.GENERATE), ANTHROPIC, Translation),
        (ClientApi(ANTHROPIC, Endpoint.GENERATE), CHAT, Translation),
        (ClientApi(RESPONSES, Endpoint.GENERATE), CHAT, Translation),
        (ClientApi(RESPONSES, Endpoint.GENERATE), ANTHROPIC, Translation),
        (ClientApi(RESPONSES, Endpoint.GENERATE), RESPONSES, Passthrough),
        (ClientApi(CHAT, Endpoint.GENERATE), RESPONSES, Unsupported),
        (ClientApi(ANTHROPIC, Endpoint.GENERATE), RESPONSES, Unsupported),
        (ClientApi(CHAT, Endpoint.MODELS_LIST), RESPONSES, Passthrough),
        (ClientApi(CHAT, Endpoint.MODELS_LIST), ANTHROPIC, Translation),
        (ClientApi(ANTHROPIC, Endpoint.MODELS_LIST), CHAT, Translation),
        (ClientApi(ANTHROPIC, Endpoint.COUNT_TOKENS), ANTHROPIC, Passthrough),
        (ClientApi(ANTHROPIC, Endpoint.COUNT_TOKENS), CHAT, Translation),
        (NotTranslatable("openai", "POST", "/v1/embeddings"), RESPONSES, Passthrough),
        (NotTranslatable("openai", "POST", "/v1/embeddings"), ANTHROPIC, Unsupported),
        (NotTranslatable("anthropic", "POST", "/v1/files"), CHAT, Unsupported),
    ],
)
def test_translation_for(
    client: ClientApi | NotTranslatable, upstream: ApiFamily, expected: type
) -> None:
    assert isinstance(translation_for(client, upstream), expected)


@pytest.mark.parametrize(
    ("client", "expected_body"),
    [
        (
            NotTranslatable("anthropic", "POST", "/v1/files"),
            {
                "type": "error",
                "error": {
                    "type": "not_found_error",
                    "message": "POST /v1/files is not available on this upstream.",
                },
            },
        ),
        (
            NotTranslatable("openai", "POST", "/v1/embeddings"),
            {
                "error": {
                    "message": "POST /v1/embeddings is not available on this upstream.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
        ),
    ],
)
def test_unsupported_answers_404_in_client_shape(
    client: NotTranslatable, expected_body: dict[str, object]
) -> None:
    upstream = ApiFamily.OPENAI_CHAT if client.provider == "anthropic" else ApiFamily.ANTHROPIC
    plan = translation_for(client, upstream)
    assert isinstance(plan, Unsupported)
    response = plan.response()
    assert (404, expected_body) == (response.status, json.loads(response.body))
