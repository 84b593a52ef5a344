"""A minimal translating gateway for tests (not the proxy core): it names the client's API,
asks ``proxy.translate`` for a plan, sends the translated request to a real upstream (the
fake), and serves the translated answer, stream chunk by stream chunk. Every upstream answer
is captured raw so tests can compare what the SDK parsed with what the upstream produced."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from proxy.sse import SSEParser
from proxy.translate import (
    ApiFamily,
    LocalAnswer,
    MemoryResponseStore,
    Passthrough,
    Translation,
    Unsupported,
    client_api,
    translation_for,
)


@dataclass
class Captured:
    """One upstream exchange as the upstream saw it."""

    path: str
    request: dict[str, Any] | None
    status: int
    body: bytes
    dropped: tuple[str, ...]


@dataclass
class Harness:
    upstream_url: str
    families: dict[str, ApiFamily]
    """Route prefix ("openai" / "anthropic") -> the family the upstream speaks."""
    store: MemoryResponseStore = field(default_factory=MemoryResponseStore)
    captured: list[Captured] = field(default_factory=list)
    chunks_written: list[bytes] = field(default_factory=list)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{route:openai|anthropic}{tail:/.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        route = request.match_info["route"]
        client = client_api(route, request.method, request.match_info["tail"])  # type: ignore[arg-type]
        plan = translation_for(client, self.families[route], store=self.store)
        if isinstance(plan, Passthrough):
            raise AssertionError("the harness only serves cross-family requests")
        if isinstance(plan, Unsupported):
            return _response(plan.response())
        raw = await request.read()
        body = json.loads(raw) if raw else None
        translated = await plan.request(body)
        if isinstance(translated, LocalAnswer):
            return _response(translated.response)
        fake_headers = {k: v for k, v in request.headers.items() if k.lower().startswith("x-fake-")}
        headers = {**translated.headers, **fake_headers, "Content-Type": "application/json"}
        async with aiohttp.ClientSession() as session:
            async with session.request(
                translated.method,
                self.upstream_url + translated.path,
                data=translated.encoded() if translated.body is not None else None,
                headers=headers,
            ) as upstream:
                record = Captured(
                    translated.path,
                    dict(translated.body or {}) or None,
                    upstream.status,
                    b"",
                    translated.dropped,
                )
                self.captured.append(record)
                streaming = upstream.content_type == "text/event-stream" and upstream.status == 200
                if streaming:
                    return await self._relay(request, plan, upstream, record)
                record.body = await upstream.read()
                answer = plan.response(upstream.status, upstream.headers, record.body)
        await plan.settle()
        return _response(answer)

    async def _relay(
        self,
        request: web.Request,
        plan: Translation,
        upstream: aiohttp.ClientResponse,
        record: Captured,
    ) -> web.StreamResponse:
        translator = plan.stream(upstream.headers)
        resp = web.StreamResponse(status=translator.status, headers=dict(translator.headers))
        await resp.prepare(request)
        pieces = []
        try:
            async for chunk in upstream.content.iter_any():
                pieces.append(chunk)
                out = translator.feed(chunk)
                if out:
                    self.chunks_written.append(out)
                    await resp.write(out)
        except aiohttp.ClientPayloadError:
            pass  # a cut upstream: finish() turns it into the client's in-stream error
        record.body = b"".join(pieces)
        tail = translator.finish()
        if tail:
            self.chunks_written.append(tail)
            await resp.write(tail)
        await resp.write_eof()
        await plan.settle()
        return resp


def _response(answer: Any) -> web.Response:
    return web.Response(status=answer.status, headers=dict(answer.headers), body=answer.body)


def sse_payloads(raw: bytes) -> list[tuple[str, Any]]:
    """(event name, parsed data) of every event in an SSE body; ``[DONE]`` stays a string."""
    out = []
    for event in SSEParser().feed(raw):
        data = event.data if event.data == "[DONE]" else json.loads(event.data)
        out.append((event.event, data))
    return out


def chat_stream_summary(
    raw: bytes,
) -> tuple[str, dict[int, tuple[str, str, str]], dict[str, Any] | None]:
    """(text, {index: (id, name, arguments)}, usage) of an OpenAI chat stream."""
    text, calls, usage = [], {}, None
    for _, data in sse_payloads(raw):
        if data == "[DONE]":
            continue
        if data.get("usage"):
            usage = data["usage"]
        for choice in data.get("choices") or ():
            delta = choice.get("delta") or {}
            text.append(delta.get("content") or "")
            for call in delta.get("tool_calls") or ():
                old = calls.get(call["index"], ("", "", ""))
                fn = call.get("function") or {}
                calls[call["index"]] = (
                    call.get("id") or old[0],
                    fn.get("name") or old[1],
                    old[2] + (fn.get("arguments") or ""),
                )
    return "".join(text), calls, usage


def anthropic_stream_summary(raw: bytes) -> tuple[str, list[tuple[str, str, str]], dict[str, Any]]:
    """(text, [(id, name, input JSON text)], usage) of an Anthropic message stream."""
    text, calls, usage = [], [], {}
    blocks: dict[int, list[str]] = {}
    for _, data in sse_payloads(raw):
        kind = data.get("type")
        if kind == "message_start":
            usage.update(data["message"]["usage"])
        elif kind == "content_block_start" and data["content_block"]["type"] == "tool_use":
            block = data["content_block"]
            calls.append((block["id"], block["name"], data["index"]))
            blocks[data["index"]] = []
        elif kind == "content_block_delta":
            delta = data["delta"]
            if delta["type"] == "text_delta":
                text.append(delta["text"])
            elif delta["type"] == "input_json_delta":
                blocks[data["index"]].append(delta["partial_json"])
        elif kind == "message_delta":
            usage.update({k: v for k, v in data["usage"].items() if v is not None})
    tools = [(i, n, "".join(blocks[index])) for i, n, index in calls]
    return "".join(text), tools, usage
