"""Malformed requests against the real proxy process: every answer provider-shaped, no traceback.

The proxy and the fake upstream run as their own processes; generated cases
(``tests/fuzzing``) go over raw sockets a few at a time. A normal run sends a sample;
``LLM_PROXY_FUZZ_COUNT=10000`` (and ``-o timeout=0``) runs the issue's full count,
``LLM_PROXY_FUZZ_SEED`` picks another sample. On failure the per-category table and one
reproducer per violation are printed (replay one with ``python -m tests.fuzzing SEED INDEX``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import free_port
from tests.fuzzing import MAX_BODY_BYTES, SECRET, TARGETS, FuzzCase, Target, fuzz_routes, generate
from tests.fuzzing.client import send
from tests.fuzzing.verdict import Report, check
from tests.process import ROOT, ProxyProcess

COUNT_ENV, SEED_ENV = "LLM_PROXY_FUZZ_COUNT", "LLM_PROXY_FUZZ_SEED"
DEFAULT_COUNT, DEFAULT_SEED = 500, 11
CONCURRENCY = 4
REQUEST_TIMEOUT_S = 10.0
"""A bound on each case, not a performance claim: every case is answered in milliseconds."""

CRASH_MARKERS = (
    "Traceback (most recent call last)",
    "Error handling request",
    "Task exception was never retrieved",
    "Exception in callback",
)


@contextlib.asynccontextmanager
async def fake_upstream_process(log_path: Path) -> AsyncIterator[str]:
    """``python -m proxy.fake_upstream --port 0`` as its own process; yields its base URL.

    Its output goes to a file: the fake logs a traceback for some malformed requests, and a
    pipe nobody drains would fill up and stall it.
    """
    command = [sys.executable, "-m", "proxy.fake_upstream", "--port", "0"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while not (match := re.search(r"listening on (\S+)", _read(log_path))):
            assert proc.poll() is None, f"the fake upstream exited: {_read(log_path)}"
            assert asyncio.get_running_loop().time() < deadline, "the fake upstream did not start"
            await asyncio.sleep(0.05)
        yield match.group(1)
    finally:
        proc.kill()
        proc.wait(10)


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


def fuzz_config(upstream_url: str) -> dict[str, Any]:
    return {
        "listen": {"host": "127.0.0.1", "port": 8080},
        "limits": {"max_body_bytes": MAX_BODY_BYTES},
        "logging": {"format": "json"},
        "routes": fuzz_routes(upstream_url),
    }


async def fuzz(port: int, cases: Iterable[FuzzCase]) -> Report:
    """Send every case (``CONCURRENCY`` at a time) and check each result as it comes."""
    report = Report()
    pending: Iterator[FuzzCase] = iter(cases)

    async def worker() -> None:
        for case in pending:  # the workers share one iterator: each case is sent once
            result = await send(case, "127.0.0.1", port, REQUEST_TIMEOUT_S)
            report.add(result, check(result))

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return report


def normal_request(target: Target) -> tuple[str, dict[str, Any], dict[str, str]]:
    messages = [{"role": "user", "content": "hi"}]
    if target.provider == "anthropic":
        body = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": messages}
        return "/v1/messages", body, {"anthropic-version": "2023-06-01"}
    return "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": messages}, {}


async def still_serving(url: str) -> list[str]:
    """After the run: /healthz and a normal request on every route still get their answer."""
    problems = []
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/healthz") as resp:
            if resp.status != 200:
                problems.append(f"/healthz answered {resp.status}")
        for target in TARGETS:
            path, body, headers = normal_request(target)
            async with session.post(url + target.prefix + path, json=body, headers=headers) as r:
                if r.status != 200 or b'"usage"' not in await r.read():
                    problems.append(f"a normal request on {target.prefix} got {r.status}")
    return problems


def crashes(output: str) -> list[str]:
    """Each crash marker's count, and the distinct exceptions that ended the tracebacks."""
    found = [f"{output.count(m)} x {m!r} in the proxy's output" for m in CRASH_MARKERS]
    found = [line for line in found if not line.startswith("0 x")]
    exceptions: Counter[str] = Counter()
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            end = next((j for j in range(i + 1, len(lines)) if not lines[j][:1].isspace()), None)
            if end is not None:  # positions and sizes vary; the kind of failure does not
                exceptions[re.sub(r"\d+", "N", lines[end])[:160]] += 1
    found += [f"  {n} x {exc}" for exc, n in exceptions.most_common(15)]
    if SECRET.decode() in output:
        found.append("the client's credential appears in the proxy's output")
    return found


async def test_malformed_requests_get_provider_shaped_answers(tmp_path: Path) -> None:
    """Bad JSON, deep nesting, wrong types, huge and many headers, truncated bodies, bad
    chunking, non-UTF-8 bytes, odd paths and encodings: every answer is in a provider's
    error shape (or the upstream's own), carries a request id, and nothing crashes."""
    count = int(os.environ.get(COUNT_ENV, DEFAULT_COUNT))
    seed = int(os.environ.get(SEED_ENV, DEFAULT_SEED))
    async with fake_upstream_process(tmp_path / "upstream.log") as upstream_url:
        proxy = ProxyProcess(fuzz_config(upstream_url), tmp_path / "proxy", free_port())
        try:
            await proxy.start()
            report = await fuzz(proxy.port, generate(seed, count))
            alive = proxy.proc is not None and proxy.proc.poll() is None
            serving = await still_serving(proxy.url) if alive else ["the proxy exited"]
        finally:
            proxy.stop()
    kinds = ", ".join(f"{kind.name} {n}" for kind, n in report.kinds.most_common())
    problems = [f"{report.failed} of {count} cases violate: {kinds}"] if report.failed else []
    problems += crashes(proxy.output()) + serving
    print(f"fuzz seed {seed}, {count} cases\n{report.render()}\n")  # shown with -s or a failure
    print("\n".join(problems))
    assert [] == problems, json.dumps(problems, indent=1)
