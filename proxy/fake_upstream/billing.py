"""What the fake billed: per answer (and so per credential), the usage it reported.

A provider's bill is the usage its answers state, at its prices. The fake keeps one
:class:`Answer` per answer to a provider path, in one convention for both providers
(``input`` is all input, cache reads and writes included; ``cached_read`` and
``cache_write`` are parts of it; ``output`` is all output), with the proxy's request id
(``x-request-id``) so a test can join the bill with the proxy's ledger, attempt by attempt.

What counts as billed, precisely:

- an error answer (status >= 400, an injected 429/5xx): nothing;
- an answer sent whole (a JSON body; a stream through its terminal event): the usage it
  reported, and that is also ``reported``;
- a stream the client left before its end: a provider bills the whole prompt and the output
  it generated before it noticed. The fake generates one content chunk per write and stops at
  the first write that fails, so it bills the input side its answer states (the full usage it
  would have sent, computed before the first byte) and ``output`` = the content chunks it
  wrote (``content_chunks``, one token each in the fake's units). ``reported`` is only what
  went out before the client left (Anthropic's ``message_start`` states the input side; an
  OpenAI stream states nothing before its end). A stream that states no usage at all (OpenAI
  without ``include_usage``) bills its output only, and ``stated`` is None, so a test can tell.

Cost, when the fake has ``prices`` for the model: integer pico-USD, each kind priced once
(cache reads at ``cached_read``, writes at ``cache_write``, the rest of the input at ``input``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .calls import Call, Reply

__all__ = ["Answer", "Billing", "PriceRow", "Tokens"]

_TERMINAL = (b"data: [DONE]", b"event: message_stop", b"event: response.completed")
_CONTENT_TYPES = frozenset({"content_block_delta", "response.output_text.delta"})
_PICO_PER_MILLION = 10**6
"""USD per million tokens -> pico-USD per token."""


@dataclass(frozen=True)
class Tokens:
    input: int = 0
    cached_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            self.input + other.input,
            self.cached_read + other.cached_read,
            self.cache_write + other.cache_write,
            self.output + other.output,
            self.reasoning + other.reasoning,
        )


@dataclass(frozen=True)
class PriceRow:
    """USD per million tokens (at most 6 decimals: the pico-USD cost is then exact)."""

    input: float
    output: float
    cached_read: float | None = None
    cache_write: float | None = None

    def cost_picousd(self, t: Tokens) -> int:
        def rate(usd: float | None) -> int:
            return round((self.input if usd is None else usd) * _PICO_PER_MILLION)

        fresh = t.input - t.cached_read - t.cache_write
        return (
            fresh * rate(self.input)
            + t.cached_read * rate(self.cached_read)
            + t.cache_write * rate(self.cache_write)
            + t.output * rate(self.output)
        )


@dataclass
class Answer:
    request_id: str | None
    credential: str
    """Digest of the credential header (``caching.credential_of``): whose bill."""
    provider: str
    path: str
    model: str
    """The model the answer names (what served it)."""
    status: int
    stream: bool
    stated: Tokens | None
    """The usage the whole answer states (None: it states none)."""
    reported: Tokens | None = None
    """The usage in what was written before the answer ended or the client left."""
    content_chunks: int = 0
    """Content events written (streams)."""
    finished: bool = False
    """Sent whole: the JSON body, or the stream through its terminal event."""
    _seen: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def billed(self) -> Tokens:
        if self.status >= 400:
            return Tokens()
        if self.finished:
            return self.reported or Tokens()
        stated = self.stated or Tokens()
        return Tokens(stated.input, stated.cached_read, stated.cache_write, self.content_chunks)

    def wrote(self, data: bytes) -> None:
        """Called after each successful write: a whole JSON body, or one SSE event."""
        if not self.stream:
            self._merge(_json(data))
            self.finished = True
            return
        if data.startswith(_TERMINAL):
            self.finished = True
        for obj in _event_objects(data):
            if _is_content(obj):
                self.content_chunks += 1
            self._merge(obj)

    def _merge(self, obj: Any) -> None:
        found = _usage_fields(obj)
        if found:
            self._seen.update(found)
            self.reported = _tokens(self._seen)


class Billing:
    """Every answer the fake gave, in order; ``prices`` by model name as the fake served it."""

    def __init__(self, prices: Mapping[str, PriceRow] | None = None) -> None:
        self.prices = dict(prices or {})
        self.answers: list[Answer] = []

    def clear(self) -> None:
        self.answers.clear()

    def open(self, request: web.BaseRequest, call: Call, reply: Reply) -> Answer:
        """Record an answer about to be written; its ``wrote`` follows each write."""
        if reply.events is not None:
            objects = [obj for event in reply.events for obj in _event_objects(event)]
        else:
            objects = [_json(reply.body)]
        seen: dict[str, int] = {}
        model = ""
        for obj in objects:
            seen.update(_usage_fields(obj))
            model = model or _model_of(obj)
        answer = Answer(
            request.headers.get("x-request-id"),
            call.credential,
            call.provider,
            call.path,
            model,
            reply.status,
            stream=reply.events is not None,
            stated=_tokens(seen) if seen else None,
        )
        self.answers.append(answer)
        return answer

    def cost_picousd(self, answer: Answer) -> int | None:
        """The answer's billed cost (None: no price for its model)."""
        row = self.prices.get(answer.model)
        return None if row is None else row.cost_picousd(answer.billed)

    def by_credential(self) -> dict[str, Tokens]:
        totals: dict[str, Tokens] = {}
        for answer in self.answers:
            totals[answer.credential] = totals.get(answer.credential, Tokens()) + answer.billed
        return totals


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _event_objects(event: bytes) -> list[Any]:
    """The JSON ``data:`` payloads of one SSE event (the fake writes one event per write)."""
    out = []
    for line in event.split(b"\n"):
        if line.startswith(b"data: ") and line != b"data: [DONE]":
            obj = _json(line[6:])
            if obj is not None:
                out.append(obj)
    return out


def _model_of(obj: Any) -> str:
    """The served model an answer names (top level, Anthropic message, Responses response)."""
    if not isinstance(obj, dict):
        return ""
    for holder in (obj, obj.get("message"), obj.get("response")):
        if isinstance(holder, dict) and isinstance(holder.get("model"), str):
            return str(holder["model"])
    return ""


def _is_content(obj: Any) -> bool:
    if not isinstance(obj, dict):
        return False
    if obj.get("type") in _CONTENT_TYPES:
        return True
    for choice in obj.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and (delta.get("content") or delta.get("tool_calls")):
            return True
    return False


def _usage_fields(obj: Any) -> dict[str, int]:
    """Provider-native usage numbers in one object, flattened (``details.cached_tokens``)."""
    if not isinstance(obj, dict):
        return {}
    holder = obj.get("message") if obj.get("type") == "message_start" else obj
    if isinstance(holder, dict) and isinstance(holder.get("response"), dict):
        holder = holder["response"]  # Responses API events
    usage = holder.get("usage") if isinstance(holder, dict) else None
    if not isinstance(usage, dict):
        return {}
    flat: dict[str, int] = {}
    for name, value in usage.items():
        if isinstance(value, int) and not isinstance(value, bool):
            flat[name] = value
        elif isinstance(value, dict):
            for inner, count in value.items():
                if isinstance(count, int) and not isinstance(count, bool):
                    flat[f"{name}.{inner}"] = count
    return flat


def _tokens(u: Mapping[str, int]) -> Tokens:
    if "prompt_tokens" in u or "completion_tokens" in u:  # Chat Completions, embeddings
        return Tokens(
            input=u.get("prompt_tokens", 0),
            cached_read=u.get("prompt_tokens_details.cached_tokens", 0),
            output=u.get("completion_tokens", 0),
            reasoning=u.get("completion_tokens_details.reasoning_tokens", 0),
        )
    if "input_tokens_details.cached_tokens" in u:  # Responses API: input includes the cache
        return Tokens(
            input=u.get("input_tokens", 0),
            cached_read=u.get("input_tokens_details.cached_tokens", 0),
            output=u.get("output_tokens", 0),
            reasoning=u.get("output_tokens_details.reasoning_tokens", 0),
        )
    read = u.get("cache_read_input_tokens", 0)  # Anthropic: input_tokens excludes the cache
    write = u.get("cache_creation_input_tokens", 0)
    return Tokens(u.get("input_tokens", 0) + read + write, read, write, u.get("output_tokens", 0))
