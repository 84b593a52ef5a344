"""Deterministic tool calls, shared by both fake providers.

The rule: a request that declares tools and whose ``tool_choice`` *forces* a call is answered
with tool calls instead of text; every other request (``auto``, ``none``, no tools, tool
results sent back) gets the usual text answer.

- OpenAI chat: ``{"type": "function", "function": {"name": N}}`` calls N;
  ``"required"`` calls every declared function, in order (only the first when
  ``parallel_tool_calls`` is false).
- Anthropic: ``{"type": "tool", "name": N}`` calls N; ``{"type": "any"}`` calls every declared
  tool, in order (only the first with ``disable_parallel_tool_use: true``).

Arguments follow the tool's JSON schema: property ``k`` (0-based, schema order) is
``"tok{k}"`` for strings, ``k`` for integers and numbers, ``true`` for booleans, ``[]`` for
arrays, ``{}`` for objects and ``null`` otherwise. Ids are ``call_fake_{key}_{i}`` (OpenAI)
and ``toolu_fake_{key}_{i}`` (Anthropic). Streaming sends each call's JSON text in
``chunks`` pieces (the ``x-fake-chunks`` count); completion / output tokens = the number of
pieces of all calls together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .content import dumps

_SCHEMA_VALUES: dict[str, Any] = {"boolean": True, "array": [], "object": {}}


@dataclass(frozen=True)
class ToolCall:
    index: int
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return dumps(self.arguments).decode()

    def pieces(self, chunks: int) -> list[str]:
        """The JSON text in ``chunks`` nearly equal pieces (fewer when it is shorter)."""
        text = self.arguments_json
        count = max(1, min(chunks, len(text)))
        step, extra = divmod(len(text), count)
        out, start = [], 0
        for i in range(count):
            end = start + step + (1 if i < extra else 0)
            out.append(text[start:end])
            start = end
        return out


def fake_arguments(schema: Any) -> dict[str, Any]:
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return {}
    values: dict[str, Any] = {}
    for k, (name, spec) in enumerate(properties.items()):
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind == "string":
            values[name] = f"tok{k}"
        elif kind in ("integer", "number"):
            values[name] = k
        else:
            values[name] = _SCHEMA_VALUES.get(kind) if isinstance(kind, str) else None
    return values


def _declared(tools: Any, openai: bool) -> list[tuple[str, Any]]:
    """(name, schema) of each declared function tool."""
    out = []
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict):
            continue
        if openai and isinstance(tool.get("function"), dict):
            fn = tool["function"]
            out.append((str(fn.get("name", "")), fn.get("parameters")))
        elif not openai and "name" in tool:
            out.append((str(tool["name"]), tool.get("input_schema")))
    return out


def _choose(declared: list[tuple[str, Any]], named: str | None, parallel: bool) -> list[ToolCall]:
    if named is not None:
        chosen = [(n, s) for n, s in declared if n == named][:1] or [(named, None)]
    else:
        chosen = declared if parallel else declared[:1]
    return [ToolCall(i, name, fake_arguments(schema)) for i, (name, schema) in enumerate(chosen)]


def openai_forced_calls(payload: dict[str, Any]) -> list[ToolCall]:
    """The calls an OpenAI chat request forces (empty: answer with text)."""
    declared = _declared(payload.get("tools"), openai=True)
    choice = payload.get("tool_choice")
    if not declared:
        return []
    parallel = payload.get("parallel_tool_calls") is not False
    if choice == "required":
        return _choose(declared, None, parallel)
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return _choose(declared, str(choice["function"].get("name", "")), parallel)
    return []


def anthropic_forced_calls(payload: dict[str, Any]) -> list[ToolCall]:
    """The calls an Anthropic messages request forces (empty: answer with text)."""
    declared = _declared(payload.get("tools"), openai=False)
    choice = payload.get("tool_choice")
    if not declared or not isinstance(choice, dict):
        return []
    parallel = choice.get("disable_parallel_tool_use") is not True
    if choice.get("type") == "any":
        return _choose(declared, None, parallel)
    if choice.get("type") == "tool":
        return _choose(declared, str(choice.get("name", "")), parallel)
    return []


def piece_count(calls: list[ToolCall], chunks: int) -> int:
    return sum(len(call.pieces(chunks)) for call in calls)
