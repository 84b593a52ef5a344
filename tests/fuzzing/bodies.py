"""Valid request bodies per endpoint: the starting point every malformed case changes."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Provider = Literal["openai", "anthropic"]
BodyBuilder = Callable[[random.Random], dict[str, Any]]

_WORDS = ("alpha", "beta", "token", "context", "über", "naïve", "日本語", "🙂", "\\", '"', "\n")
_OPENAI_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1", "o3-mini", "gpt-3.5-turbo", "my-model")
_CLAUDE_MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-3-opus", "my-claude")


def text(rng: random.Random, most: int = 40) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, most)))


def _openai_messages(rng: random.Random) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if rng.random() < 0.5:
        messages.append({"role": rng.choice(("system", "developer")), "content": text(rng)})
    for turn in range(rng.randint(1, 5)):
        content: Any = text(rng)
        if rng.random() < 0.2:
            content = [{"type": "text", "text": text(rng)}]
        messages.append({"role": "user", "content": content})
        if rng.random() < 0.2:
            function = {"name": "lookup", "arguments": '{"q": "x"}'}
            call = {"id": f"call_{turn}", "type": "function", "function": function}
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            messages.append({"role": "tool", "tool_call_id": f"call_{turn}", "content": "ok"})
        messages.append({"role": "assistant", "content": text(rng)})
    messages[-1] = {"role": "user", "content": text(rng, 8)}
    return messages


def _claude_messages(rng: random.Random) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for turn in range(rng.randint(1, 5)):
        messages.append({"role": "user", "content": text(rng)})
        if rng.random() < 0.2:
            use = {"type": "tool_use", "id": f"tu_{turn}", "name": "lookup", "input": {"q": "x"}}
            messages.append({"role": "assistant", "content": [use]})
            result = {"type": "tool_result", "tool_use_id": f"tu_{turn}", "content": "ok"}
            messages.append({"role": "user", "content": [result]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": text(rng)}]})
    messages[-1] = {"role": "user", "content": text(rng, 8)}
    return messages


def chat(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {"model": rng.choice(_OPENAI_MODELS), "messages": _openai_messages(rng)}
    if rng.random() < 0.4:
        body[rng.choice(("max_tokens", "max_completion_tokens"))] = rng.randint(1, 64)
    if rng.random() < 0.1:
        body["stream"] = True
    if rng.random() < 0.2:
        body["tools"] = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    return body


def messages(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": rng.choice(_CLAUDE_MODELS),
        "max_tokens": rng.randint(1, 64),
        "messages": _claude_messages(rng),
    }
    if rng.random() < 0.5:
        body["system"] = text(rng)
    if rng.random() < 0.1:
        body["stream"] = True
    return body


def count_tokens(rng: random.Random) -> dict[str, Any]:
    body = messages(rng)
    del body["max_tokens"]
    body.pop("stream", None)
    return body


def responses(rng: random.Random) -> dict[str, Any]:
    return {"model": rng.choice(_OPENAI_MODELS), "input": text(rng)}


def embeddings(rng: random.Random) -> dict[str, Any]:
    return {"model": "text-embedding-3-small", "input": [text(rng), text(rng)]}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A path under a route and the valid body (None: a GET) a case starts from."""

    name: str
    method: bytes
    path: bytes
    body: BodyBuilder | None
    weight: float

    def valid_body(self, rng: random.Random, provider: Provider) -> dict[str, Any]:
        """A fresh valid body; a GET endpoint borrows its provider's chat body."""
        build = self.body or (chat if provider == "openai" else messages)
        return build(rng)


ENDPOINTS: dict[Provider, tuple[Endpoint, ...]] = {
    "openai": (
        Endpoint("chat", b"POST", b"/v1/chat/completions", chat, 0.6),
        Endpoint("responses", b"POST", b"/v1/responses", responses, 0.15),
        Endpoint("embeddings", b"POST", b"/v1/embeddings", embeddings, 0.1),
        Endpoint("models", b"GET", b"/v1/models", None, 0.05),
        Endpoint("other", b"POST", b"/v1/fine_tuning/jobs", responses, 0.1),
    ),
    "anthropic": (
        Endpoint("messages", b"POST", b"/v1/messages", messages, 0.65),
        Endpoint("count_tokens", b"POST", b"/v1/messages/count_tokens", count_tokens, 0.15),
        Endpoint("models", b"GET", b"/v1/models", None, 0.05),
        Endpoint("other", b"POST", b"/v1/messages/batches", messages, 0.15),
    ),
}
"""Chat endpoints dominate: the context budget only looks at them. The Anthropic route's other
paths stay under ``/v1/messages`` so the fake answers them in Anthropic's shape."""


def pick_endpoint(rng: random.Random, provider: Provider) -> Endpoint:
    choices = ENDPOINTS[provider]
    return rng.choices(choices, weights=[e.weight for e in choices])[0]


def dumps(rng: random.Random, obj: Any) -> bytes:
    """Valid JSON in one of several spellings (separators, escaped or raw non-ASCII)."""
    separators = rng.choice(((",", ":"), (", ", ": "), (",\n", " : ")))
    return json.dumps(obj, ensure_ascii=rng.random() < 0.5, separators=separators).encode()
