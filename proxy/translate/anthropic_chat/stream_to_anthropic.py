"""An OpenAI chat completion stream -> Anthropic's message stream, event by event.

Grammar produced: ``message_start``, ``ping``, then per block ``content_block_start``,
deltas, ``content_block_stop``; then ``message_delta`` (stop reason and usage) and
``message_stop``. The final two wait for the upstream's usage chunk (it follows the finish
chunk) or ``[DONE]``; everything else is emitted as soon as its upstream chunk arrives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import UpstreamError, anthropic_error_object
from ..streams import ChatChunkStream, ToolSlots
from ..wire import as_object, sse
from .common import anthropic_stop, anthropic_usage
from .response import reasoning_text

__all__ = ["ChatToAnthropicStream"]

_TEXT, _THINKING, _TOOL = "text", "thinking", "tool"


class ChatToAnthropicStream(ChatChunkStream):
    def __init__(self, headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        super().__init__("anthropic", headers)
        self._started = False
        self._id = ""
        self._model = ""
        self._blocks = 0  # Anthropic content blocks opened so far
        self._open: tuple[str, int] | None = None  # (kind, OpenAI tool index or -1)
        self._slots = ToolSlots()
        self._tool_blocks: dict[int, int] = {}  # tool slot -> Anthropic block index
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None

    def _on_usage(self, usage: dict[str, Any]) -> None:
        self._usage = usage

    def _start(self, chunk: Mapping[str, Any], out: list[bytes]) -> None:
        if self._started:
            return
        self._started = True
        self._id = str(chunk.get("id", ""))
        self._model = str(chunk.get("model", ""))
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        out.append(sse({"type": "message_start", "message": message}, "message_start"))
        out.append(sse({"type": "ping"}, "ping"))

    def _choice(self, choice: Mapping[str, Any], out: list[bytes]) -> None:
        delta = as_object(choice.get("delta"))
        thinking = reasoning_text(delta)
        if thinking:
            self._switch(_THINKING, -1, {"type": "thinking", "thinking": "", "signature": ""}, out)
            self._delta({"type": "thinking_delta", "thinking": thinking}, out)
        text = delta.get("content")
        if isinstance(text, str) and text:
            self._switch(_TEXT, -1, {"type": "text", "text": ""}, out)
            self._delta({"type": "text_delta", "text": text}, out)
        for position, call in enumerate(delta.get("tool_calls") or ()):
            self._tool_piece(as_object(call), position, out)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._switch(_TEXT, -1, {"type": "text", "text": ""}, out)
            self._delta({"type": "text_delta", "text": refusal}, out)
            self._finish = "content_filter"
        if choice.get("finish_reason"):
            self._finish = self._finish or str(choice["finish_reason"])
            self._stop_open(out)

    def _tool_piece(self, call: Mapping[str, Any], position: int, out: list[bytes]) -> None:
        index, new = self._slots.slot(call, position)
        function = as_object(call.get("function"))
        if new:
            block = {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{self._id}_{index}",
                "name": function.get("name", ""),
                "input": {},
            }
            self._switch(_TOOL, index, block, out)
            self._tool_blocks[index] = self._blocks - 1
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            piece = {"type": "input_json_delta", "partial_json": arguments}
            event = {
                "type": "content_block_delta",
                "index": self._tool_blocks[index],
                "delta": piece,
            }
            out.append(sse(event, "content_block_delta"))

    def _switch(self, kind: str, tool: int, block: dict[str, Any], out: list[bytes]) -> None:
        """Keep the open block if it is this one, else close it and start ``block``."""
        if self._open == (kind, tool):
            return
        self._stop_open(out)
        start = {"type": "content_block_start", "index": self._blocks, "content_block": block}
        out.append(sse(start, "content_block_start"))
        self._open = (kind, tool)
        self._blocks += 1

    def _delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        event = {"type": "content_block_delta", "index": self._blocks - 1, "delta": delta}
        out.append(sse(event, "content_block_delta"))

    def _stop_open(self, out: list[bytes]) -> None:
        if self._open is None:
            return
        index = self._blocks - 1
        out.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        self._open = None

    def _complete(self) -> bool:
        return self._finish is not None

    def _close(self, out: list[bytes]) -> None:
        self._start({}, out)
        self._stop_open(out)
        usage = anthropic_usage(self._usage) if self._usage is not None else {"output_tokens": 0}
        delta = {"stop_reason": anthropic_stop(self._finish), "stop_sequence": None}
        out.append(sse({"type": "message_delta", "delta": delta, "usage": usage}, "message_delta"))
        out.append(sse({"type": "message_stop"}, "message_stop"))

    def _fail(self, error: UpstreamError, out: list[bytes]) -> None:
        out.append(sse({"type": "error", "error": anthropic_error_object(error)}, "error"))
