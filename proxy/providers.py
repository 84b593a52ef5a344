"""Per-provider wire facts as data, so the core never branches on a vendor name."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: Literal["openai", "anthropic"]
    auth_header: str
    auth_prefix: str
    """Prefix of the credential value: ``"Bearer "`` for OpenAI, nothing for Anthropic."""

    def error_body(self, type_: str, message: str, code: str | None = None) -> bytes:
        """The provider's own error JSON, so SDKs raise their usual exception classes."""
        if self.name == "anthropic":
            payload: dict = {"type": "error", "error": {"type": type_, "message": message}}
        else:
            payload = {"error": {"message": message, "type": type_, "param": None, "code": code}}
        return json.dumps(payload).encode()


OPENAI = ProviderSpec(
    name="openai",
    auth_header="Authorization",
    auth_prefix="Bearer ",
)
ANTHROPIC = ProviderSpec(
    name="anthropic",
    auth_header="x-api-key",
    auth_prefix="",
)
PROVIDERS = {"openai": OPENAI, "anthropic": ANTHROPIC}

CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "ocp-apim-subscription-key",
        "x-amz-security-token",
        "cookie",
    }
)
"""Request headers that carry a client credential for some provider. A client's credential
goes only to the upstream it was meant for (see ``forward.request_headers``)."""


def guess_provider(path: str) -> ProviderSpec:
    """Error shape for requests that matched no route: Anthropic's for its paths, else OpenAI's."""
    return ANTHROPIC if "/v1/messages" in path or "/v1/complete" in path else OPENAI
