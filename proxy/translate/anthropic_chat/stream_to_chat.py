"""Anthropic's message stream -> an OpenAI chat completion stream, event by event.

Grammar produced: a role chunk, content / ``tool_calls`` / ``reasoning_content`` delta
chunks, a finish chunk (at ``message_delta``), the usage chunk when the client asked for
``stream_options.include_usage``, then ``data: [DONE]``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from proxy.sse import SSEEvent

from ..errors import ErrorKind, UpstreamError, openai_error_object, parse_error_object
from ..streams import EventStream
from ..wire import as_object, loads_object, sse
from .common import chat_finish, chat_usage

__all__ = ["AnthropicToChatStream"]

DONE = b"data: [DONE]\n\n"


def _index(data: Mapping[str, Any]) -> int:
    index = data.get("index")
    return index if isinstance(index, int) else -1


class AnthropicToChatStream(EventStream):
    def __init__(
        self,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        *,
        include_usage: bool,
        created: int | None = None,
    ) -> None:
        super().__init__("openai", headers)
        self._include_usage = include_usage
        self._id = ""
        self._model = ""
        self._created = int(time.time()) if created is None else created
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool index
        self._usage: dict[str, Any] = {}
        self._finish: str | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse(
            {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [choice],
            }
        )

    def _event(self, event: SSEEvent, out: list[bytes]) -> None:
        data = loads_object(event.data)
        if data is None:
            return
        kind = data.get("type", event.event)
        if kind == "message_start":
            message = as_object(data.get("message"))
            self._id = str(message.get("id", ""))
            self._model = str(message.get("model", ""))
            self._usage.update(as_object(message.get("usage")))
            out.append(self._chunk({"role": "assistant", "content": ""}))
        elif kind == "content_block_start":
            self._block_start(data, out)
        elif kind == "content_block_delta":
            self._block_delta(data, out)
        elif kind == "message_delta":
            usage = {k: v for k, v in as_object(data.get("usage")).items() if v is not None}
            self._usage.update(usage)  # cumulative counts: the last value wins
            self._finish = chat_finish(as_object(data.get("delta")).get("stop_reason"))
            out.append(self._chunk({}, self._finish))
        elif kind == "message_stop":
            self._close(out)
            self._end()
        elif kind == "error":
            error = parse_error_object(500, data)
            self._fail(error or UpstreamError(ErrorKind.SERVER, 500, event.data[:300]), out)
            self._end()

    def _block_start(self, data: Mapping[str, Any], out: list[bytes]) -> None:
        block = as_object(data.get("content_block"))
        if block.get("type") == "tool_use":
            index = len(self._tools)
            self._tools[_index(data)] = index
            call = {
                "index": index,
                "id": block.get("id", ""),
                "type": "function",
                "function": {"name": block.get("name", ""), "arguments": ""},
            }
            out.append(self._chunk({"tool_calls": [call]}))
        elif block.get("type") == "text" and block.get("text"):
            out.append(self._chunk({"content": block["text"]}))

    def _block_delta(self, data: Mapping[str, Any], out: list[bytes]) -> None:
        delta = as_object(data.get("delta"))
        kind = delta.get("type")
        if kind == "text_delta":
            out.append(self._chunk({"content": delta.get("text", "")}))
        elif kind == "input_json_delta" and delta.get("partial_json"):
            index = self._tools.get(_index(data))
            if index is not None:
                call = {"index": index, "function": {"arguments": delta["partial_json"]}}
                out.append(self._chunk({"tool_calls": [call]}))
        elif kind == "thinking_delta":
            out.append(self._chunk({"reasoning_content": delta.get("thinking", "")}))

    def _complete(self) -> bool:
        return self._finish is not None

    def _close(self, out: list[bytes]) -> None:
        if self._include_usage:
            out.append(
                sse(
                    {
                        "id": self._id,
                        "object": "chat.completion.chunk",
                        "created": self._created,
                        "model": self._model,
                        "choices": [],
                        "usage": chat_usage(self._usage),
                    }
                )
            )
        out.append(DONE)

    def _fail(self, error: UpstreamError, out: list[bytes]) -> None:
        out.append(sse({"error": openai_error_object(error)}))
