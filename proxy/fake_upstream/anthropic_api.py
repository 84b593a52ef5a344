"""Anthropic wire shapes: messages, count_tokens, models.

``message_start`` reports ``output_tokens: 1`` like the real API; the final count is in
``message_delta`` (cumulative), so usage accounting must take the last value, not sum.
"""

from __future__ import annotations

from typing import Any

from .calls import Call, Reply
from .content import Template, chunk_text, dumps, fake_text, hole, prompt_tokens, sse
from .tool_calls import ToolCall, anthropic_forced_calls, piece_count

MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")
_MODEL_CREATED_AT = "2025-01-01T00:00:00Z"


def _usage(call: Call, output_tokens: int) -> dict[str, Any]:
    cache = call.cache  # input_tokens excludes what was read from or written to the cache
    return {
        "input_tokens": prompt_tokens(call.payload) - cache.read - cache.written,
        "cache_creation_input_tokens": cache.written,
        "cache_read_input_tokens": cache.read,
        "output_tokens": output_tokens,
    }


def _message(
    call: Call, content: list[Any], stop_reason: str | None, output_tokens: int
) -> dict[str, Any]:
    return {
        "id": f"msg_fake_{call.key}",
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _usage(call, output_tokens),
    }


def _stop_reason(call: Call) -> str:
    return "max_tokens" if call.truncated else "end_turn"


def messages(call: Call) -> Reply:
    """``POST /v1/messages``; a forced ``tool_choice`` gets tool_use blocks (tool_calls.py)."""
    tool_calls = anthropic_forced_calls(call.payload)
    if tool_calls:
        return _tool_reply(call, tool_calls)
    if call.stream:
        return Reply(events=_message_events(call), content_type="text/event-stream; charset=utf-8")
    content = [{"type": "text", "text": fake_text(call.content_chunks)}]
    return Reply(body=dumps(_message(call, content, _stop_reason(call), call.content_chunks)))


def _message_events(call: Call) -> list[bytes]:
    """message_start, content_block_start, ping, deltas, content_block_stop, message_delta,
    message_stop: the order the SDK's ``messages.stream`` accumulator expects."""
    n = call.content_chunks
    delta = Template(
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": hole("text")},
        },
        event="content_block_delta",
    )
    start = {"type": "message_start", "message": _message(call, [], None, 1)}
    events = [
        sse(start, "message_start"),
        sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
        sse({"type": "ping"}, "ping"),
    ]
    events += [delta.fill(text=chunk_text(i)) for i in range(n)]
    events += [
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": _stop_reason(call), "stop_sequence": None},
                "usage": {"output_tokens": n},
            },
            "message_delta",
        ),
        sse({"type": "message_stop"}, "message_stop"),
    ]
    return events


def _tool_block(call: Call, c: ToolCall, whole: bool) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": f"toolu_fake_{call.key}_{c.index}",
        "name": c.name,
        "input": c.arguments if whole else {},
    }


def _tool_reply(call: Call, calls: list[ToolCall]) -> Reply:
    """tool_use blocks with ``toolu_fake_...`` ids: whole, or streamed as input_json_delta."""
    output = piece_count(calls, call.chunks)
    if not call.stream:
        content = [_tool_block(call, c, whole=True) for c in calls]
        return Reply(body=dumps(_message(call, content, "tool_use", output)))
    start = {"type": "message_start", "message": _message(call, [], None, 1)}
    events = [sse(start, "message_start")]
    for c in calls:
        block = {"type": "content_block_start", "index": c.index}
        events.append(
            sse(
                {**block, "content_block": _tool_block(call, c, whole=False)}, "content_block_start"
            )
        )
        if c.index == 0:
            events.append(sse({"type": "ping"}, "ping"))
        for piece in ["", *c.pieces(call.chunks)]:  # the real API opens with an empty piece
            delta = {"type": "input_json_delta", "partial_json": piece}
            events.append(
                sse(
                    {"type": "content_block_delta", "index": c.index, "delta": delta},
                    "content_block_delta",
                )
            )
        events.append(sse({"type": "content_block_stop", "index": c.index}, "content_block_stop"))
    final = {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": output},
    }
    events += [sse(final, "message_delta"), sse({"type": "message_stop"}, "message_stop")]
    return Reply(events=events, content_type="text/event-stream; charset=utf-8")


def count_tokens(call: Call) -> Reply:
    """``POST /v1/messages/count_tokens``: the same count ``usage.input_tokens`` reports."""
    return Reply(body=dumps({"input_tokens": prompt_tokens(call.payload)}))


def _model(model_id: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": f"{model_id} (fake)",
        "created_at": _MODEL_CREATED_AT,
    }


def list_models(call: Call) -> Reply:
    """``GET /v1/models`` when the request carries ``anthropic-version``."""
    return Reply(
        body=dumps(
            {
                "data": [_model(m) for m in MODELS],
                "has_more": False,
                "first_id": MODELS[0],
                "last_id": MODELS[-1],
            }
        )
    )


def get_model(call: Call) -> Reply:
    """``GET /v1/models/{id}`` when the request carries ``anthropic-version``."""
    return Reply(body=dumps(_model(call.match.get("model_id", ""))))
