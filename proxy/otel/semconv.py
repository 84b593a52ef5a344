"""What the proxy's spans and metrics say about a request, in the GenAI semantic conventions.

Pure: it reads the exchange's settled outcome records and returns typed records and attribute
maps, with no OpenTelemetry import, so it is importable and testable without the SDK.

Names follow the published OpenTelemetry semantic conventions for GenAI clients (semconv
v1.37 to v1.41: ``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage``,
``gen_ai.client.operation.time_to_first_chunk``, ``gen_ai.usage.cache_creation.input_tokens``).
The proxy's own facts (route, attempts, waits, cost) use the ``llm_proxy.`` namespace.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import urlsplit

from ..config import Route, Upstream
from ..exchange import Exchange
from ..outcomes import Attempt, AttemptReason
from ..usage import Usage

AttributeValue = str | bool | int | float | Sequence[str]
Attributes = dict[str, AttributeValue]

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_STREAM = "gen_ai.request.stream"
RESPONSE_MODEL = "gen_ai.response.model"
FINISH_REASONS = "gen_ai.response.finish_reasons"
TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
CACHE_CREATION_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
REASONING_TOKENS = "gen_ai.usage.reasoning.output_tokens"
TOKEN_TYPE = "gen_ai.token.type"
COMPACTED = "gen_ai.conversation.compacted"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
HTTP_METHOD = "http.request.method"
HTTP_STATUS = "http.response.status_code"
URL_PATH = "url.path"

DURATION_METRIC = "gen_ai.client.operation.duration"
TOKEN_USAGE_METRIC = "gen_ai.client.token.usage"
TTFC_METRIC = "gen_ai.client.operation.time_to_first_chunk"
DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))
"""The conventions' advice: 0.01, 0.02, 0.04 ... 81.92 seconds."""
TOKEN_BUCKETS = tuple(4**i for i in range(14))
"""The conventions' advice: 1, 4, 16 ... 67108864 tokens."""

COMPACTED_EVENT = "gen_ai.conversation.compacted"
HOLD_EVENT = "llm_proxy.hold"
SKIPPED_EVENT = "llm_proxy.upstream.skipped"

_OPERATIONS = {
    "openai": (
        ("/chat/completions", "chat"),
        ("/completions", "text_completion"),
        ("/embeddings", "embeddings"),
        ("/responses", "chat"),
    ),
    "anthropic": (("/v1/messages", "chat"), ("/v1/complete", "text_completion")),
}
_MODEL = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.){1,256})"')
_STREAM = re.compile(rb'"stream"\s*:\s*true')
_PARSE_MAX_BYTES = 256 * 1024
"""Above this a body is not parsed on the loop just to name its model (peeked only)."""


def operation_name(method: str, provider: str, tail: str) -> str | None:
    """``chat``, ``text_completion``, ``embeddings``; None for calls that generate nothing."""
    if method != "POST":
        return None
    path = tail.rstrip("/")
    for suffix, operation in _OPERATIONS.get(provider, ()):
        if path.endswith(suffix):
            return operation
    return None


class Server(NamedTuple):
    address: str
    port: int


@functools.lru_cache(maxsize=256)
def server_of(base_url: str) -> Server:
    """Host and port of an upstream (config data, hence the cache)."""
    parts = urlsplit(base_url)
    default = 443 if parts.scheme == "https" else 80
    return Server(parts.hostname or "", parts.port or default)


def requested_model(ex: Exchange) -> str | None:
    """The model the client asked for, read from its bytes without parsing large bodies."""
    body = ex.original_body
    first = _MODEL.search(body)
    if first is None:
        return None
    raw = first.group(1)
    again = _MODEL.search(body, first.end())
    if again is None or all(m.group(1) == raw for m in _MODEL.finditer(body, again.start())):
        try:
            value = json.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode()
        except ValueError:
            return None
        return value if isinstance(value, str) else None
    if len(body) <= _PARSE_MAX_BYTES:  # nested "model" keys that differ: ask the parser
        data = ex.json_object()
        model = data.get("model") if data is not None else None
        return model if isinstance(model, str) else None
    return None


def requested_stream(ex: Exchange) -> bool:
    return ex.stream or _STREAM.search(ex.original_body) is not None


def _upstream(route: Route, name: str) -> Upstream | None:
    return next((u for u in route.upstreams if u.name == name), None)


def request_server(ex: Exchange) -> Server | None:
    """The upstream that answered, else the last one tried: the server behind the proxy."""
    if ex.upstream is not None:
        return server_of(ex.upstream.base_url)
    if ex.route is None:
        return None
    route = ex.route.config
    sent = [a for a in ex.attempts if a.sent]
    upstream = _upstream(route, sent[-1].upstream) if sent else route.upstreams[0]
    return server_of(upstream.base_url) if upstream is not None else None


class Shape(NamedTuple):
    """Everything a request span's low-cardinality attributes (and its metric series) are
    made of. Equal shapes give equal attributes, so their encoding is computed once and
    reused: the per-request work is only the varying facts (ids, token counts, timings)."""

    method: str
    path: str
    status: int | None
    route: str | None
    upstream: str | None
    attempts: int
    error: str | None
    estimated: bool
    compacted: bool
    operation: str | None
    """None: not a model call (no GenAI attributes, no metrics)."""
    provider: str | None
    request_model: str | None
    response_model: str | None
    server: Server | None
    stream: bool
    finish_reasons: tuple[str, ...]

    @property
    def span_name(self) -> str:
        if self.operation is not None:
            model = self.request_model
            return f"{self.operation} {model}" if model else self.operation
        return f"{self.method} {self.route}" if self.route is not None else self.method


def shape_of(ex: Exchange, error: str | None) -> Shape:
    """The shape of a finished request whose ``error_kind`` is ``error``."""
    route = ex.route
    outcome = ex.usage
    operation = None
    if route is not None:
        operation = operation_name(ex.request.method, route.provider.name, ex.tail)
    finish: tuple[str, ...] = ()
    if operation is not None:
        finish = outcome.finish_reasons if outcome is not None else ()
        if not finish and error is not None and operation != "embeddings":
            finish = ("error",)  # expected but never received: the conventions say "error"
    genai = operation is not None
    return Shape(  # positional: this runs once per request
        ex.request.method,
        ex.request.rel_url.raw_path,
        ex.status,
        route.name if route is not None else None,
        ex.upstream.name if ex.upstream is not None else None,
        sum(1 for a in ex.attempts if a.sent),
        error,
        outcome is not None and outcome.usage.source == "estimate",
        ex.context is not None and ex.context.trimmed_messages > 0,
        operation,
        route.provider.name if genai and route is not None else None,
        requested_model(ex) if genai else None,
        outcome.model if genai and outcome is not None else None,
        request_server(ex) if genai else None,
        genai and requested_stream(ex),
        finish,
    )


def metric_attributes(shape: Shape) -> Attributes:
    """The attributes every GenAI client metric carries (required ones first)."""
    attrs: Attributes = {}
    if shape.operation is not None and shape.provider is not None:
        attrs[OPERATION] = shape.operation
        attrs[PROVIDER] = shape.provider
    if shape.request_model is not None:
        attrs[REQUEST_MODEL] = shape.request_model
    if shape.response_model is not None:
        attrs[RESPONSE_MODEL] = shape.response_model
    if shape.server is not None:
        attrs[SERVER_ADDRESS] = shape.server.address
        attrs[SERVER_PORT] = shape.server.port
    if shape.error is not None:
        attrs[ERROR_TYPE] = shape.error
    return attrs


def shape_attributes(shape: Shape) -> Attributes:
    """A request span's attributes that depend on its shape only."""
    attrs: Attributes = {
        HTTP_METHOD: shape.method,
        URL_PATH: shape.path,
        "llm_proxy.attempts": shape.attempts,
    }
    if shape.status is not None:
        attrs[HTTP_STATUS] = shape.status
    if shape.route is not None:
        attrs["llm_proxy.route"] = shape.route
    if shape.upstream is not None:
        attrs["llm_proxy.upstream"] = shape.upstream
    if shape.estimated:
        attrs["llm_proxy.usage.estimated"] = True  # counted by the proxy, not reported
    if shape.compacted:
        attrs[COMPACTED] = True
    attrs.update(metric_attributes(shape))
    if shape.stream:
        attrs[REQUEST_STREAM] = True
    if shape.finish_reasons:
        attrs[FINISH_REASONS] = shape.finish_reasons
    return attrs


def varying_attributes(ex: Exchange, shape: Shape) -> Attributes:
    """A request span's attributes that change from request to request."""
    attrs: Attributes = {"llm_proxy.request_id": ex.request_id}
    if ex.retry.waited_s > 0:
        attrs["llm_proxy.retry.waited_s"] = round(ex.retry.waited_s, 6)
    outcome = ex.usage
    if outcome is not None and outcome.cost_usd is not None:
        attrs["llm_proxy.cost_usd"] = outcome.cost_usd
    if shape.operation is None:
        return attrs
    ttfc = time_to_first_chunk(ex, shape)
    if ttfc is not None:
        attrs[TIME_TO_FIRST_CHUNK] = ttfc
    if outcome is not None and outcome.usage.source != "none":
        attrs.update(usage_attributes(outcome.usage))
    return attrs


def time_to_first_chunk(ex: Exchange, shape: Shape) -> float | None:
    """Seconds from arrival to the first content of a streamed answer (None otherwise)."""
    if shape.stream and ex.t_first_token is not None:
        return ex.t_first_token - ex.t_start
    return None


def usage_attributes(usage: Usage) -> Attributes:
    """Token counts in the conventions' names; unknown counts are left out, never 0."""
    counts = {
        INPUT_TOKENS: usage.prompt_tokens,
        OUTPUT_TOKENS: usage.completion_tokens,
        CACHE_READ_TOKENS: usage.cached_tokens,
        CACHE_CREATION_TOKENS: usage.cache_creation_tokens,
        REASONING_TOKENS: usage.reasoning_tokens,
    }
    return {name: n for name, n in counts.items() if n is not None}


class AttemptShape(NamedTuple):
    """An attempt's attributes except its wait (the only fact that varies much)."""

    method: str
    upstream: str
    number: int
    reason: str
    status: int | None
    hint: str | None
    stream_failure: str | None
    event_type: str | None
    server: Server | None
    error: str | None


def attempt_shape(ex: Exchange, attempt: Attempt, number: int) -> AttemptShape:
    upstream = _upstream(ex.route.config, attempt.upstream) if ex.route is not None else None
    failure = attempt.stream_failure
    return AttemptShape(
        ex.request.method,
        attempt.upstream,
        number,
        attempt.reason.value,
        attempt.status,
        attempt.hint,
        failure.value if failure is not None else None,
        attempt.event_type,
        server_of(upstream.base_url) if upstream is not None else None,
        attempt_error(attempt),
    )


def attempt_attributes(shape: AttemptShape) -> Attributes:
    """One upstream attempt: the HTTP client call, and why it ended as it did."""
    attrs: Attributes = {
        HTTP_METHOD: shape.method,
        "llm_proxy.upstream": shape.upstream,
        "llm_proxy.attempt.number": shape.number,
        "llm_proxy.attempt.reason": shape.reason,
    }
    if shape.server is not None:
        attrs[SERVER_ADDRESS] = shape.server.address
        attrs[SERVER_PORT] = shape.server.port
    optional = {
        HTTP_STATUS: shape.status,
        "llm_proxy.attempt.wait_hint": shape.hint,
        "llm_proxy.attempt.stream_failure": shape.stream_failure,
        "llm_proxy.attempt.event_type": shape.event_type,
        ERROR_TYPE: shape.error,
    }
    attrs.update({k: v for k, v in optional.items() if v is not None})
    return attrs


def attempt_error(attempt: Attempt) -> str | None:
    """An error status code, else the reason an attempt did not answer; None when it did."""
    if attempt.status is not None and attempt.status >= 400:
        return str(attempt.status)
    if attempt.reason is AttemptReason.ANSWERED:
        return None
    return attempt.reason.value
