"""The Python load generator, in its own process: latency percentiles, time to first byte/event,
and a digest of every response (status, body, end-to-end headers) for the byte-for-byte check.

Protocol: one JSON job per stdin line, one JSON result per stdout line (see ``run_job``).
Runs on uvloop when installed so the client costs the shared CPUs as little as possible.
Every job is bounded by ``count`` and ``time_limit_s``; every request by ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

VARYING = frozenset(
    ("date", "x-request-id", "request-id", "connection", "keep-alive", "transfer-encoding")
)
"""Headers that differ per request or per hop: left out of the header comparison."""


@dataclass
class Tally:
    lat_ms: list[float] = field(default_factory=list)
    ttfb_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    bodies: Counter[str] = field(default_factory=Counter)
    headers: dict[str, list[Any]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    proxy_attempts: Counter[str] = field(default_factory=Counter)
    trimmed: int = 0
    client_retries: int = 0
    body_bytes: int = 0

    def note_headers(self, resp: aiohttp.ClientResponse) -> None:
        kept = sorted(
            (k.lower(), v)
            for k, v in resp.headers.items()
            if k.lower() not in VARYING and not k.lower().startswith("x-proxy-")
        )
        key = hashlib.blake2b(repr(kept).encode(), digest_size=8).hexdigest()
        entry = self.headers.setdefault(key, [0, kept])
        entry[0] += 1
        if "x-proxy-context-trimmed" in resp.headers:
            self.trimmed += 1
        attempts = resp.headers.get("x-proxy-attempts")
        if attempts is not None:
            self.proxy_attempts[attempts] += 1


def _retry_delay_s(resp: aiohttp.ClientResponse) -> float:
    raw = resp.headers.get("retry-after-ms")
    if raw is not None:
        return float(raw) / 1000
    raw = resp.headers.get("retry-after")
    return float(raw) if raw and raw.replace(".", "", 1).isdigit() else 0.05


async def one(
    session: aiohttp.ClientSession, req: dict[str, Any], tally: Tally, retries: int
) -> None:
    """One request as a client sees it: on 429 (when ``retries``) wait as told and resend."""
    body = req["body"].encode() if req["body"] is not None else None
    t0 = time.perf_counter()
    first: float | None = None
    for attempt in range(retries + 1):
        async with session.request(
            req["method"], req["url"], headers=req["headers"], data=body
        ) as resp:
            digest = hashlib.blake2b(str(resp.status).encode(), digest_size=16)
            size = 0
            async for chunk in resp.content.iter_any():
                if first is None:
                    first = time.perf_counter()
                digest.update(chunk)
                size += len(chunk)
            if resp.status == 429 and attempt < retries:
                tally.client_retries += 1
                await asyncio.sleep(_retry_delay_s(resp))
                first = None
                continue
            break
    end = time.perf_counter()
    tally.lat_ms.append((end - t0) * 1000)
    tally.ttfb_ms.append(((first or end) - t0) * 1000)
    tally.statuses[str(resp.status)] += 1
    tally.bodies[digest.hexdigest()] += 1
    tally.body_bytes += size
    tally.note_headers(resp)


async def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run ``count`` requests (cycling ``requests``) with ``concurrency`` workers.

    Each worker first sends one untimed request (unless ``warm`` is false) so connection
    setup is not in the percentiles, and idles ``gap_ms`` after each request (untimed), so
    work a server does after a response ends is not charged to the next request.
    ``fault``: {"url", "every", "body"} posts ``body`` to the fake's fault queue before every
    ``every``-th request (untimed), so scripted 429s spread over the run.
    """
    reqs, count = job["requests"], int(job["count"])
    deadline = time.perf_counter() + float(job["time_limit_s"])
    retries = int(job.get("retry_429", 0))
    fault = job.get("fault")
    gap_s = float(job.get("gap_ms", 0)) / 1000
    tally = Tally()
    counter = itertools.count()
    timeout = aiohttp.ClientTimeout(total=float(job.get("timeout_s", 60)))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as session:

        async def worker() -> None:
            if job.get("warm", True):  # open this worker's connection untimed
                try:
                    await one(session, reqs[0], Tally(), 0)
                except (aiohttp.ClientError, OSError, TimeoutError):
                    pass
            while True:
                i = next(counter)
                if i >= count or time.perf_counter() > deadline:
                    return
                if fault and i % fault["every"] == fault["every"] - 1:
                    async with session.post(fault["url"], json=fault["body"]) as r:
                        await r.read()
                try:
                    await one(session, reqs[i % len(reqs)], tally, retries)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    tally.errors[type(exc).__name__] += 1
                if gap_s:
                    await asyncio.sleep(gap_s)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(int(job["concurrency"]))))
        elapsed = time.perf_counter() - t0
    return {
        "n": len(tally.lat_ms),
        "elapsed_s": elapsed,
        "lat_ms": tally.lat_ms,
        "ttfb_ms": tally.ttfb_ms,
        "statuses": tally.statuses,
        "bodies": tally.bodies,
        "headers": tally.headers,
        "errors": tally.errors,
        "proxy_attempts": tally.proxy_attempts,
        "trimmed": tally.trimmed,
        "client_retries": tally.client_retries,
        "body_bytes": tally.body_bytes,
    }


async def serve() -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        try:
            result = await run_job(json.loads(line))
        except Exception as exc:  # report, keep serving: the driver decides
            result = {"fatal": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


def main() -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
