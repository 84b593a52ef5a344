"""One measurement at a time against one target: a loadgen job, a wrk run, a memory run.

Each returns raw numbers plus the CPU the target's server process spent on it (utime+stime
delta from /proc), so per-request CPU comes from the same window as the request count.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wrk
from procs import RssSampler, Service
from targets import Req, Slow, requests_for

RETRY_FAULT = {
    "status": 429,
    "headers": {
        "retry-after-ms": "20",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "20ms",
    },
    "path": "/v1/chat/completions",
}
"""The mix scenario's scripted rate limit: a 429 asking for a 20 ms wait. The fake's default 429
also says ``x-ratelimit-remaining-requests: 0`` with a 1 s reset, which (rightly) makes our
proxy hold the whole upstream for 1 s while a client honouring ``retry-after-ms`` waits 20 ms;
the override keeps the hints consistent so every target is asked for the same 20 ms."""


PACED_GAP_MS = 5
"""Idle time between paced streams: the proxy's after-response work (usage count, log line)
finishes before the next request, so TTFT shows the request's own path. The burst scenario
sends back to back and so shows that work as a delay of the next request."""


class LoadGen:
    """The load generator process (bench/loadgen.py), fed one JSON job per line."""

    def __init__(self, log: Path) -> None:
        here = Path(__file__).resolve().parent
        self._err = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(here / "loadgen.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            start_new_session=True,
        )

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator exited ({self.proc.poll()})")
        result = json.loads(line)
        if "fatal" in result:
            raise RuntimeError(f"load generator: {result['fatal']}")
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._err.close()


@dataclass
class Bench:
    services: dict[str, Service]
    loadgen: LoadGen
    workdir: Path
    slow: Slow

    @property
    def fake(self) -> str:
        return self.services["direct"].base

    def reset_fake(self) -> None:
        """The fake records every request; forget them so its memory and GC stay flat."""
        req = urllib.request.Request(f"{self.fake}/_fake/reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def reqs(self, target: str, scenario: str) -> list[Req]:
        """Requests for ``target``; "ours-fix" or "forwarder-uv" are variants of their kind."""
        kind = target.split("-", 1)[0]
        return requests_for(kind, self.services[target].base, scenario, self.slow)

    def latency(
        self,
        target: str,
        scenario: str,
        *,
        concurrency: int,
        count: int,
        time_limit_s: float,
        timeout_s: float = 60.0,
        warm: bool = True,
    ) -> tuple[dict[str, Any], float]:
        """A loadgen job; returns (result, server CPU seconds spent during it)."""
        job: dict[str, Any] = {
            "requests": [r.as_json() for r in self.reqs(target, scenario)],
            "concurrency": concurrency,
            "count": count,
            "time_limit_s": time_limit_s,
            "timeout_s": timeout_s,
            "warm": warm,
        }
        if scenario == "sse-paced":
            job["gap_ms"] = PACED_GAP_MS
        if scenario == "mix":
            job["fault"] = {"url": f"{self.fake}/_fake/faults", "every": 10, "body": [RETRY_FAULT]}
            job["retry_429"] = 3
        svc = self.services[target]
        self.reset_fake()
        cpu0 = svc.cpu_s()
        result = self.loadgen.run(job)
        return result, svc.cpu_s() - cpu0

    def throughput(
        self, target: str, *, connections: int, duration_s: float
    ) -> tuple[wrk.WrkResult, float]:
        """wrk on the small JSON request; returns (result, server CPU seconds)."""
        req = self.reqs(target, "small")[0]
        lua = wrk.script(req, self.workdir / f"wrk-{target}.lua")
        svc = self.services[target]
        self.reset_fake()
        cpu0 = svc.cpu_s()
        res = wrk.run(req.url, lua, connections=connections, duration_s=duration_s)
        return res, svc.cpu_s() - cpu0

    def growth(
        self, target: str, *, requests: int, rps: float, warm_s: float, max_s: float
    ) -> dict[str, float]:
        """RSS before and after at least ``requests`` small requests driven by wrk (64 conns).

        wrk runs in slices sized from ``rps`` (the throughput rounds' rate) until the count is
        reached or ``max_s`` is spent; the count actually made is reported.
        """
        req = self.reqs(target, "small")[0]
        svc = self.services[target]
        lua = wrk.script(req, self.workdir / f"wrk-{target}.lua")
        wrk.run(req.url, lua, connections=64, duration_s=warm_s)
        self.reset_fake()
        before = svc.rss_mb()
        done, errors, spent = 0, 0, 0.0
        with RssSampler(svc, 0.2) as sampler:
            while done < requests and spent < max_s:
                left = (requests - done) / max(rps, 1.0) * 1.1
                slice_s = min(max_s - spent, max(1.0, min(left, 30.0)))
                res = wrk.run(req.url, lua, connections=64, duration_s=slice_s)
                done, errors, spent = (
                    done + res.requests,
                    errors + res.errors + res.non_2xx,
                    spent + slice_s,
                )
                rps = res.rps or rps
                self.reset_fake()
        after = svc.rss_mb()
        return {
            "requests": done,
            "seconds": spent,
            "before_mb": before,
            "after_mb": after,
            "peak_mb": sampler.peak_mb,
            "growth_pct": (after - before) / before * 100 if before else float("nan"),
            "errors": errors,
        }

    def streams(self, target: str, *, n: int, timeout_s: float) -> dict[str, Any]:
        """``n`` concurrent slow SSE streams; the server's peak RSS while they are open."""
        svc = self.services[target]
        before = svc.rss_mb()
        with RssSampler(svc) as sampler:
            result, cpu = self.latency(
                target,
                "slow",
                concurrency=n,
                count=n,
                time_limit_s=timeout_s,
                timeout_s=timeout_s,
                warm=False,
            )
        return {"result": result, "cpu_s": cpu, "before_mb": before, "peak_mb": sampler.peak_mb}
