"""Where our proxy spends its CPU under load: py-spy samples the running proxy while wrk (small
JSON) or the Python load generator (SSE streams) drives it, then prints the top costs.

    python bench/profile.py [--scenario small|sse] [--seconds 10] [--proxy-root DIR]

Needs py-spy (``pip install py-spy``; ptrace rights: root or CAP_SYS_PTRACE). ``--proxy-root``
profiles another checkout (e.g. a scratch copy with a candidate fix) with the same harness.
Percentages are of the samples in which the proxy was busy (py-spy skips idle threads).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from measure import Bench, LoadGen
from procs import raise_nofile
from report import table
from targets import ROOT, Slow, start_services

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def area(path: str) -> str:
    """Which package a frame belongs to: proxy/<module>, a library, or the stdlib module."""
    parts = path.replace("\\", "/").split("/")
    for anchor in ("proxy", "aiohttp", "multidict", "yarl", "structlog", "tiktoken"):
        if anchor in parts:
            i = parts.index(anchor)
            return "/".join(parts[i : i + 2]) if anchor == "proxy" else anchor
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    name = parts[-1]
    return name[:-3] if name.endswith(".py") else name


def analyse(collapsed: str) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    """(samples, self by function, inclusive by function, self by area) from py-spy's raw
    collapsed stacks ("frame;frame;... count"), main thread only."""
    total = 0
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        if stack.startswith("Thread._bootstrap"):
            continue  # executor threads idling in queue.get(); py-spy counts them as busy
        total += n
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        names = []
        for raw in frames:
            m = _FRAME.match(raw.strip())
            func, path = (m.group("func"), m.group("file")) if m else (raw, "?")
            names.append((f"{func} ({area(path)})", area(path)))
        if not names:
            continue
        own[names[-1][0]] += n
        areas[names[-1][1]] += n
        for name in {name for name, _ in names}:
            incl[name] += n
    return total, own, incl, areas


def top(counter: Counter[str], total: int, k: int, us_per_req: float) -> list[list[str]]:
    """The ``k`` largest entries as % of busy samples and as µs of CPU per request."""
    return [
        [name, f"{n / total * 100:.1f} %", f"{n / total * us_per_req:.0f}"]
        for name, n in counter.most_common(k)
    ]


def drive(bench: Bench, target: str, scenario: str, seconds: float, out: list[float]) -> None:
    """Load the target; append (requests, server CPU seconds) to ``out``."""
    if scenario == "small":
        res, cpu = bench.throughput(target, connections=64, duration_s=seconds)
        out += [res.requests, cpu]
    else:
        result, cpu = bench.latency(target, "sse", concurrency=4, count=10**6, time_limit_s=seconds)
        out += [result["n"], cpu]


def profile(target: str, scenario: str, seconds: float, rate: int, root: Path, out: Path) -> str:
    """Profile ``target`` (ours or forwarder) under ``scenario``; raw stacks are kept in ``out``."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    slow = Slow()
    with tempfile.TemporaryDirectory(prefix="llm-proxy-profile-") as tmp:
        workdir = Path(tmp)
        services = start_services(workdir, slow, litellm=False, root=root)
        loadgen = LoadGen(workdir / "loadgen.err")
        try:
            bench = Bench(services, loadgen, workdir, slow)
            bench.latency(target, "mix", concurrency=4, count=16, time_limit_s=20)  # warm
            done: list[float] = []
            load = threading.Thread(
                target=drive, args=(bench, target, scenario, seconds + 3, done), daemon=True
            )
            load.start()
            _record(pyspy, services[target].pid, seconds, rate, out)
            load.join(seconds + 60)
        finally:
            loadgen.close()
            for svc in services.values():
                svc.stop()
    total, own, incl, areas = analyse(out.read_text())
    us = done[1] / done[0] * 1e6 if len(done) == 2 and done[0] else 0.0
    ours = Counter({k: v for k, v in incl.items() if "(proxy/" in k or "(forwarder)" in k})
    parts = [
        f"py-spy: {total:,} busy samples at {rate} Hz over {seconds:g} s ({target}, {scenario});"
        f" server CPU {us:.0f} µs/request while profiled; raw stacks: {out}",
        "### Self time by area",
        table(["area", "self", "µs/req"], top(areas, total, 15, us)),
        "### Self time by function",
        table(["function (area)", "self", "µs/req"], top(own, total, 25, us)),
        "### Inclusive time by function (proxy code)",
        table(["function (area)", "inclusive", "µs/req"], top(ours, total, 30, us)),
    ]
    return "\n\n".join(parts) + "\n"


def _record(pyspy: str, pid: int, seconds: float, rate: int, out: Path) -> None:
    argv = [pyspy, "record", "-p", str(pid), "-d", str(int(seconds))]
    argv += ["-r", str(rate), "-f", "raw", "--function", "-o", str(out)]
    subprocess.run(argv, check=True, capture_output=True, timeout=seconds + 60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("ours", "forwarder"), default="ours")
    parser.add_argument("--scenario", choices=("small", "sse"), default="small")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument(
        "--proxy-root", type=Path, help="checkout whose proxy/ to profile (default: this one)"
    )
    args = parser.parse_args(argv)
    raise_nofile()
    root = (args.proxy_root or ROOT).resolve()
    outdir = ROOT / "bench" / "out"
    outdir.mkdir(parents=True, exist_ok=True)
    tag = "" if root == ROOT.resolve() else f"-{root.name}"
    out = outdir / f"profile-{args.target}-{args.scenario}{tag}.collapsed"
    print(profile(args.target, args.scenario, args.seconds, args.rate, root, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
