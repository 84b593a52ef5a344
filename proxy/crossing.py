"""Where the attempt loop meets the translators: one attempt to an upstream of another API family.

Only attempts whose upstream declares a different API come here; same-family traffic never
does. The request is rebuilt for the upstream's API, and its answer is turned back into the
client's API: complete bodies at once, streams event by event as chunks arrive.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy

from .config import Upstream
from .errors import BadRequest
from .exchange import Exchange
from .forward import ByteSource, Outgoing, UpstreamResponse, request_headers
from .outcomes import TranslationOutcome
from .translate import (
    ApiFamily,
    LocalAnswer,
    NotTranslatable,
    Passthrough,
    ResponseStore,
    StreamTranslator,
    TranslatedRequest,
    TranslatedResponse,
    Translation,
    Unsupported,
    client_api,
    translation_for,
)
from .translate.families import provider_of

MAX_TRANSLATED_BODY = 32 << 20
"""A complete answer is translated as a whole; beyond this it is refused as malformed."""

Plan = Passthrough | Translation | Unsupported


def plan_for(ex: Exchange, upstream: Upstream, store: ResponseStore | None) -> Plan:
    """How this attempt goes to ``upstream``: untouched, translated, or not at all."""
    if upstream.api is None:
        return Passthrough()
    assert ex.route is not None
    family = ApiFamily(upstream.api)
    client = client_api(ex.route.provider.name, ex.request.method, ex.tail)
    if isinstance(client, NotTranslatable):
        if provider_of(family) == client.provider:
            return Passthrough()
        return Unsupported(
            client.provider,
            f"{client.method} {client.path} is not available on upstream {upstream.name!r}, "
            f"which speaks the {family.value} API",
        )
    return translation_for(client, family, store=store)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A translated attempt ready to send, and what the log line says about it."""

    outgoing: Outgoing
    request: TranslatedRequest


async def prepare(ex: Exchange, upstream: Upstream, plan: Translation) -> Prepared | LocalAnswer:
    """The upstream request for this attempt; a ``LocalAnswer`` needs no upstream at all."""
    body = ex.json_object()
    if body is None and ex.original_body:
        raise BadRequest(
            "the request body must be a JSON object: it is translated for upstream "
            f"{upstream.name!r} ({ex.json_error or 'not JSON'})"
        )
    translated = await plan.request(body)
    if isinstance(translated, LocalAnswer):
        return translated
    if translated.body is not None and upstream.models:
        model = translated.body.get("model")
        if isinstance(model, str) and model in upstream.models:
            translated = _with_model(translated, upstream.models[model])
    headers = request_headers(ex, upstream, replace=translated.headers)
    outgoing = Outgoing(translated.method, translated.path, "", headers, translated.encoded())
    return Prepared(outgoing, translated)


def _with_model(req: TranslatedRequest, model: str) -> TranslatedRequest:
    assert req.body is not None
    return dataclasses.replace(req, body={**req.body, "model": model})


def outcome_of(plan: Translation, request: TranslatedRequest | LocalAnswer) -> TranslationOutcome:
    notes = request.notes if isinstance(request, TranslatedRequest) else ()
    return TranslationOutcome(
        plan.client.family.value, plan.upstream.value, tuple(request.dropped), tuple(notes)
    )


class LocalResponse:
    """A complete answer the proxy already holds (translated, or answered locally)."""

    __slots__ = ("_body", "content", "content_length", "headers", "reason", "status")

    def __init__(self, answer: TranslatedResponse) -> None:
        self.status = answer.status
        self.reason: str | None = None
        self.headers = CIMultiDictProxy(CIMultiDict(answer.headers))
        self.content_length: int | None = len(answer.body)
        self._body = answer.body
        self.content: ByteSource = self

    async def readany(self) -> bytes:
        body, self._body = self._body, b""
        return body

    def read_nowait(self) -> bytes:
        body, self._body = self._body, b""
        return body

    def cut_short(self) -> str | None:
        return None

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class _TranslatedBody:
    """Upstream SSE chunks in, the client's SSE bytes out, as each upstream event completes."""

    __slots__ = ("_done", "_source", "_translator")

    def __init__(self, source: ByteSource, translator: StreamTranslator) -> None:
        self._source = source
        self._translator = translator
        self._done = False

    async def readany(self) -> bytes:
        while not self._done:
            chunk = await self._source.readany()
            if not chunk:
                self._done = True
                return self._translator.finish()
            out = self._translator.feed(chunk)
            if out:
                return out
        return b""

    def read_nowait(self) -> bytes:
        """Nothing is offered early: translating waits for whole upstream events."""
        return b""


class TranslatedStream:
    """A streamed upstream answer as the client's API streams it. A stream the upstream did
    not end properly ends in the client's in-stream error, and the connection is still cut."""

    __slots__ = ("_upstream", "content", "content_length", "headers", "reason", "status")

    def __init__(self, upstream: UpstreamResponse, translator: StreamTranslator) -> None:
        self._upstream = upstream
        self.status = translator.status
        self.reason: str | None = None
        self.headers = CIMultiDictProxy(CIMultiDict(translator.headers))
        self.content_length: int | None = None
        self.content: ByteSource = _TranslatedBody(upstream.content, translator)

    def cut_short(self) -> str | None:
        return self._upstream.cut_short()

    def release(self) -> None:
        self._upstream.release()

    def close(self) -> None:
        self._upstream.close()


async def client_view(plan: Translation, response: UpstreamResponse) -> UpstreamResponse:
    """The upstream's answer in the client's API."""
    ctype = response.headers.get("Content-Type", "")
    if response.status == 200 and ctype.startswith("text/event-stream"):
        return TranslatedStream(response, plan.stream(response.headers))
    body = await _read_all(response)
    if body is None:
        translated = plan.error(502, response.headers, b"upstream answer too large to translate")
    else:
        translated = plan.response(response.status, response.headers, body)
    return LocalResponse(translated)


async def _read_all(response: UpstreamResponse) -> bytes | None:
    parts: list[bytes] = []
    size = 0
    try:
        while chunk := await response.content.readany():
            size += len(chunk)
            if size > MAX_TRANSLATED_BODY:
                return None
            parts.append(chunk)
    finally:
        response.close() if size > MAX_TRANSLATED_BODY else response.release()
    return b"".join(parts)
