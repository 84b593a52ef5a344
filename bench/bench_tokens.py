"""Token counter throughput and event-loop stall: inline on the loop vs. in worker threads.

Reproduce:  python bench/bench_tokens.py [--requests 50] [--turns 150]

Prints: encoding cold-load time, tokens/second of ``count_request`` on one large realistic
conversation (prose, code, tool calls, non-English text), and the worst lateness of a 1 ms
ticker task while ``--requests`` copies are counted (a) inline on the event loop, (b) through
``asyncio.to_thread`` (default executor), (c) a 1-thread and (d) a 4-thread
ThreadPoolExecutor. Numbers only; no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.context import tokens

PROSE = (
    "The quarterly report shows revenue growth across all regions, driven by stronger "
    "demand in enterprise accounts and a lower churn rate than the previous year. "
)
CODE = (
    "def merge(a: list[int], b: list[int]) -> list[int]:\n"
    "    out, i, j = [], 0, 0\n"
    "    while i < len(a) and j < len(b):\n"
    "        if a[i] <= b[j]:\n            out.append(a[i]); i += 1\n"
    "        else:\n            out.append(b[j]); j += 1\n"
    "    return out + a[i:] + b[j:]\n"
)
OTHER = "Der Bericht zeigt Wachstum. 报告显示各地区收入增长。Отчёт показывает рост выручки. "
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_docs",
            "description": "Search the internal documentation.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What to look for."},
                    "limit": {"type": "integer", "description": "Max results."},
                },
                "required": ["query"],
            },
        },
    }
]


def conversation(turns: int, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    msgs: list[dict[str, Any]] = [{"role": "system", "content": PROSE * 20}]
    for n in range(turns):
        msgs.append({"role": "user", "content": PROSE * rng.randint(1, 6) + OTHER})
        if n % 3 == 0:
            args = json.dumps({"query": PROSE[: rng.randint(20, 120)], "limit": 5})
            call = {
                "id": f"call_{n}",
                "type": "function",
                "function": {"name": "search_docs", "arguments": args},
            }
            msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
            msgs.append(
                {"role": "tool", "tool_call_id": f"call_{n}", "content": CODE * rng.randint(1, 4)}
            )
        msgs.append({"role": "assistant", "content": (PROSE + CODE) * rng.randint(1, 4)})
    return {"model": "gpt-4o", "messages": msgs, "tools": TOOLS}


def count(body: dict[str, Any]) -> int:
    return tokens.count_request(body, "openai").tokens


async def ticker(stop: asyncio.Event, worst: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        expected = loop.time() + 0.001
        await asyncio.sleep(0.001)
        worst[0] = max(worst[0], loop.time() - expected)


async def measure(run: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """(wall seconds, worst ticker lateness seconds) while ``run`` executes."""
    stop, worst = asyncio.Event(), [0.0]
    tick = asyncio.create_task(ticker(stop, worst))
    await asyncio.sleep(0.01)  # ticker settled
    start = time.perf_counter()
    await run()
    wall = time.perf_counter() - start
    stop.set()
    await tick
    return wall, worst[0]


async def scenarios(body: dict[str, Any], requests: int) -> None:
    async def inline() -> None:
        for _ in range(requests):
            count(body)
            await asyncio.sleep(0)  # a real handler yields between requests

    async def to_thread() -> None:
        await asyncio.gather(*(asyncio.to_thread(count, body) for _ in range(requests)))

    loop = asyncio.get_running_loop()

    def in_pool(workers: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = (loop.run_in_executor(pool, count, body) for _ in range(requests))
                await asyncio.gather(*futures)

        return run

    runs = (
        ("inline on loop", inline),
        ("asyncio.to_thread", to_thread),
        ("ThreadPool(1)", in_pool(1)),
        ("ThreadPool(4)", in_pool(4)),
    )
    for name, run in runs:
        wall, worst = await measure(run)
        print(
            f"{name:>18}: {requests} requests in {wall * 1000:8.1f} ms, "
            f"worst loop stall {worst * 1000:7.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--turns", type=int, default=150)
    args = parser.parse_args()

    start = time.perf_counter()
    tokens.get_encoding("o200k_base")
    print(f"o200k_base cold load: {(time.perf_counter() - start) * 1000:.0f} ms")

    body = conversation(args.turns)
    size = len(json.dumps(body).encode())
    n = count(body)
    reps = 5
    start = time.perf_counter()
    for _ in range(reps):
        count(body)
    per = (time.perf_counter() - start) / reps
    print(
        f"one request: {len(body['messages'])} messages, {size / 1e6:.2f} MB JSON, "
        f"{n} tokens, {per * 1000:.1f} ms to count"
    )
    print(f"throughput: {n / per / 1e6:.2f} M tokens/s, {size / per / 1e6:.1f} MB/s")
    asyncio.run(scenarios(body, args.requests))
    print(
        "reproduce: python bench/bench_tokens.py "
        f"--requests {args.requests} --turns {args.turns}"
    )


if __name__ == "__main__":
    main()
