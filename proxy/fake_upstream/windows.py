"""Context windows per model, answered with the error each kind of server sends.

``FakeUpstream(context_windows={"small-model": 2048})`` makes requests for that exact model
name fail when they do not fit, in the fake's own token count (``content.prompt_tokens``):

- ``/v1/messages`` (Anthropic): prompt > window: "prompt is too long: M tokens > N maximum";
  prompt + max_tokens > window: "input length and `max_tokens` exceed context limit: ...".
- OpenAI paths, flavour ``openai``: chat "This model's maximum context length is N tokens.
  However, your messages resulted in M tokens..." (or "...you requested T tokens (P in the
  messages, C in the completion)..." with max_tokens), code ``context_length_exceeded``;
  the Responses API's short message without figures.
- flavour ``llama`` (llama.cpp server): prompt >= n_ctx: ``exceed_context_size_error`` with
  ``n_prompt_tokens`` and ``n_ctx``; max_tokens is not checked (generation stops at the end).
- flavour ``vllm``: prompt >= window: "...However, your request has P input tokens...";
  prompt + max_tokens > window: "'max_tokens' or 'max_completion_tokens' is too large: ...".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .calls import Call, Reply
from .content import dumps, output_limit, prompt_tokens

Flavour = Literal["openai", "llama", "vllm"]
FLAVOURS: tuple[str, ...] = get_args(Flavour)


@dataclass
class ContextLimits:
    windows: dict[str, int] = field(default_factory=dict)
    flavour: Flavour = "openai"

    def check(self, call: Call) -> Reply | None:
        """The context-length error for ``call``, or None when it fits (or has no window)."""
        window = self.windows.get(call.model)
        if window is None:
            return None
        prompt, out = prompt_tokens(call.payload), output_limit(call.payload)
        if call.provider == "anthropic":
            return _anthropic(prompt, out, window)
        if self.flavour == "llama":
            return _llama(prompt, window)
        if self.flavour == "vllm":
            return _vllm(prompt, out, window)
        return _openai(prompt, out, window, call.path)


def _reply(body: Any) -> Reply:
    return Reply(status=400, body=dumps(body))


def _openai_error(message: str, param: str) -> Reply:
    err = {
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": "context_length_exceeded",
    }
    return _reply({"error": err})


def _openai(prompt: int, out: int | None, window: int, path: str) -> Reply | None:
    if prompt + (out or 0) <= window:
        return None
    if path == "/v1/responses":
        return _openai_error(
            "Your input exceeds the context window of this model. Please adjust your input "
            "and try again.",
            "input",
        )
    head = f"This model's maximum context length is {window} tokens. However, "
    if out is None:
        tail = f"your messages resulted in {prompt} tokens. Please reduce the length of the "
        return _openai_error(head + tail + "messages.", "messages")
    tail = (
        f"you requested {prompt + out} tokens ({prompt} in the messages, {out} in the "
        "completion). Please reduce the length of the messages or completion."
    )
    return _openai_error(head + tail, "messages")


def _anthropic(prompt: int, out: int | None, window: int) -> Reply | None:
    if prompt > window:
        message = f"prompt is too long: {prompt} tokens > {window} maximum"
    elif out is not None and prompt + out > window:
        message = (
            f"input length and `max_tokens` exceed context limit: {prompt} + {out} > {window}, "
            "decrease input length or `max_tokens` and try again"
        )
    else:
        return None
    return _reply({"type": "error", "error": {"type": "invalid_request_error", "message": message}})


def _llama(prompt: int, window: int) -> Reply | None:
    if prompt < window:
        return None
    return _reply(
        {
            "error": {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": prompt,
                "n_ctx": window,
            }
        }
    )


def _vllm(prompt: int, out: int | None, window: int) -> Reply | None:
    if prompt >= window:
        message = (
            f"This model's maximum context length is {window} tokens. However, your request "
            f"has {prompt} input tokens. Please reduce the length of the input messages."
        )
    elif out is not None and prompt + out > window:
        message = (
            f"'max_tokens' or 'max_completion_tokens' is too large: {out}. This model's maximum "
            f"context length is {window} tokens and your request has {prompt} input tokens "
            f"({out} > {window} - {prompt})."
        )
    else:
        return None
    return _reply(
        {"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}}
    )
