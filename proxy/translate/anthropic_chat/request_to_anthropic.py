"""An OpenAI Chat Completions request -> an Anthropic Messages request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..families import ApiFamily, Endpoint, upstream_path
from ..records import Dropped, TranslatedRequest, TranslationOptions
from ..wire import JSON_BODY_HEADERS, as_object
from .common import ANTHROPIC_VERSION, THINKING_BUDGET, split_data_url, tool_input

__all__ = ["anthropic_request"]

_MAPPED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning_effort",
        "user",
        "response_format",
    }
)
_HARMLESS = {
    "n": 1,
    "logprobs": False,
    "store": False,
    "presence_penalty": 0,
    "frequency_penalty": 0,
}
"""Fields Anthropic lacks whose value here is the default, so nothing is lost."""
_MSG = "messages[]."
_PART = "messages[].content[]."


def anthropic_request(body: Mapping[str, Any], options: TranslationOptions) -> TranslatedRequest:
    dropped = Dropped()
    for key, value in body.items():
        if key not in _MAPPED and value is not None and _HARMLESS.get(key, ...) != value:
            dropped.add(key)
    if not options.reasoning and body.get("reasoning_effort") not in (None, "none"):
        dropped.add("reasoning_effort")
    notes: list[str] = []
    system, messages = _messages(body.get("messages"), dropped)
    out: dict[str, Any] = {"model": body.get("model")}
    if system is not None:
        out["system"] = system
    out["messages"] = messages
    _max_tokens_and_thinking(body, out, options, notes)
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = stop
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        out["temperature"] = min(temperature, 1)
        if temperature > 1:
            notes.append(f"temperature={temperature} clamped to 1 (Anthropic's maximum)")
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    _tools(body, out, dropped)
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    _response_format(body.get("response_format"), out, dropped)
    stream = body.get("stream") is True
    if stream:
        out["stream"] = True
    return TranslatedRequest(
        method="POST",
        path=upstream_path(ApiFamily.ANTHROPIC, Endpoint.GENERATE),
        body=out,
        headers={**JSON_BODY_HEADERS, "anthropic-version": ANTHROPIC_VERSION},
        dropped=dropped.result(),
        notes=tuple(notes),
        stream=stream,
    )


def _max_tokens_and_thinking(
    body: Mapping[str, Any], out: dict[str, Any], options: TranslationOptions, notes: list[str]
) -> None:
    """Anthropic requires ``max_tokens``, and a thinking budget below it (and >= 1024)."""
    asked = body.get("max_completion_tokens")
    if not isinstance(asked, int):
        asked = body.get("max_tokens")
    budget = THINKING_BUDGET.get(body.get("reasoning_effort"))  # type: ignore[arg-type]
    if not options.reasoning:
        budget = None
    if isinstance(asked, int) and not isinstance(asked, bool):
        out["max_tokens"] = asked
        if budget is not None and budget >= asked:
            budget = asked - 1
            if budget < 1024:
                notes.append(f"thinking off: max_tokens={asked} leaves no 1024-token budget")
                budget = None
            else:
                notes.append(f"thinking budget_tokens={budget} (below max_tokens)")
    else:
        out["max_tokens"] = options.default_max_tokens + (budget or 0)
        notes.append(f"max_tokens={out['max_tokens']} (client sent none)")
    if budget is not None:
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}


def _text_blocks(content: Any, dropped: Dropped) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "refusal":
            blocks.append({"type": "text", "text": part.get("refusal", "")})
        else:
            dropped.add(f"{_PART}{part.get('type')}")
    return blocks


def _messages(messages: Any, dropped: Dropped) -> tuple[Any, list[dict[str, Any]]]:
    """(system, messages). System and developer messages, wherever they stand, go to the
    top-level ``system`` in order; consecutive tool messages form one user turn."""
    systems: list[Any] = []
    out: list[dict[str, Any]] = []
    results: list[dict[str, Any]] | None = None  # the open user turn of tool results
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        for key in message:
            if key not in ("role", "content", "tool_calls", "tool_call_id"):
                dropped.add(_MSG + key)
        if role == "tool":
            if results is None:
                results = []
                out.append({"role": "user", "content": results})
            results.append(_tool_result(message, dropped))
            continue
        if role in ("system", "developer"):
            systems.append(message.get("content"))
            continue
        results = None
        if role == "user":
            out.append({"role": "user", "content": _user_content(message.get("content"), dropped)})
        elif role == "assistant":
            _assistant(message, out, dropped)
        else:
            dropped.add(f"{_MSG}role.{role}")
    return _system(systems, dropped), out


def _system(systems: list[Any], dropped: Dropped) -> Any:
    if len(systems) == 1 and isinstance(systems[0], str):
        return systems[0]
    blocks = [block for content in systems for block in _text_blocks(content, dropped)]
    return blocks or None


def _image(part: Mapping[str, Any], dropped: Dropped) -> dict[str, Any]:
    image = as_object(part.get("image_url"))
    url = str(image.get("url", ""))
    if "detail" in image:
        dropped.add(f"{_PART}image_url.detail")
    inline = split_data_url(url)
    if inline is None:
        return {"type": "image", "source": {"type": "url", "url": url}}
    media, data = inline
    return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}


def _file(part: Mapping[str, Any], dropped: Dropped) -> dict[str, Any] | None:
    file = as_object(part.get("file"))
    inline = split_data_url(str(file.get("file_data", "")))
    if inline is None:
        dropped.add(f"{_PART}file.file_id")
        return None
    media, data = inline
    block: dict[str, Any] = {
        "type": "document",
        "source": {"type": "base64", "media_type": media, "data": data},
    }
    if isinstance(file.get("filename"), str):
        block["title"] = file["filename"]
    return block


def _user_content(content: Any, dropped: Dropped) -> Any:
    if isinstance(content, str):
        return content
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            blocks.append(_image(part, dropped))
        elif kind == "file" and (block := _file(part, dropped)) is not None:
            blocks.append(block)
        elif kind != "file":
            dropped.add(f"{_PART}{kind}")
    return blocks


def _assistant(message: Mapping[str, Any], out: list[dict[str, Any]], dropped: Dropped) -> None:
    content = message.get("content")
    calls = [c for c in message.get("tool_calls") or () if isinstance(c, dict)]
    if isinstance(content, str) and content and not calls:
        out.append({"role": "assistant", "content": content})
        return
    blocks = _text_blocks(content, dropped)
    for call in calls:
        function = as_object(call.get("function"))
        arguments = tool_input(function.get("arguments"))
        if arguments is None:
            dropped.add(f"{_MSG}tool_calls[].function.arguments (not a JSON object)")
            arguments = {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id", ""),
                "name": function.get("name", ""),
                "input": arguments,
            }
        )
    if blocks:
        out.append({"role": "assistant", "content": blocks})
    else:
        dropped.add(f"{_MSG}assistant (empty)")


def _tool_result(message: Mapping[str, Any], dropped: Dropped) -> dict[str, Any]:
    content = message.get("content")
    return {
        "type": "tool_result",
        "tool_use_id": message.get("tool_call_id", ""),
        "content": content if isinstance(content, str) else _text_blocks(content, dropped),
    }


def _tools(body: Mapping[str, Any], out: dict[str, Any], dropped: Dropped) -> None:
    tools = []
    for tool in body.get("tools") or ():
        if not isinstance(tool, dict) or tool.get("type") != "function":
            dropped.add(f"tools[].{as_object(tool).get('type')}")
            continue
        function = as_object(tool.get("function"))
        for key in function:
            if key not in ("name", "description", "parameters"):
                dropped.add(f"tools[].function.{key}")
        converted: dict[str, Any] = {"name": function.get("name", "")}
        if "description" in function:
            converted["description"] = function["description"]
        converted["input_schema"] = function.get("parameters") or {
            "type": "object",
            "properties": {},
        }
        tools.append(converted)
    choice = _tool_choice(body.get("tool_choice"), dropped)
    if not tools:
        return
    out["tools"] = tools
    if body.get("parallel_tool_calls") is False:
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        out["tool_choice"] = choice


def _tool_choice(choice: Any, dropped: Dropped) -> dict[str, Any] | None:
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": as_object(choice.get("function")).get("name", "")}
    if choice is not None:
        dropped.add("tool_choice")
    return None


def _response_format(fmt: Any, out: dict[str, Any], dropped: Dropped) -> None:
    kind = as_object(fmt).get("type")
    if kind == "json_schema":
        schema = as_object(as_object(fmt).get("json_schema")).get("schema", {})
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    elif kind not in (None, "text"):
        dropped.add(f"response_format.{kind}")
