"""Pacing against a provider that rate-limits for real (skeleton for issue 12's benchmark).

    python bench/bench_pacing.py [--rpm 60] [--window-s 6] [--minutes 2] [--loads 0.8,1,1.5]

Starts the fake upstream with real limits (``--rpm``, and ``--tpm`` = rpm x cost so both
buckets bind alike) and a redis-server, then offers open-loop load from 4 clients at each
``--loads`` share of the limit for ``--minutes`` of simulated time. ``--window-s`` shrinks the
provider's minute to run faster (6 s: ten times; every wait scales with it).

Modes:
- ``direct``: the clients call the fake with the openai SDK (its own retries, max_retries=2).
- ``library``: 2 "processes" (2 pacers, each with its own RedisPacingStore on the shared
  redis-server), 2 clients each: acquire, send, feed the answer's headers back, settle. The
  pacing modules alone, before they are wired into the proxy.
- ``proxy-off`` / ``proxy-on``: the same clients through 2 proxy processes sharing Redis,
  pacing off/on. Not here yet: they need the attempt loop wired (the lead's integration).

Reports per mode and load: 429s reaching the app, 429s the provider sent (share of requests),
achieved throughput as a share of the provider's limit over the run (each run starts with the
bucket drained, so the first minute's full bucket does not count), and p50/p99 time held
(simulated).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from procs import Service, announced, spawn
from report import fmt, pct, table

from proxy.resilience.pacer import Pacer, Refused
from proxy.resilience.pacing import Admitted, PacePolicy
from proxy.resilience.pacing_store import RedisPacingStore
from proxy.resilience.ratelimits import Cost, parse_snapshot
from proxy.resilience.scope import LimitKind, Scope

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 4
PROMPT = [{"role": "user", "content": "one two three four five six seven"}]  # 10 tokens
MAX_TOKENS = 40
COST = Cost(10, MAX_TOKENS)  # the fake's count: 3 + 7 words, plus the output cap
SCOPE = Scope("fake", "bench-key", LimitKind.MODEL, "gpt-4o")


@dataclass
class Outcome:
    """One mode at one load."""

    offered: int = 0
    served: int = 0
    app_429: int = 0
    held_s: list[float] = field(default_factory=list)


def start_fake(workdir: Path, rpm: float, window_s: float) -> Service:
    argv = [sys.executable, "-m", "proxy.fake_upstream", "--port", "0", "--rpm", str(rpm)]
    argv += ["--tpm", str(rpm * (COST.input_tokens + COST.output_tokens))]
    argv += ["--limit-window-s", str(window_s), "--chunks", "8"]
    log = workdir / "fake.log"
    return announced("fake", spawn(argv, log, cwd=ROOT), log, 10.0)


def start_redis(workdir: Path) -> tuple[Any, str]:
    from tests.redis_server import start_redis_server

    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server not on PATH")
    server = start_redis_server(workdir)
    return server, server.url


async def provider_counts(base: str) -> tuple[int, int]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/_fake/limits") as resp:
            counts = (await resp.json())["counts"]
    return sum(c["served"] for c in counts), sum(c["limited"] for c in counts)


async def reset_and_drain(base: str, rpm: float) -> None:
    """Refill every bucket, then empty the bench key's: a run measures the steady refill,
    not the first minute's full bucket."""
    body = {"model": "gpt-4o", "messages": PROMPT, "max_tokens": MAX_TOKENS}
    headers = {"Authorization": "Bearer bench-key"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/_fake/reset") as resp:
            await resp.read()
        for _ in range(int(rpm)):
            async with session.post(f"{base}/v1/chat/completions", json=body, headers=headers) as r:
                await r.read()


async def offer(rate_per_s: float, seconds: float, send: Any, out: Outcome, seed: int) -> None:
    """Open-loop arrivals (Poisson) at ``rate_per_s`` for ``seconds``; waits for all."""
    rng = random.Random(seed)
    tasks = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        tasks.append(asyncio.ensure_future(send()))
        out.offered += 1
        await asyncio.sleep(rng.expovariate(rate_per_s))
    await asyncio.gather(*tasks)


async def run_direct(base: str, rate: float, seconds: float) -> Outcome:
    out = Outcome()
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="bench-key", max_retries=2) as c:

        async def send() -> None:
            try:
                await c.chat.completions.create(
                    model="gpt-4o",
                    messages=PROMPT,  # type: ignore[arg-type]
                    max_tokens=MAX_TOKENS,
                )
                out.served += 1
            except openai.RateLimitError:
                out.app_429 += 1

        await asyncio.gather(
            *(offer(rate / CLIENTS, seconds, send, out, i) for i in range(CLIENTS))
        )
    return out


async def run_library(
    base: str, redis_url: str, rate: float, seconds: float, scale: float, budget_s: float
) -> Outcome:
    out = Outcome()
    policy = PacePolicy(window_s=60.0 / scale)
    stores = [RedisPacingStore(redis_url, prefix=f"bench:{time.time()}:") for _ in range(2)]
    pacers = [Pacer(s) for s in stores]
    url = f"{base}/v1/chat/completions"
    body = {"model": "gpt-4o", "messages": PROMPT, "max_tokens": MAX_TOKENS}
    headers = {"Authorization": "Bearer bench-key"}
    async with aiohttp.ClientSession() as session:

        def sender(pacer: Pacer) -> Any:
            async def send() -> None:
                decision = await pacer.acquire(SCOPE, COST, policy, budget_s=budget_s)
                out.held_s.append(decision.held_s * scale)
                if isinstance(decision, Refused):
                    out.app_429 += 1
                    return
                assert isinstance(decision, Admitted)
                async with session.post(url, json=body, headers=headers) as resp:
                    await resp.read()
                    snapshot = parse_snapshot(resp.headers, time.time())
                await pacer.observe(SCOPE, snapshot, decision.reservation, policy)
                await pacer.settle(decision.reservation, COST, policy)
                if resp.status == 429:
                    out.app_429 += 1
                else:
                    out.served += 1

            return send

        clients = [pacers[i % 2] for i in range(CLIENTS)]
        await asyncio.gather(
            *(offer(rate / CLIENTS, seconds, sender(p), out, i) for i, p in enumerate(clients))
        )
    for pacer, store in zip(pacers, stores, strict=True):
        await pacer.close()
        await store.close()
    return out


async def main(args: argparse.Namespace) -> None:
    scale = 60.0 / args.window_s
    seconds = args.minutes * 60.0 / scale
    limit_rps = args.rpm / args.window_s
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        fake = start_fake(workdir, args.rpm, args.window_s)
        redis_server, redis_url = start_redis(workdir)
        rows = []
        try:
            for mode in args.modes.split(","):
                for load in (float(x) for x in args.loads.split(",")):
                    await reset_and_drain(fake.base, args.rpm)
                    before = await provider_counts(fake.base)
                    rate = load * limit_rps
                    started = time.monotonic()
                    if mode == "direct":
                        out = await run_direct(fake.base, rate, seconds)
                    elif mode == "library":
                        budget = args.max_queue_wait_s / scale
                        out = await run_library(fake.base, redis_url, rate, seconds, scale, budget)
                    else:
                        raise SystemExit(f"mode {mode!r} needs the integrated proxy (issue 12)")
                    # until the last request is answered (held ones finish after the offer)
                    minutes = (time.monotonic() - started) * scale / 60.0
                    after = await provider_counts(fake.base)
                    served, limited = after[0] - before[0], after[1] - before[1]
                    share = served / (args.rpm * minutes)
                    held = [h * 1000 for h in out.held_s]
                    rows.append(
                        [
                            mode,
                            f"{load:.0%}",
                            str(out.offered),
                            str(out.app_429),
                            f"{limited} ({limited / max(1, served + limited):.1%})",
                            f"{share:.1%}",
                            fmt(pct(held, 50), 0),
                            fmt(pct(held, 99), 0),
                        ]
                    )
        finally:
            fake.stop()
            redis_server.stop()
    header = ["mode", "load", "offered", "429 to app", "429 from provider", "throughput"]
    print(table([*header, "held p50 ms", "held p99 ms"], rows))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rpm", type=float, default=60.0)
    p.add_argument("--window-s", type=float, default=6.0, help="the provider's minute, shrunk")
    p.add_argument("--minutes", type=float, default=2.0, help="simulated minutes per load")
    p.add_argument("--loads", default="0.8,1,1.5")
    p.add_argument("--modes", default="direct,library")
    p.add_argument("--max-queue-wait-s", type=float, default=30.0, help="simulated seconds")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
