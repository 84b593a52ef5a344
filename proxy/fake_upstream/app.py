"""The FakeUpstream object: recording, fault queue, routes, and the control API."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import itertools
import json
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from . import anthropic_api, openai_api
from .billing import Billing
from .caching import CACHED_PATHS, PromptCache, credential_of
from .calls import Builder, Call, Plan, Reply, make_plan
from .faults import Fault, FaultQueue, Provider, RecordedRequest, error_body, error_headers
from .limits import Clock, Limits, RateLimiter, check_request
from .streaming import Paused, cut, pause, write_stream
from .windows import FLAVOURS, ContextLimits, Flavour

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_PATTERN = bytes(range(256))
_MAX_BINARY = 1 << 31


def provider_for(request: web.BaseRequest) -> Provider:
    """Error and listing shapes follow the path; ``/v1/models`` also looks at the headers."""
    path = request.path
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/v1/models") and "anthropic-version" in request.headers:
        return "anthropic"
    return "openai"


def binary(call: Call) -> Reply:
    """``GET /v1/fake/binary?size=N``: N bytes of 0x00..0xff repeating."""
    raw = call.query.get("size", "0")
    if not raw.isdigit() or int(raw) > _MAX_BINARY:
        raise ValueError(f"size must be an integer in 0..{_MAX_BINARY}, got {raw!r}")
    size = int(raw)
    body = (_PATTERN * (size // 256 + 1))[:size]
    return Reply(body=body, content_type="application/octet-stream")


def not_found(call: Call) -> Reply:
    message = f"Unknown request URL: {call.path} (fake)"
    return Reply(status=404, body=error_body(call.provider, 404, message))


class FakeUpstream:
    """A deterministic OpenAI + Anthropic server; every piece of state lives on this object.

    ``requests`` records each request to a provider path (control paths ``/_fake/*`` are not
    recorded). ``hold_after_chunk``/``release`` pause every streaming response after that
    many SSE events until the event is set. ``stream_disconnected`` is set when a client goes
    away before its response finished (mid-stream or during a first-byte delay).
    ``chunks_sent`` counts SSE events written, across requests. ``url`` is free for whoever
    serves the app to note its base URL (the fake itself never reads it). ``limits`` turns
    on real rate limits (see ``limits.py``); ``limiter`` holds their buckets and counts, and
    ``clock`` (epoch seconds) drives them.
    """

    def __init__(
        self,
        *,
        chunks: int = 5,
        chunk_delay_s: float = 0.0,
        max_request_bytes: int = 1 << 30,
        context_windows: dict[str, int] | None = None,
        context_flavour: Flavour = "openai",
        prompt_cache: PromptCache | None = None,
        limits: Limits | None = None,
        clock: Clock = time.time,
        billing: Billing | None = None,
    ) -> None:
        self.requests: list[RecordedRequest] = []
        self.hold_after_chunk: int | None = None
        self.release = asyncio.Event()
        self.stream_disconnected = asyncio.Event()
        self.chunks_sent = 0
        self.default_chunks = chunks
        self.default_chunk_delay_s = chunk_delay_s
        self.max_request_bytes = max_request_bytes
        self.url: str | None = None
        self._faults = FaultQueue()
        self._seq = itertools.count(1)
        self.context_limits = ContextLimits(dict(context_windows or {}), context_flavour)
        self.prompt_cache = prompt_cache if prompt_cache is not None else PromptCache()
        self.limiter = RateLimiter(limits, clock)
        self.billing = billing
        """When given: every answer's usage as billed (billing.py); off by default (it parses
        every event the fake writes)."""

    def enqueue(self, *faults: Fault) -> None:
        """Queue one-shot faults; each is consumed by the next request whose path matches."""
        self._faults.push(*faults)

    def clear(self) -> None:
        """Forget recorded requests and pending faults; request ids restart at req_fake_1;
        rate-limit buckets refill and their counts restart (the limits stay)."""
        self.requests.clear()
        self._faults.clear()
        self.limiter.reset()
        self._seq = itertools.count(1)
        self.prompt_cache.clear()
        if self.billing is not None:
            self.billing.clear()

    @property
    def pending_faults(self) -> int:
        return len(self._faults)

    def make_app(self) -> web.Application:
        # Bodies are recorded as they arrived on the wire and decoded here, so a broken or
        # unknown Content-Encoding gets the provider's own 400, never a plain-text 500.
        app = web.Application(
            client_max_size=self.max_request_bytes, handler_args={"auto_decompress": False}
        )
        add = app.router.add_route
        add("POST", "/_fake/faults", self._post_faults)
        add("GET", "/_fake/requests", self._get_requests)
        add("POST", "/_fake/reset", self._post_reset)
        add("POST", "/_fake/context", self._post_context)
        add("POST", "/_fake/limits", self._post_limits)
        add("GET", "/_fake/limits", self._get_limits)
        add("POST", "/v1/chat/completions", self._endpoint(openai_api.chat_completions))
        add("POST", "/v1/responses", self._endpoint(openai_api.responses))
        add("POST", "/v1/embeddings", self._endpoint(openai_api.embeddings))
        add("GET", "/v1/models", self._endpoint(openai_api.list_models, anthropic_api.list_models))
        add(
            "GET",
            "/v1/models/{model_id}",
            self._endpoint(openai_api.get_model, anthropic_api.get_model),
        )
        add("POST", "/v1/messages", self._endpoint(anthropic_api.messages))
        add("POST", "/v1/messages/count_tokens", self._endpoint(anthropic_api.count_tokens))
        add("GET", "/v1/fake/binary", self._endpoint(binary))
        add("*", "/{tail:.*}", self._endpoint(not_found))
        return app

    def _endpoint(self, builder: Builder, anthropic: Builder | None = None) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            arrived = time.monotonic()
            body = await request.read()
            self.requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.rel_url.raw_path,
                    query_string=request.rel_url.raw_query_string,
                    headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                    body=body,
                    t=arrived,
                )
            )
            provider = provider_for(request)
            chosen = anthropic if anthropic is not None and provider == "anthropic" else builder
            try:
                body = decode_body(body, request.headers.get("Content-Encoding"))
            except ValueError as exc:
                return _error_response(provider, 400, str(exc))
            verdict = check_request(
                self.limiter, provider, request.path, request.headers, body, self.default_chunks
            )
            if verdict is not None and not verdict.allowed:
                request_id = {_REQUEST_ID[provider]: f"req_fake_{next(self._seq)}"}
                headers = {**request_id, **verdict.headers}
                return web.Response(
                    body=verdict.body, status=429, headers=headers, content_type="application/json"
                )
            try:
                plan = make_plan(
                    request.headers,
                    self._faults.take(request.path),
                    self.default_chunks,
                    self.default_chunk_delay_s,
                )
            except ValueError as exc:
                return _error_response(provider, 400, str(exc))
            call = Call(
                payload={},
                chunks=plan.chunks,
                seq=next(self._seq),
                key=f"{zlib.crc32(body):08x}",
                provider=provider,
                path=request.path,
                query=request.query,
                match=request.match_info,
                credential=credential_of(request.headers),
            )
            limit_headers = {} if verdict is None else verdict.headers
            return await self._answer(
                request,
                plan,
                call,
                lambda: _build(chosen, call, body, self._prepare),
                limit_headers,
            )

        return handle

    async def _answer(
        self,
        request: web.Request,
        plan: Plan,
        call: Call,
        build: Callable[[], Reply],
        limit_headers: dict[str, str],
    ) -> web.StreamResponse:
        fault = plan.fault
        try:
            if fault.first_byte_delay_s > 0:
                await pause(request, seconds=fault.first_byte_delay_s)
        except Paused:
            self.stream_disconnected.set()
            return web.Response()
        headers = CIMultiDict({_REQUEST_ID[call.provider]: f"req_fake_{call.seq}"})
        status = fault.status
        if fault.body is not None or (status is not None and status >= 400):
            status = status or 200
            body = fault.body if fault.body is not None else error_body(call.provider, status)
            headers.update(error_headers(call.provider, status))
            reply = Reply(body=body, status=status)
        else:
            reply = build()
            if status is not None:
                reply = dataclasses.replace(reply, status=status)
        headers.update(limit_headers)
        headers.update(fault.headers)
        headers["Content-Type"] = reply.content_type
        bill = None if self.billing is None else self.billing.open(request, call, reply)
        wrote = None if bill is None else bill.wrote
        if reply.events is not None:
            return await write_stream(self, request, reply, plan, headers, call.provider, wrote)
        if fault.cut_after_chunks is not None:
            cut(request)
            return web.Response()
        if wrote is not None:
            wrote(reply.body)  # a body is billed once it is handed over whole
        body = reply.body
        if plan.gzip:
            body = gzip.compress(body, compresslevel=5, mtime=0)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, status=reply.status, headers=headers)

    async def _post_faults(self, request: web.Request) -> web.Response:
        """Body: a JSON list of fault objects (or one object); field names as in ``Fault``."""
        try:
            data = json.loads(await request.read())
            items = data if isinstance(data, list) else [data]
            faults = [Fault.from_json(item) for item in items]
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.enqueue(*faults)
        return web.json_response({"queued": len(faults), "pending": self.pending_faults})

    async def _get_requests(self, request: web.Request) -> web.Response:
        return web.json_response([r.summary() for r in self.requests])

    def _prepare(self, call: Call) -> Call | Reply:
        """Context windows refuse what does not fit; the prompt cache accounts the rest."""
        if call.path not in CACHED_PATHS:
            return call
        refused = self.context_limits.check(call)
        if refused is not None:
            return refused
        use = self.prompt_cache.use(call.credential, call.provider, call.payload)
        return dataclasses.replace(call, cache=use)

    async def _post_context(self, request: web.Request) -> web.Response:
        """Body: ``{"windows": {"model": tokens}, "flavour": "openai"|"llama"|"vllm"}``;
        each key given replaces the current setting."""
        try:
            data = json.loads(await request.read())
            windows = data.get("windows", self.context_limits.windows)
            flavour = data.get("flavour", self.context_limits.flavour)
            if not all(isinstance(v, int) and v > 0 for v in windows.values()):
                raise ValueError("windows: token counts must be positive integers")
            if flavour not in FLAVOURS:
                raise ValueError(f"flavour: one of {', '.join(FLAVOURS)}")
        except (ValueError, AttributeError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.context_limits = ContextLimits(dict(windows), flavour)
        return web.json_response({"windows": windows, "flavour": flavour})

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.clear()
        return web.json_response({"reset": True})

    async def _post_limits(self, request: web.Request) -> web.Response:
        """Body: a JSON object with ``Limits`` field names; replaces the limits and refills
        every bucket. ``{}`` turns limits off."""
        try:
            limits = Limits.from_json(json.loads(await request.read()))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.limiter.configure(limits)
        return web.json_response({"limits": limits.to_json()})

    async def _get_limits(self, request: web.Request) -> web.Response:
        """The limits in force and the per (credential, model) counts of answers and 429s."""
        return web.json_response(
            {"limits": self.limiter.limits.to_json(), "counts": self.limiter.all_counts()}
        )


_REQUEST_ID: dict[Provider, str] = {"openai": "x-request-id", "anthropic": "request-id"}


def _build(
    builder: Builder, call: Call, body: bytes, prepare: Callable[[Call], Call | Reply]
) -> Reply:
    """Parse the JSON body (if any), ``prepare`` the call (a Reply answers instead) and run
    the builder; bad input becomes a shaped 400."""
    payload: Any = {}
    if body:
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:
            return Reply(status=400, body=error_body(call.provider, 400, f"Invalid JSON: {exc}"))
    if not isinstance(payload, dict):
        return Reply(status=400, body=error_body(call.provider, 400, "Body must be an object"))
    try:
        prepared = prepare(dataclasses.replace(call, payload=payload))
        if isinstance(prepared, Reply):
            return prepared
        return builder(prepared)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        # a real provider answers a malformed request with a 400, whatever its shape
        message = f"Invalid request: {type(exc).__name__} (fake)"
        return Reply(status=400, body=error_body(call.provider, 400, message))


_MAX_DECODED = 1 << 30


def decode_body(body: bytes, encoding: str | None) -> bytes:
    """A request body without its Content-Encoding; ValueError for what a server refuses."""
    codings = [c.strip().lower() for c in (encoding or "").split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding not in ("gzip", "x-gzip", "deflate"):
            raise ValueError(f"Unsupported Content-Encoding: {coding} (fake)")
        wbits = 47 if coding != "deflate" else 15
        try:
            inflater = zlib.decompressobj(wbits)
            body = inflater.decompress(body, _MAX_DECODED)
            if not inflater.eof:
                raise ValueError(f"truncated {coding} body (fake)")
        except zlib.error as exc:
            if coding != "deflate":
                raise ValueError(f"invalid {coding} body: {exc} (fake)") from None
            try:
                body = zlib.decompress(body, -15)  # raw deflate, as some clients send it
            except zlib.error:
                raise ValueError(f"invalid deflate body: {exc} (fake)") from None
    return body


def _error_response(provider: Provider, status: int, message: str) -> web.Response:
    return web.Response(
        body=error_body(provider, status, message), status=status, content_type="application/json"
    )
