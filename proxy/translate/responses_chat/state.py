"""The Responses leg of one attempt: loads the history of ``previous_response_id`` before
the request, remembers this response's items after it (unless ``store: false``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ErrorKind, UpstreamError, render_error
from ..records import LocalAnswer, TranslatedRequest, TranslatedResponse, TranslationOptions
from ..wire import JSON_TYPE
from .request import chat_request, input_items
from .response import ResponseContext, response_from_chat
from .store import ResponseStore
from .stream import ChatToResponsesStream

__all__ = ["ResponsesLeg"]

_REPLAYABLE = frozenset({"message", "function_call"})
"""Output items a chat upstream can take back as input (reasoning text cannot)."""


class ResponsesLeg:
    def __init__(self, store: ResponseStore | None, options: TranslationOptions) -> None:
        self._store = store
        self._options = options
        self._ctx = ResponseContext({})
        self._items: list[Mapping[str, Any]] = []  # history + this request's input
        self._output: list[Mapping[str, Any]] | None = None
        self._stream: ChatToResponsesStream | None = None

    async def request(self, body: Mapping[str, Any]) -> TranslatedRequest | LocalAnswer:
        self._ctx = ResponseContext(body)
        history: tuple[Mapping[str, Any], ...] = ()
        previous = body.get("previous_response_id")
        if isinstance(previous, str) and previous:
            stored = await self._store.get(previous) if self._store is not None else None
            if stored is None:
                return LocalAnswer(_not_found(previous))
            history = stored.items
        self._items = [*history, *input_items(body)]
        return chat_request(body, history, self._options)

    def response(self, completion: Mapping[str, Any]) -> dict[str, Any]:
        result = response_from_chat(self._ctx, completion)
        self._output = result["output"]
        return result

    def stream(
        self, headers: Mapping[str, str] | Iterable[tuple[str, str]]
    ) -> ChatToResponsesStream:
        self._stream = ChatToResponsesStream(self._ctx, headers)
        return self._stream

    async def settle(self) -> None:
        output = self._output
        if self._stream is not None and self._stream.final is not None:
            output = self._stream.final["output"]
        if output is None or self._store is None or self._ctx.request.get("store") is False:
            return
        replay = [item for item in output if item.get("type") in _REPLAYABLE]
        await self._store.put(self._ctx.response_id, [*self._items, *replay])


def _not_found(response_id: str) -> TranslatedResponse:
    error = UpstreamError(
        ErrorKind.NOT_FOUND,
        404,
        f"Previous response with id '{response_id}' not found.",
        code="previous_response_not_found",
        param="previous_response_id",
    )
    status, body = render_error(error, "openai")
    return TranslatedResponse(status, (("Content-Type", JSON_TYPE),), body)
