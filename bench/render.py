"""The run's Markdown report: headline ratios, the issue's targets met or missed, tables."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from report import Runs, fmt, identity, latency_rows, pct, ratio, signed, table
from wrk import WrkResult

LAT_HEADER = ["target", "n", "p50 ms", "p99 ms", "added p50", "added p99", "round spread p50"]
LAT_HEADER += ["errors", "server CPU µs/req"]
IDENTITY_KEYS = (
    "small c=1",
    "small c=64",
    "small c=256",
    "1 MB c=1",
    "SSE 200 c=1",
    "SSE 200 paced c=1",
    "slow",
)


@dataclass
class Collected:
    """Everything one run measured; filled by run.py, read here."""

    targets: list[str]
    env: dict[str, str]
    lat: dict[str, dict[str, Runs]] = field(default_factory=dict)
    thr: dict[int, dict[str, list[tuple[WrkResult, float]]]] = field(default_factory=dict)
    rss_start: dict[str, float] = field(default_factory=dict)
    rss_idle: dict[str, float] = field(default_factory=dict)
    hwm: dict[str, float] = field(default_factory=dict)
    growth: dict[str, dict[str, float]] = field(default_factory=dict)
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    slow_runs: dict[str, Runs] = field(default_factory=dict)

    def rps(self, conns: int, target: str) -> float:
        runs = self.thr.get(conns, {}).get(target, [])
        return statistics.fmean(r.rps for r, _ in runs) if runs else math.nan

    def wrk_cpu_us(self, conns: int, target: str) -> float:
        runs = self.thr.get(conns, {}).get(target, [])
        n = sum(r.requests for r, _ in runs)
        return sum(c for _, c in runs) / n * 1e6 if n else math.nan

    def added(self, key: str, q: float, field_: str = "lat_ms", target: str = "ours") -> float:
        runs = self.lat.get(key, {})
        if target not in runs or "direct" not in runs:
            return math.nan
        return pct(runs[target].values(field_), q) - pct(runs["direct"].values(field_), q)


def _check(name: str, goal: str, value: float, limit: float, unit: str, lower: bool) -> list[str]:
    """A targets row: met when value is below (``lower``) or above the limit; by how much."""
    if math.isnan(value):
        return [name, goal, "n/a", "not measured", ""]
    met = value < limit if lower else value >= limit
    margin = (limit - value) if lower else (value - limit)
    rel = f" ({abs(margin) / limit * 100:.0f} % {'under' if lower else 'over'})" if limit else ""
    if not met:
        rel = f" (missed by {abs(margin):,.2f}{unit}, {abs(margin) / limit * 100:.0f} %)"
    return [name, goal, f"{value:,.2f}{unit}", "met" if met else "MISSED", rel.strip()]


def targets_table(c: Collected) -> str:
    rows = [
        _check("added latency p50, c=1", "< 0.4 ms", c.added("small c=1", 50), 0.4, " ms", True),
        _check("added latency p99, c=1", "< 1 ms", c.added("small c=1", 99), 1.0, " ms", True),
        _check(
            "TTFT added p50 (SSE, paced)",
            "< 0.5 ms",
            c.added("SSE 200 paced c=1", 50, "ttfb_ms"),
            0.5,
            " ms",
            True,
        ),
    ]
    for conns in sorted(c.thr):
        fwd, ours, ll = (c.rps(conns, t) for t in ("forwarder", "ours", "litellm"))
        rows.append(
            _check(f"req/s vs forwarder, c={conns}", ">= 0.90x", ours / fwd, 0.9, "x", False)
        )
        if "litellm" in c.targets:
            rows.append(_check(f"req/s vs LiteLLM, c={conns}", ">= 50x", ours / ll, 50, "x", False))
    same, total = 0, 0
    for key in IDENTITY_KEYS:
        runs = c.slow_runs if key == "slow" else c.lat.get(key, {})
        got = identity(runs).get("ours")
        if got:
            same, total = same + got[0], total + got[1]
    rows.append(
        [
            "responses byte-identical to direct",
            "all",
            f"{same:,} / {total:,}",
            "met" if total and same == total else "MISSED",
            "",
        ]
    )
    rows.append(_check("idle RSS", "< 60 MB", c.rss_idle.get("ours", math.nan), 60, " MB", True))
    peak = c.streams.get("ours", {}).get("peak_mb", math.nan)
    n = c.streams.get("ours", {}).get("n", 0)
    rows.append(_check(f"RSS with {n:,} open streams", "< 150 MB", peak, 150, " MB", True))
    g = c.growth.get("ours", {})
    rows.append(
        _check(
            f"RSS growth across {int(g.get('requests', 0)):,} requests",
            "< 10 %",
            g.get("growth_pct", math.nan),
            10,
            " %",
            True,
        )
    )
    return table(["target", "goal", "measured", "verdict", "margin"], rows)


def throughput_table(c: Collected) -> str:
    rows = []
    for conns in sorted(c.thr):
        for target in c.targets:
            runs = c.thr[conns].get(target, [])
            if not runs:
                continue
            rps = c.rps(conns, target)
            lo, hi = min(r.rps for r, _ in runs), max(r.rps for r, _ in runs)
            p50 = statistics.median(r.p50_ms or math.nan for r, _ in runs)
            p99 = statistics.median(r.p99_ms or math.nan for r, _ in runs)
            errors = sum(r.errors + r.non_2xx for r, _ in runs)
            rows.append(
                [
                    f"c={conns}",
                    target,
                    f"{rps:,.0f}",
                    f"{lo:,.0f}..{hi:,.0f}",
                    ratio(rps, c.rps(conns, "direct")),
                    ratio(rps, c.rps(conns, "forwarder")),
                    ratio(rps, c.rps(conns, "litellm")),
                    fmt(p50, 2),
                    fmt(p99, 2),
                    fmt(c.wrk_cpu_us(conns, target), 0),
                    str(errors),
                ]
            )
    header = ["wrk", "target", "req/s", "rounds min..max", "vs direct", "vs forwarder"]
    header += ["vs LiteLLM", "p50 ms", "p99 ms", "server CPU µs/req", "errors"]
    return table(header, rows)


def memory_table(c: Collected) -> str:
    rows = []
    for target in c.targets:
        s = c.streams.get(target, {})
        g = c.growth.get(target)
        srv = s.get("result", {})
        ok = srv.get("statuses", {}).get("200", 0)
        rows.append(
            [
                target + (" (fake upstream)" if target == "direct" else ""),
                fmt(c.rss_start.get(target), 1),
                fmt(c.rss_idle.get(target), 1),
                fmt(s.get("peak_mb"), 1),
                f"{ok:,} / {s.get('n', 0):,}" if s else "n/a",
                fmt(c.hwm.get(target), 1),
                (
                    f"{g['before_mb']:.1f} -> {g['after_mb']:.1f} ({signed(g['growth_pct'], 1)} %)"
                    f" over {int(g['requests']):,}"
                    if g
                    else "not run"
                ),
            ]
        )
    header = ["server", "RSS at start MB", "RSS idle after warm-up MB", "peak RSS, slow streams MB"]
    header += ["streams ok", "VmHWM MB", "RSS growth (wrk)"]
    return table(header, rows)


def mix_table(runs: dict[str, Runs]) -> str:
    rows = []
    for target, r in runs.items():
        lat = r.values("lat_ms")
        statuses = r.counter("statuses")
        attempts = r.counter("proxy_attempts")
        rows.append(
            [
                target,
                f"{r.n:,}",
                fmt(pct(lat, 50), 2),
                fmt(pct(lat, 99), 2),
                f"{sum(v for k, v in statuses.items() if k.startswith('2')):,}",
                str(sum(x["trimmed"] for x in r.results)),
                ", ".join(f"{k}: {v}" for k, v in sorted(attempts.items())) or "-",
                str(sum(x["client_retries"] for x in r.results)),
                fmt(r.cpu_us_per_req(), 0),
            ]
        )
    header = ["target", "n", "p50 ms", "p99 ms", "2xx", "trimmed", "x-proxy-attempts"]
    header += ["client retries", "server CPU µs/req"]
    return table(header, rows)


def identity_table(c: Collected) -> str:
    rows = []
    for key in IDENTITY_KEYS:
        runs = c.slow_runs if key == "slow" else c.lat.get(key, {})
        for target, (same, total, headers) in identity(runs).items():
            if target == "direct":
                continue
            rows.append([key, target, f"{same:,} / {total:,}", headers])
    return table(["scenario", "target", "bodies identical to direct", "end-to-end headers"], rows)


def headline(c: Collected) -> str:
    """The few ratios a reader wants first."""
    lines = [
        f"- ours added latency at c=1: p50 {signed(c.added('small c=1', 50), 3)} ms, "
        f"p99 {signed(c.added('small c=1', 99), 3)} ms "
        f"(forwarder: p50 {signed(c.added('small c=1', 50, target='forwarder'), 3)} ms, "
        f"p99 {signed(c.added('small c=1', 99, target='forwarder'), 3)} ms)",
        f"- ours TTFT added (SSE, 200 events 1 ms apart): p50 "
        f"{signed(c.added('SSE 200 paced c=1', 50, 'ttfb_ms'), 3)} ms; 200-event burst: first "
        f"event p50 {signed(c.added('SSE 200 c=1', 50, 'ttfb_ms'), 3)} ms, whole stream p50 "
        f"{signed(c.added('SSE 200 c=1', 50), 3)} ms",
    ]
    for conns in sorted(c.thr):
        ours = c.rps(conns, "ours")
        lines.append(
            f"- wrk c={conns}: ours {ours:,.0f} req/s = {ratio(ours, c.rps(conns, 'forwarder'))}"
            f" the forwarder, {ratio(ours, c.rps(conns, 'litellm'), 1)} LiteLLM; server CPU "
            f"{fmt(c.wrk_cpu_us(conns, 'ours'), 0)} µs/req vs forwarder "
            f"{fmt(c.wrk_cpu_us(conns, 'forwarder'), 0)} µs/req"
        )
    return "\n".join(lines)


def render(c: Collected, command: str) -> str:
    env = "\n".join(f"- {k}: {v}" for k, v in c.env.items())
    parts = [
        "## Run",
        f"Command: `{command}`\n\n{env}",
        "## Headline",
        headline(c),
        "## Targets (issue 7)",
        targets_table(c),
    ]
    for key, runs in c.lat.items():
        if key.startswith("mix"):
            continue
        parts += [f"## Latency: {key} (Python client, all rounds pooled)", _lat(runs)]
        if key.startswith("SSE"):
            parts += [f"## Time to first SSE event: {key}", _lat(runs, "ttfb_ms")]
    parts += ["## Throughput (wrk, small JSON)", throughput_table(c)]
    parts += ["## Memory", memory_table(c)]
    for key, runs in c.lat.items():
        if key.startswith("mix"):
            parts += [f"## Mix: context trimming and 429s ({key})", mix_table(runs)]
    parts += ["## Byte-for-byte check against direct", identity_table(c)]
    return "\n\n".join(parts) + "\n"


def _lat(runs: dict[str, Runs], key: str = "lat_ms") -> str:
    return table(LAT_HEADER, latency_rows(runs, key))
