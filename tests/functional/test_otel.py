"""OpenTelemetry through the real proxy: spans and GenAI metrics exported over OTLP/HTTP to a
receiver the test runs, decoded with the opentelemetry-proto package.

Faults come from the fake upstream; every wait is for an exported span or point to arrive.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.fake_upstream import FakeUpstream, Fault, fake_text
from tests.conftest import LogCapture, base_config, free_port
from tests.otlp_receiver import OtlpReceiver, Span
from tests.process import ProxyProcess

ROOT = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
JSON = {"Content-Type": "application/json"}
SECRET_PROMPT = "the launch code is swordfish-7731"
CHAT_BODY: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
STREAM_USAGE = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
HINT_01 = {"retry-after": "0.1", "x-ratelimit-remaining-requests": "30"}
"""Wait 0.1 s; the fake's default 429 also says the request bucket is empty, which would hold
the scope for a second (and with pacing's reserve, send the retry to a fallback)."""


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Any]) -> OtlpReceiver:
    rx = OtlpReceiver()
    server = await aiohttp_server(rx.make_app())
    rx.url = str(server.make_url("")).rstrip("/")
    return rx


def otel_config(fake_url: str, rx: OtlpReceiver, **otel: Any) -> dict[str, Any]:
    raw = base_config(fake_url)
    raw["otel"] = {
        "endpoint": rx.url,
        "service_name": "proxy-under-test",
        "schedule_delay_s": 0.05,
        "metrics_interval_s": 0.2,
        **otel,
    }
    return raw


def add_route(raw: dict[str, Any], prefix: str, *upstreams: dict[str, Any], **extra: Any) -> None:
    raw["routes"].append(
        {"prefix": prefix, "provider": "openai", "upstreams": list(upstreams), **extra}
    )


async def post(url: str, body: dict[str, Any], **headers: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body, headers=headers) as resp:
            return resp.status, await resp.read()


async def request_span(rx: OtlpReceiver, request_id: str) -> Span:
    """The exported request span of one request, once it (and its children) arrived."""

    def arrived(r: OtlpReceiver) -> bool:
        return any(s.attributes.get("llm_proxy.request_id") == request_id for s in r.spans)

    await rx.wait_for(arrived)
    span = next(s for s in rx.spans if s.attributes.get("llm_proxy.request_id") == request_id)
    attempts = span.attributes["llm_proxy.attempts"]
    await rx.wait_for(lambda r: len(r.children(span)) >= attempts)
    return span


async def test_a_streamed_chat_is_one_client_span_in_the_genai_conventions(
    fake: FakeUpstream, receiver: OtlpReceiver, start_proxy: Any, logs: LogCapture
) -> None:
    url = await start_proxy(otel_config(fake.url, receiver))
    status, _ = await post(url + "/openai" + CHAT, STREAM_USAGE, **{"x-request-id": "req-1"})
    assert 200 == status
    line = await logs.last()
    span = await request_span(receiver, "req-1")
    port = int(fake.url.rsplit(":", 1)[1])

    assert ("chat gpt-4o", "SPAN_KIND_CLIENT", "STATUS_CODE_UNSET") == (
        span.name,
        span.kind,
        span.status,
    )
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o",
        "gen_ai.request.stream": True,
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": line["prompt_tokens"],
        "gen_ai.usage.output_tokens": line["completion_tokens"],
        "gen_ai.usage.cache_read.input_tokens": 0,
        "gen_ai.usage.reasoning.output_tokens": 0,
        "server.address": "127.0.0.1",
        "server.port": port,
        "http.request.method": "POST",
        "http.response.status_code": 200,
        "url.path": "/openai" + CHAT,
        "llm_proxy.request_id": "req-1",
        "llm_proxy.route": "/openai",
        "llm_proxy.upstream": "fake-openai",
        "llm_proxy.attempts": 1,
        "llm_proxy.cost_usd": line["cost_usd"],
    }
    ttfc = span.attributes.pop("gen_ai.response.time_to_first_chunk")
    assert expected == span.attributes
    assert 0 < ttfc <= span.duration_s
    assert abs(ttfc * 1000 - line["ttft_ms"]) < 1.0
    assert {"service.name": "proxy-under-test"}.items() <= span.resource.items()
    [attempt] = receiver.children(span)
    assert ("POST fake-openai", "SPAN_KIND_CLIENT", span.trace_id) == (
        attempt.name,
        attempt.kind,
        attempt.trace_id,
    )
    assert span.start_ns <= attempt.start_ns <= attempt.end_ns <= span.end_ns
    assert (200, "answered") == (
        attempt.attributes["http.response.status_code"],
        attempt.attributes["llm_proxy.attempt.reason"],
    )
    assert abs(span.duration_s * 1000 - line["duration_ms"]) < 50  # the same clock, not now


async def test_genai_metrics_are_exported_with_their_required_attributes(
    fake: FakeUpstream, receiver: OtlpReceiver, start_proxy: Any, logs: LogCapture
) -> None:
    url = await start_proxy(otel_config(fake.url, receiver))
    assert 200 == (await post(url + "/openai" + CHAT, STREAM_USAGE))[0]
    assert 200 == (await post(url + "/openai" + CHAT, CHAT_BODY))[0]
    lines = await logs.settled(2)

    def exported(r: OtlpReceiver) -> bool:
        points = r.latest_points("gen_ai.client.operation.duration")
        return sum(p.count for p in points) >= 2

    await receiver.wait_for(exported)
    await receiver.wait_for(lambda r: len(r.latest_points("gen_ai.client.token.usage")) >= 2)
    port = int(fake.url.rsplit(":", 1)[1])
    common = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o",
        "server.address": "127.0.0.1",
        "server.port": port,
    }
    [duration] = receiver.latest_points("gen_ai.client.operation.duration")
    assert (common, "s", 2) == (duration.attributes, duration.unit, duration.count)
    tokens = {
        p.attributes["gen_ai.token.type"]: (p.count, p.sum, p.unit)
        for p in receiver.latest_points("gen_ai.client.token.usage")
    }
    prompt = sum(line["prompt_tokens"] for line in lines)
    completion = sum(line["completion_tokens"] for line in lines)
    assert {
        "input": (2, float(prompt), "{token}"),
        "output": (2, float(completion), "{token}"),
    } == tokens
    [ttfc] = receiver.latest_points("gen_ai.client.operation.time_to_first_chunk")
    assert (common, 1) == (ttfc.attributes, ttfc.count)  # streams only


async def test_retries_and_a_fallback_are_child_spans_of_one_request_span(
    fake: FakeUpstream, receiver: OtlpReceiver, start_proxy: Any
) -> None:
    raw = otel_config(fake.url, receiver)
    add_route(
        raw,
        "/fallback",
        {"name": "primary", "base_url": fake.url},
        {"name": "secondary", "base_url": fake.url, "models": {"gpt-4o": "gpt-4o-mini"}},
        retry={"max_attempts": 2},
    )
    url = await start_proxy(raw)
    fake.enqueue(Fault(status=429, headers=HINT_01), Fault(status=429, headers=HINT_01))
    status, _ = await post(url + "/fallback" + CHAT, CHAT_BODY, **{"x-request-id": "req-fb"})
    assert 200 == status
    span = await request_span(receiver, "req-fb")

    assert ("chat gpt-4o", "gpt-4o", "gpt-4o-mini", 3, "secondary") == (
        span.name,
        span.attributes["gen_ai.request.model"],
        span.attributes["gen_ai.response.model"],
        span.attributes["llm_proxy.attempts"],
        span.attributes["llm_proxy.upstream"],
    )
    children = receiver.children(span)
    assert [
        ("POST primary", 1, 429, "retryable_status", "429", "STATUS_CODE_ERROR"),
        ("POST primary", 2, 429, "retryable_status", "429", "STATUS_CODE_ERROR"),
        ("POST secondary", 3, 200, "answered", None, "STATUS_CODE_UNSET"),
    ] == [
        (
            c.name,
            c.attributes["llm_proxy.attempt.number"],
            c.attributes["http.response.status_code"],
            c.attributes["llm_proxy.attempt.reason"],
            c.attributes.get("error.type"),
            c.status,
        )
        for c in children
    ]
    assert {span.trace_id} == {c.trace_id for c in children}
    first = children[0]
    assert "retry-after" == first.attributes["llm_proxy.attempt.wait_hint"]
    # the pacer held the retry until the provider's Retry-After had passed
    [hold] = [e for e in span.events if e.name == "llm_proxy.hold"]
    assert ("pacing", "primary:gpt-4o") == (
        hold.attributes["llm_proxy.hold.kind"],
        hold.attributes["llm_proxy.hold.scope"],
    )
    assert hold.attributes["llm_proxy.hold.waited_s"] >= 0.09
    assert first.end_ns <= children[1].start_ns and children[1].end_ns <= children[2].start_ns
    assert children[1].start_ns - first.end_ns >= 0.1e9  # the wait sits between them


@pytest.mark.parametrize(("pacing", "kind"), [(True, "pacing"), (False, "cooldown")])
async def test_a_wait_for_the_scopes_limit_is_a_hold_event(
    fake: FakeUpstream, receiver: OtlpReceiver, start_proxy: Any, pacing: bool, kind: str
) -> None:
    raw = otel_config(fake.url, receiver)
    add_route(
        raw,
        "/single",
        {"name": "only", "base_url": fake.url},
        retry={"max_attempts": 1},
        pacing={"enabled": pacing},
    )
    url = await start_proxy(raw)
    fake.enqueue(Fault(status=429, headers={**HINT_01, "retry-after": "0.3"}))
    assert 429 == (await post(url + "/single" + CHAT, CHAT_BODY))[0]  # sets the cooldown
    status, _ = await post(url + "/single" + CHAT, CHAT_BODY, **{"x-request-id": "req-held"})
    assert 200 == status
    span = await request_span(receiver, "req-held")
    [hold] = [e for e in span.events if e.name == "llm_proxy.hold"]
    assert (kind, "only:gpt-4o") == (
        hold.attributes["llm_proxy.hold.kind"],
        hold.attributes["llm_proxy.hold.scope"],
    )
    assert 0 < hold.attributes["llm_proxy.hold.waited_s"] <= 0.5
    [attempt] = receiver.children(span)
    assert span.start_ns <= hold.time_ns <= attempt.start_ns


@pytest.mark.parametrize(
    ("otel", "route_otel", "upstream_parent"),
    [
        ({}, {}, "client"),  # default: the client's traceparent goes upstream untouched
        ({"inject_context": True}, {}, "proxy"),
        ({}, {"inject_context": True}, "proxy"),  # the route turns it on
        ({"inject_context": True}, {"inject_context": False}, "client"),  # ... or off
    ],
)
async def test_an_incoming_traceparent_is_the_parent_and_injection_follows_the_route(
    fake: FakeUpstream,
    receiver: OtlpReceiver,
    start_proxy: Any,
    otel: dict[str, Any],
    route_otel: dict[str, Any],
    upstream_parent: str,
) -> None:
    raw = otel_config(fake.url, receiver, **otel)
    raw["routes"][0]["otel"] = route_otel
    url = await start_proxy(raw)
    headers = {"traceparent": TRACEPARENT, "tracestate": "vendor=abc", "x-request-id": "req-tp"}
    assert 200 == (await post(url + "/openai" + CHAT, CHAT_BODY, **headers))[0]
    span = await request_span(receiver, "req-tp")
    assert (TRACE_ID, CLIENT_SPAN) == (span.trace_id, span.parent_span_id)
    sent = fake.requests[-1].headers
    expected = {
        "client": TRACEPARENT,
        "proxy": f"00-{TRACE_ID}-{span.span_id}-01",
    }[upstream_parent]
    assert (expected, "vendor=abc") == (sent["traceparent"], sent["tracestate"])


async def test_without_a_client_traceparent_injection_starts_a_new_trace_upstream(
    fake: FakeUpstream, receiver: OtlpReceiver, start_proxy: Any
) -> None:
    url = await start_proxy(otel_config(fake.url, receiver, inject_context=True))
    assert 200 == (await post(url + "/openai" + CHAT, CHAT_BODY, **{"x-request-id": "r"}))[0]
    span = await request_span(receiver, "r")
    assert "" == span.parent_span_id
    version, trace_id, parent_id, flags = fake.requests[-1].headers["traceparent"].split("-")
    assert ("00", span.trace_id, span.span_id) == (version, trace_id, parent_id)
    assert 1 == int(flags, 16) & 1  # sampled (0x02, "random trace id", may be set too)


async def test_context_trimming_is_a_compaction_event(
    fake: FakeUpstream, receiver: OtlpReceiver, start_proxy: Any, logs: LogCapture
) -> None:
    raw = otel_config(fake.url, receiver)
    add_route(
        raw,
        "/trim",
        {"name": "fake-trim", "base_url": fake.url},
        context={"max_input_tokens": 120},
    )
    url = await start_proxy(raw)
    long_chat = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "old question " + "word " * 60},
            {"role": "assistant", "content": "old answer " + "word " * 60},
            {"role": "user", "content": "new question"},
        ],
    }
    assert 200 == (await post(url + "/trim" + CHAT, long_chat, **{"x-request-id": "t"}))[0]
    line = await logs.last()
    span = await request_span(receiver, "t")
    [event] = [e for e in span.events if e.name == "gen_ai.conversation.compacted"]
    assert {
        "llm_proxy.context.trimmed_messages": 2,
        "llm_proxy.context.budget": line["budget"],
        "llm_proxy.context.prompt_tokens_est": line["prompt_tokens_est"],
        "llm_proxy.context.count_method": line["count_method"],
    } == event.attributes
    assert 2 == line["trimmed_messages"]
    assert span.attributes["gen_ai.conversation.compacted"] is True


async def test_no_message_content_is_exported_unless_capture_is_on(
    fake: FakeUpstream, receiver: OtlpReceiver, start_proxy: Any
) -> None:
    url = await start_proxy(otel_config(fake.url, receiver))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": SECRET_PROMPT}]}
    assert 200 == (await post(url + "/openai" + CHAT, body, **{"x-request-id": "quiet"}))[0]
    span = await request_span(receiver, "quiet")
    content_keys = {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"}
    assert set() == content_keys & set(span.attributes)
    exported = b"".join(receiver.raw)
    assert SECRET_PROMPT.encode() not in exported
    assert fake_text(1)[:20].encode() not in exported


async def test_captured_content_follows_the_conventions_schema(
    fake: FakeUpstream, receiver: OtlpReceiver, start_proxy: Any
) -> None:
    url = await start_proxy(otel_config(fake.url, receiver, capture_content=True))
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": SECRET_PROMPT},
    ]
    body = {**STREAM_USAGE, "messages": messages}
    status, answer = await post(url + "/openai" + CHAT, body, **{"x-request-id": "loud"})
    assert 200 == status
    span = await request_span(receiver, "loud")
    assert [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": SECRET_PROMPT}]},
    ] == json.loads(span.attributes["gen_ai.input.messages"])
    [output] = json.loads(span.attributes["gen_ai.output.messages"])
    text = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in answer.decode().splitlines()
        if line.startswith("data: {") and '"choices":[{' in line.replace(" ", "")
    )
    assert {
        "role": "assistant",
        "parts": [{"type": "text", "content": text}],
        "finish_reason": "stop",
    } == output


async def test_a_refused_request_still_gets_a_span_with_its_error_type(
    fake: FakeUpstream, receiver: OtlpReceiver, start_proxy: Any
) -> None:
    url = await start_proxy(otel_config(fake.url, receiver))
    assert 404 == (await post(url + "/nowhere" + CHAT, CHAT_BODY, **{"x-request-id": "lost"}))[0]
    span = await request_span(receiver, "lost")
    assert ("POST", "404", 404, "STATUS_CODE_ERROR") == (
        span.name,
        span.attributes["error.type"],
        span.attributes["http.response.status_code"],
        span.status,
    )


async def test_a_full_export_queue_drops_new_spans_and_counts_them(
    fake: FakeUpstream, receiver: OtlpReceiver, start_proxy: Any
) -> None:
    """The collector hangs: serving goes on, spans beyond the queue are dropped and counted,
    and every span is either exported or counted once the collector answers again."""
    receiver.hold = asyncio.Event()
    raw = otel_config(fake.url, receiver, max_queue_size=2, max_export_batch_size=2)
    url = await start_proxy(raw)
    requests = 10
    for _ in range(requests):  # each request is 2 spans: the request and its attempt
        assert 200 == (await post(url + "/openai" + CHAT, CHAT_BODY))[0]
    await receiver.wait_for(lambda r: r.trace_posts >= 1)  # one batch is stuck in export

    async def dropped() -> float:
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/metrics") as resp:
                text = await resp.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("llm_proxy_otel_dropped_spans_total{")
        )

    assert await dropped() >= 2 * requests - 4  # at most one batch in export, one queued
    receiver.hold.set()
    async with asyncio.timeout(10):
        while len(receiver.spans) + await dropped() < 2 * requests:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert 2 * requests == len(receiver.spans) + await dropped()


async def test_spans_go_in_full_batches_and_the_rest_at_the_flush(
    fake: FakeUpstream, receiver: OtlpReceiver, aiohttp_server: Any, logs: LogCapture
) -> None:
    """With a long schedule delay only full batches are sent while serving; what is left goes
    when the server stops."""
    from proxy import config as config_mod
    from proxy.app import make_app

    raw = otel_config(fake.url, receiver, max_export_batch_size=4, schedule_delay_s=60)
    app = make_app(config_mod.from_dict(raw, env={}), log_stream=logs)
    server = await aiohttp_server(app)
    url = str(server.make_url("")).rstrip("/")
    for _ in range(5):  # 10 spans: a request and its attempt each
        assert 200 == (await post(url + "/openai" + CHAT, CHAT_BODY))[0]
    await receiver.wait_for(lambda r: len(r.batches) >= 2)
    assert [4, 4] == receiver.batches
    await server.close()  # the app's cleanup flushes the queue
    assert [4, 4, 2] == receiver.batches


NO_OTEL_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from aiohttp import ClientSession, web
    from proxy import config
    from proxy.app import make_app
    from proxy.fake_upstream import FakeUpstream

    async def main(otel):
        fake = web.AppRunner(FakeUpstream().make_app())
        await fake.setup()
        site = web.TCPSite(fake, "127.0.0.1", 0)
        await site.start()
        port = fake.addresses[0][1]
        raw = {"routes": [{"prefix": "/openai", "provider": "openai",
               "upstreams": [{"name": "f", "base_url": f"http://127.0.0.1:{port}"}]}]}
        if otel:
            raw["otel"] = {"endpoint": "http://127.0.0.1:9", "export_timeout_s": 0.5}
        runner = web.AppRunner(make_app(config.from_dict(raw, env={})))
        await runner.setup()
        proxy = web.TCPSite(runner, "127.0.0.1", 0)
        await proxy.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/openai/v1/chat/completions"
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        async with ClientSession() as s:
            async with s.post(url, json=body) as r:
                assert r.status == 200, r.status
        loaded = sorted(
            m for m in sys.modules
            if m.split(".")[0] in ("opentelemetry", "redis")
            or m in ("proxy.otel.export", "proxy.plugins.otel")
        )
        await runner.cleanup()
        await fake.cleanup()
        print(json.dumps(loaded))

    asyncio.run(main(sys.argv[1] == "on"))
    """
)


@pytest.mark.parametrize("otel", ["off", "on"])
def test_without_otel_configured_nothing_of_opentelemetry_is_imported(otel: str) -> None:
    """In a fresh interpreter: a proxy that served a request without ``otel`` configured has
    loaded neither the tracing package nor any ``opentelemetry`` module (redis-py, which would
    load the OpenTelemetry API, is not imported either). With ``otel`` configured the same
    script loads the tracing package, and still no ``opentelemetry`` module: the exporter is
    self-contained."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", NO_OTEL_SCRIPT, otel],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {"off": [], "on": ["proxy.otel.export", "proxy.plugins.otel"]}[otel]
    assert expected == loaded


async def test_a_process_configured_by_otel_env_vars_exports_and_flushes_on_sigterm(
    fake: FakeUpstream, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """Only the standard variables configure it; the batch delay is a minute, so the span can
    only arrive through the flush at shutdown."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "from-env",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test,team=llm%20ops",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",
    }
    proc = ProxyProcess(base_config(fake.url), tmp_path, free_port(), **env)
    try:
        await proc.start()
        assert (
            200 == (await post(proc.url + "/openai" + CHAT, CHAT_BODY, **{"x-request-id": "e"}))[0]
        )
        proc.signal(signal.SIGTERM)
        assert 0 == await proc.wait()
    finally:
        proc.stop()
    span = await request_span(receiver, "e")
    assert {
        "service.name": "from-env",
        "deployment.environment": "test",
        "team": "llm ops",
    }.items() <= span.resource.items()
    assert 1 == len(receiver.latest_points("gen_ai.client.operation.duration"))
