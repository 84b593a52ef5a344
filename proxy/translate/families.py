"""Which API a request speaks, and where the same endpoint lives in another family.

A route's provider plus the path tail after the route prefix names the client's API. The
attempt loop compares that with the upstream's declared family to decide whether bytes pass
untouched or go through a translator.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ApiFamily",
    "ClientApi",
    "Endpoint",
    "NotTranslatable",
    "Provider",
    "client_api",
    "provider_of",
    "upstream_path",
]

Provider = Literal["openai", "anthropic"]


class ApiFamily(enum.StrEnum):
    """The wire dialect an upstream serves (config: ``api: openai_chat | ...``)."""

    OPENAI_CHAT = "openai_chat"
    OPENAI_RESPONSES = "openai_responses"
    ANTHROPIC = "anthropic"


class Endpoint(enum.StrEnum):
    """The endpoints a translation knows; anything else only goes to a same-provider upstream."""

    GENERATE = "generate"
    """Chat completions, Anthropic messages, or the Responses API."""
    COUNT_TOKENS = "count_tokens"
    MODELS_LIST = "models_list"
    MODEL_GET = "model_get"


@dataclass(frozen=True, slots=True)
class ClientApi:
    family: ApiFamily
    endpoint: Endpoint
    model_id: str = ""
    """For ``MODEL_GET``: the id in the path."""

    @property
    def provider(self) -> Provider:
        return provider_of(self.family)


@dataclass(frozen=True, slots=True)
class NotTranslatable:
    """A path no translator knows (embeddings, files, batches...): same provider only."""

    provider: Provider
    method: str
    path: str


def provider_of(family: ApiFamily) -> Provider:
    """The error shape and auth style of a family: both OpenAI families share one."""
    return "anthropic" if family is ApiFamily.ANTHROPIC else "openai"


def _normalise(tail: str) -> str:
    """``/v1/chat/completions/`` and a sidecar's ``/chat/completions`` name the same thing."""
    path = "/" + tail.split("?", 1)[0].strip("/")
    return path[3:] if path.startswith("/v1/") else path


_OPENAI_POST = {
    "/chat/completions": ApiFamily.OPENAI_CHAT,
    "/responses": ApiFamily.OPENAI_RESPONSES,
}


def client_api(provider: Provider, method: str, tail: str) -> ClientApi | NotTranslatable:
    """Name the client's API from the route's provider, the method and the path tail."""
    path, verb = _normalise(tail), method.upper()
    if verb == "GET" and path == "/models":
        family = ApiFamily.ANTHROPIC if provider == "anthropic" else ApiFamily.OPENAI_CHAT
        return ClientApi(family, Endpoint.MODELS_LIST)
    if verb == "GET" and path.startswith("/models/") and path.count("/") == 2:
        family = ApiFamily.ANTHROPIC if provider == "anthropic" else ApiFamily.OPENAI_CHAT
        return ClientApi(family, Endpoint.MODEL_GET, model_id=path[len("/models/") :])
    if verb == "POST" and provider == "anthropic":
        if path == "/messages":
            return ClientApi(ApiFamily.ANTHROPIC, Endpoint.GENERATE)
        if path == "/messages/count_tokens":
            return ClientApi(ApiFamily.ANTHROPIC, Endpoint.COUNT_TOKENS)
    if verb == "POST" and provider == "openai" and path in _OPENAI_POST:
        return ClientApi(_OPENAI_POST[path], Endpoint.GENERATE)
    return NotTranslatable(provider, verb, tail)


_GENERATE_PATHS = {
    ApiFamily.OPENAI_CHAT: "/v1/chat/completions",
    ApiFamily.OPENAI_RESPONSES: "/v1/responses",
    ApiFamily.ANTHROPIC: "/v1/messages",
}


def upstream_path(family: ApiFamily, endpoint: Endpoint, model_id: str = "") -> str:
    """The path (after the upstream's base URL) of ``endpoint`` in ``family``."""
    if endpoint is Endpoint.GENERATE:
        return _GENERATE_PATHS[family]
    if endpoint is Endpoint.COUNT_TOKENS:
        if family is not ApiFamily.ANTHROPIC:
            raise ValueError(f"{family} has no count_tokens endpoint")
        return "/v1/messages/count_tokens"
    if endpoint is Endpoint.MODELS_LIST:
        return "/v1/models"
    return f"/v1/models/{model_id}"
