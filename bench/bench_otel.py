"""What OpenTelemetry costs: req/s through the proxy with export on vs off, same run, interleaved.

    python bench/bench_otel.py [--rounds 5] [--seconds 5] [--connections 64]

Two proxies from this checkout share one fake upstream: ``off`` (no ``otel``) and ``on``
(``otel`` exporting every request, ``sample_ratio: 1``, spans and GenAI metrics, to a local
OTLP/HTTP receiver process that counts what it gets). Each round runs wrk with the
small-JSON chat request against both, alternating which goes first, and reads each proxy's CPU
time around it. Printed: req/s per round, the medians, the ratio on/off (the target is >= 0.90,
i.e. under 10 % cost), server CPU per request, what the receiver got and what was dropped.
Everything listens on 127.0.0.1; every process started here is stopped here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import wrk
import yaml
from procs import Service, announced, drain_to, free_port, spawn, wait_http
from targets import ROOT, Slow, ours_config, requests_for

PY = sys.executable


def serve_receiver() -> None:
    """The receiver process: accepts OTLP/HTTP like a collector and counts what arrives.

    It does not decode (the tests do that): on a small machine a decoding receiver would take
    CPU from the proxy it is measuring.
    """
    import asyncio

    from aiohttp import web

    counts = {"trace_posts": 0, "trace_bytes": 0, "metric_posts": 0}

    async def traces(request: web.Request) -> web.Response:
        counts["trace_bytes"] += len(await request.read())
        counts["trace_posts"] += 1
        return web.Response(content_type="application/x-protobuf")

    async def metrics(request: web.Request) -> web.Response:
        await request.read()
        counts["metric_posts"] += 1
        return web.Response(content_type="application/x-protobuf")

    async def count(request: web.Request) -> web.Response:
        return web.json_response(counts)

    async def main() -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/traces", traces)
        app.router.add_post("/v1/metrics", metrics)
        app.router.add_get("/count", count)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def start_proxy(workdir: Path, name: str, fake: str, otel: dict[str, Any] | None) -> Service:
    port = free_port()
    cfg = ours_config(ROOT / "config.yaml", fake, port)
    if otel is not None:
        cfg["otel"] = otel
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    log = workdir / f"{name}.log"
    argv = [PY, "-m", "proxy", "--config", str(path), "--port", str(port)]
    proc = spawn(argv, log.with_suffix(".err"), cwd=ROOT)
    svc = Service(name, proc, f"http://127.0.0.1:{port}", log, drain_to(proc, log))
    try:
        wait_http(f"{svc.base}/healthz", proc, 60)
    except RuntimeError:
        svc.stop()
        raise
    return svc


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def dropped_spans(svc: Service) -> float:
    with urllib.request.urlopen(svc.base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("llm_proxy_otel_dropped_spans_total{")
    )


def _load(svc: Service, lua: Path, url: str, connections: int, seconds: float) -> Result:
    cpu0 = svc.cpu_s()
    got = wrk.run(url, lua, connections=connections, duration_s=seconds)
    cpu_us = (svc.cpu_s() - cpu0) / max(1, got.requests) * 1e6
    if got.errors or got.non_2xx:
        print(f"  warning: {svc.name}: {got.errors} socket errors, {got.non_2xx} non-2xx")
    return got.rps, cpu_us


Result = tuple[float, float]
"""(req/s, server CPU µs per request) of one proxy in one round."""


def measure(
    services: dict[str, Service],
    workdir: Path,
    rounds: int,
    seconds: float,
    connections: int,
    concurrent: bool,
) -> dict[str, list[Result]]:
    """Per round and proxy. ``concurrent``: both proxies are loaded at the same time (half
    the connections each), so a burst of load from elsewhere on the machine hits both alike;
    otherwise one after the other, the order alternating each round."""
    results: dict[str, list[Result]] = {name: [] for name in services}
    names = list(services)
    jobs = {}
    for name in names:
        req = requests_for("ours", services[name].base, "small", Slow())[0]
        jobs[name] = (wrk.script(req, workdir / f"{name}.lua"), req.url)
        wrk.run(req.url, jobs[name][0], connections=8, duration_s=1)  # warm-up
    for rnd in range(rounds):
        if concurrent:
            per = max(1, connections // len(names))
            with ThreadPoolExecutor(len(names)) as pool:
                futures = {
                    n: pool.submit(_load, services[n], *jobs[n], per, seconds) for n in names
                }
                got = {n: f.result() for n, f in futures.items()}
        else:
            order = names if rnd % 2 == 0 else list(reversed(names))
            got = {n: _load(services[n], *jobs[n], connections, seconds) for n in order}
        for name in names:
            results[name].append(got[name])
            rps, cpu_us = got[name]
            print(f"  round {rnd + 1} {name:>3}: {rps:8.0f} req/s  {cpu_us:6.0f} µs CPU/req")
    return results


def report(results: dict[str, list[Result]], received: dict[str, int], dropped: float) -> str:
    """Medians, and the best round of each: noise from elsewhere only ever adds CPU time, so
    the lowest CPU per request is the closest to what the proxy itself needs."""
    med = {n: statistics.median(r for r, _ in rows) for n, rows in results.items()}
    best = {n: max(r for r, _ in rows) for n, rows in results.items()}
    cpu = {n: statistics.median(c for _, c in rows) for n, rows in results.items()}
    low = {n: min(c for _, c in rows) for n, rows in results.items()}
    ratio = med["on"] / med["off"]
    paired = [on[0] / off[0] for on, off in zip(results["on"], results["off"], strict=True)]
    lines = [
        "| proxy | req/s median (best) | CPU µs/request median (lowest) |",
        "|---|---|---|",
        f"| otel off | {med['off']:,.0f} ({best['off']:,.0f}) | {cpu['off']:,.0f} "
        f"({low['off']:,.0f}) |",
        f"| otel on, every request sampled and exported | {med['on']:,.0f} ({best['on']:,.0f}) "
        f"| {cpu['on']:,.0f} ({low['on']:,.0f}) |",
        "",
        f"req/s ratio on/off: {ratio:.3f} (cost {100 * (1 - ratio):.1f} %; target < 10 %); "
        f"best rounds {best['on'] / best['off']:.3f}; per round: "
        f"{', '.join(f'{p:.2f}' for p in paired)}",
        f"CPU per request on/off: median {cpu['on'] / cpu['off']:.3f}, "
        f"lowest {low['on'] / low['off']:.3f}",
        f"collector received {received['trace_posts']:,} span batches "
        f"({received['trace_bytes'] / 1e6:,.1f} MB) and {received['metric_posts']:,} metric "
        f"exports; spans dropped by the proxy: {dropped:,.0f}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="load one proxy at a time (alternating) instead of both at once",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an otel key of the 'on' proxy (YAML value), e.g. --set sample_ratio=0.1",
    )
    parser.add_argument("--serve-receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_receiver:
        serve_receiver()
        return 0
    if not wrk.available():
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    services: dict[str, Service] = {}
    helpers: list[Service] = []
    with tempfile.TemporaryDirectory(prefix="bench-otel-") as tmp:
        workdir = Path(tmp)
        try:
            fake_log = workdir / "fake.log"
            fake_argv = [PY, "-m", "proxy.fake_upstream", "--port", "0"]
            fake = announced("fake", spawn(fake_argv, fake_log, cwd=ROOT), fake_log, 30)
            helpers.append(fake)
            rx_log = workdir / "receiver.log"
            rx_argv = [PY, str(Path(__file__).resolve()), "--serve-receiver"]
            receiver = announced("receiver", spawn(rx_argv, rx_log, cwd=ROOT), rx_log, 30)
            helpers.append(receiver)
            otel = {"endpoint": receiver.base, "sample_ratio": 1.0, "metrics_interval_s": 5.0}
            for item in args.set:
                key, _, value = item.partition("=")
                otel[key] = yaml.safe_load(value)
            services["off"] = start_proxy(workdir, "off", fake.base, None)
            services["on"] = start_proxy(workdir, "on", fake.base, otel)
            how = "one after the other" if args.sequential else "both at once"
            print(
                f"{args.rounds} rounds of {args.seconds:g} s, wrk -c{args.connections} "
                f"({how}), small JSON chat completion"
            )
            results = measure(
                services,
                workdir,
                args.rounds,
                args.seconds,
                args.connections,
                concurrent=not args.sequential,
            )
            dropped = dropped_spans(services["on"])
            services["on"].stop()  # flushes what is queued
            received = get_json(receiver.base + "/count")
            print()
            print(report(results, received, dropped))
        finally:
            for svc in [*services.values(), *helpers]:
                svc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
