"""What spans and metrics say about a request (pure, no SDK): operation names, the requested
model read from bytes, error kinds, attribute maps that leave unknowns out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from proxy import config as config_mod
from proxy.errorkind import error_kind
from proxy.exchange import Exchange
from proxy.otel import semconv
from proxy.otel.content import input_attributes, output_attributes
from proxy.outcomes import Attempt, AttemptReason, ContextOutcome, UsageOutcome
from proxy.routing import Router
from proxy.usage import Usage

CFG = config_mod.from_dict(
    {
        "routes": [
            {
                "prefix": "/openai",
                "provider": "openai",
                "upstreams": [
                    {"name": "primary", "base_url": "https://api.openai.com"},
                    {"name": "local", "base_url": "http://10.0.0.5:8000/v1"},
                ],
            },
            {
                "prefix": "/anthropic",
                "provider": "anthropic",
                "upstreams": [{"name": "claude", "base_url": "https://api.anthropic.com"}],
            },
        ]
    },
    env={},
)


def exchange(
    path: str = "/openai/v1/chat/completions", body: Any = None, method: str = "POST"
) -> Exchange:
    raw = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
    headers = {"Content-Type": "application/json"}
    ex = Exchange(make_mocked_request(method, path, headers=headers))
    match = Router(CFG.routes).match(path)
    if match is not None:
        ex.routed(*match)
    ex.received(raw)
    return ex


@pytest.mark.parametrize(
    ("method", "provider", "tail", "expected"),
    [
        ("POST", "openai", "/v1/chat/completions", "chat"),
        ("POST", "openai", "/v1/completions", "text_completion"),
        ("POST", "openai", "/v1/embeddings", "embeddings"),
        ("POST", "openai", "/v1/responses", "chat"),
        ("POST", "openai", "/v1/chat/completions/", "chat"),
        ("GET", "openai", "/v1/chat/completions", None),
        ("GET", "openai", "/v1/models", None),
        ("POST", "openai", "/v1/threads/t1/messages", None),  # not Anthropic's /v1/messages
        ("POST", "anthropic", "/v1/messages", "chat"),
        ("POST", "anthropic", "/v1/messages/count_tokens", None),
        ("POST", "anthropic", "/v1/complete", "text_completion"),
    ],
)
def test_operation_names(method: str, provider: str, tail: str, expected: str | None) -> None:
    assert expected == semconv.operation_name(method, provider, tail)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"messages": [], "model": "gpt-4o"}', "gpt-4o"),
        (b'{"model":"claude-\\u00e9"}', "claude-\u00e9"),  # JSON escapes decoded
        (
            b'{"messages": [{"role": "user", "content": "say \\"model\\": \\"x\\""}], '
            b'"model": "gpt-4o"}',
            "gpt-4o",
        ),
        (b'{"model": "a", "metadata": {"model": "b"}}', "a"),  # nested: parsed to decide
        (b'{"messages": []}', None),
        (b"not json", None),
    ],
)
def test_the_requested_model_is_read_from_the_clients_bytes(
    body: bytes, expected: str | None
) -> None:
    assert expected == semconv.requested_model(exchange(body=body))


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (200, None, None),
        (429, "upstream 'x' is rate limited", "429"),
        (502, None, "502"),
        (200, "client disconnected", "client_disconnected"),
        (None, "client disconnected", "client_disconnected"),
        (200, "cancelled by shutdown", "cancelled"),
        (200, "upstream idle timeout", "timeout"),
        (200, "total timeout", "timeout"),
        (200, "upstream error event: overloaded_error", "overloaded_error"),
        (200, "upstream error event: Weird Type!", "upstream_error_event"),
        (200, "upstream stream broke: ...", "stream_cut"),
        (200, "upstream connection reset: reset by peer", "stream_cut"),
        (200, "internal error: KeyError at f:1: 'x'", "internal_error"),
        (None, "something new", "no_response"),
        (200, "something new", "_OTHER"),
    ],
)
def test_error_kinds_are_a_closed_set(
    status: int | None, error: str | None, expected: str | None
) -> None:
    ex = exchange()
    ex.status, ex.error = status, error
    assert expected == error_kind(ex)


def span_attributes(ex: Exchange) -> dict[str, Any]:
    shape = semconv.shape_of(ex, error_kind(ex))
    return {**semconv.shape_attributes(shape), **semconv.varying_attributes(ex, shape)}


def test_a_chat_is_described_with_the_served_upstream_and_only_known_counts() -> None:
    ex = exchange(body={"model": "gpt-4o", "stream": True, "messages": []})
    ex.upstream = CFG.routes[0].upstreams[1]
    ex.status, ex.stream, ex.request_id = 200, True, "rid"
    ex.t_first_token = ex.t_start + 0.25
    ex.usage = UsageOutcome("llama-3", Usage(10, 5, None, None, None, "upstream"), None, ("stop",))
    shape = semconv.shape_of(ex, None)
    assert ("chat gpt-4o", semconv.Server("10.0.0.5", 8000)) == (shape.span_name, shape.server)
    assert {
        "http.request.method": "POST",
        "url.path": "/openai/v1/chat/completions",
        "llm_proxy.attempts": 0,
        "http.response.status_code": 200,
        "llm_proxy.route": "/openai",
        "llm_proxy.upstream": "local",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "llama-3",
        "server.address": "10.0.0.5",
        "server.port": 8000,
        "gen_ai.request.stream": True,
        "gen_ai.response.finish_reasons": ("stop",),
        "llm_proxy.request_id": "rid",
        "gen_ai.response.time_to_first_chunk": 0.25,
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 5,
    } == span_attributes(ex)
    ex.usage.usage.source = "estimate"
    assert True is span_attributes(ex)["llm_proxy.usage.estimated"]


def test_equal_shapes_mean_equal_attributes_and_varying_facts_stay_out_of_the_shape() -> None:
    """The shape is what the encoded attributes are cached by: two requests that differ only
    in id, tokens and timing share it; a different status does not."""
    one, two = exchange(body={"model": "gpt-4o"}), exchange(body={"model": "gpt-4o"})
    for ex, tokens in ((one, 10), (two, 99)):
        ex.status = 200
        ex.usage = UsageOutcome("gpt-4o", Usage(tokens, 1, None, None, None, "upstream"), 0.1)
    assert semconv.shape_of(one, None) == semconv.shape_of(two, None)
    assert one.request_id != two.request_id
    two.status = 500
    assert semconv.shape_of(one, None) != semconv.shape_of(two, "500")


def test_a_failed_call_without_an_answer_reports_error_as_finish_reason_and_last_server() -> None:
    ex = exchange(body={"model": "gpt-4o"})
    ex.attempts = [
        Attempt("primary", AttemptReason.RETRYABLE_STATUS, 503, started=ex.t_start),
        Attempt("local", AttemptReason.UNREACHABLE, started=ex.t_start),
    ]
    ex.status = 502
    shape = semconv.shape_of(ex, error_kind(ex))
    assert ("502", ("error",), semconv.Server("10.0.0.5", 8000), 2) == (
        shape.error,
        shape.finish_reasons,
        shape.server,
        shape.attempts,
    )
    assert ["503", "unreachable"] == [semconv.attempt_error(a) for a in ex.attempts]
    attempt = semconv.attempt_attributes(semconv.attempt_shape(ex, ex.attempts[1], 2))
    assert {
        "http.request.method": "POST",
        "llm_proxy.upstream": "local",
        "llm_proxy.attempt.number": 2,
        "llm_proxy.attempt.reason": "unreachable",
        "server.address": "10.0.0.5",
        "server.port": 8000,
        "error.type": "unreachable",
    } == attempt


def test_requests_that_generate_nothing_carry_no_genai_attributes() -> None:
    models = exchange("/openai/v1/models", method="GET")
    models.status = 200
    shape = semconv.shape_of(models, None)
    assert (None, "GET /openai") == (shape.operation, shape.span_name)
    assert not any(k.startswith("gen_ai.") for k in span_attributes(models))
    refused = exchange("/nowhere")
    refused.status = 404
    shape = semconv.shape_of(refused, error_kind(refused))
    assert ("POST", {"error.type": "404"}) == (shape.span_name, semconv.metric_attributes(shape))
    assert {"error.type": "404", "http.response.status_code": 404}.items() <= (
        span_attributes(refused).items()
    )


def test_a_trimmed_request_is_marked_compacted() -> None:
    ex = exchange(body={"model": "gpt-4o", "messages": []})
    assert "gen_ai.conversation.compacted" not in span_attributes(ex)
    ex.context = ContextOutcome(100, "exact", 120, trimmed_messages=2)
    assert True is span_attributes(ex)["gen_ai.conversation.compacted"]


def test_captured_content_uses_the_conventions_parts() -> None:
    body = {
        "model": "claude",
        "system": "be brief",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}],
            },
        ],
    }
    attrs = input_attributes(json.dumps(body).encode())
    assert [
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]},
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "t1", "name": "f", "arguments": {"a": 1}}],
        },
        {"role": "user", "parts": [{"type": "tool_call_response", "id": "t1", "response": "42"}]},
    ] == json.loads(attrs["gen_ai.input.messages"])
    assert [{"type": "text", "content": "be brief"}] == json.loads(
        attrs["gen_ai.system_instructions"]
    )
    assert [{"role": "assistant", "parts": [], "finish_reason": "error"}] == json.loads(
        output_attributes("", ())["gen_ai.output.messages"]
    )
    assert {"llm_proxy.content.omitted": "request body too large"} == input_attributes(
        b" " * (2 << 20)
    )
