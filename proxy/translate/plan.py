"""Choosing a translation for one attempt: the only entry point the attempt loop needs.

``translation_for(client, upstream_family)`` says ``Passthrough`` (same wire: forward bytes
untouched), ``Unsupported`` (answer the client with its ``response()``, a provider-shaped
404) or returns a ``Translation`` to use for that attempt's request and answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .anthropic_chat.common import ANTHROPIC_VERSION
from .anthropic_chat.request_to_anthropic import anthropic_request
from .anthropic_chat.request_to_chat import chat_request as anthropic_to_chat_request
from .anthropic_chat.response import anthropic_message, chat_completion
from .anthropic_chat.stream_to_anthropic import ChatToAnthropicStream
from .anthropic_chat.stream_to_chat import AnthropicToChatStream
from .count_tokens import count_tokens_body
from .errors import ErrorKind, UpstreamError, render_error, translate_error
from .families import ApiFamily, ClientApi, Endpoint, NotTranslatable, Provider, provider_of
from .models import anthropic_model, anthropic_model_list, openai_model, openai_model_list
from .records import (
    LocalAnswer,
    StreamTranslator,
    TranslatedRequest,
    TranslatedResponse,
    TranslationOptions,
)
from .responses_chat.state import ResponsesLeg
from .responses_chat.store import ResponseStore
from .wire import JSON_TYPE, as_object, dumps, loads_object, response_headers

__all__ = ["Passthrough", "Translation", "Unsupported", "translation_for"]

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Passthrough:
    """Client and upstream speak the same wire for this endpoint: nothing to translate."""


@dataclass(frozen=True, slots=True)
class Unsupported:
    """No translation exists for this endpoint between these families."""

    client: Provider
    message: str

    def response(self) -> TranslatedResponse:
        error = UpstreamError(ErrorKind.NOT_FOUND, 404, self.message)
        status, body = render_error(error, self.client)
        return TranslatedResponse(status, (("Content-Type", JSON_TYPE),), body)


class Translation:
    """One attempt's translation. Call ``request`` once before sending, then ``response``
    (a complete body) or ``stream`` (an SSE body, status 200), then ``settle`` after the
    client has the whole answer."""

    def __init__(self, client: ClientApi, upstream: ApiFamily, options: TranslationOptions) -> None:
        self.client = client
        self.upstream = upstream
        self.options = options

    async def request(self, body: Mapping[str, Any] | None) -> TranslatedRequest | LocalAnswer:
        raise NotImplementedError

    def _success(self, payload: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def response(self, status: int, headers: Headers, body: bytes) -> TranslatedResponse:
        """A complete upstream answer (decoded, not gzip) -> the client's."""
        if not 200 <= status < 300:
            return self.error(status, headers, body)
        payload = loads_object(body)
        if payload is None:
            return self.error(502, headers, b"Upstream sent a body that is not a JSON object.")
        if payload.get("error") is not None:  # some servers answer 200 with an error body
            return self.error(status, headers, body)
        client = self.client.provider
        translated = dumps(self._success(payload))
        return TranslatedResponse(status, response_headers(headers, client, JSON_TYPE), translated)

    def error(self, status: int, headers: Headers, body: bytes) -> TranslatedResponse:
        """An upstream error (status >= 400, or an error body) -> the client's error shape."""
        return translate_error(status, headers, body, self.client.provider)

    def stream(self, headers: Headers) -> StreamTranslator:
        raise TypeError(f"{self.client.endpoint} does not stream")

    async def settle(self) -> None:
        """After the answer reached the client: keep what later requests need (Responses state)."""


class _AnthropicOnChat(Translation):
    async def request(self, body: Mapping[str, Any] | None) -> TranslatedRequest:
        return anthropic_to_chat_request(body or {}, self.options)

    def _success(self, payload: dict[str, Any]) -> dict[str, Any]:
        return anthropic_message(payload)

    def stream(self, headers: Headers) -> StreamTranslator:
        return ChatToAnthropicStream(headers)


class _ChatOnAnthropic(Translation):
    include_usage = False

    async def request(self, body: Mapping[str, Any] | None) -> TranslatedRequest:
        body = body or {}
        self.include_usage = as_object(body.get("stream_options")).get("include_usage") is True
        return anthropic_request(body, self.options)

    def _success(self, payload: dict[str, Any]) -> dict[str, Any]:
        return chat_completion(payload)

    def stream(self, headers: Headers) -> StreamTranslator:
        return AnthropicToChatStream(headers, include_usage=self.include_usage)


class _ResponsesOnChat(Translation):
    def __init__(
        self,
        client: ClientApi,
        upstream: ApiFamily,
        options: TranslationOptions,
        store: ResponseStore | None,
    ) -> None:
        super().__init__(client, upstream, options)
        self.leg = ResponsesLeg(store, options)

    async def request(self, body: Mapping[str, Any] | None) -> TranslatedRequest | LocalAnswer:
        return await self.leg.request(body or {})

    def _success(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.leg.response(payload)

    def stream(self, headers: Headers) -> StreamTranslator:
        return self.leg.stream(headers)

    async def settle(self) -> None:
        await self.leg.settle()


class _ResponsesOnAnthropic(_ResponsesOnChat):
    """Responses -> chat -> Anthropic: the two legs chained, so Codex-style clients reach Claude."""

    async def request(self, body: Mapping[str, Any] | None) -> TranslatedRequest | LocalAnswer:
        chat = await self.leg.request(body or {})
        if isinstance(chat, LocalAnswer):
            return chat
        inner = anthropic_request(chat.body or {}, self.options)
        dropped = tuple(dict.fromkeys(chat.dropped + inner.dropped))
        return TranslatedRequest(
            inner.method,
            inner.path,
            inner.body,
            inner.headers,
            dropped,
            chat.notes + inner.notes,
            inner.stream,
        )

    def _success(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.leg.response(chat_completion(payload))

    def stream(self, headers: Headers) -> StreamTranslator:
        return _Chained(
            AnthropicToChatStream(headers, include_usage=True), self.leg.stream(headers)
        )


class _Chained:
    """Two stream translators in a row (inner's client bytes are outer's upstream bytes)."""

    def __init__(self, inner: StreamTranslator, outer: StreamTranslator) -> None:
        self.inner, self.outer = inner, outer
        self.status, self.headers = outer.status, outer.headers

    def feed(self, chunk: bytes) -> bytes:
        return self.outer.feed(self.inner.feed(chunk))

    def finish(self) -> bytes:
        return self.outer.feed(self.inner.finish()) + self.outer.finish()

    def abort(self, message: str) -> bytes:
        return self.outer.abort(message)


class _CountTokensLocally(Translation):
    async def request(self, body: Mapping[str, Any] | None) -> LocalAnswer:
        answer = await asyncio.to_thread(count_tokens_body, body or {}, self.options)
        return LocalAnswer(TranslatedResponse(200, (("Content-Type", JSON_TYPE),), answer))


class _Models(Translation):
    async def request(self, body: Mapping[str, Any] | None) -> TranslatedRequest:
        listing = self.client.endpoint is Endpoint.MODELS_LIST
        path = "/v1/models" if listing else f"/v1/models/{self.client.model_id}"
        headers = {"accept-encoding": "identity"}
        if self.upstream is ApiFamily.ANTHROPIC:
            headers["anthropic-version"] = ANTHROPIC_VERSION
        return TranslatedRequest("GET", path, None, headers)

    def _success(self, payload: dict[str, Any]) -> dict[str, Any]:
        to_anthropic = self.client.family is ApiFamily.ANTHROPIC
        if self.client.endpoint is Endpoint.MODELS_LIST:
            return anthropic_model_list(payload) if to_anthropic else openai_model_list(payload)
        return anthropic_model(payload) if to_anthropic else openai_model(payload)


_GENERATE: dict[tuple[ApiFamily, ApiFamily], type[Translation]] = {
    (ApiFamily.ANTHROPIC, ApiFamily.OPENAI_CHAT): _AnthropicOnChat,
    (ApiFamily.OPENAI_CHAT, ApiFamily.ANTHROPIC): _ChatOnAnthropic,
}


def translation_for(
    client: ClientApi | NotTranslatable,
    upstream: ApiFamily,
    *,
    store: ResponseStore | None = None,
    options: TranslationOptions | None = None,
) -> Passthrough | Translation | Unsupported:
    """What to do with one attempt of this request on an upstream of ``upstream`` family.

    ``store`` keeps Responses conversations (``previous_response_id``); without one, such
    requests are answered with a 404 and nothing is stored. A new ``Translation`` per attempt.
    """
    options = options or TranslationOptions()
    same_provider = client.provider == provider_of(upstream)
    if isinstance(client, NotTranslatable):
        if same_provider:
            return Passthrough()
        return Unsupported(
            client.provider, f"{client.method} {client.path} is not available on this upstream."
        )
    if client.endpoint is Endpoint.GENERATE:
        if client.family is upstream:
            return Passthrough()
        if client.family is ApiFamily.OPENAI_RESPONSES and upstream is ApiFamily.OPENAI_CHAT:
            return _ResponsesOnChat(client, upstream, options, store)
        if client.family is ApiFamily.OPENAI_RESPONSES and upstream is ApiFamily.ANTHROPIC:
            return _ResponsesOnAnthropic(client, upstream, options, store)
        kind = _GENERATE.get((client.family, upstream))
        if kind is not None:
            return kind(client, upstream, options)
        return Unsupported(
            client.provider, f"The {client.family} API cannot be served by a {upstream} upstream."
        )
    if same_provider:
        return Passthrough()
    if client.endpoint is Endpoint.COUNT_TOKENS:
        return _CountTokensLocally(client, upstream, options)
    return _Models(client, upstream, options)
