"""Context trimming you can trust, through the proxy: a conversation that fits is never
touched, one that does not ends in a 200 through the error-driven retry, the correction
learns the provider's count, and consecutive trims keep the prompt prefix (cache) stable."""

from __future__ import annotations

import itertools
import json
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestServer

from proxy.fake_upstream import FakeUpstream, prompt_tokens
from tests.conftest import LogCapture, base_config, fetch

JSON = {"Content-Type": "application/json"}
SENTENCE = "the cat sat on the mat and then the dog ran to the park "


def chat(turns: int, words_per_message: int = 60, model: str = "small-model") -> dict[str, Any]:
    text = (SENTENCE * (words_per_message // 10 + 1)).split()[:words_per_message]
    messages: list[dict[str, Any]] = [{"role": "system", "content": "Be helpful."}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"q{i} " + " ".join(text)})
        messages.append({"role": "assistant", "content": f"a{i} " + " ".join(text)})
    messages.append({"role": "user", "content": "and what now?"})
    return {"model": model, "messages": messages}


async def small_model_fake(aiohttp_server: Any, flavour: str = "openai") -> FakeUpstream:
    fake = FakeUpstream(context_windows={"small-model": 2048}, context_flavour=flavour)  # type: ignore[arg-type]
    server: TestServer = await aiohttp_server(fake.make_app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


def routes(fake_url: str) -> dict[str, Any]:
    return base_config(fake_url, context={"models": {"small-model": 2048}})


async def test_a_conversation_that_fits_is_never_changed(
    aiohttp_server: Any, start_proxy: Any, logs: LogCapture
) -> None:
    """Unknown tokenizer, 1,900 of 2,048 tokens by the provider's count, no max_tokens:
    the proxy's guesses must not trim it, and the bytes go out as sent."""
    fake = await small_model_fake(aiohttp_server)
    url = await start_proxy(routes(fake.url))  # type: ignore[arg-type]
    body = chat(turns=12, words_per_message=74)
    assert 1800 < prompt_tokens(body) < 2048
    raw = json.dumps(body, indent=1).encode()
    status, headers, _ = await fetch(
        "POST", url + "/openai/v1/chat/completions", data=raw, headers=JSON
    )
    assert 200 == status
    assert "x-proxy-context-trimmed" not in headers
    assert raw == fake.requests[-1].body
    line = await logs.last()
    assert "prior" == line["count_method"] and 0 == line["trimmed_messages"]


@pytest.mark.parametrize("flavour", ["openai", "llama.cpp", "vllm"])
async def test_over_the_window_by_the_providers_count_ends_in_a_200(
    aiohttp_server: Any, start_proxy: Any, logs: LogCapture, flavour: str
) -> None:
    fake = await small_model_fake(aiohttp_server, flavour)
    url = await start_proxy(routes(fake.url))  # type: ignore[arg-type]
    body = chat(turns=20, words_per_message=50)  # ~2,170 by the fake's count; plausible to fit
    assert prompt_tokens(body) > 2048
    client = openai.AsyncOpenAI(base_url=url + "/openai/v1", api_key="sk-x", max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(**body)
    assert raw.parse().choices[0].message.content
    first, second = fake.requests
    assert (body["messages"], True) == (
        first.json()["messages"],
        len(second.body) < len(first.body),
    )
    assert second.json()["messages"][-1] == body["messages"][-1]
    removed = int(raw.headers["x-proxy-context-trimmed"])
    assert removed == len(body["messages"]) - len(second.json()["messages"]) > 0
    line = await logs.last()
    assert ["refused_fixed", "answered"] == [a["reason"] for a in line["attempts"]]
    assert [400, 200] == [a["status"] for a in line["attempts"]]
    assert line["trim_retried"] is True


async def test_the_correction_converges_on_the_providers_count(
    aiohttp_server: Any, start_proxy: Any, logs: LogCapture
) -> None:
    """After 20 answers the estimate is within 5 % of what the fake bills."""
    fake = await small_model_fake(aiohttp_server)
    url = await start_proxy(routes(fake.url))  # type: ignore[arg-type]
    for turns in range(1, 22):
        body = json.dumps(chat(turns=turns % 7 + 1, words_per_message=40 + turns))
        await fetch("POST", url + "/openai/v1/chat/completions", data=body, headers=JSON)
    # a request near the budget gets counted: its estimate against the bill
    body = chat(turns=8, words_per_message=90)
    await fetch("POST", url + "/openai/v1/chat/completions", data=json.dumps(body), headers=JSON)
    line = await logs.last()
    assert "learned" == line["count_method"]
    assert abs(line["prompt_tokens_est"] - line["prompt_tokens"]) <= 0.05 * line["prompt_tokens"]


async def test_consecutive_trims_keep_the_same_prefix(
    aiohttp_server: Any, start_proxy: Any
) -> None:
    """Stepped trimming: as a conversation grows past its budget, consecutive requests keep
    the same first kept message for several turns (the provider's prompt cache keeps hitting)."""
    fake = await small_model_fake(aiohttp_server)
    url = await start_proxy(base_config(fake.url, context={"max_input_tokens": 1500}))  # type: ignore[arg-type]
    heads = []
    for turns in range(14, 30):
        body = chat(turns=turns, words_per_message=30, model="gpt-4o")
        await fetch(
            "POST", url + "/openai/v1/chat/completions", data=json.dumps(body), headers=JSON
        )
        sent = fake.requests[-1].json()["messages"]
        heads.append(sent[1]["content"][:4])
    changes = sum(1 for a, b in itertools.pairwise(heads) if a != b)
    assert len(set(heads)) > 1  # it did trim further as the conversation grew
    assert changes <= len(heads) // 3  # but not on every turn


async def test_gpt5_over_its_input_cap_is_trimmed(fake: FakeUpstream, start_proxy: Any) -> None:
    url = await start_proxy(base_config(fake.url))  # type: ignore[attr-defined]
    filler = "budget " * 10_000  # about 10k tokens per message
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": filler} for i in range(29)
    ]
    body = {"model": "gpt-5", "max_completion_tokens": 1000, "messages": messages}
    status, headers, _ = await fetch(
        "POST", url + "/openai/v1/chat/completions", data=json.dumps(body), headers=JSON
    )
    assert 200 == status
    assert int(headers["x-proxy-context-trimmed"]) > 0
    assert len(fake.requests[-1].json()["messages"]) < len(messages)
