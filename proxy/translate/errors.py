"""Upstream errors in the client family's shape and status.

An error is read into a neutral ``UpstreamError`` (kind, message, code, the context figures
when the upstream reported a context overflow), then rendered for the client. Statuses keep
their meaning across families: only overload changes (Anthropic 529 <-> OpenAI 503), so each
SDK's retry rules see what they expect. Context overflows are rewritten in the client's own
wording, because agents detect them by that text ("prompt is too long", code
``context_length_exceeded``) to trigger compaction.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .families import Provider
from .records import TranslatedResponse
from .wire import JSON_TYPE, as_object, dumps, loads_object, response_headers

__all__ = [
    "ErrorKind",
    "UpstreamError",
    "anthropic_error_object",
    "openai_error_object",
    "parse_error",
    "parse_error_object",
    "render_error",
    "translate_error",
]


class ErrorKind(enum.Enum):
    INVALID_REQUEST = "invalid_request"
    AUTHENTICATION = "authentication"
    BILLING = "billing"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    REQUEST_TOO_LARGE = "request_too_large"
    RATE_LIMIT = "rate_limit"
    CONTEXT_LENGTH = "context_length"
    TIMEOUT = "timeout"
    OVERLOADED = "overloaded"
    SERVER = "server"


@dataclass(frozen=True, slots=True)
class UpstreamError:
    kind: ErrorKind
    status: int
    message: str
    code: str | None = None
    param: str | None = None
    prompt_tokens: int | None = None
    max_tokens: int | None = None
    """Context figures (prompt size and window), when the upstream said them."""


_BY_STATUS = {
    400: ErrorKind.INVALID_REQUEST,
    401: ErrorKind.AUTHENTICATION,
    402: ErrorKind.BILLING,
    403: ErrorKind.PERMISSION,
    404: ErrorKind.NOT_FOUND,
    413: ErrorKind.REQUEST_TOO_LARGE,
    429: ErrorKind.RATE_LIMIT,
    503: ErrorKind.OVERLOADED,
    504: ErrorKind.TIMEOUT,
    529: ErrorKind.OVERLOADED,
}
_BY_ANTHROPIC_TYPE = {
    "invalid_request_error": ErrorKind.INVALID_REQUEST,
    "authentication_error": ErrorKind.AUTHENTICATION,
    "billing_error": ErrorKind.BILLING,
    "permission_error": ErrorKind.PERMISSION,
    "not_found_error": ErrorKind.NOT_FOUND,
    "request_too_large": ErrorKind.REQUEST_TOO_LARGE,
    "rate_limit_error": ErrorKind.RATE_LIMIT,
    "timeout_error": ErrorKind.TIMEOUT,
    "overloaded_error": ErrorKind.OVERLOADED,
    "api_error": ErrorKind.SERVER,
}
_BY_OPENAI_TYPE = {
    "server_error": ErrorKind.SERVER,
    "requests": ErrorKind.RATE_LIMIT,
    "tokens": ErrorKind.RATE_LIMIT,
    "rate_limit_exceeded": ErrorKind.RATE_LIMIT,
    "insufficient_quota": ErrorKind.RATE_LIMIT,
    "timeout": ErrorKind.TIMEOUT,
}

_ANTHROPIC_TOO_LONG = re.compile(r"prompt is too long:\s*(\d+)\s*tokens\s*>\s*(\d+)")
_OPENAI_WINDOW = re.compile(r"maximum context length is (\d+) tokens")
_OPENAI_PROMPT = re.compile(r"(?:resulted in|requested) (\d+) tokens")


def _kind(status: int) -> ErrorKind:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ErrorKind.SERVER if status >= 500 else ErrorKind.INVALID_REQUEST


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _context(error: UpstreamError, obj: Mapping[str, Any]) -> UpstreamError:
    """Recognise a context overflow in any of the shapes servers send (provider notes §7)."""
    message = error.message
    prompt: int | None
    window: int | None
    if (found := _ANTHROPIC_TOO_LONG.search(message)) is not None:
        prompt, window = int(found.group(1)), int(found.group(2))
    elif obj.get("type") == "exceed_context_size_error":
        prompt, window = _int(obj.get("n_prompt_tokens")), _int(obj.get("n_ctx"))
    elif error.code == "context_length_exceeded" or "maximum context length" in message:
        window_match, prompt_match = _OPENAI_WINDOW.search(message), _OPENAI_PROMPT.search(message)
        window = int(window_match.group(1)) if window_match else None
        prompt = int(prompt_match.group(1)) if prompt_match else None
    elif "prompt is too long" in message:
        prompt = window = None
    else:
        return error
    return UpstreamError(
        ErrorKind.CONTEXT_LENGTH,
        error.status,
        message,
        "context_length_exceeded",
        error.param,
        prompt,
        window,
    )


def parse_error_object(status: int, payload: Mapping[str, Any]) -> UpstreamError | None:
    """Read an error payload of either family (or a known server's variant); None when it
    is not one. Also used for in-stream error events."""
    inner = payload.get("error")
    if isinstance(inner, str):  # Ollama's native {"error": "..."}
        inner = {"message": inner}
    obj = as_object(inner) or (payload if "message" in payload else {})
    message = _str(obj.get("message"))
    if message is None:
        return None
    kind_name = str(obj.get("type"))
    by_type = _BY_ANTHROPIC_TYPE.get(kind_name) or _BY_OPENAI_TYPE.get(kind_name)
    if status in _BY_STATUS:
        kind = _BY_STATUS[status]
    elif by_type is not None:  # e.g. an error event inside a 200 stream
        kind = by_type
    else:
        kind = _kind(status) if status >= 400 else ErrorKind.SERVER
    if obj.get("code") == "insufficient_quota":
        kind = ErrorKind.RATE_LIMIT
    error = UpstreamError(kind, status, message, _str(obj.get("code")), _str(obj.get("param")))
    return _context(error, obj)


def parse_error(status: int, body: bytes) -> UpstreamError:
    """Any upstream error body; one that is not a recognisable error is wrapped with its status."""
    payload = loads_object(body) if body else None
    parsed = parse_error_object(status, payload) if payload is not None else None
    if parsed is not None:
        return parsed
    snippet = body[:300].decode("utf-8", "replace").strip() or "(empty body)"
    return UpstreamError(_kind(status), status, f"Upstream returned HTTP {status}: {snippet}")


_ANTHROPIC_TYPES = {
    ErrorKind.INVALID_REQUEST: "invalid_request_error",
    ErrorKind.CONTEXT_LENGTH: "invalid_request_error",
    ErrorKind.AUTHENTICATION: "authentication_error",
    ErrorKind.BILLING: "billing_error",
    ErrorKind.PERMISSION: "permission_error",
    ErrorKind.NOT_FOUND: "not_found_error",
    ErrorKind.REQUEST_TOO_LARGE: "request_too_large",
    ErrorKind.RATE_LIMIT: "rate_limit_error",
    ErrorKind.TIMEOUT: "timeout_error",
    ErrorKind.OVERLOADED: "overloaded_error",
    ErrorKind.SERVER: "api_error",
}
_OPENAI_TYPES = {
    ErrorKind.RATE_LIMIT: ("requests", "rate_limit_exceeded"),
    ErrorKind.AUTHENTICATION: ("invalid_request_error", "invalid_api_key"),
    ErrorKind.CONTEXT_LENGTH: ("invalid_request_error", "context_length_exceeded"),
    ErrorKind.TIMEOUT: ("timeout", None),
    ErrorKind.OVERLOADED: ("server_error", None),
    ErrorKind.SERVER: ("server_error", None),
}


def _message_for(error: UpstreamError, client: Provider) -> str:
    if error.kind is not ErrorKind.CONTEXT_LENGTH or None in (
        error.prompt_tokens,
        error.max_tokens,
    ):
        return error.message
    if client == "anthropic":
        return f"prompt is too long: {error.prompt_tokens} tokens > {error.max_tokens} maximum"
    return (
        f"This model's maximum context length is {error.max_tokens} tokens. However, your "
        f"messages resulted in {error.prompt_tokens} tokens. Please reduce the length of the "
        "messages."
    )


def anthropic_error_object(error: UpstreamError) -> dict[str, Any]:
    message = _message_for(error, "anthropic")
    if error.kind is ErrorKind.CONTEXT_LENGTH and "prompt is too long" not in message:
        message = f"prompt is too long: {message}"
    return {"type": _ANTHROPIC_TYPES[error.kind], "message": message}


def openai_error_object(error: UpstreamError) -> dict[str, Any]:
    kind, code = _OPENAI_TYPES.get(error.kind, ("invalid_request_error", None))
    if error.code is not None and error.kind is not ErrorKind.CONTEXT_LENGTH:
        code = error.code
    return {
        "message": _message_for(error, "openai"),
        "type": kind,
        "param": error.param,
        "code": code,
    }


def client_status(error: UpstreamError, client: Provider) -> int:
    """The status keeps its meaning; overload is 529 for Anthropic's SDKs, 503 for OpenAI's."""
    if error.kind is ErrorKind.OVERLOADED:
        return 529 if client == "anthropic" else 503
    if error.status < 400:  # an error event inside a 200 stream, or a 200 carrying an error
        return 500
    return error.status


def render_error(error: UpstreamError, client: Provider) -> tuple[int, bytes]:
    if client == "anthropic":
        body = {"type": "error", "error": anthropic_error_object(error)}
    else:
        body = {"error": openai_error_object(error)}
    return client_status(error, client), dumps(body)


def translate_error(
    status: int,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    client: Provider,
) -> TranslatedResponse:
    """An upstream error response -> the client family's error, rate-limit headers kept."""
    new_status, new_body = render_error(parse_error(status, body), client)
    return TranslatedResponse(new_status, response_headers(headers, client, JSON_TYPE), new_body)
