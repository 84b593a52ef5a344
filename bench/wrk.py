"""Throughput ceilings with wrk (Debian package ``wrk``): one Lua script per request shape.

Every run is bounded by its duration (``-d``); wrk 4.1 waits out the whole duration even when
a Lua script stops its threads early, so count-targeted runs size the duration from a measured
rate and report the count they actually made.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from targets import Req

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass(frozen=True)
class WrkResult:
    requests: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    non_2xx: int


def available() -> bool:
    return shutil.which("wrk") is not None


def _lua_str(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal here


def script(req: Req, path: Path) -> Path:
    """A wrk Lua script sending ``req`` (method, headers, body); path and query come from argv.

    No ``response()`` hook: defining one makes wrk parse every body and slows it down.
    """
    lines = [f"wrk.method = {_lua_str(req.method)}"]
    if req.body is not None:
        lines.append(f"wrk.body = {_lua_str(req.body)}")
    for name, value in req.headers.items():
        lines.append(f"wrk.headers[{_lua_str(name)}] = {_lua_str(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"unparsed wrk duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse(output: str) -> WrkResult:
    req = re.search(r"(\d+) requests in", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    sock = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if not req or not rps:
        raise ValueError(f"unparsed wrk output:\n{output}")
    return WrkResult(
        requests=int(req.group(1)),
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)) if p50 else None,
        p99_ms=_ms(p99.group(1)) if p99 else None,
        errors=sum(int(g) for g in sock.groups()) if sock else 0,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
    )


def run(
    url: str,
    lua: Path,
    *,
    connections: int,
    duration_s: float,
    threads: int = 2,
    timeout_s: float = 10.0,
) -> WrkResult:
    threads = max(1, min(threads, connections))
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s"]
    argv += [f"--timeout={int(timeout_s)}s", "--latency", "-s", str(lua), url]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + timeout_s + 30, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse(done.stdout)
