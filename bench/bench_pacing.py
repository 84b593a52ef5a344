"""Pacing against a provider that rate-limits for real (issue 12).

    python bench/bench_pacing.py                      # ~6 minutes: the run RESULTS.md quotes
    python bench/bench_pacing.py --minutes 1 --loads 1 --no-cold   # a quick look

Starts the fake upstream with real limits (``--rpm``, and ``--tpm`` = rpm x 50 tokens, what
each request costs it: 10 prompt tokens + ``max_tokens`` 40, so both buckets bind alike), one
redis-server, and for the proxy modes two ``python -m proxy`` processes sharing it. Four
clients (the official openai SDK, async, its default ``max_retries=2``; clients 0-1 on
proxy A, 2-3 on proxy B, one shared API key) offer exactly ``load x rpm x minutes`` requests
at uniformly random instants (Poisson arrivals, count fixed).

Time is compressed: the fake's window and the proxy's ``pacing.window_s`` are ``--window-s``
(6 s: a simulated minute takes 6 real seconds), and the proxy's wait budgets
(``pacing.max_queue_wait_s``, ``retry.max_wait_s``) are scaled alike. What does not scale:
Retry-After in whole seconds (the fake sends at least "1": 10 simulated seconds), the SDK's
own backoff (0.5-8 s real), the pacer's probe re-check (1 s real). Times in the tables are
simulated unless marked real.

Modes: ``direct`` (the clients call the fake; SDK retries only), ``proxy-off`` (through the
two proxies, ``pacing.enabled: false``: scoped cooldowns and retries only), ``proxy-on``
(pacing on, shared through Redis).

Warm runs: each run uses a fresh API key (so a fresh scope in the fake and in the proxy),
drains that key's buckets at the fake (a run measures the steady refill, not a full
bucket's first minute), then sends one warm-up request per scope through proxy A (proxy-off:
and drains again, as its warm-up waits out a whole-second Retry-After). Cold runs
skip the warm-up and start with a burst (every client sends ``--burst`` requests at once):
``cold-full`` on a key the provider has not seen (full bucket), ``cold-drained`` on a key
someone else has just drained (a proxy restarted while the key is in use).

Reported per mode and load: the 429s the app saw (RateLimitError after the SDK's retries);
the 429 answers the SDK received, split into the provider's and the proxy's own
(``x-proxy-ratelimited``, with Retry-After: the SDK retries them); the 429s the provider
sent (its own count, including those the proxy retried) as a share of the requests it got;
the provider's throughput while the load was offered as a share of its limit (its refill
over that time; what its buckets held when the offer began is shown beside); time held in
the proxy (``held_ms`` in its log lines; p50/p99 over every request line); the app's
latency including the SDK's retries.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import random
import shutil
import subprocess
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
    free_port,
    load_average,
    spawn,
    start_proxy,
)
from report import fmt, pct, table  # noqa: E402

CLIENTS = 4
PROXIES = 2
MODEL = "gpt-4o"
PROMPT = [{"role": "user", "content": "one two three four five six seven"}]
MAX_TOKENS = 40
COST_TOKENS = 50
"""What one request takes from the fake's token bucket: 10 prompt tokens (its count) + 40."""
MODES = ("direct", "proxy-off", "proxy-on")


@dataclass(frozen=True)
class Plan:
    rpm: float
    window_s: float
    minutes: float
    cold_minutes: float
    loads: tuple[float, ...]
    modes: tuple[str, ...]
    queue_wait_sim_s: float
    burst: int
    cold: bool
    seed: int

    @property
    def scale(self) -> float:
        """Simulated seconds per real second."""
        return 60.0 / self.window_s

    @property
    def limit_rps(self) -> float:
        """The provider's refill, requests per real second."""
        return self.rpm / self.window_s


@dataclass(frozen=True)
class Scenario:
    mode: str
    load: float
    start: str
    """``warm``, ``cold-full`` or ``cold-drained``."""
    minutes: float


@dataclass
class Tally:
    """What the app saw in one run."""

    offered: int = 0
    ok: int = 0
    app_429: int = 0
    app_429_proxy: int = 0
    other_errors: Counter[str] = field(default_factory=Counter)
    seen_429_provider: int = 0
    seen_429_proxy: int = 0
    latency_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Level:
    """What the provider's headers said was left, in requests (the tighter of the requests
    bucket and the token bucket / 50), and when (monotonic)."""

    requests: float
    at: float

    @classmethod
    def of(cls, headers: Any) -> Level | None:
        try:
            left = float(headers["x-ratelimit-remaining-requests"])
            tokens = float(headers["x-ratelimit-remaining-tokens"])
        except (KeyError, ValueError):
            return None
        return cls(min(left, tokens / COST_TOKENS), time.monotonic())

    def at_time(self, t: float, plan: Plan) -> float:
        return min(plan.rpm, self.requests + plan.limit_rps * max(0.0, t - self.at))


@dataclass(frozen=True)
class ProviderCounts:
    served: int
    limited: int


@dataclass
class Result:
    scenario: Scenario
    tally: Tally
    in_window: int
    """Requests the provider served while the load was offered."""
    provider: ProviderCounts
    window_s: float
    start_level: float
    """Requests the provider's buckets held when the offer began (estimated from the last
    answer before it): part of what it could serve in the window."""
    held_ms: list[float]
    held_for: Counter[str]
    proxy_lines: int
    tail_s: float
    """Real seconds from the end of the offer to the last answer."""


# ------------------------------------------------------------------ services


def start_fake(workdir: Path, plan: Plan) -> Service:
    argv = [sys.executable, "-m", "proxy.fake_upstream", "--port", "0"]
    argv += ["--rpm", f"{plan.rpm:g}", "--tpm", f"{plan.rpm * COST_TOKENS:g}"]
    argv += ["--limit-window-s", f"{plan.window_s:g}", "--chunks", "8"]
    log = workdir / "fake.log"
    return announced("fake", spawn(argv, log, cwd=ROOT), log, 30.0)


def proxy_config(plan: Plan, fake: str, redis_url: str, pacing: bool, port: int) -> dict[str, Any]:
    budget = plan.queue_wait_sim_s / plan.scale
    return {
        "listen": {"host": "127.0.0.1", "port": port},
        "routes": [
            {
                "prefix": "/openai",
                "provider": "openai",
                "upstreams": [{"name": "fake", "base_url": fake}],
            }
        ],
        "state": {"backend": "redis", "url": redis_url},
        "pacing": {"enabled": pacing, "window_s": plan.window_s, "max_queue_wait_s": budget},
        "retry": {"max_wait_s": budget},
    }


def start_proxies(workdir: Path, plan: Plan, fake: str, redis_url: str, mode: str) -> list[Service]:
    pacing = mode == "proxy-on"
    out: list[Service] = []
    try:
        for i in range(PROXIES):
            raw = proxy_config(plan, fake, redis_url, pacing, free_port())
            out.append(start_proxy(workdir, f"{mode}-{'AB'[i]}", raw))
    except BaseException:
        for svc in out:
            svc.stop()
        raise
    return out


# ------------------------------------------------------------------ the fake's side


async def provider_counts(session: aiohttp.ClientSession, fake: str, key: str) -> ProviderCounts:
    async with session.get(f"{fake}/_fake/limits") as resp:
        counts = (await resp.json())["counts"]
    mine = [c for c in counts if c["credential"] == key]
    return ProviderCounts(sum(c["served"] for c in mine), sum(c["limited"] for c in mine))


async def drain(session: aiohttp.ClientSession, fake: str, key: str, rpm: float) -> Level:
    """Use the key's buckets up (as its other users would) until the provider says 429."""
    body = {"model": MODEL, "messages": PROMPT, "max_tokens": MAX_TOKENS}
    headers = {"Authorization": f"Bearer {key}"}
    for _ in range(int(rpm * 3)):
        async with session.post(f"{fake}/v1/chat/completions", json=body, headers=headers) as r:
            await r.read()
            level = Level.of(r.headers)
            if r.status == 429 and level is not None:
                return level
    raise RuntimeError("the fake never answered 429 while draining: are its limits on?")


# ------------------------------------------------------------------ the clients


class Client:
    """One app: the official SDK with its default retries, counting every 429 it receives."""

    def __init__(self, base_url: str, key: str, tally: Tally) -> None:
        self.tally = tally
        self.level: Level | None = None
        """The provider's last rate-limit headers this client saw."""
        http = openai.DefaultAsyncHttpxClient(event_hooks={"response": [self._seen]})
        self.sdk = openai.AsyncOpenAI(base_url=base_url, api_key=key, http_client=http)

    async def _seen(self, response: httpx.Response) -> None:
        self.level = Level.of(response.headers) or self.level
        if response.status_code == 429:
            if "x-proxy-ratelimited" in response.headers:
                self.tally.seen_429_proxy += 1
            else:
                self.tally.seen_429_provider += 1

    async def send(self) -> None:
        t0 = time.monotonic()
        try:
            await self.sdk.chat.completions.create(
                model=MODEL,
                messages=PROMPT,  # type: ignore[arg-type]
                max_tokens=MAX_TOKENS,
            )
        except openai.RateLimitError as exc:
            self.tally.app_429 += 1
            if "x-proxy-ratelimited" in exc.response.headers:
                self.tally.app_429_proxy += 1
        except openai.APIError as exc:
            self.tally.other_errors[type(exc).__name__] += 1
        else:
            self.tally.ok += 1
        self.tally.latency_s.append(time.monotonic() - t0)

    async def close(self) -> None:
        await self.sdk.close()


def arrivals(n: int, seconds: float, burst: int, rng: random.Random) -> list[float]:
    """``burst`` x CLIENTS at 0, then ``n`` at uniformly random instants (Poisson arrivals
    conditioned on their count: the offered load is exact)."""
    return [0.0] * (burst * CLIENTS) + sorted(rng.uniform(0.0, seconds) for _ in range(n))


async def offer(clients: list[Client], instants: list[float]) -> list[asyncio.Task[None]]:
    """Start request i at ``instants[i]`` from client i % CLIENTS; returns the tasks."""
    t0 = time.monotonic()
    tasks = []
    for i, at in enumerate(instants):
        delay = t0 + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(clients[i % CLIENTS].send()))
    return tasks


# ------------------------------------------------------------------ one run


def log_size(proxies: list[Service]) -> list[int]:
    return [p.log.stat().st_size if p.log.exists() else 0 for p in proxies]


async def after_line(proxies: list[Service], offsets: list[int]) -> list[int]:
    """The log offsets once the warm-up's line is written (the log writer is queued)."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if request_lines(proxies, offsets):
            break
        await asyncio.sleep(0.005)
    return log_size(proxies)


def request_lines(proxies: list[Service], offsets: list[int]) -> list[dict[str, Any]]:
    import json

    lines = []
    for svc, offset in zip(proxies, offsets, strict=True):
        with svc.log.open("rb") as f:
            f.seek(offset)
            for raw in f.read().splitlines():
                if raw.startswith(b"{"):
                    line = json.loads(raw)
                    if line.get("event") == "request":
                        lines.append(line)
    return lines


async def run_one(
    plan: Plan, sc: Scenario, fake: str, proxies: list[Service], run_no: int
) -> Result:
    key = f"sk-bench-{sc.mode}-{sc.start}-{sc.load:g}-{run_no}-{os.getpid()}"
    seconds = sc.minutes * 60.0 / plan.scale
    bases = [f"{p.base}/openai/v1" for p in proxies] or [f"{fake}/v1"]
    tally = Tally()
    clients = [Client(bases[(i * len(bases)) // CLIENTS], key, tally) for i in range(CLIENTS)]
    warm = Client(bases[0], key, Tally())
    async with aiohttp.ClientSession() as session:
        offsets = log_size(proxies)
        level = Level(float(plan.rpm), time.monotonic())  # a key the provider has not seen
        if sc.start != "cold-full":
            level = await drain(session, fake, key, plan.rpm)
        if sc.start == "warm" and proxies:
            await warm.send()
            level = warm.level or level
            if sc.mode == "proxy-off":  # its warm-up waited out a whole-second Retry-After
                level = await drain(session, fake, key, plan.rpm)
        before = await provider_counts(session, fake, key)
        offsets = await after_line(proxies, offsets) if warm.tally.latency_s else offsets
        n = round(sc.load * plan.rpm * sc.minutes)
        burst = plan.burst if sc.start != "warm" else 0
        instants = arrivals(n, seconds, burst, random.Random(plan.seed + run_no))
        tally.offered = len(instants)
        t0 = time.monotonic()
        start_level = level.at_time(t0, plan)
        tasks = await offer(clients, instants)
        await asyncio.sleep(max(0.0, t0 + seconds - time.monotonic()))
        at_end = await provider_counts(session, fake, key)
        t_end = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 300)
        tail = time.monotonic() - t_end
        for c in [*clients, warm]:
            await c.close()
        await asyncio.sleep(0.5)
        after = await provider_counts(session, fake, key)
    lines = request_lines(proxies, offsets)
    return Result(
        scenario=sc,
        tally=tally,
        in_window=at_end.served - before.served,
        provider=ProviderCounts(after.served - before.served, after.limited - before.limited),
        window_s=t_end - t0,
        start_level=start_level,
        held_ms=[float(x.get("held_ms") or 0.0) for x in lines],
        held_for=Counter(str(x.get("held_for")) for x in lines if x.get("held_for")),
        proxy_lines=len(lines),
        tail_s=tail,
    )


# ------------------------------------------------------------------ report


def throughput(plan: Plan, r: Result) -> float:
    """Served while the load was offered, as a share of the provider's refill in that time
    (its limit). What its buckets held at the start is shown beside it."""
    return r.in_window / (plan.limit_rps * r.window_s)


def row(plan: Plan, r: Result) -> list[str]:
    t, sc, scale = r.tally, r.scenario, plan.scale
    sent = r.provider.served + r.provider.limited
    held = [h / 1000 * scale for h in r.held_ms]
    lat = [s * scale for s in t.latency_s]
    others = sum(t.other_errors.values())
    return [
        sc.mode,
        f"{sc.load:.0%}",
        sc.start,
        str(t.offered),
        str(t.ok) + (f" (+{others} other errors)" if others else ""),
        f"{t.app_429}" + (f" ({t.app_429_proxy} proxy's)" if t.app_429_proxy else ""),
        f"{t.seen_429_provider} / {t.seen_429_proxy}",
        f"{r.provider.limited} ({r.provider.limited / max(1, sent):.1%})",
        f"{sent / max(1, t.offered):.2f}",
        f"{throughput(plan, r):.1%}",
        f"{r.start_level:.1f}",
        "-" if not r.proxy_lines else f"{fmt(pct(held, 50), 1)} / {fmt(pct(held, 99), 1)}",
        f"{fmt(pct(lat, 50), 1)} / {fmt(pct(lat, 99), 1)}",
        f"{r.tail_s:.1f}",
    ]


HEADER = [
    "mode",
    "load",
    "start",
    "offered",
    "ok",
    "429 to app",
    "429s the SDK got: provider's / proxy's",
    "429 from provider (share of its requests)",
    "provider calls per request",
    "throughput (share of limit)",
    "bucket at start (requests)",
    "held p50 / p99 s",
    "app latency p50 / p99 s",
    "tail real s",
]


def held_reasons(results: list[Result]) -> str:
    lines = []
    for r in results:
        if r.held_for:
            sc = r.scenario
            reasons = ", ".join(f"{k}: {v}" for k, v in r.held_for.most_common())
            held = sum(1 for h in r.held_ms if h > 0)
            lines.append(
                f"- {sc.mode} {sc.load:.0%} {sc.start}: {held} of {r.proxy_lines} request "
                f"lines held ({reasons})"
            )
    return "\n".join(lines)


def verdicts(plan: Plan, results: list[Result]) -> list[list[str]]:
    out = []
    for r in results:
        sc = r.scenario
        if sc.mode != "proxy-on" or sc.start != "warm":
            continue
        sent = r.provider.served + r.provider.limited
        share = throughput(plan, r)
        checks = [("429s the provider sent < 1 %", r.provider.limited / max(1, sent) < 0.01)]
        if sc.load <= 1.0:
            checks.append(("0 429s to the app", r.tally.app_429 == 0))
        if sc.load >= 1.0:
            checks.append(("throughput >= 95 % of the limit", share >= 0.95))
        for name, ok in checks:
            out.append([f"{sc.load:.0%}", name, "met" if ok else "MISSED"])
    return out


def version(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "n/a"


def machine(load_before: str) -> list[str]:
    import uvloop  # the proxy and the fake run on it when installed

    return [
        f"- load average (1/5/15 min): {load_before} before, {load_average()} after",
        f"- cores: {os.cpu_count()}; {platform.machine()}; Linux {platform.release()}",
        f"- python {platform.python_version()}; aiohttp {aiohttp.__version__}; "
        f"openai {openai.__version__}; httpx {httpx.__version__}; uvloop {uvloop.__version__}",
        f"- {version(['redis-server', '--version']).split(' sha=')[0]}",
    ]


def report(plan: Plan, results: list[Result], elapsed: float, load_before: str) -> str:
    argv = " ".join(sys.argv[1:])
    parts = [
        f"Command: `python bench/bench_pacing.py{(' ' + argv) if argv else ''}`",
        "",
        *machine(load_before),
        f"- run time: {elapsed:.0f} s real",
        "",
        f"Provider limit: {plan.rpm:g} rpm and {plan.rpm * COST_TOKENS:g} tpm per key and model "
        f"(each request costs 1 request and {COST_TOKENS} tokens); window {plan.window_s:g} s real "
        f"= 60 s simulated (x{plan.scale:g}); {plan.minutes:g} simulated minutes per warm run, "
        f"{plan.cold_minutes:g} per cold run (burst of {plan.burst} per client at t=0); "
        f"{CLIENTS} SDK clients, {PROXIES} proxy processes sharing one redis-server; proxy "
        f"wait budget {plan.queue_wait_sim_s:g} s simulated.",
        "",
        table(HEADER, (row(plan, r) for r in results)),
        "",
        "Held (from the proxies' log lines; reasons as `held_for`):",
        "",
        held_reasons(results) or "- nothing was held",
        "",
        table(["load", "target (proxy-on, warm)", "verdict"], verdicts(plan, results)),
    ]
    return "\n".join(parts)


# ------------------------------------------------------------------ main


def scenarios(plan: Plan, mode: str) -> list[Scenario]:
    out = [Scenario(mode, load, "warm", plan.minutes) for load in plan.loads]
    if plan.cold and mode != "direct":
        top = max(plan.loads)
        out += [Scenario(mode, top, s, plan.cold_minutes) for s in ("cold-full", "cold-drained")]
    return out


async def main(plan: Plan) -> None:
    from tests.redis_server import start_redis_server

    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server not on PATH")
    started, load_before = time.monotonic(), load_average()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-pacing-") as tmp:
        workdir = Path(tmp)
        fake = start_fake(workdir, plan)
        redis = start_redis_server(workdir)
        try:
            for mode in plan.modes:
                proxies = (
                    []
                    if mode == "direct"
                    else start_proxies(workdir, plan, fake.base, redis.url, mode)
                )
                try:
                    for sc in scenarios(plan, mode):
                        result = await run_one(plan, sc, fake.base, proxies, len(results))
                        results.append(result)
                        print(" | ".join(row(plan, result)), file=sys.stderr, flush=True)
                finally:
                    for p in proxies:
                        p.stop()
        finally:
            fake.stop()
            redis.stop()
    print(report(plan, results, time.monotonic() - started, load_before))


def parse_args() -> Plan:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rpm", type=float, default=120.0, help="the fake's limit per window")
    p.add_argument("--window-s", type=float, default=6.0, help="a simulated minute, real s")
    p.add_argument("--minutes", type=float, default=3.0, help="simulated minutes per warm run")
    p.add_argument("--cold-minutes", type=float, default=1.0)
    p.add_argument("--loads", default="0.8,1,1.5", help="offered load, shares of the limit")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--max-queue-wait-s", type=float, default=30.0, help="simulated seconds")
    p.add_argument("--burst", type=int, default=5, help="cold runs: requests per client at t=0")
    p.add_argument("--no-cold", action="store_true", help="skip the cold-start runs")
    p.add_argument("--seed", type=int, default=12)
    a = p.parse_args()
    modes = tuple(m for m in a.modes.split(",") if m)
    bad = [m for m in modes if m not in MODES]
    if bad:
        p.error(f"unknown mode(s) {bad}; choose from {MODES}")
    loads = tuple(float(x) for x in a.loads.split(","))
    if a.window_s <= 0 or a.rpm <= 0 or any(not math.isfinite(x) or x <= 0 for x in loads):
        p.error("--rpm, --window-s and --loads must be > 0")
    return Plan(
        a.rpm,
        a.window_s,
        a.minutes,
        a.cold_minutes,
        loads,
        modes,
        a.max_queue_wait_s,
        a.burst,
        not a.no_cold,
        a.seed,
    )


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
