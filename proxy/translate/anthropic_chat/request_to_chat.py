"""An Anthropic Messages request -> an OpenAI Chat Completions request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..chat_request import chat_completions_request
from ..records import Dropped, TranslatedRequest, TranslationOptions
from ..wire import as_object
from .common import (
    ANTHROPIC_EFFORTS,
    chat_effort,
    data_url,
    effort_for_budget,
    tool_arguments,
)

__all__ = ["chat_request"]

_TOP_LEVEL = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "thinking",
        "metadata",
        "output_config",
    }
)
_TEXT_BLOCK = frozenset({"type", "text"})
_BLOCK = "messages[].content[]."


def chat_request(body: Mapping[str, Any], options: TranslationOptions) -> TranslatedRequest:
    dropped = Dropped()
    dropped.unknown(body, _TOP_LEVEL)
    out: dict[str, Any] = {"model": body.get("model")}
    out["messages"] = _system(body.get("system"), dropped) + _messages(
        body.get("messages"), dropped
    )
    if "max_tokens" in body:
        out[options.chat_max_tokens_field] = body["max_tokens"]
    for name in ("temperature", "top_p"):
        if name in body:
            out[name] = body[name]
    stops = body.get("stop_sequences")
    if isinstance(stops, list) and stops:
        out["stop"] = stops
    _tools(body, out, dropped)
    _reasoning(body, out, dropped, options.reasoning)
    user = as_object(body.get("metadata")).get("user_id")
    if isinstance(user, str):
        out["user"] = user
    dropped.unknown(as_object(body.get("metadata")), frozenset({"user_id"}), "metadata.")
    return chat_completions_request(body, out, dropped)


def _text_part(block: Mapping[str, Any], dropped: Dropped, where: str) -> dict[str, Any]:
    dropped.unknown(block, _TEXT_BLOCK, where)
    return {"type": "text", "text": block.get("text", "")}


def _system(system: Any, dropped: Dropped) -> list[dict[str, Any]]:
    if isinstance(system, str):
        return [{"role": "system", "content": system}] if system else []
    if not isinstance(system, list) or not system:
        return []
    parts = [_text_part(b, dropped, "system[].") for b in system if isinstance(b, dict)]
    return [{"role": "system", "content": parts}]


def _messages(messages: Any, dropped: Dropped) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        dropped.unknown(message, frozenset({"role", "content"}), "messages[].")
        if message.get("role") == "assistant":
            out.append(_assistant(message.get("content"), dropped))
        else:
            out.extend(_user(message.get("content"), dropped))
    return out


def _image(block: Mapping[str, Any], dropped: Dropped) -> dict[str, Any] | None:
    source = as_object(block.get("source"))
    if source.get("type") == "base64":
        url = data_url(str(source.get("media_type", "image/png")), str(source.get("data", "")))
    elif source.get("type") == "url":
        url = str(source.get("url", ""))
    else:
        dropped.add(f"{_BLOCK}image.source.{source.get('type')}")
        return None
    dropped.unknown(block, frozenset({"type", "source"}), _BLOCK)
    return {"type": "image_url", "image_url": {"url": url}}


def _document(block: Mapping[str, Any], dropped: Dropped) -> dict[str, Any] | None:
    source = as_object(block.get("source"))
    if source.get("type") == "text":
        return {"type": "text", "text": str(source.get("data", ""))}
    if source.get("type") == "base64":
        media = str(source.get("media_type", "application/pdf"))
        title = block.get("title")
        name = title if isinstance(title, str) and title else "document.pdf"
        return {
            "type": "file",
            "file": {"filename": name, "file_data": data_url(media, str(source.get("data", "")))},
        }
    dropped.add(f"{_BLOCK}document.source.{source.get('type')}")
    return None


def _user_part(block: Mapping[str, Any], dropped: Dropped) -> dict[str, Any] | None:
    kind = block.get("type")
    if kind == "text":
        return _text_part(block, dropped, _BLOCK)
    if kind == "image":
        return _image(block, dropped)
    if kind == "document":
        return _document(block, dropped)
    dropped.add(f"{_BLOCK}{kind}")
    return None


def _user(content: Any, dropped: Dropped) -> list[dict[str, Any]]:
    """Tool results become ``tool`` messages first, in order (OpenAI wants them right after
    the assistant's calls); the rest of the turn follows as one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "tool_result":
            tools.append(_tool_result(block, parts, dropped))
            continue
        part = _user_part(block, dropped)
        if part is not None:
            parts.append(part)
    return tools + ([{"role": "user", "content": parts}] if parts else [])


def _tool_result(
    block: Mapping[str, Any], moved: list[dict[str, Any]], dropped: Dropped
) -> dict[str, Any]:
    """Images inside a tool result move to the following user message: OpenAI tool
    messages carry text only."""
    dropped.unknown(block, frozenset({"type", "tool_use_id", "content"}), _BLOCK + "tool_result.")
    content = block.get("content", "")
    if isinstance(content, list):
        texts = []
        for inner in content:
            if not isinstance(inner, dict):
                continue
            if inner.get("type") == "text":
                texts.append(_text_part(inner, dropped, _BLOCK + "tool_result.content[]."))
            else:
                part = _user_part(inner, dropped)
                if part is not None:
                    moved.append(part)
        content = texts
    elif not isinstance(content, str):
        content = ""
    return {"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": content}


def _assistant(content: Any, dropped: Dropped) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(_text_part(block, dropped, _BLOCK))
        elif kind == "tool_use":
            dropped.unknown(block, frozenset({"type", "id", "name", "input"}), _BLOCK + "tool_use.")
            function = {
                "name": block.get("name", ""),
                "arguments": tool_arguments(block.get("input")),
            }
            calls.append({"id": block.get("id", ""), "type": "function", "function": function})
        else:
            dropped.add(f"{_BLOCK}{kind}")
    message: dict[str, Any] = {"role": "assistant"}
    if len(texts) == 1:
        message["content"] = texts[0]["text"]
    elif texts:
        message["content"] = texts
    else:
        message["content"] = None if calls else ""
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(body: Mapping[str, Any], out: dict[str, Any], dropped: Dropped) -> None:
    tools = []
    for tool in body.get("tools") or ():
        if not isinstance(tool, dict):
            continue
        if tool.get("type") not in (None, "custom"):
            dropped.add(f"tools[].{tool.get('type')}")
            continue
        dropped.unknown(
            tool, frozenset({"type", "name", "description", "input_schema", "strict"}), "tools[]."
        )
        function: dict[str, Any] = {"name": tool.get("name", "")}
        if "description" in tool:
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema", {"type": "object", "properties": {}})
        if "strict" in tool:
            function["strict"] = tool["strict"]
        tools.append({"type": "function", "function": function})
    choice = as_object(body.get("tool_choice"))
    if not tools:
        if choice:
            dropped.add("tool_choice")
        return
    out["tools"] = tools
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False
    dropped.unknown(
        choice, frozenset({"type", "name", "disable_parallel_tool_use"}), "tool_choice."
    )


def _reasoning(
    body: Mapping[str, Any], out: dict[str, Any], dropped: Dropped, reasoning: bool
) -> None:
    """``thinking`` (budget) or ``output_config.effort`` -> ``reasoning_effort``;
    ``output_config.format`` (structured output) -> ``response_format``."""
    thinking = as_object(body.get("thinking"))
    config = as_object(body.get("output_config"))
    effort = config.get("effort")
    budget = thinking.get("budget_tokens")
    if not reasoning:
        if thinking.get("type") not in (None, "disabled"):
            dropped.add("thinking")
        if effort is not None:
            dropped.add("output_config.effort")
    elif thinking.get("type") == "enabled" and isinstance(budget, int):
        out["reasoning_effort"] = effort_for_budget(budget)
    elif thinking.get("type") in ("enabled", "adaptive") or effort in ANTHROPIC_EFFORTS:
        out["reasoning_effort"] = chat_effort(effort) if effort in ANTHROPIC_EFFORTS else "medium"
    fmt = as_object(config.get("format"))
    if fmt.get("type") == "json_schema":
        schema = {"name": "output", "schema": fmt.get("schema", {}), "strict": True}
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    dropped.unknown(config, frozenset({"effort", "format"}), "output_config.")
