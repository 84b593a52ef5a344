"""Byte-for-byte forwarding, unbuffered streaming, disconnects and the proxy's own errors."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import aiohttp
import pytest
from aiohttp_sse_client import client as sse_client
from yarl import URL

from proxy.fake_upstream import FakeUpstream, Fault
from tests.conftest import LogCapture, base_config, fetch, free_port

CHAT = "/v1/chat/completions"


def chat_body(stream: bool = False, **extra: Any) -> bytes:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **extra}
    if stream:
        body["stream"] = True
    # unusual but valid JSON spacing and unicode: must arrive exactly as sent
    return json.dumps(body, indent=3, ensure_ascii=False).encode() + b"\n"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_bytes_identical_both_ways(fake: FakeUpstream, proxy_url: str, stream: bool) -> None:
    body = chat_body(stream, note="héllo 🎉")
    headers = {"Content-Type": "application/json", "x-custom": "kept"}
    status_d, _, direct = await fetch("POST", fake.url + CHAT, data=body, headers=headers)
    fake.clear()  # restarts the fake's id sequence, so both answers are identical
    url = URL(proxy_url + "/openai" + CHAT + "?a=1&b=%2F", encoded=True)  # sent as written
    status_p, resp_headers, proxied = await fetch("POST", url, data=body, headers=headers)
    assert (status_d, direct) == (status_p, proxied)
    upstream_saw = fake.requests[-1]
    assert upstream_saw.body == body
    assert upstream_saw.path == CHAT
    assert upstream_saw.query_string == "a=1&b=%2F"
    assert upstream_saw.headers["x-custom"] == "kept"
    if stream:
        assert resp_headers["Content-Type"].startswith("text/event-stream")
        assert proxied.rstrip().endswith(b"data: [DONE]")


async def test_gzip_passes_through_undecoded(fake: FakeUpstream, proxy_url: str) -> None:
    headers = {"Accept-Encoding": "gzip", "x-fake-gzip": "1", "Content-Type": "application/json"}
    _, _, direct = await fetch("POST", fake.url + CHAT, data=chat_body(), headers=headers)
    _, headers_p, proxied = await fetch(
        "POST", proxy_url + "/openai" + CHAT, data=chat_body(), headers=headers
    )
    assert headers_p["Content-Encoding"] == "gzip"
    assert direct == proxied
    assert int(headers_p["Content-Length"]) == len(proxied)
    assert json.loads(gzip.decompress(proxied))["object"] == "chat.completion"


async def test_large_binary_response_streams_through(fake: FakeUpstream, proxy_url: str) -> None:
    size = 5 * 1024 * 1024 + 7
    _, _, direct = await fetch("GET", f"{fake.url}/v1/fake/binary?size={size}")
    status, _, proxied = await fetch("GET", f"{proxy_url}/openai/v1/fake/binary?size={size}")
    assert (200, size) == (status, len(proxied))
    assert direct == proxied


async def test_hop_by_hop_headers_not_forwarded(fake: FakeUpstream, proxy_url: str) -> None:
    headers = {
        "Connection": "keep-alive, X-Private",
        "X-Private": "hop",
        "Proxy-Authorization": "Basic Zm9v",
        "TE": "trailers",
        "X-Kept": "yes",
    }
    await fetch("GET", proxy_url + "/openai/v1/models", headers=headers)
    seen = fake.requests[-1].headers
    assert "X-Private" not in seen
    assert "Proxy-Authorization" not in seen
    assert "TE" not in seen
    assert seen["X-Kept"] == "yes"


async def test_request_id_kept_and_returned(
    fake: FakeUpstream, proxy_url: str, logs: LogCapture
) -> None:
    _, headers, _ = await fetch(
        "GET", proxy_url + "/openai/v1/models", headers={"x-request-id": "req-abc-123"}
    )
    assert fake.requests[-1].headers["x-request-id"] == "req-abc-123"
    assert headers["x-proxy-request-id"] == "req-abc-123"
    # the upstream's own x-request-id (OpenAI's req_...) reaches the SDK unchanged
    assert headers["x-request-id"].startswith("req_fake_")
    assert (await logs.last())["request_id"] == "req-abc-123"


async def test_request_id_generated_when_absent(fake: FakeUpstream, proxy_url: str) -> None:
    _, headers, _ = await fetch("GET", proxy_url + "/openai/v1/models")
    generated = headers["x-proxy-request-id"]
    assert len(generated) == 32
    assert fake.requests[-1].headers["x-request-id"] == generated


async def test_stream_not_buffered_handshake(fake: FakeUpstream, proxy_url: str) -> None:
    """The client gets chunk 1 while the fake is still held before chunk 2."""
    fake.hold_after_chunk = 2  # role chunk + first content chunk: the proxy has relayed them
    received: list[str] = []
    async with sse_client.EventSource(
        proxy_url + "/openai" + CHAT,
        option={"method": "POST"},
        data=chat_body(stream=True),
        headers={"Content-Type": "application/json"},
        reconnection_time=__import__("datetime").timedelta(seconds=60),
    ) as source:
        async for event in source:
            received.append(event.data)
            if len(received) == 1:
                assert not fake.release.is_set()
                fake.release.set()
            if event.data == "[DONE]":
                break
    assert received[-1] == "[DONE]"
    assert len(received) > 3


async def test_client_disconnect_cancels_upstream(
    fake: FakeUpstream, proxy_url: str, logs: LogCapture
) -> None:
    fake.hold_after_chunk = 2  # role chunk + first content chunk: the proxy has relayed them
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            proxy_url + "/openai" + CHAT,
            data=chat_body(stream=True),
            headers={"Content-Type": "application/json", "x-fake-chunks": "50"},
        )
        first = await resp.content.readline()
        assert first.startswith(b"data:")
        resp.close()  # the client goes away mid-stream
    await asyncio.wait_for(fake.stream_disconnected.wait(), 5)
    for _ in range(50):
        if logs.requests():
            break
        await asyncio.sleep(0.05)
    assert (await logs.last())["error"] == "client disconnected"


async def test_upstream_cut_mid_stream_is_not_a_clean_end(
    fake: FakeUpstream, proxy_url: str, logs: LogCapture
) -> None:
    fake.enqueue(Fault(cut_after_chunks=2))
    async with aiohttp.ClientSession() as session:
        async with session.post(
            proxy_url + "/openai" + CHAT,
            data=chat_body(stream=True),
            headers={"Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    line = await logs.last()
    assert line["status"] == 200
    assert "upstream" in line["error"]


# ---- the proxy's own errors, each in the route's provider shape -------------------------------


def openai_error(body: bytes) -> dict[str, Any]:
    payload = json.loads(body)
    assert set(payload) == {"error"}
    assert {"message", "type", "code"} <= set(payload["error"])
    return payload["error"]


def anthropic_error(body: bytes) -> dict[str, Any]:
    payload = json.loads(body)
    assert payload["type"] == "error"
    assert {"type", "message"} <= set(payload["error"])
    return payload["error"]


async def test_unknown_route_is_404(proxy_url: str) -> None:
    status, _, body = await fetch("POST", proxy_url + "/nowhere/v1/chat/completions", data=b"{}")
    assert 404 == status
    assert "unknown_route" == openai_error(body)["code"]


async def test_unknown_anthropic_path_gets_anthropic_shape(proxy_url: str) -> None:
    status, _, body = await fetch("POST", proxy_url + "/x/v1/messages", data=b"{}")
    assert 404 == status
    assert "not_found_error" == anthropic_error(body)["type"]


async def test_body_over_limit_is_413(fake: FakeUpstream, start_proxy: Any) -> None:
    url = await start_proxy(base_config(fake.url, limits={"max_body_bytes": 1000}))
    status, _, body = await fetch("POST", url + "/anthropic/v1/messages", data=b"x" * 5000)
    assert 413 == status
    assert "request_too_large" == anthropic_error(body)["type"]
    assert fake.requests == []


async def test_chunked_body_over_limit_is_413(fake: FakeUpstream, start_proxy: Any) -> None:
    url = await start_proxy(base_config(fake.url, limits={"max_body_bytes": 1000}))

    async def gen() -> Any:
        for _ in range(10):
            yield b"y" * 500

    status, _, body = await fetch("POST", url + "/openai" + CHAT, data=gen())
    assert 413 == status
    assert "request_too_large" == openai_error(body)["code"]


async def test_upstream_unreachable_is_502(start_proxy: Any, logs: LogCapture) -> None:
    raw = base_config(f"http://127.0.0.1:{free_port()}", retry={"backoff_base_s": 0.01})
    url = await start_proxy(raw)
    status, headers, body = await fetch("POST", url + "/openai" + CHAT, data=chat_body())
    assert 502 == status
    assert "upstream_unreachable" == openai_error(body)["code"]
    assert "false" == headers["x-should-retry"]  # the proxy retried already; the SDK need not
    line = await logs.last()
    assert (502, 3, False) == (line["status"], len(line["attempts"]), line["fallback"])


async def test_first_byte_timeout_is_504(fake: FakeUpstream, start_proxy: Any) -> None:
    url = await start_proxy(base_config(fake.url, timeouts={"first_byte_s": 0.2}))
    fake.enqueue(Fault(first_byte_delay_s=2))
    status, _, body = await fetch(
        "POST", url + "/anthropic/v1/messages", data=b"{}", headers={"x-proxy-max-wait": "0"}
    )
    assert 504 == status
    assert "timeout_error" == anthropic_error(body)["type"]


async def test_idle_timeout_mid_stream_closes_and_logs(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    url = await start_proxy(base_config(fake.url, timeouts={"idle_s": 0.3}))
    fake.hold_after_chunk = 2  # never released: the upstream goes silent (after the first content)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url + "/openai" + CHAT,
            data=chat_body(stream=True),
            headers={"Content-Type": "application/json"},
        ) as resp:
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    assert (await logs.last())["error"] == "upstream idle timeout"


async def test_upstream_errors_pass_through_unchanged(fake: FakeUpstream, proxy_url: str) -> None:
    fake.enqueue(Fault(status=429, headers={"Retry-After": "7"}))
    fake.enqueue(Fault(status=429, headers={"Retry-After": "7"}))
    d_status, _, direct = await fetch("POST", fake.url + CHAT, data=chat_body())
    p_status, p_headers, proxied = await fetch(
        "POST", proxy_url + "/openai" + CHAT, data=chat_body(), headers={"x-proxy-max-wait": "0"}
    )
    assert (d_status, direct) == (p_status, proxied)
    assert p_headers["Retry-After"] == "7"


async def test_api_key_swapped_and_never_logged(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    raw = base_config(fake.url)
    raw["routes"][0]["upstreams"][0]["api_key"] = "sk-proxy-secret-0123456789"
    raw["routes"][1]["upstreams"][0]["api_key"] = "sk-ant-proxy-secret-987654"
    url = await start_proxy(raw)
    client_secret = {"Authorization": "Bearer sk-client-secret-abcdef"}
    await fetch("POST", url + "/openai" + CHAT, data=chat_body(), headers=client_secret)
    await fetch(
        "POST",
        url + "/anthropic/v1/messages",
        data=b"{}",
        headers={"x-api-key": "sk-ant-client-zzzzzz"},
    )
    openai_seen, anthropic_seen = fake.requests[-2].headers, fake.requests[-1].headers
    assert openai_seen.getall("Authorization") == ["Bearer sk-proxy-secret-0123456789"]
    assert anthropic_seen.getall("x-api-key") == ["sk-ant-proxy-secret-987654"]
    assert "Authorization" not in anthropic_seen
    captured = logs.getvalue()
    assert len(await logs.settled(2)) == 2
    for secret in ("sk-proxy-secret", "sk-client-secret", "sk-ant-proxy", "sk-ant-client"):
        assert secret not in captured


async def test_client_credential_passes_when_no_upstream_key(
    fake: FakeUpstream, proxy_url: str
) -> None:
    await fetch("GET", proxy_url + "/openai/v1/models", headers={"Authorization": "Bearer sk-mine"})
    assert fake.requests[-1].headers["Authorization"] == "Bearer sk-mine"


async def test_log_line_fields(fake: FakeUpstream, proxy_url: str, logs: LogCapture) -> None:
    await fetch("POST", proxy_url + "/openai" + CHAT + "?secret=q", data=chat_body(stream=True))
    line = await logs.last()
    expected = {
        "request_id",
        "route",
        "upstream",
        "method",
        "path",
        "status",
        "stream",
        "duration_ms",
        "ttfb_ms",
        "bytes_in",
        "bytes_out",
        "error",
    }
    assert expected <= set(line)
    assert (line["route"], line["upstream"], line["status"], line["stream"]) == (
        "/openai",
        "fake-openai",
        200,
        True,
    )
    assert line["path"] == "/openai" + CHAT  # the query string (may hold secrets) is not logged
    assert line["bytes_in"] == len(chat_body(stream=True))
    assert line["bytes_out"] > 0


async def test_empty_prefix_route_is_a_sidecar(fake: FakeUpstream, start_proxy: Any) -> None:
    raw = base_config(fake.url)
    raw["routes"] = [
        {"prefix": "", "provider": "openai", "upstreams": [{"name": "only", "base_url": fake.url}]}
    ]
    url = await start_proxy(raw)
    status, _, body = await fetch("GET", url + "/v1/models")
    assert 200 == status
    assert json.loads(body)["object"] == "list"


async def test_healthz(proxy_url: str) -> None:
    status, _, body = await fetch("GET", proxy_url + "/healthz")
    assert 200 == status
    assert json.loads(body)["status"] == "ok"


async def test_dot_segments_cannot_escape_the_base_path(fake: FakeUpstream, proxy_url: str) -> None:
    url = URL(proxy_url + "/openai/v1/../../admin", encoded=True)
    status, _, body = await fetch("GET", url)
    assert 400 == status
    assert "invalid_request_error" == openai_error(body)["type"]
    assert [] == fake.requests


async def test_curl_stream_matches_direct(fake: FakeUpstream, proxy_url: str) -> None:
    """curl -N, a client that is neither aiohttp nor an SDK, sees the same SSE bytes."""
    body = chat_body(stream=True).decode()

    async def curl(url: str) -> bytes:
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-sN",
            "--fail-with-body",
            url,
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        assert 0 == proc.returncode
        return out

    direct = await curl(fake.url + CHAT)
    fake.clear()
    assert direct == await curl(proxy_url + "/openai" + CHAT)
    assert direct.rstrip().endswith(b"data: [DONE]")
