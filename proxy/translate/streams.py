"""The shared life cycle of every stream translator: parse upstream SSE incrementally,
translate event by event, end exactly once (cleanly, or with an in-stream error)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from proxy.sse import SSEEvent, SSEParser

from .errors import ErrorKind, UpstreamError, parse_error_object
from .families import Provider
from .wire import SSE_TYPE, as_object, loads_object, response_headers

__all__ = ["CUT_SHORT", "ChatChunkStream", "EventStream", "ToolSlots"]

CUT_SHORT = "The upstream stream ended before it was complete."


class EventStream:
    """Subclasses implement ``_event`` (may call ``_end``), ``_complete`` (did the upstream
    reach a semantic end?), ``_close`` (the client's clean ending) and ``_fail`` (the
    client's in-stream error). See ``records.StreamTranslator`` for the contract."""

    def __init__(
        self, client: Provider, headers: Mapping[str, str] | Iterable[tuple[str, str]]
    ) -> None:
        self.status = 200
        self.headers = response_headers(headers, client, SSE_TYPE)
        self._parser = SSEParser()
        self._ended = False

    def feed(self, chunk: bytes) -> bytes:
        if self._ended:
            return b""
        out: list[bytes] = []
        for event in self._parser.feed(chunk):
            self._event(event, out)
            if self._ended:
                break
        return b"".join(out)

    def finish(self) -> bytes:
        if self._ended:
            return b""
        out: list[bytes] = []
        if self._complete():
            self._close(out)
        else:
            self._fail(UpstreamError(ErrorKind.SERVER, 500, CUT_SHORT), out)
        self._ended = True
        return b"".join(out)

    def abort(self, message: str) -> bytes:
        if self._ended:
            return b""
        out: list[bytes] = []
        self._fail(UpstreamError(ErrorKind.SERVER, 500, message), out)
        self._ended = True
        return b"".join(out)

    @property
    def ended(self) -> bool:
        """The client stream is closed (its end or an error event was emitted)."""
        return self._ended

    def _end(self) -> None:
        self._ended = True

    def _event(self, event: SSEEvent, out: list[bytes]) -> None:
        raise NotImplementedError

    def _complete(self) -> bool:
        raise NotImplementedError

    def _close(self, out: list[bytes]) -> None:
        raise NotImplementedError

    def _fail(self, error: UpstreamError, out: list[bytes]) -> None:
        raise NotImplementedError


class ChatChunkStream(EventStream):
    """An upstream of OpenAI chat completion chunks: ``[DONE]`` closes, an error object
    fails, every other chunk goes to ``_start`` (first chunk), ``_on_usage`` and ``_choice``,
    which each translation fills in for its client's family."""

    def _event(self, event: SSEEvent, out: list[bytes]) -> None:
        if event.data.strip() == "[DONE]":
            self._close(out)
            self._end()
            return
        chunk = loads_object(event.data)
        if chunk is None:
            return
        if chunk.get("error") is not None:
            error = parse_error_object(500, chunk)
            self._fail(error or UpstreamError(ErrorKind.SERVER, 500, event.data[:300]), out)
            self._end()
            return
        self._start(chunk, out)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._on_usage(usage)
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices:
            self._choice(as_object(choices[0]), out)

    def _start(self, chunk: Mapping[str, Any], out: list[bytes]) -> None:
        raise NotImplementedError

    def _on_usage(self, usage: dict[str, Any]) -> None:
        raise NotImplementedError

    def _choice(self, choice: Mapping[str, Any], out: list[bytes]) -> None:
        raise NotImplementedError


class ToolSlots:
    """Stable numbers for the tool calls of an OpenAI chat stream.

    Pieces are keyed by ``index``; a server that omits it (or sends every call as index 0)
    is told apart by a new ``id`` on the call's first piece.
    """

    __slots__ = ("_ids", "_latest")

    def __init__(self) -> None:
        self._ids: list[str] = []  # slot -> call id ("" when the server sent none)
        self._latest: dict[int, int] = {}  # the server's index -> its current slot

    def slot(self, call: Mapping[str, Any], position: int) -> tuple[int, bool]:
        """(slot, is_new) for one tool-call delta at ``position`` in its chunk."""
        index = call.get("index")
        key = index if isinstance(index, int) else position
        call_id = call.get("id")
        current = self._latest.get(key)
        if current is not None and not (
            call_id and self._ids[current] and call_id != self._ids[current]
        ):
            return current, False
        self._ids.append(call_id if isinstance(call_id, str) else "")
        self._latest[key] = len(self._ids) - 1
        return len(self._ids) - 1, True
