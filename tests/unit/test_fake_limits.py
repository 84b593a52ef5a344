"""The fake upstream's real rate limits (proxy.fake_upstream.limits): token buckets per
credential and model, the providers' exact headers, their 429s, and a refill the proxy's
next-admission estimate matches."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import anthropic
import openai
import pytest

from proxy.fake_upstream import FakeUpstream, Limits, Rates
from proxy.fake_upstream.__main__ import limits_from, parse_args
from proxy.fake_upstream.limits import go_duration
from proxy.resilience.ratelimits import Bucket, Cost, admission_delay, parse_snapshot
from tests.conftest import fetch

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
USER_HI = [{"role": "user", "content": "hello there"}]  # 3 + 2 words = 5 prompt tokens
KEY_A = {"Authorization": "Bearer key-a"}
KEY_B = {"Authorization": "Bearer key-b"}
ANTHROPIC_A = {"x-api-key": "key-a", "anthropic-version": "2023-06-01"}


class Clock:
    """The fake's clock, moved by the test (never by waiting)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def start(aiohttp_server: Any, clock: Clock) -> Any:
    async def make(limits: Limits) -> tuple[FakeUpstream, str]:
        fake = FakeUpstream(limits=limits, clock=clock)
        server = await aiohttp_server(fake.make_app())
        return fake, str(server.make_url("")).rstrip("/")

    return make


async def chat(url: str, headers: dict[str, str], model: str = "gpt-4o", **extra: Any) -> Any:
    body = {"model": model, "messages": USER_HI, "max_tokens": 15, **extra}
    return await fetch("POST", url + CHAT, json=body, headers=headers)


async def message(url: str, model: str = "claude-sonnet-4-5", max_tokens: int = 30) -> Any:
    body = {"model": model, "messages": USER_HI, "max_tokens": max_tokens}
    return await fetch("POST", url + MESSAGES, json=body, headers=ANTHROPIC_A)


def rate_headers(headers: Any) -> dict[str, str]:
    return {
        k.lower(): v
        for k, v in headers.items()
        if k.lower().startswith(("x-ratelimit-", "anthropic-ratelimit-"))
        or k.lower() in ("retry-after", "date")
    }


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0004, "1ms"),
        (0.012, "12ms"),
        (0.2, "200ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.984, "59.984s"),
        (360, "6m0s"),
        (3723.25, "1h2m3.25s"),
        (3600, "1h0m0s"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert text == go_duration(seconds)


# ---------------------------------------------------------------- exact headers


async def test_openai_headers_exact(start: Any) -> None:
    _, url = await start(Limits(rpm=60, tpm=6000))
    status, headers, _ = await chat(url, KEY_A)
    assert 200 == status
    assert {
        "date": "Tue, 14 Nov 2023 22:13:20 GMT",
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "6000",
        "x-ratelimit-remaining-tokens": "5980",  # 5 prompt + 15 max_tokens
        "x-ratelimit-reset-tokens": "200ms",
    } == rate_headers(headers)


async def test_anthropic_split_headers_exact(start: Any) -> None:
    """Input 5, output 30: output has the smaller share left, so ``tokens-*`` repeats it."""
    _, url = await start(Limits(rpm=50, input_tpm=3000, output_tpm=600))
    status, headers, _ = await message(url)
    assert 200 == status
    assert {
        "date": "Tue, 14 Nov 2023 22:13:20 GMT",
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:22Z",  # 1.2 s, rounded up
        "anthropic-ratelimit-input-tokens-limit": "3000",
        "anthropic-ratelimit-input-tokens-remaining": "2995",
        "anthropic-ratelimit-input-tokens-reset": "2023-11-14T22:13:21Z",
        "anthropic-ratelimit-output-tokens-limit": "600",
        "anthropic-ratelimit-output-tokens-remaining": "570",
        "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:13:23Z",
        "anthropic-ratelimit-tokens-limit": "600",
        "anthropic-ratelimit-tokens-remaining": "570",
        "anthropic-ratelimit-tokens-reset": "2023-11-14T22:13:23Z",
    } == rate_headers(headers)


async def test_anthropic_combined_tokens_without_the_split(start: Any) -> None:
    _, url = await start(Limits(tpm=1000))
    _, headers, _ = await message(url)
    assert {
        "date": "Tue, 14 Nov 2023 22:13:20 GMT",
        "anthropic-ratelimit-tokens-limit": "1000",
        "anthropic-ratelimit-tokens-remaining": "965",
        "anthropic-ratelimit-tokens-reset": "2023-11-14T22:13:23Z",  # 35 / (1000/60) = 2.1 s
    } == rate_headers(headers)


async def test_streaming_answers_carry_the_headers(start: Any) -> None:
    _, url = await start(Limits(rpm=60))
    status, headers, body = await chat(url, KEY_A, stream=True)
    assert (200, "59") == (status, headers["x-ratelimit-remaining-requests"])
    assert body.endswith(b"data: [DONE]\n\n")


async def test_without_limits_no_rate_limit_headers(start: Any) -> None:
    _, url = await start(Limits())
    status, headers, _ = await chat(url, KEY_A)
    assert (200, {}) == (status, {k: v for k, v in rate_headers(headers).items() if k != "date"})


async def test_output_cap_defaults_to_the_chunks_produced(start: Any) -> None:
    _, url = await start(Limits(tpm=6000))
    body = {"model": "gpt-4o", "messages": USER_HI}
    _, headers, _ = await fetch(
        "POST", url + CHAT, json=body, headers={**KEY_A, "x-fake-chunks": "7"}
    )
    assert "5988" == headers["x-ratelimit-remaining-tokens"]  # 5 + 7


async def test_embeddings_count_input_only(start: Any) -> None:
    _, url = await start(Limits(tpm=6000))
    body = {"model": "text-embedding-3-small", "input": ["one two three", "four"]}
    _, headers, _ = await fetch("POST", url + "/v1/embeddings", json=body, headers=KEY_A)
    assert "5996" == headers["x-ratelimit-remaining-tokens"]


# ---------------------------------------------------------------- 429s


async def test_openai_429_body_and_headers(start: Any) -> None:
    _, url = await start(Limits(rpm=2, tpm=6000))
    for _ in range(2):
        assert 200 == (await chat(url, KEY_A))[0]
    status, headers, body = await chat(url, KEY_A)
    assert 429 == status
    assert {
        "date": "Tue, 14 Nov 2023 22:13:20 GMT",
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1m0s",
        "x-ratelimit-limit-tokens": "6000",
        "x-ratelimit-remaining-tokens": "5960",
        "x-ratelimit-reset-tokens": "400ms",
        "retry-after": "30",
    } == rate_headers(headers)
    assert {
        "error": {
            "message": "Rate limit reached for gpt-4o in organization org-fake on requests per "
            "min (RPM): Limit 2, Used 2, Requested 1. Please try again in 30s. Visit "
            "https://platform.openai.com/account/rate-limits to learn more.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    } == json.loads(body)
    assert "req_fake_3" == headers["x-request-id"]


async def test_anthropic_429_body_and_headers(start: Any) -> None:
    _, url = await start(Limits(rpm=50, input_tpm=3000, output_tpm=600))
    assert 200 == (await message(url, max_tokens=500))[0]
    status, headers, body = await message(url, max_tokens=500)
    assert 429 == status
    assert "40" == headers["retry-after"]  # needs 500, 100 left, 10 a second
    assert {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "This request would exceed the rate limit for your organization (fake) "
            "of 600 output tokens per minute. For details, refer to: "
            "https://docs.claude.com/en/api/rate-limits.",
        },
    } == json.loads(body)
    assert "req_fake_2" == headers["request-id"]


async def test_sdks_raise_their_rate_limit_errors(start: Any) -> None:
    _, url = await start(Limits(rpm=1))
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="key-a", max_retries=0) as oai:
        await oai.chat.completions.create(model="gpt-4o", messages=USER_HI)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as raised:
            await oai.chat.completions.create(model="gpt-4o", messages=USER_HI)  # type: ignore[arg-type]
    assert ("rate_limit_exceeded", "60") == (
        raised.value.code,
        raised.value.response.headers["retry-after"],
    )
    async with anthropic.AsyncAnthropic(base_url=url, api_key="key-a", max_retries=0) as claude:
        await claude.messages.create(model="claude-haiku-4-5", messages=USER_HI, max_tokens=5)  # type: ignore[arg-type]
        with pytest.raises(anthropic.RateLimitError) as raised_a:
            await claude.messages.create(model="claude-haiku-4-5", messages=USER_HI, max_tokens=5)  # type: ignore[arg-type]
    assert "rate_limit_error" == raised_a.value.body["error"]["type"]  # type: ignore[index]


# ---------------------------------------------------------------- buckets


async def test_key_a_exhausted_does_not_affect_key_b(start: Any) -> None:
    fake, url = await start(Limits(rpm=3))
    statuses_a = [(await chat(url, KEY_A))[0] for _ in range(4)]
    status_b, headers_b, _ = await chat(url, KEY_B)
    assert ([200, 200, 200, 429], 200) == (statuses_a, status_b)
    assert "2" == headers_b["x-ratelimit-remaining-requests"]
    counts = (fake.limiter.counts("key-a"), fake.limiter.counts("key-b"))
    assert ((3, 1), (1, 0)) == tuple((c.served, c.limited) for c in counts)


async def test_models_have_separate_buckets_and_overrides(start: Any) -> None:
    fake, url = await start(Limits(rpm=2, models={"gpt-4o-mini": Rates(rpm=5)}))
    x = [(await chat(url, KEY_A, model="gpt-4o"))[0] for _ in range(3)]
    status_y, headers_y, _ = await chat(url, KEY_A, model="gpt-4o-mini")
    assert ([200, 200, 429], 200) == (x, status_y)
    assert ("5", "4") == (
        headers_y["x-ratelimit-limit-requests"],
        headers_y["x-ratelimit-remaining-requests"],
    )
    assert [
        {"credential": "key-a", "model": "gpt-4o", "served": 2, "limited": 1},
        {"credential": "key-a", "model": "gpt-4o-mini", "served": 1, "limited": 0},
    ] == fake.limiter.all_counts()


async def test_the_refill_is_continuous(start: Any, clock: Clock) -> None:
    _, url = await start(Limits(rpm=60))
    for _ in range(60):
        assert 200 == (await chat(url, KEY_A))[0]
    assert 429 == (await chat(url, KEY_A))[0]
    clock.now = T0 + 2.5  # 2.5 requests back
    statuses = [(await chat(url, KEY_A))[0] for _ in range(3)]
    assert [200, 200, 429] == statuses


# ---------------------------------------------------------------- the honest next admission


@pytest.mark.parametrize(
    ("limits", "path", "cost", "sent"),
    [
        pytest.param(Limits(rpm=60), CHAT, Cost(5, 15), 60, id="openai-requests"),
        pytest.param(Limits(rpm=1000, tpm=650), CHAT, Cost(5, 15), 32, id="openai-tokens"),
        pytest.param(Limits(rpm=50), MESSAGES, Cost(5, 30), 50, id="anthropic-requests"),
        pytest.param(
            Limits(input_tpm=10000, output_tpm=700),
            MESSAGES,
            Cost(5, 30),
            23,
            id="anthropic-output",
        ),
    ],
)
async def test_next_admission_from_headers_matches_the_real_refill(
    start: Any, clock: Clock, limits: Limits, path: str, cost: Cost, sent: int
) -> None:
    """Exhaust a bucket, read the refused answer's headers as the proxy does, and probe the
    fake 100 ms before and after the estimate: refused, then served."""
    _, url = await start(limits)

    async def send() -> tuple[int, Any]:
        if path == CHAT:
            status, headers, _ = await chat(url, KEY_A)
        else:
            status, headers, _ = await message(url)
        return status, headers

    for _ in range(sent):
        assert 200 == (await send())[0]
    status, headers = await send()
    assert 429 == status
    delay = admission_delay(parse_snapshot(headers, clock.now), cost, clock.now)
    assert delay.seconds > 0.1
    clock.now = T0 + delay.seconds - 0.1
    assert 429 == (await send())[0]
    clock.now = T0 + delay.seconds + 0.1
    assert 200 == (await send())[0]


async def test_the_full_reset_header_is_not_the_next_admission(start: Any, clock: Clock) -> None:
    """The issue's case: at 60 RPM the reset header says a minute, one more request may go
    after a second."""
    _, url = await start(Limits(rpm=60))
    for _ in range(60):
        await chat(url, KEY_A)
    _, headers, _ = await chat(url, KEY_A)
    snapshot = parse_snapshot(headers, clock.now)
    assert T0 + 60 == snapshot.buckets[Bucket.REQUESTS].reset_at
    assert 1.0 == admission_delay(snapshot, Cost(5, 15), clock.now).seconds


# ---------------------------------------------------------------- skew and lag


async def test_clock_skew_shifts_absolute_instants_and_date(start: Any, clock: Clock) -> None:
    _, url = await start(Limits(rpm=50, skew_s=30))
    _, headers, _ = await message(url)
    assert "Tue, 14 Nov 2023 22:13:50 GMT" == headers["date"]
    assert "2023-11-14T22:13:52Z" == headers["anthropic-ratelimit-requests-reset"]  # +30 +1.2
    snapshot = parse_snapshot(headers, clock.now)
    assert snapshot.buckets[Bucket.REQUESTS].reset_at == pytest.approx(T0 + 1.2, abs=1.0)


async def test_header_lag_reports_a_stale_state(start: Any, clock: Clock) -> None:
    fake, url = await start(Limits(rpm=60, header_lag_s=10))
    for _ in range(5):
        _, headers, _ = await chat(url, KEY_A)
    assert "60" == headers["x-ratelimit-remaining-requests"]  # 10 s ago: nothing used yet
    clock.now = T0 + 10
    _, headers, _ = await chat(url, KEY_A)
    assert "55" == headers["x-ratelimit-remaining-requests"]  # as at T0, though 59 is true
    assert (6, 0) == (fake.limiter.counts().served, fake.limiter.counts().limited)


# ---------------------------------------------------------------- controls


async def test_control_api_sets_limits_and_reports_counts(start: Any) -> None:
    fake, url = await start(Limits())
    status, _, body = await fetch(
        "POST", url + "/_fake/limits", json={"rpm": 1, "models": {"gpt-4o-mini": {"rpm": 2}}}
    )
    assert (200, 1.0) == (status, json.loads(body)["limits"]["rpm"])
    assert [200, 429] == [(await chat(url, KEY_A))[0] for _ in range(2)]
    status, _, body = await fetch("GET", url + "/_fake/limits")
    assert [{"credential": "key-a", "model": "gpt-4o", "served": 1, "limited": 1}] == json.loads(
        body
    )["counts"]
    await fetch("POST", url + "/_fake/reset")  # buckets refill, counts restart
    assert 200 == (await chat(url, KEY_A))[0]
    assert [{"credential": "key-a", "model": "gpt-4o", "served": 1, "limited": 0}] == (
        fake.limiter.all_counts()
    )
    await fetch("POST", url + "/_fake/limits", json={})
    assert [200, 200] == [(await chat(url, KEY_A))[0] for _ in range(2)]


@pytest.mark.parametrize(
    "payload",
    [[], {"rpm": -1}, {"rpm": "ten"}, {"rmp": 5}, {"models": {"m": {"rpm": 1, "x": 2}}}],
)
async def test_control_api_rejects_bad_limits(start: Any, payload: Any) -> None:
    _, url = await start(Limits())
    status, _, body = await fetch("POST", url + "/_fake/limits", json=payload)
    assert 400 == status
    assert "error" in json.loads(body)


def test_command_line_limits() -> None:
    args = parse_args(
        "--rpm 60 --tpm 40000 --input-tpm 30000 --output-tpm 8000 --skew-s 2 "
        "--header-lag-ms 250 --limit-window-s 30".split()
    )
    expected = Limits(
        rpm=60,
        tpm=40000,
        input_tpm=30000,
        output_tpm=8000,
        window_s=30,
        skew_s=2,
        header_lag_s=0.25,
    )
    assert expected == limits_from(args)
    assert Limits() == limits_from(parse_args([]))


async def test_standalone_with_limits_answers_429() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.fake_upstream",
        "--port",
        "0",
        "--rpm",
        "1",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
        base = line.removeprefix("listening on ")
        assert [200, 429] == [(await chat(base, KEY_A))[0] for _ in range(2)]
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
