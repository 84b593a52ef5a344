"""Context budget end to end: trimmed only when over budget, valid for the provider, or refused."""

from __future__ import annotations

import itertools
import json
from typing import Any

import anthropic
import openai

from proxy.context import tokens
from proxy.fake_upstream import FakeUpstream
from tests.conftest import LogCapture, base_config, fetch

SYSTEM = {"role": "system", "content": "You are a terse assistant."}
FILLER = "The quick brown fox jumps over the lazy dog. " * 8  # about 80 tokens


def conversation(turns: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [SYSTEM]
    for i in range(turns):
        messages.append({"role": "user", "content": f"question {i}: {FILLER}"})
        messages.append({"role": "assistant", "content": f"answer {i}: {FILLER}"})
    messages.append({"role": "user", "content": "newest question"})
    return messages


async def post_json(url: str, body: bytes | str) -> tuple[int, Any, Any]:
    """POST raw JSON bytes; the status, the response headers and the parsed answer."""
    status, headers, raw = await fetch(
        "POST", url, data=body, headers={"Content-Type": "application/json"}
    )
    return status, headers, json.loads(raw)


def capped(fake_url: str, max_input_tokens: int) -> dict[str, Any]:
    return base_config(fake_url, context={"max_input_tokens": max_input_tokens})


async def test_openai_sdk_oversize_conversation_is_trimmed(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    url = await start_proxy(capped(fake.url, 600))
    messages = conversation(20)
    client = openai.AsyncOpenAI(base_url=url + "/openai/v1", api_key="sk-x", max_retries=0)
    async with client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=messages, temperature=0.3, max_tokens=50
        )
    chat = raw.parse()
    assert chat.choices[0].message.content
    sent = json.loads(fake.requests[-1].body)
    assert int(fake.requests[-1].headers["Content-Length"]) == len(fake.requests[-1].body)
    assert SYSTEM == sent["messages"][0]
    assert messages[-1] == sent["messages"][-1]
    assert (0.3, 50, "gpt-4o") == (sent["temperature"], sent["max_tokens"], sent["model"])
    assert tokens.count_request(sent, "openai").tokens <= 600
    removed = len(messages) - len(sent["messages"])
    assert removed > 0 and removed % 2 == 0  # whole user+assistant turns
    assert str(removed) == raw.headers["x-proxy-context-trimmed"]
    kept = sent["messages"][1:-1]
    assert kept == messages[len(messages) - 1 - len(kept) : -1]  # the newest turns, in order
    line = await logs.last()
    assert (removed, 600, "tiktoken") == (
        line["trimmed_messages"],
        line["budget"],
        line["count_method"],
    )
    assert line["prompt_tokens_est"] <= 600


async def test_fitting_request_goes_out_byte_identical(
    fake: FakeUpstream, start_proxy: Any
) -> None:
    url = await start_proxy(capped(fake.url, 100_000))
    body = json.dumps({"model": "gpt-4o", "messages": conversation(20)}, indent=1).encode()
    status, headers, _ = await post_json(url + "/openai/v1/chat/completions", body)
    assert 200 == status
    assert "x-proxy-context-trimmed" not in headers
    assert body == fake.requests[-1].body


async def test_tool_call_and_results_stay_together(fake: FakeUpstream, start_proxy: Any) -> None:
    """The oldest plain turn goes; the turn with a tool call and its result stays whole."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": json.dumps({"q": FILLER})},
    }
    tool_turn = [
        {"role": "user", "content": "look it up " + FILLER},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": FILLER},
        {"role": "assistant", "content": "found " + FILLER},
    ]
    old_turn = [
        {"role": "user", "content": "old " + FILLER},
        {"role": "assistant", "content": "old " + FILLER},
    ]
    newest = {"role": "user", "content": "and now?"}
    kept = [SYSTEM, *tool_turn, newest]
    budget = tokens.count_request({"model": "gpt-4o", "messages": kept}, "openai").tokens
    url = await start_proxy(capped(fake.url, budget))
    body = json.dumps({"model": "gpt-4o", "messages": [SYSTEM, *old_turn, *tool_turn, newest]})
    status, headers, _ = await post_json(url + "/openai/v1/chat/completions", body.encode())
    assert (200, "2") == (status, headers["x-proxy-context-trimmed"])
    assert kept == json.loads(fake.requests[-1].body)["messages"]


async def test_anthropic_sdk_trimmed_conversation_stays_valid(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    url = await start_proxy(capped(fake.url, 700))
    messages: list[dict[str, Any]] = []
    for i in range(8):
        messages.append({"role": "user", "content": f"q{i} {FILLER}"})
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": f"tu{i}", "name": "calc", "input": {"x": i}}
                ],
            }
        )
        messages.append(
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": f"tu{i}", "content": FILLER}],
            }
        )
        messages.append({"role": "assistant", "content": f"a{i} {FILLER}"})
    messages.append({"role": "user", "content": "newest"})
    client = anthropic.AsyncAnthropic(
        base_url=url + "/anthropic", api_key="sk-ant-x", max_retries=0
    )
    async with client:
        msg = await client.messages.create(
            model="claude-opus-4-5", max_tokens=64, system="Be brief.", messages=messages
        )
    assert msg.content[0].text
    sent = json.loads(fake.requests[-1].body)
    kept = sent["messages"]
    assert "Be brief." == sent["system"]
    assert kept[-1] == messages[-1]
    assert len(kept) < len(messages)
    assert "user" == kept[0]["role"] and isinstance(kept[0]["content"], str)
    assert all(a["role"] != b["role"] for a, b in itertools.pairwise(kept))
    line = await logs.last()  # trimmed only as far as the most favourable count needs
    assert ("prior", 700) == (line["count_method"], line["budget"])
    assert line["prompt_tokens_low"] <= 700 < line["prompt_tokens_high"]


async def test_newest_turn_too_large_is_refused_before_upstream(
    fake: FakeUpstream, start_proxy: Any
) -> None:
    url = await start_proxy(capped(fake.url, 50))
    client = openai.AsyncOpenAI(base_url=url + "/openai/v1", api_key="sk-x", max_retries=0)
    async with client:
        try:
            await client.chat.completions.create(
                model="gpt-4o", messages=[SYSTEM, {"role": "user", "content": FILLER * 3}]
            )
        except openai.BadRequestError as exc:
            error = exc.body
            status = exc.status_code
    assert 400 == status
    assert "context_length_exceeded" == error["code"]  # type: ignore[index]
    assert "50" in error["message"]  # type: ignore[index]
    assert [] == fake.requests


async def test_anthropic_refusal_has_anthropic_shape(fake: FakeUpstream, start_proxy: Any) -> None:
    url = await start_proxy(capped(fake.url, 50))
    body = json.dumps(
        {
            "model": "claude-opus-4-5",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": FILLER * 3}],
        }
    ).encode()
    status, _, payload = await post_json(url + "/anthropic/v1/messages", body)
    assert 400 == status
    assert "invalid_request_error" == payload["error"]["type"]
    assert [] == fake.requests


async def test_model_window_and_max_tokens_set_the_budget(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    raw = base_config(fake.url, context={"models": {"tiny-model": 1000}, "safety_margin": 0})
    url = await start_proxy(raw)
    body = json.dumps({"model": "tiny-model", "max_tokens": 200, "messages": conversation(10)})
    status, _, _ = await post_json(url + "/openai/v1/chat/completions", body)
    assert 200 == status
    line = await logs.last()
    assert (800, "prior") == (line["budget"], line["count_method"])
    assert line["trimmed_messages"] > 0


async def test_malformed_json_is_forwarded_untouched_and_the_upstream_answers(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    """The proxy cannot count what it cannot parse: it steps aside, the client's bytes go
    upstream unchanged, the upstream's own 400 comes back, and the line notes why."""
    url = await start_proxy(capped(fake.url, 10))
    body = b'{"model": "gpt-4o", "messages": [' + b"x" * 500
    status, _, payload = await post_json(url + "/openai/v1/chat/completions", body)
    assert 400 == status
    assert "invalid_request_error" == payload["error"]["type"]
    assert [body] == [r.body for r in fake.requests]
    line = await logs.last()
    assert line["body_parse_error"].startswith("invalid JSON")


async def test_other_endpoints_untouched(fake: FakeUpstream, start_proxy: Any) -> None:
    url = await start_proxy(capped(fake.url, 5))
    body = json.dumps({"model": "text-embedding-3-small", "input": FILLER * 4}).encode()
    status, _, _ = await post_json(url + "/openai/v1/embeddings", body)
    assert 200 == status
    assert body == fake.requests[-1].body


async def test_odd_but_valid_json_on_a_trimmed_route_is_handled(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    """A lone surrogate escape (valid JSON, no UTF-8) and a role that is an object: the proxy
    trims or steps aside, and never answers with its own 500."""
    url = await start_proxy(capped(fake.url, 40))
    old = json.dumps({"role": "user", "content": "old " + FILLER})
    bodies = [
        '{"model": "gpt-4o", "messages": ['
        + old.replace("old ", "old \\ud800 ")  # a lone surrogate, escaped as JSON allows
        + ', {"role": "assistant", "content": "a"}, {"role": "user", "content": "new"}]}',
        json.dumps({"model": "gpt-4o", "messages": [{"role": {"x": 1}, "content": FILLER}]}),
    ]
    for body in bodies:
        status, _, _ = await post_json(url + "/openai/v1/chat/completions", body)
        assert status != 500
    assert all(line["status"] != 500 for line in await logs.settled(2))
