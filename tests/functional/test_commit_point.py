"""Commit point: a stream that fails before its first content is retried or served by a
fallback, invisibly to the client; after the first content nothing changes.

Faults come from the fake upstream; clients are the official SDKs' stream helpers and aiohttp.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from proxy.fake_upstream import FakeUpstream, Fault
from tests.conftest import LogCapture, base_config, fetch

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
JSON = {"Content-Type": "application/json"}
CHAT_STREAM = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
CLAUDE_STREAM = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 50,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


def two_upstreams(fake_url: str, **extra: Any) -> dict[str, Any]:
    raw = base_config(fake_url, **extra)
    for route in raw["routes"]:
        route["upstreams"] = [
            {"name": "primary", "base_url": fake_url},
            {"name": "secondary", "base_url": fake_url},
        ]
    return raw


async def direct_bytes(fake: FakeUpstream, path: str, payload: dict[str, Any]) -> bytes:
    """The fake's answer to ``payload`` without faults, then forget it (ids restart)."""
    _, _, body = await fetch("POST", fake.url + path, data=json.dumps(payload), headers=JSON)  # type: ignore[attr-defined]
    fake.clear()
    return body


async def test_anthropic_overloaded_after_message_start_is_retried_byte_for_byte(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    url = await start_proxy(base_config(fake.url))  # type: ignore[attr-defined]
    expected = await direct_bytes(fake, MESSAGES, CLAUDE_STREAM)
    fake.enqueue(Fault(sse_error_after_chunks=1))  # message_start, then overloaded_error
    status, headers, body = await fetch(
        "POST", url + "/anthropic" + MESSAGES, data=json.dumps(CLAUDE_STREAM), headers=JSON
    )
    assert (200, expected) == (status, body)
    assert "2" == headers["x-proxy-attempts"]
    line = await logs.last()
    failed, served = line["attempts"]
    assert ("stream_failed", "error_event", "overloaded_error") == (
        failed["reason"],
        failed["stream_failure"],
        failed["event_type"],
    )
    assert failed["held_bytes"] > 0
    assert ("answered", 200) == (served["reason"], served["status"])
    assert line["error"] is None


async def test_anthropic_sdk_stream_helper_sees_one_clean_stream(
    fake: FakeUpstream, start_proxy: Any
) -> None:
    url = await start_proxy(base_config(fake.url))  # type: ignore[attr-defined]
    fake.enqueue(Fault(sse_error_after_chunks=1))
    client = anthropic.AsyncAnthropic(base_url=url + "/anthropic", api_key="sk-ant-test")
    async with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert "tok0 tok1 tok2 tok3 tok4 " == text
    assert ("end_turn", 5) == (final.stop_reason, final.usage.output_tokens)
    assert 2 == len(fake.requests)


async def test_openai_role_chunk_then_cut_is_served_by_the_fallback(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    url = await start_proxy(two_upstreams(fake.url, retry={"max_attempts": 1}))  # type: ignore[attr-defined]
    fake.enqueue(Fault(cut_after_chunks=1))  # the role chunk, then the connection is cut
    client = openai.AsyncOpenAI(base_url=url + "/openai/v1", api_key="sk-test")
    async with client.chat.completions.stream(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        final = await stream.get_final_completion()
    assert "tok0 tok1 tok2 tok3 tok4 " == final.choices[0].message.content
    line = await logs.last()
    assert "secondary" == line["upstream"]
    assert ["cut", None] == [a.get("stream_failure") for a in line["attempts"]]


@pytest.mark.parametrize("events", [0, 1], ids=["empty", "role-chunk-only"])
async def test_a_stream_that_ends_without_content_is_retried(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture, events: int
) -> None:
    url = await start_proxy(base_config(fake.url))  # type: ignore[attr-defined]
    fake.enqueue(Fault(end_after_chunks=events))
    status, _, body = await fetch(
        "POST", url + "/openai" + CHAT, data=json.dumps(CHAT_STREAM), headers=JSON
    )
    assert 200 == status
    assert body.rstrip().endswith(b"data: [DONE]")
    assert 2 == len(fake.requests)
    assert "empty" == (await logs.last())["attempts"][0]["stream_failure"]


async def test_an_error_after_the_first_content_is_cut_not_retried(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    url = await start_proxy(base_config(fake.url))  # type: ignore[attr-defined]
    fake.enqueue(Fault(sse_error_after_chunks=3))  # role, tok0, tok1, then an error event
    status, _, body = await fetch(
        "POST", url + "/openai" + CHAT, data=json.dumps(CHAT_STREAM), headers=JSON
    )
    assert 200 == status
    assert b"tok1" in body and b'"error"' in body and b"[DONE]" not in body
    assert 1 == len(fake.requests)
    line = await logs.last()
    assert "upstream error event: server_error" == line["error"]


async def test_a_slow_healthy_stream_is_released_at_its_first_content(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    """The fake pauses after the first content chunk until the client has read it: the
    hold ends at the content, and the rest streams chunk by chunk as before."""
    url = await start_proxy(base_config(fake.url))  # type: ignore[attr-defined]
    fake.hold_after_chunk = 2  # role chunk + first content chunk
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url + "/openai" + CHAT, data=json.dumps(CHAT_STREAM), headers=JSON
        ) as resp:
            seen = b""
            while b"tok0" not in seen:
                seen += await asyncio.wait_for(resp.content.readany(), 10)
            assert b'"role":"assistant"' in seen  # the held role chunk came with it
            fake.release.set()
            rest = await resp.read()
    assert rest.rstrip().endswith(b"data: [DONE]")
    line = await logs.last()
    assert line["commit_ms"] is not None and line["error"] is None


async def test_with_the_commit_point_off_a_pre_content_failure_reaches_the_client(
    fake: FakeUpstream, start_proxy: Any
) -> None:
    url = await start_proxy(base_config(fake.url, streaming={"commit_point": False}))  # type: ignore[attr-defined]
    fake.enqueue(Fault(sse_error_after_chunks=1))
    _, _, body = await fetch(
        "POST", url + "/anthropic" + MESSAGES, data=json.dumps(CLAUDE_STREAM), headers=JSON
    )
    assert b"overloaded_error" in body
    assert 1 == len(fake.requests)


async def test_every_attempt_failing_gives_the_last_stream_as_the_upstream_sent_it(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    url = await start_proxy(base_config(fake.url, retry={"max_attempts": 2}))  # type: ignore[attr-defined]
    fake.enqueue(Fault(sse_error_after_chunks=1), Fault(sse_error_after_chunks=1))
    _, headers, body = await fetch(
        "POST", url + "/anthropic" + MESSAGES, data=json.dumps(CLAUDE_STREAM), headers=JSON
    )
    assert b"event: message_start" in body and b"overloaded_error" in body
    assert "false" == headers["x-should-retry"]
    assert 2 == len(fake.requests)
    metrics = (await fetch("GET", url + "/metrics"))[2].decode()
    assert (
        'llm_proxy_precommit_failovers_total{reason="error_event",upstream="fake-anthropic"} 1.0'
        in metrics
    )


@pytest.mark.parametrize("enabled", [True, False])
async def test_a_200_carrying_an_error_is_retried_when_the_route_says_so(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture, enabled: bool
) -> None:
    url = await start_proxy(base_config(fake.url, streaming={"error_bodies": enabled}))  # type: ignore[attr-defined]
    error = {"error": {"message": "model crashed", "type": "server_error", "code": None}}
    fake.enqueue(Fault(body=json.dumps(error).encode()))
    body = json.dumps({**CHAT_STREAM, "stream": False})
    status, _, answer = await fetch("POST", url + "/openai" + CHAT, data=body, headers=JSON)
    assert 200 == status
    if enabled:
        assert "chat.completion" == json.loads(answer)["object"]
        assert ["error_body", "answered"] == [a["reason"] for a in (await logs.last())["attempts"]]
    else:
        assert error == json.loads(answer)
