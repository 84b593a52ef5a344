"""Turning raw measurements into ratios and Markdown tables. No I/O, no timing: pure arithmetic.

Absolute numbers swing with the machine; the tables lead with what is comparable inside one
run: latency added over direct, and req/s as a ratio to the bare forwarder and to LiteLLM.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


def pct(values: Sequence[float], q: float) -> float:
    """Percentile ``q`` (0..100) by linear interpolation; NaN for no data."""
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class Runs:
    """Every loadgen result of one (scenario, target), pooled across rounds."""

    results: list[dict[str, Any]] = field(default_factory=list)
    cpu_s: float = 0.0

    def add(self, result: dict[str, Any], cpu_s: float) -> None:
        self.results.append(result)
        self.cpu_s += cpu_s

    def values(self, key: str) -> list[float]:
        return [v for r in self.results for v in r[key]]

    def counter(self, key: str) -> Counter[str]:
        total: Counter[str] = Counter()
        for r in self.results:
            total.update(r[key])
        return total

    @property
    def n(self) -> int:
        return sum(r["n"] for r in self.results)

    @property
    def elapsed_s(self) -> float:
        return sum(r["elapsed_s"] for r in self.results)

    def round_p50s(self, key: str = "lat_ms") -> list[float]:
        return [pct(r[key], 50) for r in self.results]

    def errors(self) -> int:
        statuses = self.counter("statuses")
        bad = sum(v for k, v in statuses.items() if not k.startswith("2"))
        return bad + sum(self.counter("errors").values())

    def cpu_us_per_req(self) -> float:
        return self.cpu_s / self.n * 1e6 if self.n else math.nan


def fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def signed(value: float, digits: int = 2) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:+,.{digits}f}"


def ratio(a: float | None, b: float | None, digits: int = 2) -> str:
    if not a or not b or math.isnan(a) or math.isnan(b):
        return "n/a"
    return f"{a / b:,.{digits}f}x"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def spread(values: Sequence[float], base: Sequence[float]) -> str:
    """Per-round differences (min..max), to show how much of a number is noise."""
    diffs = [v - b for v, b in zip(values, base, strict=False)]
    if len(diffs) < 2:
        return "-"
    return f"{min(diffs):+.2f}..{max(diffs):+.2f}"


def latency_rows(
    runs: dict[str, Runs], key: str = "lat_ms", include_cpu: bool = True
) -> list[list[str]]:
    """One row per target: n, p50, p99, added p50/p99 over direct, per-round spread, errors."""
    base = runs.get("direct")
    b50 = pct(base.values(key), 50) if base else math.nan
    b99 = pct(base.values(key), 99) if base else math.nan
    rows = []
    for target, r in runs.items():
        vals = r.values(key)
        p50, p99 = pct(vals, 50), pct(vals, 99)
        is_base = target == "direct"
        row = [
            target,
            f"{r.n:,}",
            fmt(p50, 3),
            fmt(p99, 3),
            "-" if is_base else signed(p50 - b50, 3),
            "-" if is_base else signed(p99 - b99, 3),
            "-" if is_base or not base else spread(r.round_p50s(key), base.round_p50s(key)),
            str(r.errors()),
        ]
        if include_cpu:
            row.append(fmt(r.cpu_us_per_req(), 0))
        rows.append(row)
    return rows


def identity(runs: dict[str, Runs]) -> dict[str, tuple[int, int, str]]:
    """Per target: (responses identical to direct's, responses, header verdict)."""
    base = runs.get("direct")
    if base is None or not base.results:
        return {}
    ref_body, _ = base.counter("bodies").most_common(1)[0]
    ref_headers = _headers(base)
    out = {}
    for target, r in runs.items():
        same = r.counter("bodies").get(ref_body, 0)
        out[target] = (same, r.n, _header_verdict(ref_headers, _headers(r)))
    return out


def _headers(r: Runs) -> list[set[tuple[str, str]]]:
    sigs: dict[str, set[tuple[str, str]]] = {}
    for res in r.results:
        for key, (_count, kept) in res["headers"].items():
            sigs[key] = {(k, v) for k, v in kept}
    return list(sigs.values())


def _header_verdict(ref: list[set[tuple[str, str]]], got: list[set[tuple[str, str]]]) -> str:
    if not ref or not got:
        return "n/a"
    want = ref[0]
    missing = set().union(*(want - g for g in got))
    added = {k for g in got for k, _ in g} - {k for k, _ in want}
    changed = ", ".join(sorted(k for k, _ in missing))
    parts = ["all kept" if not missing else f"missing/changed: {changed}"]
    if added:
        names = sorted(added)
        shown = ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")
        parts.append(f"added {shown}")
    return "; ".join(parts)
