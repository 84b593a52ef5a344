"""The fake upstream speaks the real wire shapes (checked with the official SDKs) and its
faults, pacing and controls behave as the proxy's tests rely on."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import struct
import sys
import time
from datetime import timedelta
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp_sse_client import client as sse_client
from yarl import URL

from proxy.fake_upstream import FakeUpstream, Fault, RecordedRequest, fake_text, prompt_tokens

CHAT = "/v1/chat/completions"
USER_HI = [{"role": "user", "content": "hello there"}]  # 3 + 2 words = 5 prompt tokens


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
async def url(upstream: FakeUpstream, aiohttp_server: Any) -> str:
    server = await aiohttp_server(upstream.make_app())
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def oai(url: str) -> Any:
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0) as client:
        yield client


@pytest.fixture
async def claude(url: str) -> Any:
    async with anthropic.AsyncAnthropic(base_url=url, api_key="test", max_retries=0) as client:
        yield client


async def fetch(method: str, url: str | URL, **kwargs: Any) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.request(method, url, **kwargs) as resp:
            return resp.status, resp.headers.copy(), await resp.read()


def sse_data(raw: bytes) -> list[str]:
    """The data lines of an SSE body, in order."""
    return [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]


def chat_json(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-test", "messages": USER_HI, **extra}


# ---- deterministic content ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"messages": [{"role": "user", "content": "a b c"}]}, 6),
        (
            {
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "x y"},
                            {"type": "image_url", "image_url": {}},
                        ],
                    },
                ]
            },
            10,
        ),
        ({"system": "sys prompt", "messages": [{"role": "user", "content": "hi"}]}, 9),
        ({"input": "one two three"}, 6),
        ({"instructions": "be nice", "input": [{"role": "user", "content": "hey"}]}, 9),
        ({}, 0),
    ],
    ids=[
        "chat-string",
        "chat-parts",
        "anthropic-system",
        "responses-string",
        "responses-items",
        "empty",
    ],
)
def test_prompt_tokens_is_words_plus_three_per_message(
    payload: dict[str, Any], expected: int
) -> None:
    assert expected == prompt_tokens(payload)


def test_fake_text_is_numbered_tokens() -> None:
    assert "tok0 tok1 tok2 " == fake_text(3)


# ---- OpenAI through the official SDK ------------------------------------------------------


async def test_openai_sdk_parses_chat_completion(oai: Any) -> None:
    chat = await oai.chat.completions.create(model="gpt-echo", messages=USER_HI)
    assert "gpt-echo" == chat.model
    assert fake_text(5) == chat.choices[0].message.content
    assert "stop" == chat.choices[0].finish_reason
    assert (5, 5, 10) == (
        chat.usage.prompt_tokens,
        chat.usage.completion_tokens,
        chat.usage.total_tokens,
    )
    assert 0 == chat.usage.prompt_tokens_details.cached_tokens


async def test_openai_sdk_streams_role_content_finish_then_usage(oai: Any) -> None:
    stream = await oai.chat.completions.create(
        model="gpt-echo", messages=USER_HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    first, *content, finish, usage = chunks
    assert ("assistant", "") == (first.choices[0].delta.role, first.choices[0].delta.content)
    assert fake_text(5) == "".join(c.choices[0].delta.content for c in content)
    assert "stop" == finish.choices[0].finish_reason
    assert [] == usage.choices
    assert (5, 5) == (usage.usage.prompt_tokens, usage.usage.completion_tokens)
    assert all(c.usage is None for c in chunks[:-1])


async def test_chat_stream_wire_format(url: str) -> None:
    """``usage: null`` only when include_usage was asked; the stream ends with [DONE]."""
    _, headers, plain = await fetch("POST", url + CHAT, json=chat_json(stream=True))
    _, _, with_usage = await fetch(
        "POST", url + CHAT, json=chat_json(stream=True, stream_options={"include_usage": True})
    )
    assert headers["Content-Type"].startswith("text/event-stream")
    plain_data, usage_data = sse_data(plain), sse_data(with_usage)
    assert "[DONE]" == plain_data[-1] == usage_data[-1]
    assert 7 == len(plain_data) - 1  # role + 5 content + finish
    assert all("usage" not in json.loads(d) for d in plain_data[:-1])
    assert all(json.loads(d)["usage"] is None for d in usage_data[:-2])
    assert 10 == json.loads(usage_data[-2])["usage"]["total_tokens"]


async def test_openai_sdk_chat_stream_helper_accumulates(oai: Any) -> None:
    async with oai.chat.completions.stream(model="m", messages=USER_HI) as stream:
        final = await stream.get_final_completion()
    assert fake_text(5) == final.choices[0].message.content


async def test_max_tokens_caps_chunks_with_length_finish(oai: Any) -> None:
    chat = await oai.chat.completions.create(model="m", messages=USER_HI, max_tokens=2)
    assert (fake_text(2), "length") == (
        chat.choices[0].message.content,
        chat.choices[0].finish_reason,
    )
    assert 2 == chat.usage.completion_tokens


async def test_openai_sdk_parses_responses(oai: Any) -> None:
    resp = await oai.responses.create(model="gpt-r", input="say hi")
    assert (fake_text(5), "gpt-r", "completed") == (resp.output_text, resp.model, resp.status)
    assert (5, 5, 0) == (
        resp.usage.input_tokens,
        resp.usage.output_tokens,
        resp.usage.input_tokens_details.cached_tokens,
    )


async def test_openai_sdk_responses_stream_helper(oai: Any) -> None:
    async with oai.responses.stream(model="gpt-r", input="say hi") as stream:
        types = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert "response.created" == types[0]
    assert "response.completed" == types[-1]
    assert 5 == types.count("response.output_text.delta")
    assert (fake_text(5), 5) == (final.output_text, final.usage.output_tokens)


async def test_openai_sdk_embeddings_float_and_base64(oai: Any, url: str) -> None:
    floats = await oai.embeddings.create(model="emb", input=["a b", "c"])
    assert [0, 1] == [d.index for d in floats.data]
    assert 8 == len(floats.data[0].embedding)
    assert 3 == floats.usage.prompt_tokens
    _, _, raw = await fetch(
        "POST",
        url + "/v1/embeddings",
        json={"model": "emb", "input": ["a b", "c"], "encoding_format": "base64"},
    )
    packed = base64.b64decode(json.loads(raw)["data"][0]["embedding"])
    assert floats.data[0].embedding == list(struct.unpack("<8f", packed))


async def test_openai_sdk_lists_and_retrieves_models(oai: Any) -> None:
    ids = [m.id async for m in oai.models.list()]
    model = await oai.models.retrieve("gpt-anything")
    assert "gpt-4o-mini" in ids
    assert ("gpt-anything", "model") == (model.id, model.object)


async def test_sync_openai_sdk_streams(url: str) -> None:
    def run() -> str:
        with openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0) as client:
            stream = client.chat.completions.create(model="m", messages=USER_HI, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert fake_text(5) == await asyncio.to_thread(run)


# ---- Anthropic through the official SDK ---------------------------------------------------


async def test_anthropic_sdk_parses_message(claude: Any) -> None:
    msg = await claude.messages.create(model="claude-echo", max_tokens=100, messages=USER_HI)
    assert ("claude-echo", "end_turn") == (msg.model, msg.stop_reason)
    assert fake_text(5) == msg.content[0].text
    assert (5, 5) == (msg.usage.input_tokens, msg.usage.output_tokens)


async def test_anthropic_sdk_raw_stream_event_order(claude: Any) -> None:
    stream = await claude.messages.create(model="c", max_tokens=100, messages=USER_HI, stream=True)
    events = [event async for event in stream]  # the SDK drops ``ping``
    assert (
        ["message_start", "content_block_start"]
        + ["content_block_delta"] * 5
        + ["content_block_stop", "message_delta", "message_stop"]
    ) == [e.type for e in events]
    assert 5 == events[0].message.usage.input_tokens
    assert 5 == events[-2].usage.output_tokens


async def test_anthropic_sdk_stream_helper_accumulates(claude: Any) -> None:
    async with claude.messages.stream(model="c", max_tokens=100, messages=USER_HI) as stream:
        final = await stream.get_final_message()
    assert (fake_text(5), 5, 5) == (
        final.content[0].text,
        final.usage.input_tokens,
        final.usage.output_tokens,
    )


async def test_anthropic_count_tokens_matches_usage(claude: Any) -> None:
    counted = await claude.messages.count_tokens(model="c", messages=USER_HI, system="be brief")
    assert 10 == counted.input_tokens


async def test_anthropic_models_shape_when_anthropic_version_sent(claude: Any) -> None:
    models = [m async for m in claude.models.list()]
    assert "model" == models[0].type


async def test_anthropic_stream_parsed_by_sse_client(url: str) -> None:
    """A generic SSE parser sees the ping and every event name."""
    names: list[str | None] = []
    body = {"model": "c", "max_tokens": 10, "messages": USER_HI, "stream": True}
    async with sse_client.EventSource(
        url + "/v1/messages",
        option={"method": "POST"},
        json=body,
        reconnection_time=timedelta(seconds=60),
    ) as source:
        async for event in source:
            names.append(event.type)
            if event.type == "message_stop":
                break
    assert ["message_start", "content_block_start", "ping"] == names[:3]
    assert ["content_block_stop", "message_delta", "message_stop"] == names[-3:]


# ---- faults -------------------------------------------------------------------------------


async def test_429_with_retry_after_is_consumed_once(upstream: FakeUpstream, url: str) -> None:
    upstream.enqueue(Fault(status=429, headers={"Retry-After": "7"}))
    status, headers, body = await fetch("POST", url + CHAT, json=chat_json())
    status2, _, body2 = await fetch("POST", url + CHAT, json=chat_json())
    assert (429, "7", "0") == (
        status,
        headers["Retry-After"],
        headers["x-ratelimit-remaining-requests"],
    )
    assert {"message", "type", "param", "code"} == set(json.loads(body)["error"])
    assert "rate_limit_exceeded" == json.loads(body)["error"]["code"]
    assert 200 == status2
    assert "chat.completion" == json.loads(body2)["object"]
    assert 2 == len(upstream.requests)


async def test_sdk_retries_after_429_and_succeeds(upstream: FakeUpstream, url: str) -> None:
    upstream.enqueue(Fault(status=429, headers={"retry-after-ms": "10"}))
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="t", max_retries=1) as client:
        chat = await client.chat.completions.create(model="m", messages=USER_HI)
    assert fake_text(5) == chat.choices[0].message.content
    assert 2 == len(upstream.requests)


async def test_anthropic_529_is_overloaded_error(upstream: FakeUpstream, claude: Any) -> None:
    upstream.enqueue(Fault(status=529))
    with pytest.raises(anthropic.OverloadedError) as caught:
        await claude.messages.create(model="c", max_tokens=10, messages=USER_HI)
    assert {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "overloaded_error (fake)"},
    } == caught.value.body


async def test_fault_with_path_waits_for_that_path(upstream: FakeUpstream, url: str) -> None:
    upstream.enqueue(Fault(status=500, path="/v1/embeddings"))
    chat_status, _, _ = await fetch("POST", url + CHAT, json=chat_json())
    emb_status, _, _ = await fetch("POST", url + "/v1/embeddings", json={"input": "x"})
    assert (200, 500) == (chat_status, emb_status)


async def test_explicit_body_and_headers(upstream: FakeUpstream, url: str) -> None:
    upstream.enqueue(Fault(status=503, body=b"upstream sad", headers={"x-why": "test"}))
    status, headers, body = await fetch("POST", url + CHAT, json=chat_json())
    assert (503, b"upstream sad", "test") == (status, body, headers["x-why"])


async def test_first_byte_delay_holds_headers(upstream: FakeUpstream, url: str) -> None:
    upstream.enqueue(Fault(first_byte_delay_s=0.2))
    started = time.monotonic()
    status, _, _ = await fetch("POST", url + CHAT, json=chat_json())
    assert 200 == status
    assert time.monotonic() - started >= 0.2


async def test_cut_after_chunks_gives_incomplete_stream(upstream: FakeUpstream, url: str) -> None:
    upstream.enqueue(Fault(cut_after_chunks=2))
    received = b""
    async with aiohttp.ClientSession() as session:
        async with session.post(url + CHAT, json=chat_json(stream=True)) as resp:
            assert 200 == resp.status
            with pytest.raises(aiohttp.ClientPayloadError):
                async for piece in resp.content.iter_any():
                    received += piece
    assert 2 == len(sse_data(received))
    assert b"[DONE]" not in received


async def test_openai_sdk_sees_cut_stream_as_connection_error(
    upstream: FakeUpstream, oai: Any
) -> None:
    upstream.enqueue(Fault(cut_after_chunks=3))
    stream = await oai.chat.completions.create(model="m", messages=USER_HI, stream=True)
    got: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            got.append(chunk)
    assert 3 == len(got)


async def test_cut_on_non_streaming_request_sends_nothing(upstream: FakeUpstream, url: str) -> None:
    upstream.enqueue(Fault(cut_after_chunks=0))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await fetch("POST", url + CHAT, json=chat_json())


async def test_anthropic_sse_error_after_chunks(upstream: FakeUpstream, claude: Any) -> None:
    upstream.enqueue(Fault(sse_error_after_chunks=4))
    stream = await claude.messages.create(model="c", max_tokens=10, messages=USER_HI, stream=True)
    types: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        async for event in stream:
            types.append(event.type)
    # message_start, content_block_start, (ping), one delta, then the error event
    assert ["message_start", "content_block_start", "content_block_delta"] == types
    assert "overloaded_error" == caught.value.body["error"]["type"]


async def test_anthropic_sse_error_ends_body_cleanly(upstream: FakeUpstream, url: str) -> None:
    upstream.enqueue(Fault(sse_error_after_chunks=1))
    body = {"model": "c", "max_tokens": 10, "messages": USER_HI, "stream": True}
    status, _, raw = await fetch("POST", url + "/v1/messages", json=body)
    assert 200 == status
    assert raw.endswith(
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        b'"message":"Overloaded"}}\n\n'
    )


async def test_openai_in_stream_error_is_raised_by_sdk(upstream: FakeUpstream, oai: Any) -> None:
    upstream.enqueue(Fault(sse_error_after_chunks=2))
    stream = await oai.chat.completions.create(model="m", messages=USER_HI, stream=True)
    got: list[Any] = []
    with pytest.raises(openai.APIError, match="overloaded"):
        async for chunk in stream:
            got.append(chunk)
    assert 2 == len(got)


async def test_hold_release_handshake(upstream: FakeUpstream, url: str) -> None:
    """The client reads chunk 1 while the fake waits before chunk 2."""
    upstream.hold_after_chunk = 1
    async with aiohttp.ClientSession() as session:
        async with session.post(url + CHAT, json=chat_json(stream=True)) as resp:
            first = await resp.content.readuntil(b"\n\n")
            assert 1 == upstream.chunks_sent
            assert not upstream.release.is_set()
            upstream.release.set()
            rest = await resp.read()
    assert '"role":"assistant"' in first.decode()
    assert "[DONE]" == sse_data(rest)[-1]
    assert 8 == upstream.chunks_sent  # role, 5 content, finish, [DONE]


async def test_client_disconnect_while_held_is_seen(upstream: FakeUpstream, url: str) -> None:
    upstream.hold_after_chunk = 1
    async with aiohttp.ClientSession() as session:
        resp = await session.post(url + CHAT, json=chat_json(stream=True))
        await resp.content.readuntil(b"\n\n")
        resp.close()
    await asyncio.wait_for(upstream.stream_disconnected.wait(), 5)
    assert 1 == upstream.chunks_sent


async def test_disconnect_seen_without_handler_cancellation() -> None:
    """A plain AppRunner (no handler cancellation) still notices the client leaving."""
    fake = FakeUpstream()
    fake.hold_after_chunk = 2
    runner = web.AppRunner(fake.make_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.post(f"http://{host}:{port}{CHAT}", json=chat_json(stream=True))
            await resp.content.readuntil(b"\n\n")
            resp.close()
        await asyncio.wait_for(fake.stream_disconnected.wait(), 5)
    finally:
        await runner.cleanup()


async def test_chunk_delay_paces_events(url: str) -> None:
    started = time.monotonic()
    _, _, raw = await fetch(
        "POST",
        url + CHAT,
        json=chat_json(stream=True),
        headers={"x-fake-chunks": "3", "x-fake-chunk-delay-ms": "50"},
    )
    assert 3 + 3 == len(sse_data(raw))  # role, 3 content, finish, [DONE]
    assert time.monotonic() - started >= 5 * 0.05


# ---- per-request headers, gzip, binary, recording -----------------------------------------


async def test_fault_headers_from_request(url: str) -> None:
    status, headers, body = await fetch(
        "POST",
        url + "/v1/messages",
        json={"model": "c"},
        headers={"x-fake-status": "429", "x-fake-retry-after": "3"},
    )
    assert (429, "3") == (status, headers["retry-after"])
    assert "rate_limit_error" == json.loads(body)["error"]["type"]
    assert "anthropic-ratelimit-requests-reset" in headers


async def test_chunks_header_sets_content_length(oai: Any) -> None:
    chat = await oai.chat.completions.create(
        model="m", messages=USER_HI, extra_headers={"x-fake-chunks": "12"}
    )
    assert fake_text(12) == chat.choices[0].message.content


async def test_bad_fake_header_is_shaped_400(url: str) -> None:
    status, _, body = await fetch(
        "POST", url + CHAT, json=chat_json(), headers={"x-fake-chunks": "many"}
    )
    assert 400 == status
    assert "invalid_request_error" == json.loads(body)["error"]["type"]


async def test_gzip_only_when_asked_and_accepted(url: str) -> None:
    asked = {"Accept-Encoding": "gzip", "x-fake-gzip": "1"}
    _, headers, raw = await fetch("POST", url + CHAT, json=chat_json(), headers=asked)
    _, plain_headers, plain = await fetch(
        "POST", url + CHAT, json=chat_json(), headers={"Accept-Encoding": "gzip"}
    )
    assert "gzip" == headers["Content-Encoding"]
    assert str(len(raw)) == headers["Content-Length"]
    assert json.loads(plain)["choices"] == json.loads(gzip.decompress(raw))["choices"]
    assert "Content-Encoding" not in plain_headers


async def test_binary_endpoint_returns_exact_size(url: str) -> None:
    status, headers, body = await fetch("GET", url + "/v1/fake/binary?size=1000")
    assert (200, 1000) == (status, len(body))
    assert "application/octet-stream" == headers["Content-Type"]
    assert bytes(range(256)) * 3 + bytes(range(232)) == body


async def test_invalid_json_is_openai_shaped_400(url: str) -> None:
    status, _, body = await fetch("POST", url + CHAT, data=b"{nope")
    assert 400 == status
    assert "invalid_request_error" == json.loads(body)["error"]["type"]


async def test_unknown_path_is_provider_shaped_404_and_recorded(
    upstream: FakeUpstream, url: str
) -> None:
    status, _, body = await fetch("POST", url + "/v1/messages/nothing", data=b"{}")
    assert (404, "not_found_error") == (status, json.loads(body)["error"]["type"])
    assert "/v1/messages/nothing" == upstream.requests[-1].path


async def test_requests_recorded_byte_exact(upstream: FakeUpstream, url: str) -> None:
    raw = json.dumps(chat_json(note="héllo 🎉"), indent=3, ensure_ascii=False).encode() + b"\n"
    target = URL(url + CHAT + "?a=1&b=%2F", encoded=True)  # keep %2F on the wire
    await fetch("POST", target, data=raw, headers={"X-Custom": "kept"})
    seen = upstream.requests[-1]
    assert isinstance(seen, RecordedRequest)
    assert (raw, "POST", CHAT, "a=1&b=%2F") == (
        seen.body,
        seen.method,
        seen.path,
        seen.query_string,
    )
    assert "kept" == seen.headers["x-custom"]


async def test_same_request_gets_byte_identical_answer(upstream: FakeUpstream, url: str) -> None:
    """Object ids hash the request body; only the request-id header counts requests."""
    _, h1, first = await fetch("POST", url + CHAT, json=chat_json())
    _, h2, second = await fetch("POST", url + CHAT, json=chat_json())
    upstream.clear()
    _, h3, _ = await fetch("POST", url + CHAT, json=chat_json())
    assert first == second
    assert ["req_fake_1", "req_fake_2", "req_fake_1"] == [h["x-request-id"] for h in (h1, h2, h3)]
    assert 1 == len(upstream.requests)


# ---- control API (for a fake in another process) ------------------------------------------


async def test_control_api_faults_requests_reset(upstream: FakeUpstream, url: str) -> None:
    faults = [{"status": 429, "headers": {"retry-after": "1"}}, {"status": 503, "body": "down"}]
    status, _, _ = await fetch("POST", url + "/_fake/faults", json=faults)
    first, _, _ = await fetch("POST", url + CHAT, data=b"{}")
    second, _, body = await fetch("POST", url + CHAT, data=b"{}")
    third, _, _ = await fetch("POST", url + CHAT, data=b"{}")
    _, _, listing = await fetch("GET", url + "/_fake/requests")
    summary = json.loads(listing)
    assert (200, 429, 503, b"down", 200) == (status, first, second, body, third)
    assert [CHAT] * 3 == [r["path"] for r in summary]
    assert b"{}" == base64.b64decode(summary[0]["body"])
    await fetch("POST", url + "/_fake/reset")
    _, _, after = await fetch("GET", url + "/_fake/requests")
    assert [] == json.loads(after)
    assert [] == upstream.requests


@pytest.mark.parametrize(
    ("fault", "complaint"),
    [
        ({"stauts": 429}, "stauts"),
        ({"status": "429"}, "status"),
        ({"headers": {"a": 1}}, "headers"),
    ],
    ids=["unknown-field", "wrong-type", "non-string-header"],
)
async def test_control_api_rejects_bad_faults(
    upstream: FakeUpstream, url: str, fault: dict[str, Any], complaint: str
) -> None:
    status, _, body = await fetch("POST", url + "/_fake/faults", json=[fault])
    assert 400 == status
    assert complaint in json.loads(body)["error"]
    assert 0 == upstream.pending_faults


async def test_status_below_400_keeps_the_normal_answer(url: str) -> None:
    status, _, body = await fetch(
        "POST", url + CHAT, json=chat_json(), headers={"x-fake-status": "201"}
    )
    assert (201, fake_text(5)) == (status, json.loads(body)["choices"][0]["message"]["content"])


# ---- standalone -----------------------------------------------------------------------------


async def test_standalone_prints_url_and_serves() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.fake_upstream", "--port", "0", stdout=asyncio.subprocess.PIPE
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        base = line.removeprefix("listening on ")
        status, _, body = await fetch("POST", base + CHAT, json=chat_json())
        assert (200, fake_text(5)) == (status, json.loads(body)["choices"][0]["message"]["content"])
    finally:
        proc.terminate()
        code = await asyncio.wait_for(proc.wait(), 10)
    assert 0 == code
