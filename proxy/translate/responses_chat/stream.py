"""A chat completion stream -> the Responses API event stream, chunk by chunk.

Grammar produced (each event with a rising ``sequence_number``): ``response.created``,
``response.in_progress``; per output item ``response.output_item.added``, its content
events (``content_part.added`` / ``output_text.delta`` ... ``output_text.done`` /
``content_part.done``, or ``function_call_arguments.delta`` ... ``.done``, or
``reasoning_text.delta`` ... ``.done``) and ``response.output_item.done``; then
``response.completed`` (or ``response.incomplete``) once the upstream's usage arrived. An
upstream error or cut ends with ``error`` and ``response.failed``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ErrorKind, UpstreamError, openai_error_object
from ..streams import ChatChunkStream, ToolSlots
from ..wire import as_object, sse
from .response import (
    ResponseContext,
    function_call_item,
    message_item,
    reasoning_item,
    responses_usage,
    status_for,
    text_part,
)

__all__ = ["ChatToResponsesStream"]


@dataclass(slots=True)
class _Item:
    kind: str  # "message" | "function_call" | "reasoning"
    output_index: int
    item_id: str
    text: list[str] = field(default_factory=list)
    call_id: str = ""
    name: str = ""


class ChatToResponsesStream(ChatChunkStream):
    def __init__(
        self, ctx: ResponseContext, headers: Mapping[str, str] | Iterable[tuple[str, str]]
    ) -> None:
        super().__init__("openai", headers)
        self.ctx = ctx
        self._seq = 0
        self._started = False
        self._model = ""
        self._items: list[_Item] = []
        self._open_text: _Item | None = None  # the message or reasoning item receiving text
        self._slots = ToolSlots()
        self._tools: dict[int, _Item] = {}  # tool slot -> its open function_call item
        self._done_items: dict[int, dict[str, Any]] = {}
        self._finish: str | None = None
        self._usage: Mapping[str, Any] = {}
        self.final: dict[str, Any] | None = None
        """The completed response object, once the stream ended cleanly."""

    def _emit(self, out: list[bytes], name: str, data: dict[str, Any]) -> None:
        out.append(sse({"type": name, **data, "sequence_number": self._seq}, name))
        self._seq += 1

    def _on_usage(self, usage: dict[str, Any]) -> None:
        self._usage = usage

    def _start(self, chunk: Mapping[str, Any], out: list[bytes]) -> None:
        if self._started:
            return
        self._started = True
        self._model = str(chunk.get("model") or "")
        running = {"response": self.ctx.response("in_progress", [], model=self._model)}
        self._emit(out, "response.created", running)
        self._emit(out, "response.in_progress", running)

    def _choice(self, choice: Mapping[str, Any], out: list[bytes]) -> None:
        delta = as_object(choice.get("delta"))
        for key in ("reasoning_content", "reasoning"):
            if isinstance(delta.get(key), str) and delta[key]:
                self._text(out, "reasoning", delta[key])
                break
        if isinstance(delta.get("content"), str) and delta["content"]:
            self._text(out, "message", delta["content"])
        for position, call in enumerate(delta.get("tool_calls") or ()):
            self._tool_piece(as_object(call), position, out)
        if choice.get("finish_reason"):
            self._finish = str(choice["finish_reason"])
            self._close_items(out)

    def _new_item(self, kind: str, out: list[bytes], call_id: str = "", name: str = "") -> _Item:
        index = len(self._items)
        prefix = {"message": "msg", "reasoning": "rs", "function_call": "fc"}[kind]
        item_id = f"{prefix}_{self.ctx.suffix}_{index}"
        item = _Item(kind, index, item_id, call_id=call_id, name=name)
        self._items.append(item)
        if kind == "message":
            added = message_item(item.item_id, [], "in_progress")
        elif kind == "reasoning":
            added = reasoning_item(item.item_id, None)
        else:
            added = function_call_item(item.item_id, item.call_id, item.name, "", "in_progress")
        self._emit(out, "response.output_item.added", {"output_index": index, "item": added})
        if kind == "message":
            where = {"item_id": item.item_id, "output_index": index, "content_index": 0}
            self._emit(out, "response.content_part.added", {**where, "part": text_part("")})
        return item

    def _text(self, out: list[bytes], kind: str, piece: str) -> None:
        item = self._open_text
        if item is None or item.kind != kind:
            self._close_text(out)
            item = self._open_text = self._new_item(kind, out)
        item.text.append(piece)
        where = {"item_id": item.item_id, "output_index": item.output_index, "content_index": 0}
        if kind == "message":
            self._emit(out, "response.output_text.delta", {**where, "delta": piece, "logprobs": []})
        else:
            self._emit(out, "response.reasoning_text.delta", {**where, "delta": piece})

    def _tool_piece(self, call: Mapping[str, Any], position: int, out: list[bytes]) -> None:
        index, new = self._slots.slot(call, position)
        function = as_object(call.get("function"))
        if new:
            self._close_text(out)
            call_id = str(call.get("id") or f"call_{self.ctx.suffix}_{index}")
            name = str(function.get("name", ""))
            self._tools[index] = self._new_item("function_call", out, call_id=call_id, name=name)
        item = self._tools.get(index)
        if item is None:  # a piece after the finish: nothing open to add it to
            return
        piece = function.get("arguments")
        if isinstance(piece, str) and piece:
            item.text.append(piece)
            data = {"item_id": item.item_id, "output_index": item.output_index, "delta": piece}
            self._emit(out, "response.function_call_arguments.delta", data)

    def _close_text(self, out: list[bytes]) -> None:
        item, self._open_text = self._open_text, None
        if item is None:
            return
        text = "".join(item.text)
        where = {"item_id": item.item_id, "output_index": item.output_index, "content_index": 0}
        if item.kind == "message":
            self._emit(out, "response.output_text.done", {**where, "text": text, "logprobs": []})
            self._emit(out, "response.content_part.done", {**where, "part": text_part(text)})
            done = message_item(item.item_id, [text_part(text)])
        else:
            self._emit(out, "response.reasoning_text.done", {**where, "text": text})
            done = reasoning_item(item.item_id, text)
        self._item_done(item, done, out)

    def _item_done(self, item: _Item, done: dict[str, Any], out: list[bytes]) -> None:
        self._done_items[item.output_index] = done
        self._emit(
            out, "response.output_item.done", {"output_index": item.output_index, "item": done}
        )

    def _close_items(self, out: list[bytes]) -> None:
        """Tool calls stay open until the finish: a server may interleave their pieces."""
        self._close_text(out)
        for item in self._tools.values():
            arguments = "".join(item.text)
            where = {"item_id": item.item_id, "output_index": item.output_index}
            self._emit(
                out,
                "response.function_call_arguments.done",
                {**where, "name": item.name, "arguments": arguments},
            )
            self._item_done(
                item, function_call_item(item.item_id, item.call_id, item.name, arguments), out
            )
        self._tools.clear()

    def _output(self) -> list[dict[str, Any]]:
        return [self._done_items[i] for i in sorted(self._done_items)]

    def _complete(self) -> bool:
        return self._finish is not None

    def _close(self, out: list[bytes]) -> None:
        self._start({}, out)
        self._close_items(out)
        status, incomplete = status_for(self._finish)
        final = self.ctx.response(
            status,
            self._output(),
            responses_usage(self._usage),
            model=self._model,
            incomplete=incomplete,
        )
        self.final = final
        self._emit(out, f"response.{status}", {"response": final})

    def _fail(self, error: UpstreamError, out: list[bytes]) -> None:
        """Items still open stay unfinished: ``response.failed`` lists only finished ones."""
        self._start({}, out)
        shaped = openai_error_object(error)
        code = "rate_limit_exceeded" if error.kind is ErrorKind.RATE_LIMIT else "server_error"
        flat = {
            "code": shaped["code"] or code,
            "message": shaped["message"],
            "param": shaped["param"],
        }
        self._emit(out, "error", flat)
        failed = self.ctx.response(
            "failed",
            self._output(),
            None,
            model=self._model,
            error={"code": code, "message": shaped["message"]},
        )
        self._emit(out, "response.failed", {"response": failed})
