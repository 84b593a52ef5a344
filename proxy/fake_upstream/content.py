"""Deterministic content and token arithmetic shared by both fake providers.

Tests assert on these numbers, so they are simple enough to compute by hand:

- content chunk ``i`` (0-based) is ``"tok{i} "``; the full text of ``n`` chunks is
  :func:`fake_text(n) <fake_text>`, e.g. ``"tok0 tok1 tok2 "``;
- content chunks = ``x-fake-chunks`` (default 5), capped by the request's
  ``max_tokens``/``max_completion_tokens``/``max_output_tokens`` (finish reason then
  ``length`` / ``max_tokens`` / status ``incomplete``);
- completion/output tokens = the number of content chunks sent (Anthropic's
  ``message_start`` says 1, as the real API does; ``message_delta`` has the final count);
- prompt/input tokens = :func:`prompt_tokens`: for every message (and for a top-level
  ``system`` / ``instructions`` / string ``input``) 3 tokens plus the number of
  whitespace-separated words of its text. Text is a string, or the ``text``/``content``
  of the parts in a list (nested lists are followed; images and other parts count 0);
- embeddings tokens = words of each input string (or length of each token-id list).
"""

from __future__ import annotations

import json
import re
from typing import Any

TOKENS_PER_MESSAGE = 3
"""Fixed overhead per message, like the OpenAI cookbook formula."""

CREATED = 1_700_000_000
"""Fixed ``created`` timestamp so whole response bodies are reproducible."""

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes, as the real APIs send them."""
    return _dumps(obj).encode()


def chunk_text(i: int) -> str:
    """Text of content chunk ``i`` (0-based)."""
    return f"tok{i} "


def fake_text(n: int) -> str:
    """The whole completion text of a response with ``n`` content chunks."""
    return "".join(chunk_text(i) for i in range(n))


def words(content: Any) -> int:
    """Whitespace-separated words in a message's content (string or list of parts)."""
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        return sum(words(part) for part in content)
    if isinstance(content, dict):
        return words(content.get("text")) + words(content.get("content"))
    return 0


def _turn(content: Any) -> int:
    return TOKENS_PER_MESSAGE + words(content)


def prompt_tokens(payload: dict[str, Any]) -> int:
    """Input tokens of a chat, messages or responses request (see the module docstring)."""
    total = 0
    for key in ("system", "instructions"):
        if payload.get(key):
            total += _turn(payload[key])
    messages = payload.get("messages")
    if isinstance(messages, list):
        total += sum(_turn(m.get("content")) for m in messages if isinstance(m, dict))
    inp = payload.get("input")
    if isinstance(inp, str):
        total += _turn(inp)
    elif isinstance(inp, list):
        total += sum(_turn(item.get("content")) for item in inp if isinstance(item, dict))
    return total


def embedding_tokens(inp: Any) -> int:
    """Input tokens of an embeddings request: words of each string, length of each token list."""
    if isinstance(inp, str):
        return len(inp.split())
    if isinstance(inp, list):
        if inp and all(isinstance(x, int) for x in inp):
            return len(inp)
        return sum(embedding_tokens(x) for x in inp)
    return 0


def output_limit(payload: dict[str, Any]) -> int | None:
    """The request's output cap, whichever of the three API spellings it uses."""
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = payload.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE event terminated by its blank line; ``data`` is JSON-encoded unless bytes."""
    raw = data if isinstance(data, bytes) else dumps(data)
    if event is None:
        return b"data: " + raw + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + raw + b"\n\n"


def hole(name: str) -> str:
    """A placeholder value for :class:`Template`, filled per chunk."""
    return f"\x00{name}\x00"


_HOLE = re.compile(rb'"\\u0000(\w+)\\u0000"')


class Template:
    """An SSE event pre-serialised around named holes, so each chunk costs a few joins.

    Built once per response: ``t = Template({"delta": hole("text")})`` then
    ``t.fill(text="tok3 ")``. Filled values are JSON-encoded.
    """

    def __init__(self, obj: Any, event: str | None = None) -> None:
        parts = _HOLE.split(dumps(obj))
        prefix = b"data: " if event is None else b"event: " + event.encode() + b"\ndata: "
        self._literals = parts[0::2]
        self._literals[0] = prefix + self._literals[0]
        self._literals[-1] += b"\n\n"
        self._names = [name.decode() for name in parts[1::2]]

    def fill(self, **values: Any) -> bytes:
        out = [self._literals[0]]
        for name, literal in zip(self._names, self._literals[1:], strict=True):
            out.append(dumps(values[name]))
            out.append(literal)
        return b"".join(out)


def prompt_sequence(payload: dict[str, Any]) -> tuple[list[str], list[int]]:
    """The prompt as the fake's tokens, in prompt order, and the Anthropic cache breakpoints.

    ``len(tokens) == prompt_tokens(payload)``: each message is 3 marker tokens (its role) then
    its words, in the order ``prompt_tokens`` counts them. A breakpoint is the token position
    right after a block that carries ``cache_control`` (the prefix a provider would cache).
    """
    tokens: list[str] = []
    breakpoints: list[int] = []

    def turn(role: Any, content: Any) -> None:
        tokens.extend((f"<{role}>", "<m>", "<m>"))
        walk(content)

    def walk(content: Any) -> None:
        if isinstance(content, str):
            tokens.extend(content.split())
        elif isinstance(content, list):
            for part in content:
                walk(part)
        elif isinstance(content, dict):
            walk(content.get("text"))
            walk(content.get("content"))
            if content.get("cache_control") is not None:
                breakpoints.append(len(tokens))

    for key in ("system", "instructions"):
        if payload.get(key):
            turn(key, payload[key])
    messages = payload.get("messages")
    for m in messages if isinstance(messages, list) else []:
        if isinstance(m, dict):
            turn(m.get("role"), m.get("content"))
    inp = payload.get("input")
    if isinstance(inp, str):
        turn("user", inp)
    elif isinstance(inp, list):
        for item in inp:
            if isinstance(item, dict):
                turn(item.get("role", item.get("type")), item.get("content"))
    return tokens, breakpoints
