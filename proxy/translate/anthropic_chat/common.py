"""Facts both directions of Anthropic Messages <-> OpenAI Chat share: stop reasons, usage,
reasoning effort, images and tool arguments."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..wire import as_object

ANTHROPIC_VERSION = "2023-06-01"
"""Sent upstream when the client (an OpenAI SDK) could not have sent one."""

CHAT_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
"""Anthropic ``stop_reason`` -> OpenAI ``finish_reason``."""

ANTHROPIC_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
"""OpenAI ``finish_reason`` -> Anthropic ``stop_reason``."""


def chat_finish(stop_reason: Any) -> str:
    return CHAT_FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def anthropic_stop(finish_reason: Any) -> str:
    return (
        ANTHROPIC_STOP.get(finish_reason, "end_turn")
        if isinstance(finish_reason, str)
        else "end_turn"
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def chat_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic usage -> OpenAI usage. Anthropic's ``input_tokens`` excludes cache reads
    and writes; OpenAI's ``prompt_tokens`` includes every input token, with the cache hits
    repeated in ``cached_tokens`` (a subset, never to be added again)."""
    fresh = _int(usage.get("input_tokens"))
    read = _int(usage.get("cache_read_input_tokens"))
    written = _int(usage.get("cache_creation_input_tokens"))
    output = _int(usage.get("output_tokens"))
    prompt = fresh + read + written
    thinking = _int(as_object(usage.get("output_tokens_details")).get("thinking_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read},
        "completion_tokens_details": {"reasoning_tokens": thinking},
    }


def anthropic_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI usage -> Anthropic usage: cached tokens move out of ``input_tokens`` into
    ``cache_read_input_tokens``, so their sum is the OpenAI ``prompt_tokens``."""
    prompt = _int(usage.get("prompt_tokens"))
    cached = min(_int(as_object(usage.get("prompt_tokens_details")).get("cached_tokens")), prompt)
    out: dict[str, Any] = {
        "input_tokens": prompt - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": _int(usage.get("completion_tokens")),
    }
    reasoning = _int(as_object(usage.get("completion_tokens_details")).get("reasoning_tokens"))
    if reasoning:
        out["output_tokens_details"] = {"thinking_tokens": reasoning}
    return out


THINKING_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
"""OpenAI ``reasoning_effort`` -> Anthropic thinking ``budget_tokens`` (1024 is Anthropic's
minimum). ``effort_for_budget`` inverts it exactly for these budgets."""


def effort_for_budget(budget: int) -> str:
    if budget <= 1024:
        return "minimal"
    if budget < 4096:
        return "low"
    if budget < 16384:
        return "medium"
    if budget < 32768:
        return "high"
    return "xhigh"


ANTHROPIC_EFFORTS = ("low", "medium", "high", "xhigh", "max")


def chat_effort(anthropic_effort: str) -> str:
    """Anthropic ``output_config.effort`` -> OpenAI ``reasoning_effort`` (``max`` has no
    OpenAI name; ``xhigh`` is the closest)."""
    return "xhigh" if anthropic_effort == "max" else anthropic_effort


def data_url(media_type: str, data: str) -> str:
    return f"data:{media_type};base64,{data}"


def split_data_url(url: str) -> tuple[str, str] | None:
    """``data:image/png;base64,AAAA`` -> ("image/png", "AAAA"); None for other URLs."""
    if not url.startswith("data:"):
        return None
    head, sep, data = url[5:].partition(",")
    if not sep or not head.endswith(";base64"):
        return None
    return head[: -len(";base64")] or "application/octet-stream", data


def tool_arguments(value: Any) -> str:
    """Anthropic tool ``input`` (an object) -> OpenAI ``arguments`` (a JSON string)."""
    return json.dumps(
        value if isinstance(value, dict) else {}, ensure_ascii=False, separators=(",", ":")
    )


def tool_input(arguments: Any) -> dict[str, Any] | None:
    """OpenAI ``arguments`` -> Anthropic ``input``; None when it is not a JSON object."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str):
        return None
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
