"""A request's failure as one low-cardinality word, for traces (``error.type``) and dashboards.

The log line keeps the full human message (``ex.error``); counters and span attributes need a
closed set, so an answer with an error status is its status code, and a failure after the
response started (or without one) is named by what happened, never by free text.
"""

from __future__ import annotations

import re

from .exchange import Exchange

OTHER = "_OTHER"
"""OpenTelemetry's value for an error that fits no known kind."""

_EVENT_PREFIX = "upstream error event: "
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_.]{0,63}")
_EXACT = {
    "client disconnected": "client_disconnected",
    "cancelled by shutdown": "cancelled",
    "upstream idle timeout": "timeout",
    "total timeout": "timeout",
}
_PREFIXES = (
    ("upstream stream broke", "stream_cut"),
    ("upstream connection lost", "stream_cut"),
    ("upstream connection reset", "stream_cut"),
    ("internal error", "internal_error"),
)


def error_kind(ex: Exchange) -> str | None:
    """``"429"``, ``"timeout"``, ``"overloaded_error"``, ...; None when the request succeeded."""
    if ex.status is not None and ex.status >= 400:
        return str(ex.status)
    message = ex.error
    if message is None:
        return None
    exact = _EXACT.get(message)
    if exact is not None:
        return exact
    if message.startswith(_EVENT_PREFIX):
        event = message[len(_EVENT_PREFIX) :]
        return event if _EVENT_TYPE.fullmatch(event) else "upstream_error_event"
    for prefix, kind in _PREFIXES:
        if message.startswith(prefix):
            return kind
    return "no_response" if ex.status is None else OTHER
