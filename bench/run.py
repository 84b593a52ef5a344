"""One command for the whole benchmark: ``python bench/run.py --quick`` (about 2 minutes) or
``python bench/run.py`` (the full run, about 12 minutes). See bench/README.md.

Starts the fake upstream, the bare forwarder, our proxy and (when bench/.venv-litellm exists)
LiteLLM's proxy, all on 127.0.0.1; runs every scenario against every target, interleaved per
round; prints the Markdown report and saves it (with the raw numbers as JSON) under bench/out/.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wrk
from measure import Bench, LoadGen
from procs import raise_nofile
from render import Collected, render
from report import Runs, pct
from targets import LITELLM_BIN, ROOT, TARGETS, Slow, loop_of, start_services


@dataclass(frozen=True)
class Plan:
    """How much to do. Every loop below is bounded by these counts and time limits."""

    rounds: int
    c1: int
    c64: int
    c256: int
    big: int
    sse: int
    paced: int
    mix: int
    time_limit_s: float
    wrk_s: float
    growth: int
    growth_max_s: float
    streams: int
    slow: Slow


QUICK = Plan(1, 300, 1000, 1000, 40, 40, 6, 200, 4, 2, 10_000, 20, 200, Slow(10, 200))
FULL = Plan(3, 2000, 4000, 4000, 200, 200, 40, 800, 12, 6, 100_000, 150, 1000, Slow(20, 250))


def latency_scenarios(p: Plan) -> list[tuple[str, str, int, int]]:
    """(report key, scenario, concurrency, count); LiteLLM is cut by the time limit instead."""
    return [
        ("small c=1", "small", 1, p.c1),
        ("small c=64", "small", 64, p.c64),
        ("small c=256", "small", 256, p.c256),
        ("1 MB c=1", "big", 1, p.big),
        ("SSE 200 c=1", "sse", 1, p.sse),
        ("SSE 200 paced c=1", "sse-paced", 1, p.paced),
        ("mix c=8", "mix", 8, p.mix),
    ]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def environment(litellm: bool, root: Path) -> dict[str, str]:
    def out(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except OSError:
            return "n/a"
        return (
            (done.stdout or done.stderr).strip().splitlines()[0]
            if done.stdout or done.stderr
            else "n/a"
        )

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    import aiohttp

    try:
        import uvloop

        uv = uvloop.__version__
    except ImportError:
        uv = "not installed"
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    git = out(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    dirty = out(
        ["git", "-C", str(root), "--no-optional-locks", "status", "--porcelain", "--", "proxy"]
    )
    digest = hashlib.sha1()  # the exact code measured, even when uncommitted
    for path in sorted((root / "proxy").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    env = {
        "machine": f"{cpu}, {os.cpu_count()} cores, {int(mem) // 1024} MiB RAM",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "uvloop": uv,
        "wrk": out(["wrk", "-v"]),
        "proxy tree": f"{'this checkout' if root == ROOT else root.name}: git {git}"
        + (" + uncommitted changes in proxy/" if dirty not in ("", "n/a") else "")
        + f"; sha1 of proxy/**/*.py {digest.hexdigest()[:12]}",
    }
    if litellm:
        env["litellm"] = out(
            [
                str(LITELLM_BIN.parent / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('litellm'))",
            ]
        )
    return env


def warm_up(bench: Bench, targets: list[str]) -> None:
    """Connections, lazy imports and tokenizers loaded before anything is timed."""
    for t in targets:
        warm = (
            ("small", 200, 8),
            ("sse", 5, 1),
            ("sse-paced", 1, 1),
            ("big", 3, 1),
            ("mix", 16, 4),
        )
        for scen, n, conc in warm:
            bench.latency(t, scen, concurrency=conc, count=n, time_limit_s=20)


def run_rounds(bench: Bench, plan: Plan, c: Collected) -> None:
    targets = c.targets
    for rnd in range(plan.rounds):
        order = targets[rnd % len(targets) :] + targets[: rnd % len(targets)]
        for key, scen, conc, count in latency_scenarios(plan):
            for t in order:
                res, cpu = bench.latency(
                    t, scen, concurrency=conc, count=count, time_limit_s=plan.time_limit_s
                )
                c.lat.setdefault(key, {t0: Runs() for t0 in targets})[t].add(res, cpu)
                log(
                    f"round {rnd + 1} {key:12} {t:9} n={res['n']:5} "
                    f"p50={pct(res['lat_ms'], 50):8.3f} ms p99={pct(res['lat_ms'], 99):8.3f} ms"
                )
        for conns in (64, 256):
            for t in order:
                res, cpu = bench.throughput(t, connections=conns, duration_s=plan.wrk_s)
                c.thr.setdefault(conns, {t0: [] for t0 in targets})[t].append((res, cpu))
                log(
                    f"round {rnd + 1} wrk c={conns:<4} {t:9} {res.rps:9.0f} req/s "
                    f"errors={res.errors + res.non_2xx}"
                )


def run_memory(bench: Bench, plan: Plan, c: Collected) -> None:
    for t in ("forwarder", "ours"):
        g = bench.growth(
            t, requests=plan.growth, rps=c.rps(64, t), warm_s=2, max_s=plan.growth_max_s
        )
        c.growth[t] = g
        log(
            f"growth {t:9} {int(g['requests']):,} requests: {g['before_mb']:.1f} -> "
            f"{g['after_mb']:.1f} MB ({g['growth_pct']:+.1f} %)"
        )
    for t in c.targets:
        timeout = 30 + plan.slow.chunks * plan.slow.delay_ms / 1000 * 4
        s = bench.streams(t, n=plan.streams, timeout_s=timeout)
        s["n"] = plan.streams
        c.streams[t] = s
        runs = c.slow_runs.setdefault(t, Runs())
        runs.add(s["result"], s["cpu_s"])
        log(
            f"streams {t:9} {plan.streams} open: peak {s['peak_mb']:.1f} MB, "
            f"ok {s['result']['statuses'].get('200', 0)}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark our proxy against direct, a bare "
        "forwarder and LiteLLM (see bench/README.md)."
    )
    parser.add_argument("--quick", action="store_true", help="small counts, one round (~2 min)")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM even if installed")
    parser.add_argument(
        "--proxy-root",
        type=Path,
        default=ROOT,
        help="checkout whose proxy/ and config.yaml run as 'ours' (e.g. a scratch copy)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "out",
        help="where the report and raw JSON go (default bench/out)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = dataclasses.replace(plan, rounds=args.rounds)
    if not wrk.available():
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    use_ll = LITELLM_BIN.exists() and not args.no_litellm
    if not use_ll and not args.no_litellm:
        log("LiteLLM not installed (bash bench/setup_litellm.sh); running without it")
    raise_nofile()
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    targets = [t for t in TARGETS if use_ll or t != "litellm"]
    c = Collected(targets=targets, env=environment(use_ll, args.proxy_root))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llm-proxy-bench-") as tmp:
        workdir = Path(tmp)
        log(f"starting servers in {workdir}")
        services = start_services(workdir, plan.slow, litellm=use_ll, root=args.proxy_root)
        loadgen = LoadGen(workdir / "loadgen.err")
        try:
            bench = Bench(services, loadgen, workdir, plan.slow)
            _measure(bench, plan, c, services)
        finally:
            loadgen.close()
            for svc in services.values():
                svc.stop()
    c.env["run time"] = f"{time.monotonic() - started:.0f} s"
    return _write(c, command.strip(), args.out, "quick" if args.quick else "run")


def _measure(bench: Bench, plan: Plan, c: Collected, services: dict[str, Any]) -> None:
    c.env["event loops"] = ", ".join(f"{t}: {loop_of(services[t])}" for t in c.targets)
    c.rss_start = {t: services[t].rss_mb() for t in c.targets}
    log("warming up")
    warm_up(bench, c.targets)
    time.sleep(1)
    c.rss_idle = {t: services[t].rss_mb() for t in c.targets}
    steps: list[tuple[str, Callable[[Bench, Plan, Collected], None]]] = [
        ("rounds", run_rounds),
        ("memory", run_memory),
    ]
    for name, step in steps:
        log(f"{name}...")
        step(bench, plan, c)
    c.hwm = {t: services[t].hwm_mb() for t in c.targets}


def _write(c: Collected, command: str, out: Path, kind: str) -> int:
    text = render(c, command)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{kind}-{stamp}"
    (out / f"{name}.md").write_text(text)
    raw = {
        "env": c.env,
        "latency": {k: {t: r.results for t, r in v.items()} for k, v in c.lat.items()},
        "throughput": {
            str(k): {
                t: [dict(dataclasses.asdict(r), cpu_s=cpu) for r, cpu in v] for t, v in d.items()
            }
            for k, d in c.thr.items()
        },
        "rss_start": c.rss_start,
        "rss_idle": c.rss_idle,
        "hwm": c.hwm,
        "growth": c.growth,
        "streams": c.streams,
    }
    (out / f"{name}.json").write_text(json.dumps(raw))
    log(f"report: {out / (name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
