"""Before/after for one change: our proxy from several checkouts, side by side in one run.

    python bench/ab.py --variant before=. --variant after=../scratch-copy [--rounds 3]
    python bench/ab.py --variant asyncio=. --variant uvloop=.:uvloop

Each variant is ``NAME=CHECKOUT`` (``:uvloop`` runs that checkout's unchanged proxy under a
launcher that installs uvloop, for checkouts that do not choose it themselves). All variants
share one fake upstream and run interleaved with the bare forwarder (on uvloop when installed):
wrk req/s at 64 connections, server CPU per request, added latency at concurrency 1 (Python
client), server CPU per 200-event SSE stream (c=1), and RSS after warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from measure import Bench, LoadGen
from procs import Service, raise_nofile
from report import fmt, pct, ratio, signed, table
from targets import Slow, start_ours, start_services


def parse_variant(text: str) -> tuple[str, Path, bool]:
    name, _, spec = text.partition("=")
    path, _, flag = spec.partition(":")
    if not name or not path or flag not in ("", "uvloop"):
        raise argparse.ArgumentTypeError(f"expected NAME=CHECKOUT[:uvloop], got {text!r}")
    return name, Path(path).resolve(), flag == "uvloop"


def start(workdir: Path, variants: list[tuple[str, Path, bool]]) -> dict[str, Service]:
    services = start_services(workdir, Slow(), litellm=False)
    services.pop("ours").stop()
    try:
        for name, root, uv in variants:
            fake = services["direct"].base
            services[f"ours-{name}"] = start_ours(
                workdir, fake, root, name=f"ours-{name}", uvloop=uv
            )
    except BaseException:
        for svc in services.values():
            svc.stop()
        raise
    return services


def measure(
    bench: Bench, names: list[str], rounds: int, seconds: float, c1: int, sse_n: int
) -> str:
    """Interleaved rounds of c=1 latency, SSE stream CPU and wrk throughput; one table."""
    for t in names:
        bench.latency(t, "mix", concurrency=4, count=16, time_limit_s=20)
        bench.latency(t, "small", concurrency=8, count=300, time_limit_s=20)
    rss = {t: bench.services[t].rss_mb() for t in names}
    rps: dict[str, list[float]] = {t: [] for t in names}
    cpu: dict[str, list[tuple[int, float]]] = {t: [] for t in names}
    lat: dict[str, list[float]] = {t: [] for t in names}
    sse: dict[str, list[tuple[int, float]]] = {t: [] for t in names}
    for rnd in range(rounds):
        order = names[rnd % len(names) :] + names[: rnd % len(names)]
        for t in order:
            res, _ = bench.latency(t, "small", concurrency=1, count=c1, time_limit_s=30)
            lat[t] += res["lat_ms"]
        for t in order:
            res, c = bench.latency(t, "sse", concurrency=1, count=sse_n, time_limit_s=60)
            sse[t].append((len(res["lat_ms"]), c))
        for t in order:
            w, c = bench.throughput(t, connections=64, duration_s=seconds)
            rps[t].append(w.rps)
            cpu[t].append((w.requests, c))
            print(f"round {rnd + 1} {t:16} {w.rps:8.0f} req/s", file=sys.stderr, flush=True)
    rows = []
    for t in names:
        mean = statistics.fmean(rps[t])
        n = sum(r for r, _ in cpu[t])
        streams = sum(r for r, _ in sse[t])
        rows.append(
            [
                t,
                f"{mean:,.0f}",
                f"{min(rps[t]):,.0f}..{max(rps[t]):,.0f}",
                "-" if t.startswith("direct") else ratio(mean, statistics.fmean(rps["forwarder"])),
                fmt(sum(c for _, c in cpu[t]) / n * 1e6 if n else None, 0),
                fmt(sum(c for _, c in sse[t]) / streams * 1e6 if streams else None, 0),
                signed(pct(lat[t], 50) - pct(lat["direct"], 50), 3),
                signed(pct(lat[t], 99) - pct(lat["direct"], 99), 3),
                fmt(rss[t], 1),
            ]
        )
    header = ["server", "wrk c=64 req/s", "rounds", "vs forwarder", "CPU µs/req"]
    header += ["CPU µs per SSE stream (200 events)"]
    header += ["added p50 c=1 ms", "added p99 c=1 ms", "RSS after warm-up MB"]
    return table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", type=parse_variant, action="append", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5, help="wrk duration per run")
    parser.add_argument("--c1", type=int, default=1000, help="requests per c=1 latency run")
    parser.add_argument("--sse", type=int, default=40, help="200-event streams per round")
    args = parser.parse_args(argv)
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="llm-proxy-ab-") as tmp:
        workdir = Path(tmp)
        services = start(workdir, args.variant)
        loadgen = LoadGen(workdir / "loadgen.err")
        try:
            bench = Bench(services, loadgen, workdir, Slow())
            names = list(services)
            print(measure(bench, names, args.rounds, args.seconds, args.c1, args.sse))
        finally:
            loadgen.close()
            for svc in services.values():
                svc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
