"""What the commit point costs a healthy stream, and what it saves when streams fail (issue 14).

    python bench/bench_commit.py                     # ~3 minutes: the run RESULTS.md quotes
    python bench/bench_commit.py --rounds 3 --streams 60 --fault-streams 100   # a quick look

Two fake upstreams (``primary`` and ``fallback``) and three proxies from this checkout, each
with both upstreams on its route (the fallback with a key of its own):

- ``off``: ``streaming: {commit_point: false}``: the stream's head is relayed at once.
- ``on``: the defaults (commit point on; retry: 3 attempts per upstream, then the fallback).
- ``on, fallback first``: the defaults with ``retry: {max_attempts: 1}``: a failed attempt
  goes to the fallback at once.

Part 1, healthy streams (no faults): a raw aiohttp client sends one streaming chat request
at a time, cycling through ``direct`` (the primary itself), ``off`` and ``on`` in a shuffled
order per cycle, so every target sees the same machine. Two shapes: 200 events written at
once (``x-fake-chunks: 200``) and 200 events 1 ms apart (as tokens arrive). Time to first
token (TTFT) is from sending the request to the first line carrying non-empty
``delta.content``; CPU per stream is the proxy process's utime+stime over the round divided
by its streams (``/proc/PID/stat``). The commit point's cost is ``on`` minus ``off``.

Part 2, a fault mix: the official openai SDK (async, its default retries) reads streams of
20 events one at a time; before 10 % of them (chosen at random, the same ones for every
target) the primary is told to fail that stream before content, half with an in-stream error
event after the role chunk (``sse_error_after_chunks: 1``), half by cutting the connection
after it (``cut_after_chunks: 1``). A stream failed for the app when the SDK raised, or it
ended without content or without a finish_reason. Reported per target: failed streams the
app saw, which upstream served the rest (``x-proxy-upstream``), TTFT of the recovered
streams, and the proxies' ``llm_proxy_precommit_failovers_total``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from procs import (  # noqa: E402
    Service,
    announced,
    cpu_seconds,
    free_port,
    load_average,
    spawn,
    start_proxy,
)
from report import fmt, pct, table  # noqa: E402

CHAT = "/v1/chat/completions"
BODY = json.dumps(
    {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Stream"}]}
).encode()
HEALTHY = ("direct", "off", "on")
FAULTED = ("off", "on", "on-fallback-first")
SHAPES = {"burst": ("200", "0"), "paced": ("200", "1")}
"""x-fake-chunks, x-fake-chunk-delay-ms."""
WARM_UP = 5
"""Untimed streams per target and shape before the rounds."""
FAULT_CHUNKS = 20
FAULTS = ({"sse_error_after_chunks": 1}, {"cut_after_chunks": 1})


@dataclass(frozen=True)
class Plan:
    rounds: int
    streams: int
    paced_streams: int
    fault_streams: int
    fault_share: float
    seed: int


# ------------------------------------------------------------------ services


def start_fake(workdir: Path, name: str) -> Service:
    log = workdir / f"{name}.log"
    argv = [sys.executable, "-m", "proxy.fake_upstream", "--port", "0"]
    return announced(name, spawn(argv, log, cwd=ROOT), log, 30.0)


def proxy_config(primary: str, fallback: str, port: int, target: str) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": port},
        "routes": [
            {
                "prefix": "/openai",
                "provider": "openai",
                "upstreams": [
                    {"name": "primary", "base_url": primary},
                    {"name": "fallback", "base_url": fallback, "api_key": "sk-fallback-key"},
                ],
            }
        ],
    }
    if target == "off":
        raw["streaming"] = {"commit_point": False}
    if target == "on-fallback-first":
        raw["retry"] = {"max_attempts": 1}
    return raw


@dataclass
class Services:
    primary: Service
    fallback: Service
    proxies: dict[str, Service]

    def all(self) -> list[Service]:
        return [self.primary, self.fallback, *self.proxies.values()]

    def url(self, target: str) -> str:
        """The chat completions URL of a target."""
        if target == "direct":
            return self.primary.base + CHAT
        return self.proxies[target].base + "/openai" + CHAT


def start_all(workdir: Path) -> Services:
    started: list[Service] = []
    try:
        primary = start_fake(workdir, "primary")
        started.append(primary)
        fallback = start_fake(workdir, "fallback")
        started.append(fallback)
        proxies = {}
        for target in ("off", "on", "on-fallback-first"):
            raw = proxy_config(primary.base, fallback.base, free_port(), target)
            proxies[target] = start_proxy(workdir, target, raw)
            started.append(proxies[target])
    except BaseException:
        for svc in started:
            svc.stop()
        raise
    return Services(primary, fallback, proxies)


# ------------------------------------------------------------------ part 1: healthy streams


@dataclass
class Healthy:
    """One target's streams of one shape, pooled over rounds."""

    ttft_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    round_ttft_p50: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    round_cpu_us: list[float] = field(default_factory=list)
    bad: int = 0
    paired_ms: list[float] = field(default_factory=list)
    """This target's TTFT minus ``off``'s in the same cycle (back to back)."""


def is_content(line: bytes) -> bool:
    """A chat chunk with non-empty ``delta.content`` (the fake's compact JSON)."""
    return b'"content":"' in line and b'"content":""' not in line


async def one_stream(session: aiohttp.ClientSession, url: str, shape: str) -> tuple[float, float]:
    """(TTFT ms, whole stream ms); raises if the stream is not a complete one."""
    chunks, delay = SHAPES[shape]
    headers = {
        "Authorization": "Bearer sk-bench",
        "Content-Type": "application/json",
        "x-fake-chunks": chunks,
        "x-fake-chunk-delay-ms": delay,
    }
    t0 = time.perf_counter()
    ttft = None
    done = False
    async with session.post(url, data=BODY, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
        async for line in resp.content:
            if ttft is None and is_content(line):
                ttft = time.perf_counter() - t0
            elif line.startswith(b"data: [DONE]"):
                done = True
    total = time.perf_counter() - t0
    if ttft is None or not done:
        raise RuntimeError("stream without content or without its end")
    return ttft * 1000, total * 1000


async def healthy_round(
    svcs: Services, shape: str, n: int, rng: random.Random, out: dict[str, Healthy]
) -> None:
    """``n`` streams per target, one at a time, targets in a shuffled order per cycle."""
    mine: dict[str, list[float]] = {t: [] for t in HEALTHY}
    sessions = {t: aiohttp.ClientSession() for t in HEALTHY}
    try:
        for t in HEALTHY:  # a connection per target, opened before the clock starts
            await one_stream(sessions[t], svcs.url(t), shape)
        cpu0 = {t: cpu_seconds(svcs.proxies[t].pids()) for t in HEALTHY if t != "direct"}
        for _ in range(n):
            order = list(HEALTHY)
            rng.shuffle(order)
            cycle: dict[str, float] = {}
            for t in order:
                try:
                    ttft, total = await one_stream(sessions[t], svcs.url(t), shape)
                except (RuntimeError, aiohttp.ClientError):
                    out[t].bad += 1
                    continue
                cycle[t] = ttft
                mine[t].append(ttft)
                out[t].ttft_ms.append(ttft)
                out[t].total_ms.append(total)
            if "on" in cycle and "off" in cycle:
                out["on"].paired_ms.append(cycle["on"] - cycle["off"])
        for t, c0 in cpu0.items():
            used = cpu_seconds(svcs.proxies[t].pids()) - c0
            out[t].cpu_s += used
            out[t].round_cpu_us.append(used / n * 1e6)
    finally:
        for s in sessions.values():
            await s.close()
    for t in HEALTHY:
        out[t].round_ttft_p50.append(pct(mine[t], 50))


async def warm_up(svcs: Services) -> None:
    """Untimed streams first: the proxies load their token tables on first use."""
    async with aiohttp.ClientSession() as session:
        for t in HEALTHY:
            for shape in SHAPES:
                for _ in range(WARM_UP):
                    await one_stream(session, svcs.url(t), shape)
    await asyncio.sleep(1.0)


def healthy_table(shape: str, res: dict[str, Healthy], n_per_round: int) -> str:
    base = pct(res["direct"].ttft_ms, 50)
    off = res["off"]
    rows = []
    for t in HEALTHY:
        r = res[t]
        p50 = pct(r.ttft_ms, 50)
        cpu = r.cpu_s / (n_per_round * len(r.round_ttft_p50)) * 1e6 if t != "direct" else None
        diffs = [a - b for a, b in zip(r.round_ttft_p50, off.round_ttft_p50, strict=True)]
        rows.append(
            [
                t,
                str(len(r.ttft_ms)),
                fmt(p50, 3),
                fmt(pct(r.ttft_ms, 99), 3),
                "-" if t == "direct" else f"{p50 - base:+.3f}",
                "-" if t != "on" else f"{p50 - pct(off.ttft_ms, 50):+.3f}",
                "-" if t != "on" else f"{pct(r.paired_ms, 50):+.3f}",
                "-" if t != "on" else f"{min(diffs):+.3f}..{max(diffs):+.3f}",
                fmt(pct(r.total_ms, 50), 2),
                "-" if cpu is None else fmt(cpu, 0),
                "-" if t != "on" else f"{r.cpu_s / off.cpu_s:.3f}x",
                str(r.bad),
            ]
        )
    header = [
        "target",
        "streams",
        "TTFT p50 ms",
        "TTFT p99 ms",
        "added over direct p50",
        "on - off p50",
        "on - off, median of pairs",
        "on - off p50 per round",
        "whole stream p50 ms",
        "proxy CPU µs/stream",
        "CPU on/off",
        "errors",
    ]
    return f"#### {shape}: 200 events{' 1 ms apart' if shape == 'paced' else ' at once'}\n\n" + (
        table(header, rows)
    )


# ------------------------------------------------------------------ part 2: the fault mix


@dataclass
class Mixed:
    streams: int = 0
    faulted: int = 0
    failed: int = 0
    failed_faulted: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    served_by: Counter[str] = field(default_factory=Counter)
    recovered_ttft_ms: list[float] = field(default_factory=list)
    healthy_ttft_ms: list[float] = field(default_factory=list)


async def sdk_stream(client: openai.AsyncOpenAI) -> tuple[str | None, str, float | None]:
    """(failure or None, upstream that answered, TTFT ms) for one streamed completion."""
    t0 = time.perf_counter()
    ttft = None
    finished = False
    upstream = "?"
    try:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Stream"}],
            stream=True,
            extra_headers={"x-fake-chunks": str(FAULT_CHUNKS)},
        )
        upstream = stream.response.headers.get("x-proxy-upstream", "?")
        async for chunk in stream:
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            if ttft is None and choice.delta.content:
                ttft = (time.perf_counter() - t0) * 1000
            if choice.finish_reason:
                finished = True
    except (openai.APIError, httpx.HTTPError) as exc:
        return type(exc).__name__, upstream, ttft
    if ttft is None:
        return "no content", upstream, ttft
    if not finished:
        return "no finish_reason", upstream, ttft
    return None, upstream, ttft


async def fault_mix(svcs: Services, plan: Plan) -> dict[str, Mixed]:
    rng = random.Random(plan.seed)
    n = plan.fault_streams
    chosen = rng.sample(range(n), round(n * plan.fault_share))
    fault_of = {i: FAULTS[k % len(FAULTS)] for k, i in enumerate(sorted(chosen))}
    out = {t: Mixed() for t in FAULTED}
    clients = {
        t: openai.AsyncOpenAI(base_url=svcs.proxies[t].base + "/openai/v1", api_key="sk-bench")
        for t in FAULTED
    }
    leftover = 0
    async with aiohttp.ClientSession() as control:
        for i in range(n):
            order = list(FAULTED)
            rng.shuffle(order)
            for t in order:
                fault = fault_of.get(i)
                if fault is not None:
                    body = {**fault, "path": CHAT}
                    async with control.post(svcs.primary.base + "/_fake/faults", json=body) as r:
                        leftover += (await r.json())["pending"] - 1  # a fault nobody took
                failure, upstream, ttft = await sdk_stream(clients[t])
                record(out[t], fault is not None, failure, upstream, ttft)
    for c in clients.values():
        await c.close()
    if leftover:
        raise RuntimeError(f"{leftover} faults were not taken by the stream they were meant for")
    return out


def record(m: Mixed, faulted: bool, failure: str | None, upstream: str, ttft: float | None) -> None:
    m.streams += 1
    m.faulted += faulted
    if failure is not None:
        m.failed += 1
        m.failed_faulted += faulted
        m.failures[failure] += 1
        return
    m.served_by[upstream] += 1
    if ttft is not None:
        (m.recovered_ttft_ms if faulted else m.healthy_ttft_ms).append(ttft)


async def failover_counts(svc: Service) -> str:
    async with aiohttp.ClientSession() as s, s.get(svc.base + "/metrics") as r:
        text = await r.text()
    found = []
    for line in text.splitlines():
        if line.startswith("llm_proxy_precommit_failovers_total{"):
            labels, value = line.rsplit(" ", 1)
            found.append(f"{labels.split('{', 1)[1].rstrip('}')}: {float(value):g}")
    return "; ".join(found) or "none"


def mix_table(res: dict[str, Mixed], metrics: dict[str, str]) -> str:
    rows = []
    for t in FAULTED:
        m = res[t]
        rows.append(
            [
                t,
                str(m.streams),
                f"{m.faulted} ({m.faulted / m.streams:.0%})",
                f"{m.failed} ({m.failed / m.streams:.1%})",
                ", ".join(f"{k}: {v}" for k, v in m.failures.most_common()) or "-",
                ", ".join(f"{k}: {v}" for k, v in sorted(m.served_by.items())),
                fmt(pct(m.healthy_ttft_ms, 50), 2),
                f"{fmt(pct(m.recovered_ttft_ms, 50), 1)} / {fmt(pct(m.recovered_ttft_ms, 100), 1)}",
                metrics[t],
            ]
        )
    header = [
        "target",
        "streams",
        "failed upstream before content",
        "failed streams the app saw",
        "how they failed",
        "served by",
        "TTFT p50 ms, healthy",
        "TTFT p50 / max ms, recovered",
        "precommit failovers (metric)",
    ]
    return table(header, rows)


# ------------------------------------------------------------------ report


def machine(load_before: str) -> list[str]:
    import uvloop

    return [
        f"- load average (1/5/15 min): {load_before} before, {load_average()} after",
        f"- cores: {os.cpu_count()}; {platform.machine()}; Linux {platform.release()}",
        f"- python {platform.python_version()}; aiohttp {aiohttp.__version__}; "
        f"openai {openai.__version__}; uvloop {uvloop.__version__} (the fakes and the proxies)",
    ]


def verdict(res: dict[str, dict[str, Healthy]], mix: dict[str, Mixed]) -> str:
    rows = []
    for shape, r in res.items():
        added = pct(r["on"].ttft_ms, 50) - pct(r["off"].ttft_ms, 50)
        paired = pct(r["on"].paired_ms, 50)
        rows.append(
            [
                f"TTFT added ({shape})",
                "<= 0.1 ms",
                f"{added:+.3f} ms (p50s), {paired:+.3f} ms (median of pairs)",
                max(added, paired) <= 0.1,
            ]
        )
        ratio = r["on"].cpu_s / r["off"].cpu_s
        rows.append([f"CPU per stream ({shape})", "<= 1.05x", f"{ratio:.3f}x", ratio <= 1.05])
    for t in ("on", "on-fallback-first"):
        m = mix[t]
        share = m.failed / m.streams
        rows.append([f"failed streams seen, {t}", "0 %", f"{share:.1%}", m.failed == 0])
    return table(
        ["target", "goal", "measured", "verdict"],
        [[a, b, c, "met" if ok else "MISSED"] for a, b, c, ok in rows],
    )


async def main(plan: Plan) -> None:
    started, load_before = time.monotonic(), load_average()
    rng = random.Random(plan.seed)
    with tempfile.TemporaryDirectory(prefix="bench-commit-") as tmp:
        svcs = start_all(Path(tmp))
        try:
            healthy: dict[str, dict[str, Healthy]] = {
                s: {t: Healthy() for t in HEALTHY} for s in SHAPES
            }
            counts = {"burst": plan.streams, "paced": plan.paced_streams}
            await warm_up(svcs)
            for i in range(plan.rounds):
                for shape in SHAPES:
                    await healthy_round(svcs, shape, counts[shape], rng, healthy[shape])
                print(f"round {i + 1}/{plan.rounds} done", file=sys.stderr, flush=True)
            mix = await fault_mix(svcs, plan)
            metrics = {t: await failover_counts(svcs.proxies[t]) for t in FAULTED}
        finally:
            for svc in svcs.all():
                svc.stop()
    argv = " ".join(sys.argv[1:])
    parts = [
        f"Command: `python bench/bench_commit.py{(' ' + argv) if argv else ''}`",
        "",
        *machine(load_before),
        f"- run time: {time.monotonic() - started:.0f} s",
        "",
        f"Healthy streams: {plan.rounds} rounds of {plan.streams} streams at once and "
        f"{plan.paced_streams} paced streams per target, one stream at a time.",
        "",
        *(healthy_table(s, healthy[s], counts[s]) + "\n" for s in SHAPES),
        f"#### Fault mix: {plan.fault_streams} streams of {FAULT_CHUNKS} events per target, "
        f"{plan.fault_share:.0%} failing at the primary before content",
        "",
        mix_table(mix, metrics),
        "",
        "#### Targets (issue 14)",
        "",
        verdict(healthy, mix),
    ]
    print("\n".join(parts))


def parse_args() -> Plan:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--streams", type=int, default=100, help="burst streams per target a round")
    p.add_argument("--paced-streams", type=int, default=30, help="paced streams per target a round")
    p.add_argument("--fault-streams", type=int, default=400, help="fault mix streams per target")
    p.add_argument("--fault-share", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=14)
    a = p.parse_args()
    if min(a.rounds, a.streams, a.paced_streams, a.fault_streams) < 1:
        p.error("counts must be >= 1")
    return Plan(a.rounds, a.streams, a.paced_streams, a.fault_streams, a.fault_share, a.seed)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
