"""Large, realistic request bodies for bench_large.py (and its tests): long histories of mixed
text (English prose, code, tool calls with long results, some other languages), built to a
byte size, deterministic for a seed."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from proxy.context.corpus import text

UNKNOWN_MODEL = "bench-local-model"
"""Not in the registry: cl100k_base plus the learned correction (the route gives a window)."""
UNKNOWN_WINDOW = 128_000

_LANGS = ("en",) * 10 + ("code",) * 5 + ("de", "fr", "ru", "zh", "ja", "ko", "digits")


@dataclass(frozen=True)
class Body:
    """One request: where it goes, its bytes, and what the proxy must answer."""

    name: str
    prefix: str
    """``/openai`` or ``/anthropic``."""
    path: str
    raw: bytes
    messages: int
    status: int
    """200 (forwarded, maybe trimmed) or 400 (refused: the newest turn alone is over)."""


def _turn_texts(rng: random.Random) -> tuple[str, str]:
    lang = rng.choice(_LANGS)
    return text(lang, rng, rng.randint(2, 8)), text(lang, rng, rng.randint(6, 24))


def chat_messages(target_bytes: int, seed: int = 1) -> list[dict[str, Any]]:
    """OpenAI chat: a system prompt, then turns until about ``target_bytes`` of JSON; every
    fifth turn calls a tool whose result is a long code listing."""
    rng = random.Random(seed)
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": text("en", rng, 40)},
    ]
    size = len(msgs[0]["content"])
    n = 0
    while size < target_bytes:
        question, answer = _turn_texts(rng)
        msgs.append({"role": "user", "content": question})
        size += len(question.encode()) + 30
        if n % 5 == 0:
            call_id = f"call_{n}"
            args = json.dumps({"query": text("en", rng, 1), "limit": rng.randint(1, 20)})
            call: dict[str, Any] = {"id": call_id, "type": "function"}
            call["function"] = {"name": "search_code", "arguments": args}
            result = text("code", rng, rng.randint(20, 80))
            msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
            msgs.append({"role": "tool", "tool_call_id": call_id, "content": result})
            size += len(args) + len(result) + 160
        msgs.append({"role": "assistant", "content": answer})
        size += len(answer.encode()) + 35
        n += 1
    msgs.append({"role": "user", "content": "Summarise the last answer in three bullet points."})
    return msgs


def anthropic_messages(target_bytes: int, seed: int = 2) -> list[dict[str, Any]]:
    """Anthropic Messages: text blocks, tool_use / tool_result pairs, a ``cache_control``
    breakpoint on the newest user message (as agent clients place it)."""
    rng = random.Random(seed)
    msgs: list[dict[str, Any]] = []
    size, n = 0, 0
    while size < target_bytes:
        question, answer = _turn_texts(rng)
        msgs.append({"role": "user", "content": [{"type": "text", "text": question}]})
        size += len(question.encode()) + 50
        if n % 5 == 0:
            tool_id = f"toolu_{n:06d}"
            result = text("code", rng, rng.randint(20, 80))
            use: dict[str, Any] = {"type": "tool_use", "id": tool_id, "name": "read_file"}
            use["input"] = {"path": f"src/module_{n}.py"}
            reading = {"type": "text", "text": "Reading."}
            msgs.append({"role": "assistant", "content": [reading, use]})
            block = {"type": "tool_result", "tool_use_id": tool_id, "content": result}
            msgs.append({"role": "user", "content": [block]})
            msgs.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
            size += len(result) + len(answer.encode()) + 260
        else:
            msgs.append({"role": "assistant", "content": answer})
            size += len(answer.encode()) + 35
        n += 1
    last = {"type": "text", "text": "Now fix the bug.", "cache_control": {"type": "ephemeral"}}
    msgs.append({"role": "user", "content": [last]})
    return msgs


def text_bytes(value: Any) -> int:
    """The UTF-8 bytes of the strings in ``value`` (keys not included): what the proxy's
    stepped grid measures (``stepped.grid_weights``)."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, dict):
        return sum(text_bytes(v) for v in value.values())
    if isinstance(value, list):
        return sum(text_bytes(v) for v in value)
    return 0


def around(messages: list[dict[str, Any]], bound: int) -> tuple[list[Any], list[Any]]:
    """The longest history made of ``messages``' pinned head and newest turns whose text is
    at most ``bound`` bytes, and the same with one more turn (just over)."""
    head = [m for m in messages[:1] if m.get("role") == "system"]
    starts = [i for i, m in enumerate(messages) if i >= len(head) and _turn_start(m)]
    size = text_bytes(head) + text_bytes(messages[starts[-1] :])
    under = len(starts) - 1
    while under > 0 and size + text_bytes(messages[starts[under - 1] : starts[under]]) <= bound:
        under -= 1
        size += text_bytes(messages[starts[under] : starts[under + 1]])
    if under == 0:
        raise ValueError("messages too short for the bound")
    return head + messages[starts[under] :], head + messages[starts[under - 1] :]


def _turn_start(msg: dict[str, Any]) -> bool:
    """A user message that is not tool results (chat or Anthropic)."""
    content = msg.get("content")
    results = isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)
    return msg.get("role") == "user" and not results


def _dump(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def bodies(mb: float, fits_kb: int = 300, bounds: dict[str, int] | None = None) -> list[Body]:
    """The bench's cases: three over-budget bodies of ``mb`` MB (gpt-4o, Claude, a model the
    registry does not know), one of ``fits_kb`` KB that fits gpt-4o's window, and one of
    ``mb`` MB whose newest message alone is over the budget (refused). ``bounds``: for
    ``gpt-4o`` and ``claude-sonnet-4-5``, two bodies whose text is just under (the token grid)
    and just over (the byte grid) this many bytes, the stepped grid's bound for the model's
    budget."""
    size = int(mb * 1e6)
    chat, msgs = "/v1/chat/completions", "/v1/messages"
    out = []
    history = chat_messages(size)
    for name, model in (("chat gpt-4o", "gpt-4o"), ("chat unknown model", UNKNOWN_MODEL)):
        raw = _dump({"model": model, "messages": history, "max_tokens": 1024})
        out.append(Body(f"{name}, {mb:g} MB", "/openai", chat, raw, len(history), 200))
    claude = anthropic_messages(size)
    raw = _dump(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "system": text("en", random.Random(3), 40),
            "messages": claude,
        }
    )
    name = f"anthropic claude-sonnet-4-5, {mb:g} MB"
    out.append(Body(name, "/anthropic", msgs, raw, len(claude), 200))
    small = chat_messages(fits_kb * 1000, seed=4)
    raw = _dump({"model": "gpt-4o", "messages": small, "max_tokens": 1024})
    out.append(Body(f"chat gpt-4o fits, {fits_kb} KB", "/openai", chat, raw, len(small), 200))
    for model, bound in (bounds or {}).items():
        anthropic = model.startswith("claude")
        make = anthropic_messages if anthropic else chat_messages
        longer = make(int(bound * 1.2), seed=6)
        for side, part in zip(("under", "over"), around(longer, bound), strict=True):
            body: dict[str, Any] = {"model": model, "messages": part, "max_tokens": 1024}
            mb_text = f"{text_bytes(part) / 1e6:.2f} MB of text"
            name = f"{model}, just {side} the grid bound ({mb_text})"
            prefix, path = ("/anthropic", msgs) if anthropic else ("/openai", chat)
            out.append(Body(name, prefix, path, _dump(body), len(part), 200))
    huge = text("en", random.Random(5), 12_000)  # ~1 MB, ~200k tokens: over any 128k budget
    refused = [*history[:-1], {"role": "user", "content": huge}]
    raw = _dump({"model": "gpt-4o", "messages": refused, "max_tokens": 1024})
    out.append(Body(f"chat gpt-4o refused, {mb:g} MB", "/openai", chat, raw, len(refused), 400))
    return out
