"""Context-length errors read into figures, and the budget for the one error-driven retry.

Servers state what they counted. When a request overflows, the error body says the window
and (mostly) the prompt tokens by the server's own tokenizer, which is exactly what the
proxy's estimate lacks. ``parse_overflow`` reads those figures from a 400 body (gzip too);
``retry_budget`` turns them into a trim target in the proxy's counting units, using the ratio
server tokens / proxy estimate measured on the very request that failed.

Shapes read (provider-behaviour.md section 7; never trusted blindly: a figure is used only
when its sentence is recognised, and a code/type alone yields a record without figures):

- OpenAI chat: ``code: context_length_exceeded``, "This model's maximum context length is N
  tokens. However, your messages resulted in M tokens..." or "...you requested T tokens (P in
  the messages, C in the completion)"; Responses API: the code with "Your input exceeds the
  context window of this model" (no figures).
- Anthropic: "prompt is too long: M tokens > N maximum"; "input length and `max_tokens`
  exceed context limit: M + C > N".
- llama.cpp server: ``type: exceed_context_size_error`` with ``n_prompt_tokens``, ``n_ctx``.
- vLLM: "...maximum context length is N tokens. However, you requested T tokens (P in the
  messages, C in the completion)", newer "...However, your request has P input tokens", and
  "'max_tokens' or 'max_completion_tokens' is too large: C. This model's maximum context
  length is N tokens and your request has P input tokens".
- Ollama: "input length exceeds the context length" (no figures; by default Ollama does not
  error at all, it truncates the prompt's front silently).
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["ContextOverflow", "OverflowSource", "RetryBudget", "parse_overflow", "retry_budget"]

MAX_ERROR_BYTES = 64 * 1024
"""Error bodies are small; a larger (or larger-when-inflated) body is not read."""


class OverflowSource(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    LLAMA_CPP = "llama.cpp"
    VLLM = "vllm"
    OLLAMA = "ollama"


@dataclass(frozen=True, slots=True)
class ContextOverflow:
    """One context-length error; each figure is None when the server did not state it."""

    source: OverflowSource
    window: int | None
    """The server's maximum context length (Anthropic: the N of "> N maximum")."""
    prompt_tokens: int | None
    """Input tokens by the server's count."""
    completion_tokens: int | None
    """Output tokens the server reserved for the request (stated max_tokens), if it said."""
    requested_tokens: int | None
    """Prompt + completion as the server added them, if it said."""


_N = r"(\d[\d,]*)"
_WINDOW = re.compile(rf"maximum context length is {_N} tokens")
_RESULTED = re.compile(rf"your messages resulted in {_N} tokens")
_REQUESTED = re.compile(
    rf"you requested {_N} tokens \({_N} (?:in the messages|in your prompt)[,;] {_N} "
    r"(?:in|for) the completion\)"
)
_REQUEST_HAS = re.compile(rf"your request has {_N} input tokens")
_TOO_LARGE = re.compile(rf"is too large: {_N}")
_ANTHROPIC_PROMPT = re.compile(rf"prompt is too long: {_N} tokens > {_N} maximum")
_ANTHROPIC_SUM = re.compile(rf"exceed context limit: {_N} \+ {_N} > {_N}")
_OPENAI_NO_FIGURES = re.compile(r"input exceeds the context window", re.IGNORECASE)
_OLLAMA = re.compile(r"exceeds the context length", re.IGNORECASE)


def _num(match: re.Match[str] | None, group: int = 1) -> int | None:
    return None if match is None else int(match.group(group).replace(",", ""))


def _decoded(body: bytes, content_encoding: str | None) -> Any:
    """The JSON of an error body, inflating gzip/deflate; None when unreadable."""
    encoding = (content_encoding or "").strip().lower()
    try:
        if encoding == "gzip" or body[:2] == b"\x1f\x8b":
            body = zlib.decompressobj(wbits=31).decompress(body, MAX_ERROR_BYTES + 1)
        elif encoding == "deflate":
            body = zlib.decompressobj().decompress(body, MAX_ERROR_BYTES + 1)
        if len(body) > MAX_ERROR_BYTES:
            return None
        return json.loads(body)
    except (zlib.error, ValueError):
        return None


def _error_object(doc: Any) -> dict[str, Any]:
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        return doc["error"]
    return doc if isinstance(doc, dict) else {}


def parse_overflow(
    status: int, body: bytes, content_encoding: str | None = None
) -> ContextOverflow | None:
    """The context-length error in a response, or None when the response is not one."""
    if status not in (400, 413, 422) or len(body) > MAX_ERROR_BYTES:
        return None
    doc = _decoded(body, content_encoding)
    err = _error_object(doc)
    message = err.get("message")
    if not isinstance(message, str):
        message = doc.get("message") if isinstance(doc, dict) else None
    text = message if isinstance(message, str) else ""
    if err.get("type") == "exceed_context_size_error":
        return _llama_cpp(err)
    if m := _ANTHROPIC_PROMPT.search(text):
        return ContextOverflow(OverflowSource.ANTHROPIC, _num(m, 2), _num(m), None, None)
    if m := _ANTHROPIC_SUM.search(text):
        p, c, n = _num(m), _num(m, 2), _num(m, 3)
        return ContextOverflow(OverflowSource.ANTHROPIC, n, p, c, (p or 0) + (c or 0))
    if _WINDOW.search(text):
        return _openai_or_vllm(err, text)
    if err.get("code") == "context_length_exceeded" or _OPENAI_NO_FIGURES.search(text):
        return ContextOverflow(OverflowSource.OPENAI, None, None, None, None)
    if _OLLAMA.search(text):
        return ContextOverflow(OverflowSource.OLLAMA, None, None, None, None)
    return None


def _llama_cpp(err: dict[str, Any]) -> ContextOverflow:
    def figure(key: str) -> int | None:
        value = err.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    prompt = figure("n_prompt_tokens")
    return ContextOverflow(OverflowSource.LLAMA_CPP, figure("n_ctx"), prompt, None, prompt)


def _openai_or_vllm(err: dict[str, Any], text: str) -> ContextOverflow:
    """OpenAI sends ``code: context_length_exceeded``; vLLM's code is the number 400."""
    source = (
        OverflowSource.OPENAI
        if err.get("code") == "context_length_exceeded"
        else OverflowSource.VLLM
    )
    window = _num(_WINDOW.search(text))
    if m := _REQUESTED.search(text):
        return ContextOverflow(source, window, _num(m, 2), _num(m, 3), _num(m))
    prompt = _num(_RESULTED.search(text)) or _num(_REQUEST_HAS.search(text))
    completion = _num(_TOO_LARGE.search(text))
    requested = None if prompt is None or completion is None else prompt + completion
    return ContextOverflow(source, window, prompt, completion, requested)


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """Where to trim to for the single retry after a context-length error."""

    tokens: int
    """The trim target in the proxy's counting units (compare with the same cost function
    that produced ``sent_estimate``)."""
    server_budget: int | None
    """The input the server will accept for this request, in the server's tokens."""
    ratio: float | None
    """Server tokens per proxy token, measured on the rejected request (None: not stated)."""


SAFETY_SHARE = 0.03
"""Headroom below the server's own limit: the ratio was measured on the whole prompt, and the
messages that remain after trimming may tokenize a little differently."""
BLIND_SHRINK = 0.7
"""Without figures (OpenAI Responses, Ollama), the retry sends at most this share of what
failed."""


def retry_budget(
    overflow: ContextOverflow,
    *,
    sent_estimate: int,
    reserve: int | None,
    known_window: int | None = None,
    output_reserve_share: float = 0.25,
) -> RetryBudget | None:
    """The trim target for the retry, or None when trimming cannot fix this request.

    ``sent_estimate``: the proxy's count of the body that failed, in the units the trimmer
    uses (raw tokenizer counts). ``reserve``: the request's max_tokens (any spelling), None
    when absent. ``known_window``: the registry's window, used when the error states none.
    None comes back when the output reserve alone fills the window (max_tokens too large:
    only the client can fix that) or when the target would not be below what was sent.
    """
    window = overflow.window or known_window
    ratio = None
    if overflow.prompt_tokens and sent_estimate > 0:
        ratio = overflow.prompt_tokens / sent_estimate
    server_budget = None
    if window is not None:
        completion = _completion_reserve(overflow, reserve, window, output_reserve_share)
        server_budget = window - completion - math.ceil(window * SAFETY_SHARE)
        if server_budget <= 0:
            return None
    if server_budget is not None and ratio is not None:
        tokens = math.floor(server_budget / ratio)
    elif server_budget is not None:
        tokens = min(server_budget, math.floor(sent_estimate * BLIND_SHRINK))
    else:
        tokens = math.floor(sent_estimate * BLIND_SHRINK)
    if tokens >= sent_estimate or tokens <= 0:
        return None
    return RetryBudget(tokens, server_budget, ratio)


def _completion_reserve(
    overflow: ContextOverflow, reserve: int | None, window: int, share: float
) -> int:
    """What the server keeps for output: the stated completion, else the request's max_tokens,
    else the same share of the window the pre-emptive budget uses."""
    if overflow.completion_tokens is not None:
        return overflow.completion_tokens
    if reserve is not None:
        return reserve
    return math.floor(window * share)
