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
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Server:
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
    if b'"model"' not in body:
        return None
    found = {m.group(1) for m in _MODEL.finditer(body)}
    if len(found) == 1:
        raw = found.pop()
        try:
            value = json.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode()
        except ValueError:
            return None
        return value if isinstance(value, str) else None
    if found and len(body) <= _PARSE_MAX_BYTES:  # nested "model" keys: ask the parser
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


@dataclass(frozen=True, slots=True)
class GenAiCall:
    """One model call as the conventions describe it (the request span and its metrics)."""

    operation: str
    provider: str
    request_model: str | None
    response_model: str | None
    server: Server | None
    error_type: str | None
    stream: bool
    time_to_first_chunk_s: float | None
    finish_reasons: tuple[str, ...]
    usage: Usage | None

    @property
    def span_name(self) -> str:
        return f"{self.operation} {self.request_model}" if self.request_model else self.operation

    def metric_attributes(self) -> Attributes:
        """The attributes every GenAI client metric carries (required ones first)."""
        attrs: Attributes = {OPERATION: self.operation, PROVIDER: self.provider}
        if self.request_model is not None:
            attrs[REQUEST_MODEL] = self.request_model
        if self.response_model is not None:
            attrs[RESPONSE_MODEL] = self.response_model
        if self.server is not None:
            attrs[SERVER_ADDRESS] = self.server.address
            attrs[SERVER_PORT] = self.server.port
        if self.error_type is not None:
            attrs[ERROR_TYPE] = self.error_type
        return attrs

    def span_attributes(self) -> Attributes:
        attrs = self.metric_attributes()
        if self.stream:
            attrs[REQUEST_STREAM] = True
        if self.time_to_first_chunk_s is not None:
            attrs[TIME_TO_FIRST_CHUNK] = self.time_to_first_chunk_s
        if self.finish_reasons:
            attrs[FINISH_REASONS] = self.finish_reasons
        if self.usage is not None:
            attrs.update(usage_attributes(self.usage))
        return attrs


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


def describe(ex: Exchange, error: str | None) -> GenAiCall | None:
    """The GenAI view of a finished request, whose ``error_kind`` is ``error``; None when it
    was not a model call."""
    route = ex.route
    if route is None:
        return None
    operation = operation_name(ex.request.method, route.provider.name, ex.tail)
    if operation is None:
        return None
    outcome = ex.usage
    usage = outcome.usage if outcome is not None and outcome.usage.source != "none" else None
    finish = outcome.finish_reasons if outcome is not None else ()
    if not finish and error is not None and operation != "embeddings":
        finish = ("error",)  # expected but never received: the conventions say "error"
    stream = requested_stream(ex)
    ttfc = ex.t_first_token - ex.t_start if stream and ex.t_first_token is not None else None
    return GenAiCall(
        operation=operation,
        provider=route.provider.name,
        request_model=requested_model(ex),
        response_model=outcome.model if outcome is not None else None,
        server=request_server(ex),
        error_type=error,
        stream=stream,
        time_to_first_chunk_s=ttfc,
        finish_reasons=finish,
        usage=usage,
    )


def request_attributes(ex: Exchange, error: str | None) -> Attributes:
    """What every request span carries, model call or not: HTTP facts and the proxy's own
    (``error`` is the request's ``error_kind``)."""
    attrs: Attributes = {
        HTTP_METHOD: ex.request.method,
        URL_PATH: ex.request.rel_url.raw_path,
        "llm_proxy.request_id": ex.request_id,
        "llm_proxy.attempts": sum(1 for a in ex.attempts if a.sent),
    }
    if ex.status is not None:
        attrs[HTTP_STATUS] = ex.status
    if ex.route is not None:
        attrs["llm_proxy.route"] = ex.route.name
    if ex.upstream is not None:
        attrs["llm_proxy.upstream"] = ex.upstream.name
    if ex.retry.waited_s > 0:
        attrs["llm_proxy.retry.waited_s"] = round(ex.retry.waited_s, 6)
    outcome = ex.usage
    if outcome is not None and outcome.usage.source == "estimate":
        attrs["llm_proxy.usage.estimated"] = True  # counted by the proxy, not reported
    if outcome is not None and outcome.cost_usd is not None:
        attrs["llm_proxy.cost_usd"] = outcome.cost_usd
    if error is not None:
        attrs[ERROR_TYPE] = error
    if ex.context is not None and ex.context.trimmed_messages > 0:
        attrs[COMPACTED] = True
    return attrs


def span_name(ex: Exchange, call: GenAiCall | None) -> str:
    if call is not None:
        return call.span_name
    return f"{ex.request.method} {ex.route.name}" if ex.route is not None else ex.request.method


def attempt_attributes(ex: Exchange, attempt: Attempt, number: int) -> Attributes:
    """One upstream attempt: the HTTP client call, and why it ended as it did."""
    attrs: Attributes = {
        HTTP_METHOD: ex.request.method,
        "llm_proxy.upstream": attempt.upstream,
        "llm_proxy.attempt.number": number,
        "llm_proxy.attempt.reason": attempt.reason.value,
    }
    upstream = _upstream(ex.route.config, attempt.upstream) if ex.route is not None else None
    if upstream is not None:
        server = server_of(upstream.base_url)
        attrs[SERVER_ADDRESS] = server.address
        attrs[SERVER_PORT] = server.port
    if attempt.status is not None:
        attrs[HTTP_STATUS] = attempt.status
    if attempt.waited_s > 0:
        attrs["llm_proxy.attempt.waited_s"] = round(attempt.waited_s, 6)
    if attempt.hint is not None:
        attrs["llm_proxy.attempt.wait_hint"] = attempt.hint
    if attempt.stream_failure is not None:
        attrs["llm_proxy.attempt.stream_failure"] = attempt.stream_failure.value
    if attempt.event_type is not None:
        attrs["llm_proxy.attempt.event_type"] = attempt.event_type
    error = attempt_error(attempt)
    if error is not None:
        attrs[ERROR_TYPE] = error
    return attrs


def attempt_error(attempt: Attempt) -> str | None:
    """An error status code, else the reason an attempt did not answer; None when it did."""
    if attempt.status is not None and attempt.status >= 400:
        return str(attempt.status)
    if attempt.reason is AttemptReason.ANSWERED:
        return None
    return attempt.reason.value
