"""Request translation between Anthropic Messages and OpenAI Chat Completions: one table per
direction, the dropped-field lists, and there-and-back property tests."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.translate import TranslationOptions
from proxy.translate.anthropic_chat.request_to_anthropic import anthropic_request
from proxy.translate.anthropic_chat.request_to_chat import chat_request

OPTIONS = TranslationOptions()
PNG = "iVBORw0KGgo="
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    return dict(chat_request(body, OPTIONS).body or {})


def to_anthropic(body: dict[str, Any]) -> dict[str, Any]:
    return dict(anthropic_request(body, OPTIONS).body or {})


# ---- Anthropic -> Chat -----------------------------------------------------------------

ANTHROPIC_TO_CHAT = [
    pytest.param(
        {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
        {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
        id="minimal",
    ),
    pytest.param(
        {"model": "m", "max_tokens": 5, "system": "be brief", "messages": []},
        {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "be brief"}]},
        id="system-string",
    ),
    pytest.param(
        {
            "model": "m",
            "max_tokens": 5,
            "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "messages": [],
        },
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {
                    "role": "system",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ],
        },
        id="system-blocks",
    ),
    pytest.param(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x/y.jpg"}},
                    ],
                }
            ],
        },
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                        {"type": "image_url", "image_url": {"url": "https://x/y.jpg"}},
                    ],
                }
            ],
        },
        id="images",
    ),
    pytest.param(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "checking"},
                        {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "P"}},
                        {"type": "tool_use", "id": "toolu_2", "name": "t", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_2",
                            "content": [{"type": "text", "text": "noon"}],
                        },
                        {"type": "text", "text": "thanks"},
                    ],
                },
            ],
        },
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {
                    "role": "assistant",
                    "content": "checking",
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"P"}'},
                        },
                        {
                            "id": "toolu_2",
                            "type": "function",
                            "function": {"name": "t", "arguments": "{}"},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
                {
                    "role": "tool",
                    "tool_call_id": "toolu_2",
                    "content": [{"type": "text", "text": "noon"}],
                },
                {"role": "user", "content": [{"type": "text", "text": "thanks"}]},
            ],
        },
        id="parallel-tool-calls-and-results-in-order",
    ),
    pytest.param(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [],
            "tools": [{"name": "w", "description": "weather", "input_schema": WEATHER_SCHEMA}],
            "tool_choice": {"type": "tool", "name": "w", "disable_parallel_tool_use": True},
        },
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "w",
                        "description": "weather",
                        "parameters": WEATHER_SCHEMA,
                    },
                }
            ],
            "tool_choice": {"type": "function", "function": {"name": "w"}},
            "parallel_tool_calls": False,
        },
        id="tools-forced-no-parallel",
    ),
    pytest.param(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [],
            "stop_sequences": ["END"],
            "temperature": 0.5,
            "top_p": 0.9,
            "metadata": {"user_id": "u1"},
            "stream": True,
            "thinking": {"type": "enabled", "budget_tokens": 8192},
        },
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [],
            "stop": ["END"],
            "temperature": 0.5,
            "top_p": 0.9,
            "user": "u1",
            "stream": True,
            "stream_options": {"include_usage": True},
            "reasoning_effort": "medium",
        },
        id="sampling-stop-stream-thinking",
    ),
]


@pytest.mark.parametrize(("anthropic", "chat"), ANTHROPIC_TO_CHAT)
def test_anthropic_to_chat(anthropic: dict[str, Any], chat: dict[str, Any]) -> None:
    assert chat == to_chat(anthropic)


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "w"}, {"type": "function", "function": {"name": "w"}}),
    ],
)
def test_anthropic_tool_choice(tool_choice: dict[str, Any], expected: Any) -> None:
    body = {"model": "m", "max_tokens": 1, "messages": [], "tool_choice": tool_choice}
    body["tools"] = [{"name": "w", "input_schema": WEATHER_SCHEMA}]
    assert expected == to_chat(body)["tool_choice"]


def test_max_completion_tokens_spelling_is_an_option() -> None:
    options = TranslationOptions(chat_max_tokens_field="max_completion_tokens")
    body = chat_request({"model": "m", "max_tokens": 7, "messages": []}, options).body
    assert 7 == body["max_completion_tokens"]  # type: ignore[index]
    assert "max_tokens" not in body  # type: ignore[operator]


@pytest.mark.parametrize(
    ("body", "dropped"),
    [
        (
            {
                "model": "m",
                "max_tokens": 1,
                "top_k": 5,
                "service_tier": "auto",
                "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
                "messages": [
                    {
                        "role": "assistant",
                        "content": [{"type": "thinking", "thinking": "hm", "signature": "x"}],
                    }
                ],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            (
                "top_k",
                "service_tier",
                "system[].cache_control",
                "messages[].content[].thinking",
                "tools[].web_search_20250305",
            ),
        ),
        (
            {"model": "m", "max_tokens": 1, "messages": [], "tool_choice": {"type": "any"}},
            ("tool_choice",),
        ),
    ],
)
def test_anthropic_to_chat_lists_dropped_fields(
    body: dict[str, Any], dropped: tuple[str, ...]
) -> None:
    assert dropped == chat_request(body, OPTIONS).dropped


def test_tool_result_image_moves_to_the_following_user_message() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://x/shot.png"}}
    result = {
        "type": "tool_result",
        "tool_use_id": "t1",
        "content": [{"type": "text", "text": "see"}, image],
    }
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [result]}]}
    assert [
        {"role": "tool", "tool_call_id": "t1", "content": [{"type": "text", "text": "see"}]},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://x/shot.png"}}],
        },
    ] == to_chat(body)["messages"]


# ---- Chat -> Anthropic -----------------------------------------------------------------

CHAT_TO_ANTHROPIC = [
    pytest.param(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4096},
        ("max_tokens=4096 (client sent none)",),
        id="default-max-tokens",
    ),
    pytest.param(
        {
            "model": "m",
            "max_completion_tokens": 9,
            "messages": [
                {"role": "system", "content": "one"},
                {"role": "developer", "content": [{"type": "text", "text": "two"}]},
                {"role": "user", "content": "hi"},
            ],
        },
        {
            "model": "m",
            "system": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 9,
        },
        (),
        id="system-and-developer-to-system-blocks",
    ),
    pytest.param(
        {
            "model": "m",
            "max_tokens": 9,
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"a": 1}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "t", "arguments": ""},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "r1"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "r2"}],
                },
                {"role": "user", "content": "and?"},
            ],
        },
        {
            "model": "m",
            "messages": [
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "call_1", "name": "w", "input": {"a": 1}},
                        {"type": "tool_use", "id": "call_2", "name": "t", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "r1"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "call_2",
                            "content": [{"type": "text", "text": "r2"}],
                        },
                    ],
                },
                {"role": "user", "content": "and?"},
            ],
            "max_tokens": 9,
        },
        (),
        id="tool-messages-form-one-user-turn",
    ),
    pytest.param(
        {
            "model": "m",
            "max_tokens": 9,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                        {"type": "image_url", "image_url": {"url": "https://x/y.jpg"}},
                    ],
                }
            ],
            "stop": "END",
            "temperature": 1.5,
            "user": "u",
            "tools": [
                {"type": "function", "function": {"name": "w", "parameters": WEATHER_SCHEMA}}
            ],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        },
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x/y.jpg"}},
                    ],
                }
            ],
            "max_tokens": 9,
            "stop_sequences": ["END"],
            "temperature": 1,
            "tools": [{"name": "w", "input_schema": WEATHER_SCHEMA}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "metadata": {"user_id": "u"},
        },
        ("temperature=1.5 clamped to 1 (Anthropic's maximum)",),
        id="images-stop-temperature-tools",
    ),
    pytest.param(
        {"model": "m", "messages": [], "reasoning_effort": "high"},
        {
            "model": "m",
            "messages": [],
            "max_tokens": 4096 + 16384,
            "thinking": {"type": "enabled", "budget_tokens": 16384},
        },
        ("max_tokens=20480 (client sent none)",),
        id="reasoning-effort-default-max-tokens-makes-room",
    ),
    pytest.param(
        {"model": "m", "messages": [], "reasoning_effort": "high", "max_tokens": 5000},
        {
            "model": "m",
            "messages": [],
            "max_tokens": 5000,
            "thinking": {"type": "enabled", "budget_tokens": 4999},
        },
        ("thinking budget_tokens=4999 (below max_tokens)",),
        id="reasoning-budget-below-max-tokens",
    ),
    pytest.param(
        {"model": "m", "messages": [], "reasoning_effort": "low", "max_tokens": 500},
        {"model": "m", "messages": [], "max_tokens": 500},
        ("thinking off: max_tokens=500 leaves no 1024-token budget",),
        id="reasoning-impossible-under-1024",
    ),
]


@pytest.mark.parametrize(("chat", "anthropic", "notes"), CHAT_TO_ANTHROPIC)
def test_chat_to_anthropic(
    chat: dict[str, Any], anthropic: dict[str, Any], notes: tuple[str, ...]
) -> None:
    translated = anthropic_request(chat, OPTIONS)
    assert (anthropic, notes) == (translated.body, translated.notes)
    assert {
        "anthropic-version": "2023-06-01",
        "accept-encoding": "identity",
        "content-type": "application/json",
    } == translated.headers


def test_chat_to_anthropic_lists_dropped_fields() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "x", "name": "bob"}],
        "n": 1,
        "logprobs": False,
        "seed": 3,
        "frequency_penalty": 0.5,
        "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "w", "strict": True}}],
    }
    assert (
        "seed",
        "frequency_penalty",
        "messages[].name",
        "tools[].function.strict",
        "response_format.json_object",
    ) == anthropic_request(body, OPTIONS).dropped


# ---- there and back ----------------------------------------------------------------------

texts = st.text(min_size=1, max_size=12)
ids = st.from_regex(r"[a-z]{3,6}_[A-Za-z0-9]{4,8}", fullmatch=True)
schemas = st.fixed_dictionaries(
    {
        "type": st.just("object"),
        "properties": st.dictionaries(
            st.from_regex(r"[a-z]{1,5}", fullmatch=True), st.just({"type": "string"}), max_size=3
        ),
    }
)
tool_inputs = st.dictionaries(
    st.from_regex(r"[a-z]{1,5}", fullmatch=True), st.integers() | texts, max_size=3
)
images = st.sampled_from(
    [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
    ]
)
text_blocks = st.builds(lambda t: {"type": "text", "text": t}, texts)


@st.composite
def anthropic_conversation(draw: st.DrawFn) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 4))):
        user = draw(texts | st.lists(text_blocks | images, min_size=1, max_size=3))
        messages.append({"role": "user", "content": user})
        calls = draw(
            st.lists(st.tuples(ids, texts, tool_inputs), max_size=2, unique_by=lambda c: c[0])
        )
        lead = draw(st.lists(text_blocks, max_size=2))
        if not calls and not lead:
            messages.append({"role": "assistant", "content": draw(texts)})
            continue
        uses = [{"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in calls]
        messages.append({"role": "assistant", "content": lead + uses})
        if calls:
            results = [
                {
                    "type": "tool_result",
                    "tool_use_id": i,
                    "content": draw(texts | st.lists(text_blocks, max_size=2)),
                }
                for i, _, _ in calls
            ]
            messages.append(
                {"role": "user", "content": results + draw(st.lists(text_blocks, max_size=1))}
            )
    return messages


@st.composite
def anthropic_requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": draw(texts), "messages": draw(anthropic_conversation())}
    budget = draw(st.none() | st.sampled_from([1024, 2048, 8192, 16384, 32768]))
    body["max_tokens"] = draw(st.integers(1 + (budget or 0), 100_000))
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    optional = {
        "system": texts | st.lists(text_blocks, min_size=1, max_size=2),
        "stop_sequences": st.lists(texts, min_size=1, max_size=3),
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1),
        "stream": st.just(True),
        "metadata": st.builds(lambda u: {"user_id": u}, texts),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    if draw(st.booleans()):
        names = draw(
            st.lists(
                st.from_regex(r"[a-z_]{1,8}", fullmatch=True), min_size=1, max_size=3, unique=True
            )
        )
        body["tools"] = [
            {"name": n, "description": draw(texts), "input_schema": draw(schemas)} for n in names
        ]
        choice = draw(
            st.sampled_from(
                [
                    {"type": "auto"},
                    {"type": "any"},
                    {"type": "tool", "name": names[0]},
                    {"type": "none"},
                ]
            )
        )
        if choice["type"] != "none" and draw(st.booleans()):
            choice = {**choice, "disable_parallel_tool_use": True}
        body["tool_choice"] = choice
    return body


def anthropic_normal(body: dict[str, Any]) -> dict[str, Any]:
    """Same meaning, one spelling: content as blocks, consecutive user turns merged."""

    def blocks(content: Any) -> list[Any]:
        return [{"type": "text", "text": content}] if isinstance(content, str) else content

    merged: list[dict[str, Any]] = []
    for message in body["messages"]:
        content = blocks(message["content"])
        if merged and merged[-1]["role"] == message["role"] == "user":
            merged[-1]["content"] = merged[-1]["content"] + content
        else:
            merged.append({"role": message["role"], "content": content})
    out = {**body, "messages": merged}
    if "system" in out:
        out["system"] = blocks(out["system"])
    return out


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(anthropic_requests())
def test_anthropic_to_chat_and_back_is_lossless(body: dict[str, Any]) -> None:
    chat = chat_request(body, OPTIONS)
    back = anthropic_request(dict(chat.body or {}), OPTIONS)
    assert () == chat.dropped == back.dropped
    assert anthropic_normal(body) == anthropic_normal(dict(back.body or {}))


@st.composite
def chat_conversation(draw: st.DrawFn) -> list[dict[str, Any]]:
    parts = st.builds(lambda t: {"type": "text", "text": t}, texts) | st.sampled_from(
        [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        ]
    )
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append(
            {
                "role": "system",
                "content": draw(
                    texts
                    | st.lists(
                        st.builds(lambda t: {"type": "text", "text": t}, texts),
                        min_size=1,
                        max_size=2,
                    )
                ),
            }
        )
    for _ in range(draw(st.integers(1, 4))):
        messages.append(
            {"role": "user", "content": draw(texts | st.lists(parts, min_size=1, max_size=3))}
        )
        calls = draw(
            st.lists(st.tuples(ids, texts, tool_inputs), max_size=2, unique_by=lambda c: c[0])
        )
        if not calls:
            messages.append({"role": "assistant", "content": draw(texts)})
            continue
        tool_calls = [
            {
                "id": i,
                "type": "function",
                "function": {"name": n, "arguments": json.dumps(a, separators=(",", ":"))},
            }
            for i, n, a in calls
        ]
        messages.append(
            {"role": "assistant", "content": draw(st.none() | texts), "tool_calls": tool_calls}
        )
        for i, _, _ in calls:
            messages.append({"role": "tool", "tool_call_id": i, "content": draw(texts)})
    return messages


@st.composite
def chat_requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": draw(texts), "messages": draw(chat_conversation())}
    effort = draw(st.none() | st.sampled_from(["minimal", "low", "medium", "high", "xhigh"]))
    body["max_tokens"] = draw(st.integers(40_000 if effort else 1, 100_000))
    if effort:
        body["reasoning_effort"] = effort
    optional = {
        "stop": st.lists(texts, min_size=1, max_size=3),
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1),
        "user": texts,
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    if draw(st.booleans()):
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if draw(st.booleans()):
        names = draw(
            st.lists(
                st.from_regex(r"[a-z_]{1,8}", fullmatch=True), min_size=1, max_size=3, unique=True
            )
        )
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": n, "description": draw(texts), "parameters": draw(schemas)},
            }
            for n in names
        ]
        body["tool_choice"] = draw(
            st.sampled_from(
                ["auto", "required", "none", {"type": "function", "function": {"name": names[0]}}]
            )
        )
        if body["tool_choice"] != "none" and draw(st.booleans()):
            body["parallel_tool_calls"] = False
    return body


def chat_normal(body: dict[str, Any]) -> dict[str, Any]:
    """Arguments compared as JSON values."""
    messages = []
    for message in body["messages"]:
        message = dict(message)
        if "tool_calls" in message:
            message["tool_calls"] = [
                {
                    **c,
                    "function": {
                        **c["function"],
                        "arguments": json.loads(c["function"]["arguments"] or "{}"),
                    },
                }
                for c in message["tool_calls"]
            ]
        messages.append(message)
    return {**body, "messages": messages}


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(chat_requests())
def test_chat_to_anthropic_and_back_is_lossless(body: dict[str, Any]) -> None:
    anthropic = anthropic_request(body, OPTIONS)
    back = chat_request(dict(anthropic.body or {}), OPTIONS)
    assert () == anthropic.dropped == back.dropped
    assert chat_normal(body) == chat_normal(dict(back.body or {}))


NO_REASONING = TranslationOptions(reasoning=False)


@pytest.mark.parametrize(
    ("translate", "body", "dropped"),
    [
        (
            chat_request,
            {
                "model": "m",
                "max_tokens": 9,
                "messages": [],
                "thinking": {"type": "enabled", "budget_tokens": 2048},
            },
            ("thinking",),
        ),
        (
            chat_request,
            {"model": "m", "max_tokens": 9, "messages": [], "thinking": {"type": "disabled"}},
            (),
        ),
        (
            anthropic_request,
            {"model": "m", "max_tokens": 9, "messages": [], "reasoning_effort": "high"},
            ("reasoning_effort",),
        ),
    ],
    ids=["anthropic-thinking", "anthropic-thinking-disabled", "chat-reasoning-effort"],
)
def test_reasoning_off_drops_and_lists_it(
    translate: Any, body: dict[str, Any], dropped: tuple[str, ...]
) -> None:
    translated = translate(body, NO_REASONING)
    assert dropped == translated.dropped
    assert not {"reasoning_effort", "thinking"} & set(translated.body)
