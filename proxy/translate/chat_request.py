"""The last step of every translation towards Chat Completions: the built body as a request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .families import ApiFamily, Endpoint, upstream_path
from .records import Dropped, TranslatedRequest
from .wire import JSON_BODY_HEADERS


def chat_completions_request(
    client_body: Mapping[str, Any], out: dict[str, Any], dropped: Dropped
) -> TranslatedRequest:
    """``out`` sent to the chat endpoint; a stream asks for usage in its last chunk, which the
    client's own family reports and the proxy's accounting reads."""
    stream = client_body.get("stream") is True
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return TranslatedRequest(
        method="POST",
        path=upstream_path(ApiFamily.OPENAI_CHAT, Endpoint.GENERATE),
        body=out,
        headers=JSON_BODY_HEADERS,
        dropped=dropped.result(),
        stream=stream,
    )
