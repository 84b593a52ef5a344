"""The fake's bill (proxy/fake_upstream/billing.py) against answers it actually wrote."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from proxy.fake_upstream import Billing, FakeUpstream, PriceRow, Tokens


@pytest.fixture
async def billed(aiohttp_server: Any) -> tuple[FakeUpstream, str]:
    fake = FakeUpstream(billing=Billing({"gpt-4o": PriceRow(2.5, 10.0, 1.25)}))
    server = await aiohttp_server(fake.make_app())
    return fake, str(server.make_url("")).rstrip("/")


async def post(url: str, path: str, body: dict[str, Any], **headers: str) -> bytes:
    async with aiohttp.ClientSession() as session:
        async with session.post(url + path, json=body, headers=headers) as resp:
            return await resp.read()


CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "one two three"}]}


async def test_a_whole_answer_bills_what_it_reported(billed: tuple[FakeUpstream, str]) -> None:
    fake, url = billed
    body = json.loads(await post(url, "/v1/chat/completions", CHAT, **{"x-request-id": "r1"}))
    (answer,) = fake.billing.answers  # type: ignore[union-attr]
    usage = body["usage"]
    expected = Tokens(usage["prompt_tokens"], 0, 0, usage["completion_tokens"])
    assert ("r1", True, expected, expected) == (
        answer.request_id,
        answer.finished,
        answer.reported,
        answer.billed,
    )
    assert 6 * 2_500_000 + 5 * 10_000_000 == fake.billing.cost_picousd(answer)  # type: ignore[union-attr]


async def test_a_stream_bills_its_usage_and_an_error_bills_nothing(
    billed: tuple[FakeUpstream, str],
) -> None:
    fake, url = billed
    stream = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    await post(url, "/v1/chat/completions", stream, **{"x-fake-chunks": "3"})
    await post(url, "/v1/chat/completions", CHAT, **{"x-fake-status": "503"})
    streamed, failed = fake.billing.answers  # type: ignore[union-attr]
    assert (True, 3, Tokens(6, 0, 0, 3)) == (
        streamed.finished,
        streamed.content_chunks,
        streamed.billed,
    )
    assert (503, Tokens()) == (failed.status, failed.billed)


async def test_a_stream_left_mid_way_bills_the_prompt_and_the_chunks_written(
    billed: tuple[FakeUpstream, str],
) -> None:
    fake, url = billed
    fake.hold_after_chunk = 4  # message_start, block start, ping, one delta
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "one two"}],
    }
    async with aiohttp.ClientSession() as session:
        resp = await session.post(url + "/v1/messages", json=body, headers={"x-fake-chunks": "9"})
        for _ in range(4):
            await resp.content.readuntil(b"\n\n")
        resp.close()
    await fake.stream_disconnected.wait()
    (answer,) = fake.billing.answers  # type: ignore[union-attr]
    assert (False, 1) == (answer.finished, answer.content_chunks)
    assert Tokens(5, 0, 0, 1) == answer.reported  # message_start: the input, output 1
    assert Tokens(5, 0, 0, 9) == answer.stated  # what the whole answer would have said
    assert Tokens(5, 0, 0, 1) == answer.billed  # the prompt and the one chunk written
