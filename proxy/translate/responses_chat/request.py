"""A Responses API request (plus the stored history of ``previous_response_id``) -> an
OpenAI Chat Completions request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..chat_request import chat_completions_request
from ..records import Dropped, TranslatedRequest, TranslationOptions
from ..wire import as_object

__all__ = ["chat_request", "input_items"]

_MAPPED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "previous_response_id",
        "store",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "temperature",
        "top_p",
        "text",
        "reasoning",
        "metadata",
    }
)
_SAME = ("user", "safety_identifier", "prompt_cache_key", "service_tier")
"""Fields chat completions has with the same meaning: passed as they are."""
_HARMLESS: dict[str, Any] = {"truncation": "disabled", "background": False, "include": []}


def input_items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """This request's ``input`` as a list of items (a string is one user message)."""
    value = body.get("input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def chat_request(
    body: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    options: TranslationOptions,
) -> TranslatedRequest:
    dropped = Dropped()
    for key, value in body.items():
        if key not in _MAPPED and key not in _SAME and _HARMLESS.get(key, ...) != value:
            dropped.add(key)
    dropped.unknown(as_object(body.get("metadata")), frozenset(), "metadata.")
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    messages += _messages([*history, *input_items(body)], dropped)
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if isinstance(body.get("max_output_tokens"), int):
        out[options.chat_max_tokens_field] = body["max_output_tokens"]
    for name in ("temperature", "top_p", *_SAME):
        if body.get(name) is not None:
            out[name] = body[name]
    _tools(body, out, dropped)
    _text_and_reasoning(body, out, dropped, options)
    return chat_completions_request(body, out, dropped)


def _part(part: Mapping[str, Any], dropped: Dropped) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": part.get("text", "")}
    if kind == "refusal":
        return {"type": "text", "text": part.get("refusal", "")}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        image: dict[str, Any] = {"url": part["image_url"]}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file = {k: part[k] for k in ("file_data", "file_id", "filename") if k in part}
        return {"type": "file", "file": file}
    dropped.add(f"input[].content[].{kind}")
    return None


def _content(content: Any, dropped: Dropped) -> Any:
    if isinstance(content, str):
        return content
    parts = (
        [_part(p, dropped) for p in content if isinstance(p, dict)]
        if isinstance(content, list)
        else []
    )
    return [p for p in parts if p is not None]


def _flat_text(content: Any) -> Any:
    """Assistant and system turns as one string when they are all text (every chat server
    accepts that; not all accept part lists there)."""
    if isinstance(content, list) and all(p.get("type") == "text" for p in content):
        return "".join(p["text"] for p in content)
    return content


def _messages(items: Sequence[Mapping[str, Any]], dropped: Dropped) -> list[dict[str, Any]]:
    """Function calls join the assistant message before them (parallel calls are one
    assistant turn in chat); function outputs become ``tool`` messages."""
    out: list[dict[str, Any]] = []
    open_assistant: dict[str, Any] | None = None
    for item in items:
        kind = item.get("type", "message")
        if kind == "function_call":
            if open_assistant is None:
                open_assistant = {"role": "assistant", "content": None}
                out.append(open_assistant)
            call = {"name": item.get("name", ""), "arguments": item.get("arguments", "")}
            open_assistant.setdefault("tool_calls", []).append(
                {"id": item.get("call_id", ""), "type": "function", "function": call}
            )
            continue
        open_assistant = None
        if kind == "function_call_output":
            output = item.get("output", "")
            content = output if isinstance(output, str) else _content(output, dropped)
            out.append(
                {"role": "tool", "tool_call_id": item.get("call_id", ""), "content": content}
            )
        elif kind == "message":
            role = item.get("role", "user")
            content = _content(item.get("content"), dropped)
            if role in ("system", "developer"):
                out.append({"role": "system", "content": _flat_text(content)})
            elif role == "assistant":
                open_assistant = {"role": "assistant", "content": _flat_text(content)}
                out.append(open_assistant)
            else:
                out.append({"role": "user", "content": content})
        else:
            dropped.add(f"input[].{kind}")
    return out


def _tools(body: Mapping[str, Any], out: dict[str, Any], dropped: Dropped) -> None:
    tools = []
    for tool in body.get("tools") or ():
        tool = as_object(tool)
        if tool.get("type") != "function":
            dropped.add(f"tools[].{tool.get('type')}")
            continue
        function = {
            k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool
        }
        tools.append({"type": "function", "function": function})
    if not tools:
        return
    out["tools"] = tools
    choice = body.get("tool_choice")
    if choice in ("auto", "none", "required"):
        out["tool_choice"] = choice
    elif as_object(choice).get("type") == "function":
        name = as_object(choice).get("name", "")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif choice is not None:
        dropped.add("tool_choice")
    if isinstance(body.get("parallel_tool_calls"), bool):
        out["parallel_tool_calls"] = body["parallel_tool_calls"]


def _text_and_reasoning(
    body: Mapping[str, Any], out: dict[str, Any], dropped: Dropped, options: TranslationOptions
) -> None:
    text = as_object(body.get("text"))
    fmt = as_object(text.get("format"))
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "description", "schema", "strict") if k in fmt}
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif fmt.get("type") == "json_object":
        out["response_format"] = {"type": "json_object"}
    if "verbosity" in text:
        out["verbosity"] = text["verbosity"]
    reasoning = as_object(body.get("reasoning"))
    if isinstance(reasoning.get("effort"), str) and options.reasoning:
        out["reasoning_effort"] = reasoning["effort"]
    for key in reasoning:
        if (key != "effort" or not options.reasoning) and reasoning[key] is not None:
            dropped.add(f"reasoning.{key}")
