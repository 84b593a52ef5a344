"""CPU cost of translating a stream vs. only parsing it (what an untranslated, tapped
stream costs).

Reproduce:  python bench/bench_translate.py [--events 200] [--repeat 200]

For each translator, the upstream stream comes from the fake upstream's builders (text
chunks, plus one run with parallel tool calls), is cut into the fake's own one-write-per-
event chunks, and is fed (a) to ``proxy.sse.SSEParser`` alone and (b) to the translator.
Prints microseconds per stream (best of ``--repeat`` runs, process CPU time) and the ratio
translate / parse. Numbers only; no assertions.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.fake_upstream import anthropic_api, openai_api
from proxy.fake_upstream.calls import Call
from proxy.sse import SSEParser
from proxy.translate.anthropic_chat.stream_to_anthropic import ChatToAnthropicStream
from proxy.translate.anthropic_chat.stream_to_chat import AnthropicToChatStream
from proxy.translate.responses_chat.response import ResponseContext
from proxy.translate.responses_chat.stream import ChatToResponsesStream

SCHEMA = {
    "type": "object",
    "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
}
USER = [{"role": "user", "content": "benchmark me"}]


def tool_count(events: int) -> int:
    """Parallel calls enough for about ``events`` events (each call's JSON is ~27 pieces)."""
    return max(1, events // 30)


def chat_events(events: int, tools: bool) -> list[bytes]:
    payload: dict[str, Any] = {"model": "m", "messages": USER, "stream": True}
    payload["stream_options"] = {"include_usage": True}
    if tools:
        payload["tools"] = [
            {"type": "function", "function": {"name": f"t{i}", "parameters": SCHEMA}}
            for i in range(tool_count(events))
        ]
        payload["tool_choice"] = "required"
    chunks = 100 if tools else events - 4
    return list(openai_api.chat_completions(Call(payload, chunks=chunks, seq=1)).events or ())


def anthropic_events(events: int, tools: bool) -> list[bytes]:
    payload: dict[str, Any] = {"model": "m", "max_tokens": 10**6, "messages": USER, "stream": True}
    if tools:
        payload["tools"] = [
            {"name": f"t{i}", "input_schema": SCHEMA} for i in range(tool_count(events))
        ]
        payload["tool_choice"] = {"type": "any"}
    chunks = 100 if tools else events - 7
    call = Call(payload, chunks=chunks, seq=1, provider="anthropic")
    return list(anthropic_api.messages(call).events or ())


def best_cpu_us(run: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time_ns()
        run()
        best = min(best, time.process_time_ns() - start)
    return best / 1000


def parse_only(events: list[bytes]) -> Callable[[], object]:
    def run() -> object:
        parser = SSEParser()
        return [parser.feed(e) for e in events]

    return run


def translate(make: Callable[[], Any], events: list[bytes]) -> Callable[[], object]:
    def run() -> object:
        translator = make()
        out = [translator.feed(e) for e in events]
        out.append(translator.finish())
        return out

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    cases = [
        ("chat -> anthropic", chat_events, lambda: ChatToAnthropicStream({})),
        (
            "anthropic -> chat",
            anthropic_events,
            lambda: AnthropicToChatStream({}, include_usage=True),
        ),
        (
            "chat -> responses",
            chat_events,
            lambda: ChatToResponsesStream(ResponseContext({"model": "m"}), {}),
        ),
    ]
    print(f"{'stream':<32}{'events':>7}{'parse us':>11}{'translate us':>14}{'ratio':>8}")
    for name, build, make in cases:
        for tools in (False, True):
            events = build(args.events, tools)
            parse = best_cpu_us(parse_only(events), args.repeat)
            both = best_cpu_us(translate(make, events), args.repeat)
            label = f"{name} ({'tool calls' if tools else 'text'})"
            print(f"{label:<32}{len(events):>7}{parse:>11.0f}{both:>14.0f}{both / parse:>8.1f}")


if __name__ == "__main__":
    main()
