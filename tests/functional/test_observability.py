"""Observability through the real proxy and the real fake upstream: /metrics counts after a
scripted mix of requests, time to first token against known delays, and the one log line.

Every timing assertion is a lower bound, except the one generous upper bound on TTFT the
issue asks for.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.context.tokens import count_request, count_text
from proxy.fake_upstream import FakeUpstream, Fault, fake_text, prompt_tokens
from proxy.pricing import PriceTable
from proxy.usage import Usage
from tests.conftest import LogCapture, base_config, free_port
from tests.process import ProxyProcess
from tests.unit.test_metrics import Samples, samples, total, value

CHAT = "/v1/chat/completions"
JSON = {"Content-Type": "application/json"}
HI = [{"role": "user", "content": "hi"}]
CHAT_BODY: dict[str, Any] = {"model": "gpt-4o", "messages": HI}
STREAM_USAGE = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
STREAM_BARE = {**CHAT_BODY, "stream": True}
CLAUDE = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "stream": True,
    "messages": [{"role": "user", "content": "hello there"}],
}
ISSUE_FIELDS = (
    "request_id",
    "route",
    "upstream",
    "model",
    "stream",
    "status",
    "attempts",
    "ttft_ms",
    "duration_ms",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "token_source",
    "cost_usd",
    "trimmed_messages",
    "bytes_in",
    "bytes_out",
    "client",
    "error",
)


async def post(
    url: str, payload: dict[str, Any] | bytes, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.post(url, data=body, headers={**JSON, **headers}) as resp:
            try:
                data = await resp.read()
            except aiohttp.ClientPayloadError:
                data = b"<cut>"
            return resp.status, dict(resp.headers), data


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/metrics") as resp:
            assert 200 == resp.status
            return samples(await resp.text())


def series(got: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every series of one metric, keyed by its sorted labels."""
    return {tuple(sorted(labels)): v for (n, labels), v in got.items() if n == name}


def key(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def usd(model: str, prompt: int, completion: int) -> float:
    return round(PriceTable().cost(model, Usage(prompt, completion, 0)) or 0.0, 10)


def mix_config(fake_url: str) -> dict[str, Any]:
    """Pacing off: the mix counts cooldowns, retries and fallbacks the way a route without
    pacing has them (the fake's 429s describe buckets its 200s never refresh)."""
    raw = base_config(fake_url, pacing={"enabled": False})
    raw["routes"].append(
        {
            "prefix": "/fallback",
            "provider": "openai",
            "upstreams": [
                {"name": "primary", "base_url": fake_url},
                {"name": "secondary", "base_url": fake_url},
            ],
        }
    )
    raw["routes"].append(
        {
            "prefix": "/trim",
            "provider": "openai",
            "context": {"max_input_tokens": 120},
            "upstreams": [{"name": "fake-trim", "base_url": fake_url}],
        }
    )
    return raw


LONG_CHAT = json.dumps(
    {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "old question " + "word " * 60},
            {"role": "assistant", "content": "old answer " + "word " * 60},
            {"role": "user", "content": "new question"},
        ],
    }
).encode()


async def test_metrics_after_a_scripted_mix_show_exactly_the_expected_counts(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    url = await start_proxy(mix_config(fake.url))
    openai, fallback = url + "/openai" + CHAT, url + "/fallback" + CHAT
    # 1. success
    assert 200 == (await post(openai, CHAT_BODY))[0]
    # 2. 429, then a retry that succeeds
    fake.enqueue(Fault(status=429, headers={"retry-after-ms": "50"}))
    assert 200 == (await post(openai, CHAT_BODY))[0]
    # 3. fallback: the primary is overloaded (and cools down for 60 s) ...
    fake.enqueue(Fault(status=503, headers={"Retry-After": "60"}))
    assert 200 == (await post(fallback, CHAT_BODY))[0]
    # 4. ... so the next request skips it
    assert 200 == (await post(fallback, CHAT_BODY))[0]
    # 5. streams: with usage, without usage (estimated), Anthropic
    assert 200 == (await post(openai, STREAM_USAGE))[0]
    assert 200 == (await post(openai, STREAM_BARE))[0]
    assert 200 == (await post(url + "/anthropic/v1/messages", CLAUDE))[0]
    # 6. errors: a 500 passed through (no wait allowed), a 400, a stream cut mid-way,
    #    an unknown route
    fake.enqueue(Fault(status=500))
    assert 500 == (await post(openai, CHAT_BODY, **{"x-proxy-max-wait": "0"}))[0]
    fake.enqueue(Fault(status=400))
    assert 400 == (await post(openai, CHAT_BODY))[0]
    fake.enqueue(Fault(cut_after_chunks=2))
    assert (200, b"<cut>") == (lambda r: (r[0], r[2]))(await post(openai, STREAM_BARE))
    assert 404 == (await post(url + "/nowhere" + CHAT, CHAT_BODY))[0]
    # 7. context trim: the old user+assistant turn is evicted to fit 120 tokens
    status, headers, _ = await post(url + "/trim" + CHAT, LONG_CHAT)
    assert (200, "2") == (status, headers["x-proxy-context-trimmed"])
    trimmed_prompt = prompt_tokens(json.loads(fake.requests[-1].body))
    for _ in range(100):  # the log line (and the count) follow the response's last byte
        if len(logs.requests()) == 12:
            break
        await asyncio.sleep(0.01)
    got = await scrape(url)

    oa = {"route": "/openai", "upstream": "fake-openai"}
    fb = {"route": "/fallback", "upstream": "secondary"}
    assert {
        key(**oa, model="gpt-4o", status_class="2xx"): 5.0,  # 1, 2, 5 (two), 6 (cut stream)
        key(**oa, model="gpt-4o", status_class="4xx"): 1.0,
        key(**oa, model="gpt-4o", status_class="5xx"): 1.0,
        key(**fb, model="gpt-4o", status_class="2xx"): 2.0,
        key(
            route="/anthropic",
            upstream="fake-anthropic",
            model="claude-sonnet-4-5",
            status_class="2xx",
        ): 1.0,
        key(route="none", upstream="none", model="none", status_class="4xx"): 1.0,
        key(route="/trim", upstream="fake-trim", model="gpt-4o", status_class="2xx"): 1.0,
    } == series(got, "llm_proxy_requests_total")
    assert {key(route="/openai", upstream="fake-openai"): 1.0} == series(
        got, "llm_proxy_retries_total"
    )
    assert {key(route="/fallback", upstream="primary"): 2.0} == series(
        got, "llm_proxy_fallbacks_total"
    )
    assert {key(route="/fallback", upstream="primary"): 1.0} == series(
        got, "llm_proxy_cooldown_skips_total"
    )
    # step 2's 429 also says the request bucket is empty until it resets in 1 s: after the
    # 50 ms hint the retry waits for that shared cooldown too
    assert {key(route="/openai", upstream="fake-openai"): 1.0} == series(
        got, "llm_proxy_cooldown_waits_total"
    )
    assert total(got, "llm_proxy_retry_wait_seconds_total", route="/openai") >= 0.05
    assert {key(**oa, reason="upstream"): 1.0} == series(
        got, "llm_proxy_incomplete_responses_total"
    )
    assert {key(route="/trim", model="gpt-4o"): 1.0} == series(got, "llm_proxy_context_trims_total")
    assert {key(route="/trim", model="gpt-4o"): 2.0} == series(
        got, "llm_proxy_context_trimmed_messages_total"
    )
    # every exchange has a duration (the 404 never became one); only streams have a TTFT
    assert 11.0 == total(got, "llm_proxy_request_duration_seconds_count")
    assert 4.0 == total(got, "llm_proxy_request_duration_seconds_count", stream="true")
    assert {
        key(**oa, model="gpt-4o"): 3.0,
        key(route="/anthropic", upstream="fake-anthropic", model="claude-sonnet-4-5"): 1.0,
    } == series(got, "llm_proxy_time_to_first_token_seconds_count")
    assert (0.0, 0.0) == (
        value(got, "llm_proxy_in_flight_requests"),
        value(got, "llm_proxy_in_flight_streams"),
    )

    # tokens and cost: what the fake reported where it did, the offline count where not
    hi, five = prompt_tokens(CHAT_BODY), 5
    bare_prompt = count_request(STREAM_BARE, "openai").tokens
    bare_completion = count_text(fake_text(5), "gpt-4o")
    cut_completion = count_text(fake_text(1), "gpt-4o")  # role chunk + one content chunk
    openai_gpt = {**oa, "model": "gpt-4o"}
    assert 3 * hi == value(got, "llm_proxy_prompt_tokens_total", **openai_gpt, source="upstream")
    assert 3 * five == value(
        got, "llm_proxy_completion_tokens_total", **openai_gpt, source="upstream"
    )
    assert 2 * bare_prompt == value(
        got, "llm_proxy_prompt_tokens_total", **openai_gpt, source="estimate"
    )
    assert bare_completion + cut_completion == value(
        got, "llm_proxy_completion_tokens_total", **openai_gpt, source="estimate"
    )
    claude_prompt = prompt_tokens(CLAUDE)
    expected_cost = {
        key(**openai_gpt): 3 * usd("gpt-4o", hi, five)
        + usd("gpt-4o", bare_prompt, bare_completion)
        + usd("gpt-4o", bare_prompt, cut_completion),
        key(**fb, model="gpt-4o"): 2 * usd("gpt-4o", hi, five),
        key(route="/anthropic", upstream="fake-anthropic", model="claude-sonnet-4-5"): usd(
            "claude-sonnet-4-5", claude_prompt, five
        ),
        key(route="/trim", upstream="fake-trim", model="gpt-4o"): usd(
            "gpt-4o", trimmed_prompt, five
        ),
    }
    got_cost = series(got, "llm_proxy_cost_usd_total")
    assert set(expected_cost) == set(got_cost)
    for labels, expected in expected_cost.items():
        assert expected == pytest.approx(got_cost[labels], rel=1e-9)


@pytest.mark.parametrize("commit_point", [True, False], ids=["held", "relayed"])
async def test_ttft_is_time_to_first_content_through_the_proxy(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture, commit_point: bool
) -> None:
    """First byte after 150 ms (a role-only chunk), first content 300 ms later. Under the
    commit point the role chunk is held, so the client's first byte is the first content."""
    proxy_url = await start_proxy(
        base_config(fake.url, streaming={"commit_point": commit_point})  # type: ignore[attr-defined]
    )
    first_byte_ms, gap_ms = 150, 300
    await post(
        proxy_url + "/openai" + CHAT,
        STREAM_USAGE,
        **{
            "x-fake-first-byte-delay-ms": str(first_byte_ms),
            "x-fake-chunk-delay-ms": str(gap_ms),
            "x-fake-chunks": "1",
        },
    )
    line = await logs.last()
    known = first_byte_ms + gap_ms
    assert line["ttft_ms"] >= known
    assert line["ttft_ms"] <= known + 2000  # generous: the known delay dominates
    if commit_point:
        assert line["ttfb_ms"] >= known  # nothing went out before the content
        assert line["commit_ms"] >= known
    else:
        assert line["ttft_ms"] - line["ttfb_ms"] >= gap_ms - 50  # not the first byte
        assert None is line["commit_ms"]
    got = await scrape(proxy_url)
    labels = {"route": "/openai", "upstream": "fake-openai", "model": "gpt-4o"}
    assert 1.0 == value(got, "llm_proxy_time_to_first_token_seconds_count", **labels)
    assert line["ttft_ms"] / 1000 == pytest.approx(
        value(got, "llm_proxy_time_to_first_token_seconds_sum", **labels), abs=1e-3
    )
    assert 0.0 == value(got, "llm_proxy_time_to_first_token_seconds_bucket", **labels, le="0.4")
    assert 1.0 == value(got, "llm_proxy_time_to_first_token_seconds_bucket", **labels, le="+Inf")


async def test_anthropic_ttft_skips_message_start_block_start_and_ping(
    fake: FakeUpstream, proxy_url: str, logs: LogCapture
) -> None:
    gap_ms = 150  # message_start at once; block start, ping, first delta one gap apart each
    await post(
        proxy_url + "/anthropic/v1/messages",
        CLAUDE,
        **{"x-fake-chunk-delay-ms": str(gap_ms), "x-fake-chunks": "1"},
    )
    line = await logs.last()
    assert line["ttft_ms"] >= 3 * gap_ms
    assert line["ttft_ms"] <= 3 * gap_ms + 2000
    # held until the first delta: nothing reached the client before the content did
    assert min(line["ttfb_ms"], line["commit_ms"]) >= 3 * gap_ms


@pytest.mark.parametrize(
    ("path", "payload", "expected"),
    [
        ("/openai" + CHAT, STREAM_USAGE, ("gpt-4o", prompt_tokens(STREAM_USAGE), 5, 0, "upstream")),
        (
            "/anthropic/v1/messages",
            CLAUDE,
            ("claude-sonnet-4-5", prompt_tokens(CLAUDE), 5, 0, "upstream"),
        ),
        (
            "/openai" + CHAT,
            STREAM_BARE,
            (
                "gpt-4o",
                count_request(STREAM_BARE, "openai").tokens,
                count_text(fake_text(5), "gpt-4o"),
                None,
                "estimate",
            ),
        ),
    ],
    ids=["openai-include-usage", "anthropic", "openai-no-usage"],
)
async def test_log_line_has_every_field_with_the_right_values(
    fake: FakeUpstream,
    proxy_url: str,
    logs: LogCapture,
    path: str,
    payload: dict[str, Any],
    expected: tuple,
) -> None:
    body = json.dumps(payload).encode()
    direct = await post(fake.url + path.removeprefix("/openai").removeprefix("/anthropic"), body)
    status, headers, proxied = await post(proxy_url + path, body)
    assert (direct[0], direct[2]) == (status, proxied)  # the client's bytes are untouched
    line = await logs.last()
    assert set(ISSUE_FIELDS) <= set(line)
    model, prompt, completion, cached, source = expected
    upstream = "fake-anthropic" if path.startswith("/anthropic") else "fake-openai"
    assert {
        "request_id": headers["x-proxy-request-id"],
        "route": path.split("/v1")[0],
        "upstream": upstream,
        "model": model,
        "stream": True,
        "status": 200,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": cached,
        "token_source": source,
        "cost_usd": usd(model, prompt, completion),
        "trimmed_messages": 0,
        "bytes_in": len(body),
        "bytes_out": len(proxied),
        "client": "127.0.0.1",
        "error": None,
    } == {k: line[k] for k in ISSUE_FIELDS if k not in ("attempts", "ttft_ms", "duration_ms")}
    assert [(upstream, 200, "answered")] == [
        (a["upstream"], a["status"], a["reason"]) for a in line["attempts"]
    ]
    assert 0 < line["ttft_ms"] <= line["duration_ms"]


async def test_prompt_and_completion_text_are_never_logged(
    fake: FakeUpstream, proxy_url: str, logs: LogCapture
) -> None:
    secret = {
        "model": "gpt-4o",
        "stream": True,
        "messages": [{"role": "user", "content": "zebra-unicorn-prompt"}],
    }
    await post(proxy_url + "/openai" + CHAT, secret)
    await post(proxy_url + "/openai" + CHAT, {**secret, "stream": False})
    assert 2 == len(await logs.settled(2))
    text = logs.getvalue()
    assert "zebra-unicorn-prompt" not in text
    assert "tok0" not in text


async def test_in_flight_gauges_while_a_stream_is_held(fake: FakeUpstream, proxy_url: str) -> None:
    fake.hold_after_chunk = 2
    async with aiohttp.ClientSession() as session:
        async with session.post(proxy_url + "/openai" + CHAT, json=STREAM_BARE) as resp:
            await resp.content.readuntil(b"\n\n")  # the first event went through
            got = await scrape(proxy_url)
            assert (1.0, 1.0) == (
                value(got, "llm_proxy_in_flight_requests"),
                value(got, "llm_proxy_in_flight_streams"),
            )
            fake.release.set()
            await resp.read()
    for _ in range(100):
        got = await scrape(proxy_url)
        if value(got, "llm_proxy_in_flight_requests") == 0.0:
            break
        await asyncio.sleep(0.01)
    assert (0.0, 0.0) == (
        value(got, "llm_proxy_in_flight_requests"),
        value(got, "llm_proxy_in_flight_streams"),
    )


async def test_body_too_large_is_counted_under_its_route(
    fake: FakeUpstream, start_proxy: Any
) -> None:
    url = await start_proxy(base_config(fake.url, limits={"max_body_bytes": 100}))
    status, _, _ = await post(url + "/openai" + CHAT, b"{" + b" " * 200 + b"}")
    assert 413 == status
    got = await scrape(url)
    assert {key(route="/openai", upstream="none", model="none", status_class="4xx"): 1.0} == (
        series(got, "llm_proxy_requests_total")
    )


async def test_metrics_disabled_means_no_metrics_route(
    fake: FakeUpstream, start_proxy: Any, logs: LogCapture
) -> None:
    url = await start_proxy(base_config(fake.url, metrics={"enabled": False}))
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/metrics") as resp:
            assert 404 == resp.status
    assert "/metrics" == (await logs.last())["path"]


async def test_metrics_on_their_own_listen_address(fake: FakeUpstream, tmp_path: Path) -> None:
    metrics_port = free_port()
    raw = base_config(fake.url, metrics={"host": "127.0.0.1", "port": metrics_port})
    proc = ProxyProcess(raw, tmp_path, free_port())
    try:
        await proc.start()
        status, _, _ = await post(proc.url + "/openai" + CHAT, CHAT_BODY)
        assert 200 == status
        async with aiohttp.ClientSession() as session:
            async with session.get(proc.url + "/metrics") as resp:
                assert 404 == resp.status  # not on the proxy's port: no route matches
        got = await scrape(f"http://127.0.0.1:{metrics_port}")
        assert 1.0 == value(
            got,
            "llm_proxy_requests_total",
            route="/openai",
            upstream="fake-openai",
            model="gpt-4o",
            status_class="2xx",
        )
        assert 1.0 == value(
            got,
            "llm_proxy_requests_total",
            route="none",
            upstream="none",
            model="none",
            status_class="4xx",
        )
    finally:
        proc.stop()


async def test_log_line_survives_client_closing_right_after_last_byte(
    fake: FakeUpstream, proxy_url: str, logs: LogCapture
) -> None:
    """A long stream without usage is estimated in a thread after the last byte; the client
    hanging up at that moment must not cancel the estimate, the metrics or the log line."""
    async with aiohttp.ClientSession() as session:
        async with session.post(
            proxy_url + "/openai" + CHAT, json=STREAM_BARE, headers={"x-fake-chunks": "4000"}
        ) as resp:
            await resp.read()
    # the session is closed: the connection went away right after the response
    for _ in range(200):
        if logs.requests():
            break
        await asyncio.sleep(0.02)
    line = await logs.last()
    assert ("estimate", None) == (line["token_source"], line["error"])
    assert line["completion_tokens"] >= 4000
