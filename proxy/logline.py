"""The request's one canonical log line, derived from the exchange's typed fields only."""

from __future__ import annotations

from typing import Any

from .exchange import Exchange
from .outcomes import Attempt, SlotKey


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def attempt_fields(attempt: Attempt) -> dict[str, Any]:
    return {
        "upstream": attempt.upstream,
        "status": attempt.status,
        "reason": attempt.reason.value,
        "hint": attempt.hint,
        "waited_ms": _ms(attempt.waited_s),
        "ms": _ms(attempt.duration_s),
        "detail": attempt.detail,
        **_stream_failure(attempt),
    }


def _stream_failure(attempt: Attempt) -> dict[str, Any]:
    if attempt.stream_failure is None:
        return {}
    return {
        "stream_failure": attempt.stream_failure.value,
        "event_type": attempt.event_type,
        "held_bytes": attempt.held_bytes,
    }


def used_fallback(ex: Exchange) -> bool:
    """Some attempt went to (or skipped) an upstream other than the route's first."""
    if ex.route is None:
        return False
    first = ex.route.config.upstreams[0].name
    return any(a.upstream != first for a in ex.attempts)


def log_level(ex: Exchange) -> str:
    """5xx answers are errors, cut or failed streams warnings, everything else info."""
    if ex.status is not None and ex.status >= 500:
        return "error"
    if ex.error is not None and ex.error not in ("client disconnected", "cancelled by shutdown"):
        return "warning"
    return "info"


def log_fields(ex: Exchange) -> dict[str, Any]:
    """Every field of the line, in a stable order; absent facts are ``None``, never missing."""
    usage = ex.usage
    counts = usage.usage if usage is not None else None
    context = ex.context
    fields: dict[str, Any] = {
        "request_id": ex.request_id,
        "route": ex.route.name if ex.route is not None else None,
        "upstream": ex.upstream.name if ex.upstream is not None else None,
        "model": usage.model if usage is not None else None,
        "method": ex.request.method,
        "path": ex.request.rel_url.raw_path,
        "status": ex.status,
        "stream": ex.stream,
        "attempts": [attempt_fields(a) for a in ex.attempts],
        "retry_wait_ms": _ms(ex.retry.waited_s),
        "held_ms": _ms(ex.retry.held_s),
        "held_for": ex.retry.held_for,
        "ratelimited": ex.retry.ratelimited,
        "fallback": used_fallback(ex),
        "cooldown_waits": ex.retry.cooldown_waits,
        "ttfb_ms": ex.elapsed_ms(ex.t_first_byte) if ex.t_first_byte is not None else None,
        "ttft_ms": ex.elapsed_ms(ex.t_first_token) if ex.t_first_token is not None else None,
        "commit_ms": ex.elapsed_ms(ex.t_commit) if ex.t_commit is not None else None,
        "duration_ms": ex.elapsed_ms(),
        "prompt_tokens": counts.prompt_tokens if counts is not None else None,
        "completion_tokens": counts.completion_tokens if counts is not None else None,
        "cached_tokens": counts.cached_tokens if counts is not None else None,
        "token_source": counts.source if counts is not None and counts.source != "none" else None,
        "cost_usd": usage.cost_usd if usage is not None else None,
        "prompt_tokens_est": context.prompt_tokens_est if context is not None else None,
        "count_method": context.count_method if context is not None else None,
        "budget": context.budget if context is not None else None,
        "prompt_tokens_low": context.low if context is not None else None,
        "prompt_tokens_high": context.high if context is not None else None,
        "trimmed_messages": context.trimmed_messages if context is not None else 0,
        "trim_retried": context.retried if context is not None else False,
        "bytes_in": len(ex.original_body),
        "bytes_out": ex.bytes_out,
        "client": ex.request.remote,
        "error": ex.error,
    }
    if ex.translation is not None:
        fields["translation"] = {
            "client": ex.translation.client,
            "upstream": ex.translation.upstream,
            "dropped": list(ex.translation.dropped),
            "notes": list(ex.translation.notes),
        }
    if ex.client_key is not None:
        fields["key_id"] = ex.client_key.key_id
        fields["auth_refused"] = ex.client_key.refused
    if ex.json_error is not None:
        fields["body_parse_error"] = ex.json_error
    if ex.plugin_errors:
        fields["plugin_errors"] = ex.plugin_errors
    return fields


_REPORTED: SlotKey[dict[str, Any]] = SlotKey("log_line")


def report_fields(ex: Exchange) -> dict[str, Any]:
    """:func:`log_fields`, built once for every reporter of the request (the log line and
    the dashboard's recent requests): only in ``on_report``, when the outcomes are final.
    Readers must not modify it."""
    fields = ex.slot(_REPORTED)
    if fields is None:
        fields = log_fields(ex)
        ex.set_slot(_REPORTED, fields)
    return fields


_ABSENT: dict[str, Any] = {
    "stream": False,
    "attempts": [],
    "retry_wait_ms": 0.0,
    "held_ms": 0.0,
    "fallback": False,
    "cooldown_waits": [],
    "trimmed_messages": 0,
    "trim_retried": False,
    "bytes_in": 0,
    "bytes_out": 0,
}


def unparsed_request_fields(**known: Any) -> dict[str, Any]:
    """The line of a request aiohttp could not even parse (no exchange exists): the same keys
    as :func:`log_fields`, in the same order, with what is known and the rest absent."""
    fields = {key: _ABSENT.get(key) for key in LINE_KEYS}
    fields.update(known)
    return fields


LINE_KEYS = (
    "request_id", "route", "upstream", "model", "method", "path", "status", "stream",
    "attempts", "retry_wait_ms", "held_ms", "held_for", "ratelimited", "fallback",
    "cooldown_waits", "ttfb_ms", "ttft_ms", "commit_ms", "duration_ms", "prompt_tokens",
    "completion_tokens", "cached_tokens", "token_source", "cost_usd", "prompt_tokens_est",
    "count_method", "budget", "prompt_tokens_low", "prompt_tokens_high", "trimmed_messages",
    "trim_retried", "bytes_in", "bytes_out", "client", "error",
)  # fmt: skip
"""Every key a request line always has (``log_fields`` adds a few only when they apply)."""
