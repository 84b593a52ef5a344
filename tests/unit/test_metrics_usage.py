"""The usage accounting plugin: the log fields (model, ttft_ms, tokens, token_source, cost_usd)
for the fake upstream's own answers, fed as the relay feeds them, split anywhere."""

from __future__ import annotations

import functools
import gzip
import itertools
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from proxy import config as config_mod
from proxy.context.tokens import count_request, count_text
from proxy.exchange import Exchange
from proxy.fake_upstream import fake_text, prompt_tokens
from proxy.fake_upstream.anthropic_api import messages
from proxy.fake_upstream.calls import Call
from proxy.fake_upstream.faults import stream_error_event
from proxy.fake_upstream.openai_api import chat_completions
from proxy.logline import log_fields
from proxy.outcomes import ContextOutcome
from proxy.plugins.usage import UsageAccounting
from proxy.pricing import PriceTable
from proxy.routing import Router
from proxy.usage import Usage
from tests.conftest import base_config

CFG = config_mod.from_dict(base_config("http://up.test"), env={})
SSE = "text/event-stream; charset=utf-8"
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
OPENAI_BODY: dict[str, Any] = {"model": "gpt-4o", "messages": MESSAGES}
ANTHROPIC_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 100,
    "messages": MESSAGES[1:],
}


def answer(provider: str, payload: dict[str, Any], chunks: int = 5) -> tuple[bytes, str]:
    """The fake upstream's exact bytes and Content-Type for ``payload``."""
    build = messages if provider == "anthropic" else chat_completions
    reply = build(Call(payload=payload, chunks=chunks, seq=1, provider=provider))  # type: ignore[arg-type]
    if reply.events is not None:
        return b"".join(reply.events), reply.content_type
    return reply.body, reply.content_type


@functools.cache
def mocked_request(method: str, path: str) -> web.Request:
    return make_mocked_request(method, path, headers={"Content-Type": "application/json"})


def exchange(
    payload: dict[str, Any] | None,
    path: str = "/openai/v1/chat/completions",
    method: str = "POST",
    cfg: config_mod.Config = CFG,
) -> Exchange:
    match = Router(cfg.routes).match(path)
    assert match is not None
    body = json.dumps(payload).encode() if payload is not None else b""
    ex = Exchange(mocked_request(method, path))
    ex.routed(*match)
    ex.received(body)
    ex.upstream = match[0].config.upstreams[0]
    return ex


async def account(
    ex: Exchange,
    wire: bytes,
    ctype: str,
    *,
    status: int = 200,
    cuts: tuple[int, ...] = (),
    plugin: UsageAccounting | None = None,
    **headers: str,
) -> dict[str, Any]:
    """Play the relay: headers, then every piece between ``cuts``, then completion."""
    plugin = plugin or UsageAccounting(CFG.pricing)
    ex.upstream_headers = CIMultiDict({"Content-Type": ctype, **headers})
    ex.status = status
    ex.stream = ctype.startswith("text/event-stream")
    bounds = [0, *cuts, len(wire)]
    for a, b in itertools.pairwise(bounds):
        if b > a:
            plugin.on_chunk(ex, wire[a:b])
    await plugin.on_complete(ex)
    return log_fields(ex)


def cost(model: str, prompt: int, completion: int, cached: int = 0) -> float:
    return round(PriceTable().cost(model, Usage(prompt, completion, cached)) or 0.0, 10)


FIELDS = (
    "model",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "token_source",
    "cost_usd",
)


def picked(log: dict[str, Any]) -> tuple:
    return tuple(log[k] for k in FIELDS)


OPENAI_STREAM = {**OPENAI_BODY, "stream": True, "stream_options": {"include_usage": True}}
ANTHROPIC_STREAM = {**ANTHROPIC_BODY, "stream": True}


@pytest.mark.parametrize(
    ("provider", "payload", "path", "model"),
    [
        ("openai", OPENAI_STREAM, "/openai/v1/chat/completions", "gpt-4o"),
        ("anthropic", ANTHROPIC_STREAM, "/anthropic/v1/messages", "claude-sonnet-4-5"),
    ],
)
async def test_stream_split_at_every_byte_gives_the_fake_upstreams_usage(
    provider: str, payload: dict[str, Any], path: str, model: str
) -> None:
    wire, ctype = answer(provider, payload, chunks=3)
    prompt = prompt_tokens(payload)
    expected = (model, prompt, 3, 0, "upstream", cost(model, prompt, 3))
    for cut in range(1, len(wire)):
        ex = exchange(payload, path)
        assert expected == picked(await account(ex, wire, ctype, cuts=(cut,))), cut
        assert ex.t_first_token is not None


async def test_stream_split_into_single_bytes_gives_the_same_usage() -> None:
    wire, ctype = answer("anthropic", ANTHROPIC_STREAM)
    ex = exchange(ANTHROPIC_STREAM, "/anthropic/v1/messages")
    log = await account(ex, wire, ctype, cuts=tuple(range(1, len(wire))))
    prompt = prompt_tokens(ANTHROPIC_STREAM)
    assert (
        "claude-sonnet-4-5",
        prompt,
        5,
        0,
        "upstream",
        cost("claude-sonnet-4-5", prompt, 5),
    ) == picked(log)


async def test_first_token_is_the_first_content_event_not_the_role_chunk() -> None:
    wire, ctype = answer("openai", OPENAI_STREAM)
    role_chunk_end = wire.index(b"\n\n") + 2
    ex = exchange(OPENAI_STREAM)
    plugin = UsageAccounting(CFG.pricing)
    ex.upstream_headers = CIMultiDict({"Content-Type": ctype})
    ex.status, ex.stream = 200, True
    plugin.on_chunk(ex, wire[:role_chunk_end])
    assert None is ex.t_first_token
    plugin.on_chunk(ex, wire[role_chunk_end:])
    assert ex.t_first_token is not None
    await plugin.on_complete(ex)
    assert log_fields(ex)["ttft_ms"] == ex.elapsed_ms(ex.t_first_token)


async def test_openai_stream_without_usage_is_estimated_from_text_and_request() -> None:
    payload = {**OPENAI_BODY, "stream": True}
    wire, ctype = answer("openai", payload)
    log = await account(exchange(payload), wire, ctype, cuts=(7, 100))
    prompt = count_request(payload, "openai").tokens
    completion = count_text(fake_text(5), "gpt-4o")
    assert (
        "gpt-4o",
        prompt,
        completion,
        None,
        "estimate",
        cost("gpt-4o", prompt, completion),
    ) == picked(log)


async def test_estimate_reuses_the_context_plugins_prompt_count() -> None:
    payload = {**OPENAI_BODY, "stream": True}
    wire, ctype = answer("openai", payload)
    ex = exchange(payload)
    ex.context = ContextOutcome(1234, "estimate", 100_000)
    log = await account(ex, wire, ctype)
    assert (1234, "estimate") == (log["prompt_tokens"], log["token_source"])


async def test_large_estimates_are_counted_off_the_loop_with_the_same_result() -> None:
    payload = {**OPENAI_BODY, "stream": True}
    wire, ctype = answer("openai", payload, chunks=50)
    inline = await account(exchange(payload), wire, ctype)
    threaded = await account(
        exchange(payload), wire, ctype, plugin=UsageAccounting(CFG.pricing, inline_max_chars=0)
    )
    assert picked(inline) == picked(threaded)
    assert count_text(fake_text(50), "gpt-4o") == threaded["completion_tokens"]


async def test_anthropic_stream_cut_after_start_counts_the_text_not_the_placeholder() -> None:
    """message_start says output_tokens: 1; the real count never came."""
    wire, ctype = answer("anthropic", ANTHROPIC_STREAM)
    cut_at = wire.index(b"event: content_block_stop")
    log = await account(exchange(ANTHROPIC_STREAM, "/anthropic/v1/messages"), wire[:cut_at], ctype)
    text_tokens = count_text(fake_text(5), "claude-sonnet-4-5")
    assert (prompt_tokens(ANTHROPIC_STREAM), max(1, text_tokens), "estimate") == (
        log["prompt_tokens"],
        log["completion_tokens"],
        log["token_source"],
    )


async def test_in_stream_error_event_becomes_the_requests_error() -> None:
    wire, ctype = answer("anthropic", ANTHROPIC_STREAM)
    cut_at = wire.index(b"event: content_block_delta")
    ex = exchange(ANTHROPIC_STREAM, "/anthropic/v1/messages")
    broken = wire[:cut_at] + stream_error_event("anthropic", "/v1/messages")
    await account(ex, broken, ctype)
    assert "upstream error event: overloaded_error" == ex.error


@pytest.mark.parametrize("gzipped", [False, True])
async def test_json_answer_usage_is_read_whole_and_first_byte_stands_for_first_token(
    gzipped: bool,
) -> None:
    wire, ctype = answer("openai", OPENAI_BODY)
    headers = {"Content-Encoding": "gzip"} if gzipped else {}
    if gzipped:
        wire = gzip.compress(wire)
    ex = exchange(OPENAI_BODY)
    log = await account(ex, wire, ctype, cuts=(10,), **headers)
    prompt = prompt_tokens(OPENAI_BODY)
    assert ("gpt-4o", prompt, 5, 0, "upstream", cost("gpt-4o", prompt, 5)) == picked(log)
    assert log["ttft_ms"] is not None


async def test_error_answer_has_no_tokens_and_no_cost_but_names_the_model() -> None:
    body = b'{"error":{"message":"Rate limit","type":"requests","param":null,"code":null}}'
    log = await account(exchange(OPENAI_BODY), body, "application/json", status=429)
    assert ("gpt-4o", None, None, None, None, None) == picked(log)


async def test_unknown_model_has_tokens_but_cost_is_null_not_zero() -> None:
    payload = {**OPENAI_STREAM, "model": "llama-3.3-70b"}
    wire, ctype = answer("openai", payload)
    log = await account(exchange(payload), wire, ctype)
    assert ("llama-3.3-70b", 5, "upstream", None) == (
        log["model"],
        log["completion_tokens"],
        log["token_source"],
        log["cost_usd"],
    )


async def test_config_pricing_overrides_and_extends_the_table() -> None:
    cfg = config_mod.from_dict(
        base_config(
            "http://up.test",
            pricing={
                "gpt-4o": {"input": 1000.0, "output": 2000.0},
                "llama-3.3-70b": {"input": 0.5, "output": 1.0},
            },
        ),
        env={},
    )
    plugin = UsageAccounting(cfg.pricing)
    for model, expected in (
        ("gpt-4o", (4 * 1000 + 5 * 2000) / 1e6),
        ("llama-3.3-70b", (4 * 0.5 + 5 * 1.0) / 1e6),
    ):
        payload = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        wire, ctype = answer("openai", payload)
        log = await account(exchange(payload, cfg=cfg), wire, ctype, plugin=plugin)
        assert round(expected, 10) == log["cost_usd"]


async def test_binary_answer_is_never_parsed_and_has_null_usage() -> None:
    payload = {"model": "tts-1", "input": "hello", "voice": "alloy"}
    ex = exchange(payload, "/openai/v1/audio/speech")
    plugin = UsageAccounting(CFG.pricing)
    log = await account(ex, bytes(range(256)) * 40, "audio/mpeg", plugin=plugin)
    assert (None, None, None) == (log["prompt_tokens"], log["token_source"], log["cost_usd"])
    assert None is ex.t_first_token


async def test_json_of_a_non_llm_endpoint_is_not_accounted() -> None:
    ex = exchange(None, "/openai/v1/models", method="GET")
    log = await account(ex, b'{"object":"list","data":[]}', "application/json")
    assert (None, None, None, None) == (
        log["model"],
        log["prompt_tokens"],
        log["token_source"],
        log["ttft_ms"],
    )


async def test_every_exchange_gets_the_full_set_of_log_fields() -> None:
    """Also requests that never reached an upstream: the line's shape does not vary."""
    ex = exchange(OPENAI_BODY)
    await UsageAccounting(CFG.pricing).on_complete(ex)
    line = log_fields(ex)
    assert {
        "model",
        "ttft_ms",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "token_source",
        "cost_usd",
        "attempts",
        "trimmed_messages",
    } <= set(line)
    assert ("gpt-4o", [], 0) == (line["model"], line["attempts"], line["trimmed_messages"])


async def test_model_from_the_request_follows_the_fallback_mapping() -> None:
    raw = base_config("http://up.test")
    raw["routes"][0]["upstreams"] = [
        {"name": "groq", "base_url": "http://up.test", "models": {"gpt-4o": "llama-3.3-70b"}}
    ]
    cfg = config_mod.from_dict(raw, env={})
    ex = exchange(OPENAI_BODY, cfg=cfg)
    await UsageAccounting(cfg.pricing).on_complete(ex)
    assert "llama-3.3-70b" == log_fields(ex)["model"]
