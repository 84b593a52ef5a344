"""The fake upstream's prompt cache and context windows, through the official SDKs."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from proxy.context.overflow import ContextOverflow, OverflowSource, parse_overflow
from proxy.fake_upstream import FakeUpstream, PromptCache, prompt_sequence, prompt_tokens
from proxy.fake_upstream.__main__ import parse_args

LONG = " ".join(f"w{i}" for i in range(3000))  # 3,000 words: 3,003 tokens as a message


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream(context_windows={"small-model": 100})


@pytest.fixture
async def url(upstream: FakeUpstream, aiohttp_server: Any) -> str:
    server = await aiohttp_server(upstream.make_app())
    return str(server.make_url("")).rstrip("/")


def oai(url: str, key: str = "key-a") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def claude(url: str, key: str = "key-a") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key=key, max_retries=0)


@pytest.mark.parametrize(
    "payload",
    [
        {"messages": [{"role": "user", "content": "a b c"}]},
        {
            "system": [{"type": "text", "text": "x y"}],
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "q"}, {"type": "image", "source": {}}],
                }
            ],
        },
        {
            "instructions": "be terse",
            "input": [
                {"role": "user", "content": "hi there"},
                {"type": "function_call_output", "output": "ok"},
            ],
        },
        {"input": "one two"},
    ],
)
def test_prompt_sequence_has_one_token_per_counted_token(payload: dict[str, Any]) -> None:
    assert prompt_tokens(payload) == len(prompt_sequence(payload)[0])


async def test_openai_reports_cached_tokens_for_the_shared_prefix_in_blocks(url: str) -> None:
    system = {"role": "system", "content": LONG}
    first = [system, {"role": "user", "content": "question one"}]
    second = [*first, {"role": "assistant", "content": "answer"}, {"role": "user", "content": "q"}]
    async with oai(url) as client, oai(url, "key-b") as other:
        a = await client.chat.completions.create(model="gpt-4o", messages=first)
        b = await client.chat.completions.create(model="gpt-4o", messages=second)
        c = await other.chat.completions.create(model="gpt-4o", messages=second)
        d = await client.chat.completions.create(model="gpt-4o-mini", messages=second)
        s = await client.chat.completions.create(
            model="gpt-4o", messages=second, stream=True, stream_options={"include_usage": True}
        )
        (usage,) = [chunk.usage async for chunk in s if chunk.usage is not None]
        r = await client.responses.create(model="gpt-4o", instructions=LONG, input="hi")
        r2 = await client.responses.create(model="gpt-4o", instructions=LONG, input="other")

    cached = [x.usage.prompt_tokens_details.cached_tokens for x in (a, b, c, d)]
    # first: nothing seen; second: 2 whole blocks of the first's 3,008 tokens; other key and
    # other model: their own caches
    assert [0, 2048, 0, 0] == cached
    assert (prompt_tokens({"messages": second}), 2048) == (  # a repeat reads its full blocks
        b.usage.prompt_tokens,
        usage.prompt_tokens_details.cached_tokens,
    )
    assert (0, 2048) == (
        r.usage.input_tokens_details.cached_tokens,
        r2.usage.input_tokens_details.cached_tokens,
    )


async def test_anthropic_caches_only_up_to_breakpoints(url: str) -> None:
    system = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]
    q1 = [{"role": "user", "content": "question one"}]
    q2 = [{"role": "user", "content": "another question here"}]
    async with claude(url) as client:
        first = await client.messages.create(
            model="claude-sonnet-4-5", max_tokens=5, system=system, messages=q1
        )
        second = await client.messages.create(
            model="claude-sonnet-4-5", max_tokens=5, system=system, messages=q2
        )
        plain = await client.messages.create(
            model="claude-sonnet-4-5", max_tokens=5, system=LONG, messages=q2
        )
    got = [
        (u.input_tokens, u.cache_creation_input_tokens, u.cache_read_input_tokens)
        for u in (first.usage, second.usage, plain.usage)
    ]
    total1 = prompt_tokens({"system": system, "messages": q1})
    total2 = prompt_tokens({"system": system, "messages": q2})
    assert [(total1 - 3003, 3003, 0), (total2 - 3003, 0, 3003), (total2, 0, 0)] == got


def test_cache_entries_expire() -> None:
    now = [0.0]
    cache = PromptCache(block_tokens=4, ttl_s=10, clock=lambda: now[0])
    payload = {"messages": [{"role": "user", "content": "a b c d e f"}]}  # 9 tokens, 2 blocks
    assert [0, 8] == [cache.use("k", "openai", payload).read for _ in range(2)]
    now[0] = 20.0
    assert 0 == cache.use("k", "openai", payload).read


# ---------------------------------------------------------------- context windows


async def test_openai_over_window_is_a_context_length_exceeded_400(url: str) -> None:
    words = " ".join(["w"] * 120)
    async with oai(url) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(
                model="small-model", messages=[{"role": "user", "content": words}]
            )
        ok = await client.chat.completions.create(
            model="other-model", messages=[{"role": "user", "content": words}]
        )
    assert "context_length_exceeded" == info.value.code
    assert ContextOverflow(OverflowSource.OPENAI, 100, 123, None, None) == parse_overflow(
        400, info.value.response.content
    )
    assert 123 == ok.usage.prompt_tokens


async def test_anthropic_over_window_is_prompt_too_long(url: str) -> None:
    async with claude(url) as client:
        with pytest.raises(anthropic.BadRequestError) as info:
            await client.messages.create(
                model="small-model",
                max_tokens=10,
                messages=[{"role": "user", "content": " ".join(["w"] * 98)}],
            )
    assert "prompt is too long: 101 tokens > 100 maximum" == info.value.body["error"]["message"]


@pytest.mark.parametrize(
    ("flavour", "max_tokens", "expected"),
    [
        ("openai", 20, ContextOverflow(OverflowSource.OPENAI, 100, 93, 20, 113)),
        ("llama", None, ContextOverflow(OverflowSource.LLAMA_CPP, 100, 103, None, 103)),
        ("vllm", None, ContextOverflow(OverflowSource.VLLM, 100, 103, None, None)),
        ("vllm", 20, ContextOverflow(OverflowSource.VLLM, 100, 93, 20, 113)),
    ],
)
async def test_flavours_over_the_control_api(
    url: str, flavour: str, max_tokens: int | None, expected: ContextOverflow
) -> None:
    words = 100 if max_tokens is None else 90
    body: dict[str, Any] = {
        "model": "small-model",
        "messages": [{"role": "user", "content": " ".join(["w"] * words)}],
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/_fake/context", json={"flavour": flavour}) as resp:
            assert {"windows": {"small-model": 100}, "flavour": flavour} == await resp.json()
        async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
            assert 400 == resp.status
            assert expected == parse_overflow(resp.status, await resp.read())


async def test_control_api_sets_windows_and_refuses_bad_values(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/_fake/context", json={"windows": {"m": 0}}) as resp:
            assert 400 == resp.status
        async with session.post(f"{url}/_fake/context", json={"windows": {"m": 5}}) as resp:
            assert 200 == resp.status
        body = {"model": "m", "messages": [{"role": "user", "content": "a b c"}]}
        async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
            assert 400 == resp.status
            assert "context_length_exceeded" == json.loads(await resp.read())["error"]["code"]


def test_cli_flags() -> None:
    args = parse_args(
        ["--context-window", "a=2048", "--context-window", "x=y=10", "--context-flavour", "llama"]
    )
    assert ([("a", 2048), ("x=y", 10)], "llama") == (args.context_window, args.context_flavour)
    with pytest.raises(SystemExit):
        parse_args(["--context-window", "nope"])
