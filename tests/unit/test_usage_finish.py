"""Finish reasons read by the usage tap from real wire shapes, one per choice in choice order
(``gen_ai.response.finish_reasons``)."""

from __future__ import annotations

import json

import pytest

from proxy.usage import UsageTap
from tests.unit.test_usage import (
    ANTHROPIC_BODY,
    OPENAI_BODY,
    RESPONSES_BODY,
    anthropic_events,
    chat_chunk,
    openai_events,
    responses_events,
    sse_event,
)


def streamed(provider: str, events: list[bytes], **kw: object) -> tuple[str, ...]:
    tap = UsageTap(provider, streaming=True, **kw)  # type: ignore[arg-type]
    for event in events:
        tap.feed(event)
    tap.finish()
    return tap.finish_reasons


def body(provider: str, obj: dict) -> tuple[str, ...]:
    tap = UsageTap(provider, streaming=False)  # type: ignore[arg-type]
    tap.feed(json.dumps(obj).encode())
    tap.finish()
    return tap.finish_reasons


def two_choice_stream() -> list[bytes]:
    """n=2: choice 1 ends first (length), then choice 0 (stop)."""
    chunks = []
    for index, finish in ((0, None), (1, None), (1, "length"), (0, "stop")):
        chunk = chat_chunk({"content": "x"} if finish is None else {}, finish=finish)
        chunk["choices"][0]["index"] = index
        chunks.append(sse_event(chunk))
    return [*chunks, sse_event("[DONE]")]


@pytest.mark.parametrize(
    ("provider", "events", "expected"),
    [
        ("openai", openai_events(), ("stop",)),
        ("openai", two_choice_stream(), ("stop", "length")),
        ("anthropic", anthropic_events(), ("tool_use",)),
        ("openai", responses_events(), ("stop",)),
        ("openai", openai_events()[:-2], ("stop",)),  # no usage chunk, no [DONE]
        ("openai", openai_events()[:3], ()),  # cut before the end: no reason known
    ],
)
def test_streams(provider: str, events: list[bytes], expected: tuple[str, ...]) -> None:
    assert expected == streamed(provider, events)


def test_a_stream_past_the_text_cap_still_yields_its_finish_reason() -> None:
    """Once the text is full, content chunks are skipped unparsed; the last one is not."""
    assert ("stop",) == streamed("openai", openai_events(), max_text_chars=1)


@pytest.mark.parametrize(
    ("provider", "obj", "expected"),
    [
        ("openai", OPENAI_BODY, ("stop",)),
        ("anthropic", {**ANTHROPIC_BODY, "stop_reason": "end_turn"}, ("end_turn",)),
        ("openai", {**RESPONSES_BODY, "status": "completed"}, ("stop",)),
        (
            "openai",
            {
                **RESPONSES_BODY,
                "status": "incomplete",
                "incomplete_details": {"reason": "max_output_tokens"},
            },
            ("max_output_tokens",),
        ),
        ("openai", {**RESPONSES_BODY, "status": "failed"}, ("error",)),
        ("openai", {"object": "list", "data": []}, ()),  # embeddings: nothing to finish
    ],
)
def test_json_bodies(provider: str, obj: dict, expected: tuple[str, ...]) -> None:
    assert expected == body(provider, obj)


def test_a_responses_stream_that_ended_incomplete() -> None:
    events = responses_events()
    last = json.loads(events[-1].split(b"data: ", 1)[1])
    last["type"] = "response.incomplete"
    last["response"]["status"] = "incomplete"
    last["response"]["incomplete_details"] = {"reason": "content_filter"}
    events[-1] = sse_event(last, "response.incomplete")
    assert ("content_filter",) == streamed("openai", events)
