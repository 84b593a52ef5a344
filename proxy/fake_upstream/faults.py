"""Faults the fake can inject, recorded requests, and provider-shaped error bodies."""

from __future__ import annotations

import base64
import json
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from multidict import CIMultiDictProxy

from .content import dumps, sse

Provider = Literal["openai", "anthropic"]


@dataclass
class Fault:
    """One-shot misbehaviour for the next matching request (see ``FakeUpstream.enqueue``).

    ``status``: >= 400 answers with a provider-shaped error body (or ``body``); below 400
    it only replaces the normal answer's status.
    ``headers``: extra response headers, also on successful answers.
    ``body``: explicit body; without ``status`` it is sent with 200.
    ``first_byte_delay_s``: sleep before the response headers.
    ``cut_after_chunks``: streaming: close the TCP connection after N SSE events, with no
    terminator; non-streaming: close it before any response byte.
    ``sse_error_after_chunks``: streaming: send the provider's in-stream error event
    (Anthropic ``overloaded_error``) after N events, then end the body cleanly.
    ``end_after_chunks``: streaming: end the body cleanly after N events (0: an empty stream),
    with no terminator: a stream that stops without an error and without its end.
    ``path``: only requests with exactly this path consume the fault.
    """

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    first_byte_delay_s: float = 0.0
    cut_after_chunks: int | None = None
    sse_error_after_chunks: int | None = None
    end_after_chunks: int | None = None
    path: str | None = None

    @classmethod
    def from_json(cls, obj: Any) -> Fault:
        """Build from the control API's JSON, where ``body`` is a UTF-8 string."""
        if not isinstance(obj, dict):
            raise ValueError("a fault must be a JSON object")
        unknown = sorted(set(obj) - set(_JSON_TYPES))
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        kwargs = {k: v for k, v in obj.items() if v is not None}
        for name, value in kwargs.items():
            if not isinstance(value, _JSON_TYPES[name]) or isinstance(value, bool):
                raise ValueError(f"fault field {name}: wrong type {type(value).__name__}")
        headers = kwargs.get("headers", {})
        if not all(isinstance(v, str) for v in headers.values()):
            raise ValueError("fault field headers: values must be strings")
        if "body" in kwargs:
            kwargs["body"] = kwargs["body"].encode()
        return cls(**kwargs)

    def matches(self, path: str) -> bool:
        return self.path is None or self.path == path


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "status": int,
    "headers": dict,
    "body": str,
    "first_byte_delay_s": (int, float),
    "cut_after_chunks": int,
    "sse_error_after_chunks": int,
    "end_after_chunks": int,
    "path": str,
}


class FaultQueue:
    """FIFO of one-shot faults; a request takes the oldest fault whose path matches."""

    def __init__(self) -> None:
        self._items: deque[Fault] = deque()

    def push(self, *faults: Fault) -> None:
        self._items.extend(faults)

    def take(self, path: str) -> Fault | None:
        for fault in self._items:
            if fault.matches(path):
                self._items.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class RecordedRequest:
    """A request exactly as the fake received it; ``t`` is ``time.monotonic()`` at arrival."""

    method: str
    path: str
    query_string: str
    headers: CIMultiDictProxy[str]
    body: bytes
    t: float

    def json(self) -> Any:
        return json.loads(self.body)

    def summary(self) -> dict[str, Any]:
        """JSON-safe form for ``GET /_fake/requests``; repeated headers are joined by ", "."""
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return {
            "method": self.method,
            "path": self.path,
            "query_string": self.query_string,
            "headers": headers,
            "body": base64.b64encode(self.body).decode(),
            "t": self.t,
        }


_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (fake)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (fake)."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden (fake)."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist (fake)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests (fake)."),
    500: ("server_error", None, "The server had an error processing your request (fake)."),
    503: ("server_error", None, "The engine is currently overloaded (fake)."),
}

_ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_body(provider: Provider, status: int, message: str | None = None) -> bytes:
    """The error JSON each provider sends for ``status``."""
    if provider == "anthropic":
        kind = _ANTHROPIC_ERRORS.get(status, "api_error")
        text = message or f"{kind} (fake)"
        return dumps({"type": "error", "error": {"type": kind, "message": text}})
    kind, code, default = _OPENAI_ERRORS.get(status, ("api_error", None, f"HTTP {status} (fake)"))
    return dumps(
        {"error": {"message": message or default, "type": kind, "param": None, "code": code}}
    )


def error_headers(provider: Provider, status: int) -> dict[str, str]:
    """Rate-limit headers the real provider adds to a 429 (the fault's own headers win)."""
    if status != 429:
        return {}
    if provider == "anthropic":
        reset = datetime.now(UTC) + timedelta(seconds=1)
        return {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    return {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149990",
        "x-ratelimit-reset-tokens": "6ms",
    }


def stream_error_event(provider: Provider, path: str) -> bytes:
    """The in-stream error event: Anthropic ``event: error``, OpenAI ``data: {"error"}``."""
    if provider == "anthropic":
        payload = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return sse(payload, "error")
    err = {
        "message": "The server is overloaded (fake).",
        "type": "server_error",
        "param": None,
        "code": "server_error",
    }
    if path == "/v1/responses":
        flat = {
            "type": "error",
            "code": "server_error",
            "message": err["message"],
            "param": None,
            "sequence_number": 0,
        }
        return sse(flat, "error")
    return sse({"error": err})
