"""OpenAI wire shapes: chat completions, responses, embeddings, models.

Shapes follow the official ``openai`` SDK's types so its parsers and stream helpers
(``chat.completions.stream``, ``responses.stream``) accept them.
"""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

from .calls import Call, Reply
from .content import (
    CREATED,
    Template,
    chunk_text,
    dumps,
    embedding_tokens,
    fake_text,
    hole,
    sse,
)
from .content import prompt_tokens as count_prompt
from .tool_calls import ToolCall, openai_forced_calls, piece_count

DONE = b"data: [DONE]\n\n"
MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
EMBEDDING_DIMENSIONS = 8
"""Default vector length; the request's ``dimensions`` overrides it."""


def _chat_usage(call: Call, completion: int | None = None) -> dict[str, Any]:
    prompt = count_prompt(call.payload)
    completion = call.content_chunks if completion is None else completion
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": call.cache.read, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completions(call: Call) -> Reply:
    """``POST /v1/chat/completions``; a forced ``tool_choice`` gets tool calls (tool_calls.py)."""
    tool_calls = openai_forced_calls(call.payload)
    if tool_calls:
        return _tool_reply(call, tool_calls)
    if call.stream:
        return Reply(events=_chat_events(call), content_type="text/event-stream; charset=utf-8")
    message: dict[str, Any] = {
        "role": "assistant",
        "content": fake_text(call.content_chunks),
        "refusal": None,
        "annotations": [],
    }
    return Reply(
        body=dumps(
            {
                "id": f"chatcmpl-fake-{call.key}",
                "object": "chat.completion",
                "created": CREATED,
                "model": call.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "length" if call.truncated else "stop",
                    }
                ],
                "usage": _chat_usage(call),
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
            }
        )
    )


def _chat_events(call: Call) -> list[bytes]:
    """Role chunk, content chunks, finish chunk, optional usage chunk, ``[DONE]``."""
    options = call.payload.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    base: dict[str, Any] = {
        "id": f"chatcmpl-fake-{call.key}",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": call.model,
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice], **({"usage": None} if include_usage else {})}

    content = Template(chunk({"content": hole("text")}))
    events = [sse(chunk({"role": "assistant", "content": "", "refusal": None}))]
    events += [content.fill(text=chunk_text(i)) for i in range(call.content_chunks)]
    events.append(sse(chunk({}, "length" if call.truncated else "stop")))
    if include_usage:
        events.append(sse({**base, "choices": [], "usage": _chat_usage(call)}))
    events.append(DONE)
    return events


def _chat_base(call: Call) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-fake-{call.key}",
        "object": "chat.completion.chunk" if call.stream else "chat.completion",
        "created": CREATED,
        "model": call.model,
    }


def _tool_reply(call: Call, calls: list[ToolCall]) -> Reply:
    """Tool calls with ``call_fake_...`` ids: whole, or streamed as argument pieces."""
    usage = _chat_usage(call, piece_count(calls, call.chunks))
    if call.stream:
        return Reply(
            events=_tool_events(call, calls, usage), content_type="text/event-stream; charset=utf-8"
        )
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_fake_{call.key}_{c.index}",
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments_json},
            }
            for c in calls
        ],
        "refusal": None,
        "annotations": [],
    }
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
    return Reply(body=dumps({**_chat_base(call), "choices": [choice], "usage": usage}))


def _tool_events(call: Call, calls: list[ToolCall], usage: dict[str, Any]) -> list[bytes]:
    """Role chunk, then per call a chunk with id and name followed by its argument pieces,
    a ``tool_calls`` finish chunk, the usage chunk when asked for, ``[DONE]``."""
    options = call.payload.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse({**_chat_base(call), "choices": [choice]})

    events = [chunk({"role": "assistant", "content": None, "refusal": None})]
    for c in calls:
        head = {
            "index": c.index,
            "id": f"call_fake_{call.key}_{c.index}",
            "type": "function",
            "function": {"name": c.name, "arguments": ""},
        }
        events.append(chunk({"tool_calls": [head]}))
        events += [
            chunk({"tool_calls": [{"index": c.index, "function": {"arguments": piece}}]})
            for piece in c.pieces(call.chunks)
        ]
    events.append(chunk({}, "tool_calls"))
    if include_usage:
        events.append(sse({**_chat_base(call), "choices": [], "usage": usage}))
    events.append(DONE)
    return events


def _response_object(call: Call, status: str, output: list[Any]) -> dict[str, Any]:
    prompt, completion = count_prompt(call.payload), call.content_chunks
    done = status != "in_progress"
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": call.cache.read, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {
        "id": f"resp_fake_{call.key}",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": call.payload.get("instructions"),
        "max_output_tokens": call.payload.get("max_output_tokens"),
        "model": call.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage if done else None,
        "user": None,
        "metadata": {},
    }


def _output_message(call: Call, text: str | None) -> dict[str, Any]:
    part = [] if text is None else [_text_part(text)]
    return {
        "id": f"msg_fake_{call.key}",
        "type": "message",
        "role": "assistant",
        "status": "in_progress" if text is None else "completed",
        "content": part,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def responses(call: Call) -> Reply:
    """``POST /v1/responses``."""
    if call.stream:
        return Reply(events=_response_events(call), content_type="text/event-stream; charset=utf-8")
    status = "incomplete" if call.truncated else "completed"
    output = [_output_message(call, fake_text(call.content_chunks))]
    return Reply(body=dumps(_response_object(call, status, output)))


def _response_events(call: Call) -> list[bytes]:
    """The event sequence the SDK's ``responses.stream`` accumulator expects."""
    item_id, text = f"msg_fake_{call.key}", fake_text(call.content_chunks)
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    running = _response_object(call, "in_progress", [])
    final_status = "incomplete" if call.truncated else "completed"
    head: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": running}),
        ("response.in_progress", {"response": running}),
        ("response.output_item.added", {"output_index": 0, "item": _output_message(call, None)}),
        ("response.content_part.added", {**where, "part": _text_part("")}),
    ]
    tail: list[tuple[str, dict[str, Any]]] = [
        ("response.output_text.done", {**where, "text": text, "logprobs": []}),
        ("response.content_part.done", {**where, "part": _text_part(text)}),
        ("response.output_item.done", {"output_index": 0, "item": _output_message(call, text)}),
        (
            f"response.{final_status}",
            {"response": _response_object(call, final_status, [_output_message(call, text)])},
        ),
    ]
    delta = Template(
        {
            "type": "response.output_text.delta",
            **where,
            "delta": hole("text"),
            "logprobs": [],
            "sequence_number": hole("seq"),
        },
        event="response.output_text.delta",
    )
    events = [
        sse({"type": name, **data, "sequence_number": n}, name)
        for n, (name, data) in enumerate(head)
    ]
    seq = len(head)
    events += [delta.fill(text=chunk_text(i), seq=seq + i) for i in range(call.content_chunks)]
    seq += call.content_chunks
    events += [
        sse({"type": name, **data, "sequence_number": seq + n}, name)
        for n, (name, data) in enumerate(tail)
    ]
    return events


def _vector(text: Any, index: int, dims: int) -> list[float]:
    """Deterministic vector with values k/16 (exact in float32, so base64 round-trips)."""
    seed = zlib.crc32(dumps(text)) + index
    return [((seed + j * 7919) % 33 - 16) / 16 for j in range(dims)]


def embeddings(call: Call) -> Reply:
    """``POST /v1/embeddings``; ``encoding_format: base64`` gives little-endian float32."""
    inp = call.payload.get("input", "")
    items = inp if isinstance(inp, list) and not all(isinstance(x, int) for x in inp) else [inp]
    dims = call.payload.get("dimensions")
    dims = dims if isinstance(dims, int) and dims > 0 else EMBEDDING_DIMENSIONS
    as_b64 = call.payload.get("encoding_format") == "base64"
    data = []
    for i, item in enumerate(items):
        vec = _vector(item, i, dims)
        value: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if as_b64 else vec
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = embedding_tokens(inp)
    return Reply(
        body=dumps(
            {
                "object": "list",
                "data": data,
                "model": call.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )
    )


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": "fake"}


def list_models(call: Call) -> Reply:
    """``GET /v1/models``."""
    return Reply(body=dumps({"object": "list", "data": [_model(m) for m in MODELS]}))


def get_model(call: Call) -> Reply:
    """``GET /v1/models/{id}``: any id exists."""
    return Reply(body=dumps(_model(call.match.get("model_id", ""))))
