"""``bench_auth.py --proxy``: req/s of the whole proxy with ``auth: keys`` against ``auth: off``.

One fake upstream; proxies started side by side from the same checkout, each a plain
``python -m proxy`` on the same config except ``auth`` (and ``state`` for the Redis variant):

- ``off``: no client keys (the upstream's configured key is sent, as in keys mode);
- ``keys``: a key with rpm, tpm and a budget (the full path: key lookup from the cache, the
  body parse, the worst-case reservation, the settlement and a ledger row per request),
  counters in memory, the store in SQLite;
- ``keys+redis``: the same with the counters in Redis (a redis-server this run starts), when
  ``--redis`` is given.

wrk sends the small chat request at 64 connections; rounds are interleaved (each round starts
with the next variant), so a machine that slows down mid-run slows every variant alike. Prints
req/s (mean, min..max), its ratio to ``off`` and the proxy's CPU per request.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import wrk
import yaml
from procs import Service, announced, drain_to, free_port, spawn, wait_http
from targets import Req

from proxy.auth.keys import Budget, BudgetPeriod, KeyLimits
from proxy.auth.manage import KeyManager
from proxy.auth.sqlite_store import SqliteStore

ROOT = Path(__file__).resolve().parents[1]
LIMITS = KeyLimits(rpm=10**9, tpm=10**12, budget=Budget(10.0**9, BudgetPeriod.MONTH))
BODY = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi"}]},
    separators=(",", ":"),
)


def proxy_config(fake: str, port: int, variant: str, store: Path, redis: str | None) -> dict:
    cfg: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": port},
        "logging": {"format": "json", "level": "warning"},
        "routes": [
            {
                "prefix": "/openai",
                "provider": "openai",
                "upstreams": [{"name": "fake", "base_url": fake, "api_key": "sk-upstream"}],
            }
        ],
    }
    if variant != "off":
        cfg["auth"] = {"mode": "keys"}
        cfg["store"] = {"backend": "sqlite", "path": str(store)}
    if variant == "keys+redis":
        cfg["state"] = {"backend": "redis", "url": redis}
    return cfg


def start_proxy(workdir: Path, fake: str, variant: str, store: Path, redis: str | None) -> Service:
    port = free_port()
    name = variant.replace("+", "-")
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(proxy_config(fake, port, variant, store, redis)))
    log = workdir / f"{name}.log"
    argv = [sys.executable, "-m", "proxy", "--config", str(path)]
    proc = spawn(argv, log.with_suffix(".err"), cwd=ROOT)
    svc = Service(variant, proc, f"http://127.0.0.1:{port}", log, drain_to(proc, log))
    wait_http(f"{svc.base}/healthz", proc, 60)
    return svc


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("--redis needs redis-server on PATH")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = spawn(argv, workdir / "redis.log", cwd=workdir)
    deadline = time.monotonic() + 10
    while True:  # until it accepts connections
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)


async def make_key(store_path: Path) -> str:
    store = SqliteStore(store_path)
    await store.open()
    try:
        return (await KeyManager(store).create("bench", LIMITS)).secret
    finally:
        await store.close()


def reset(fake: str) -> None:
    req = urllib.request.Request(f"{fake}/_fake/reset", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def measure(services: dict[str, Service], fake: str, secret: str, args: Any, workdir: Path) -> None:
    scripts = {}
    for name, svc in services.items():
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        req = Req("POST", f"{svc.base}/openai/v1/chat/completions", headers, BODY)
        scripts[name] = (req.url, wrk.script(req, workdir / f"wrk-{svc.proc.pid}.lua"))
    names = list(services)
    for name in names:  # warm-up: caches, connection pools, the key's budget seed
        url, lua = scripts[name]
        wrk.run(url, lua, connections=args.connections, duration_s=2)
    rps: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[tuple[int, float]]] = {n: [] for n in names}
    for rnd in range(args.rounds):
        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
            url, lua = scripts[name]
            reset(fake)
            cpu0 = services[name].cpu_s()
            res = wrk.run(url, lua, connections=args.connections, duration_s=args.seconds)
            cpu[name].append((res.requests, services[name].cpu_s() - cpu0))
            rps[name].append(res.rps)
            bad = res.errors + res.non_2xx
            print(f"round {rnd + 1} {name:10} {res.rps:8.0f} req/s  ({bad} errors/non-2xx)")
    base = statistics.fmean(rps["off"])
    print(f"\n{args.connections} connections, {args.rounds} interleaved rounds x {args.seconds:g}s")
    print(f"{'variant':12} {'req/s':>9} {'min..max':>17} {'vs off':>8} {'CPU us/req':>11}")
    for name in names:
        mean = statistics.fmean(rps[name])
        done = sum(n for n, _ in cpu[name])
        per = sum(c for _, c in cpu[name]) / done * 1e6 if done else float("nan")
        spread = f"{min(rps[name]):,.0f}..{max(rps[name]):,.0f}"
        print(f"{name:12} {mean:9,.0f} {spread:>17} {(mean / base - 1) * 100:+7.1f}% {per:11.0f}")


def run(args: Any) -> None:
    if not wrk.available():
        raise SystemExit("the proxy mode needs wrk (apt-get install wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-auth-proxy-"))
    services: dict[str, Service] = {}
    redis: subprocess.Popen[bytes] | None = None
    try:
        fake_log = workdir / "fake.log"
        argv = [sys.executable, "-m", "proxy.fake_upstream", "--port", "0"]
        services["fake"] = fake = announced("fake", spawn(argv, fake_log, cwd=ROOT), fake_log, 30)
        store = workdir / "keys.db"
        secret = asyncio.run(make_key(store))
        redis_url = None
        variants = ["off", "keys"]
        if args.redis:
            redis, redis_url = start_redis(workdir)
            variants.append("keys+redis")
        proxies = {v: start_proxy(workdir, fake.base, v, store, redis_url) for v in variants}
        services.update(proxies)
        measure(proxies, fake.base, secret, args, workdir)
    finally:
        for svc in services.values():
            svc.stop()
        if redis is not None:
            redis.terminate()
            redis.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
