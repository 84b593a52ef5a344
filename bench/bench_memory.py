"""Memory: what the proxy holds idle, with 1,000 open streams, and per worker under --workers.

Reproduce:  python bench/bench_memory.py [--streams 1000] [--workers 2]

One process of each kind, started fresh on 127.0.0.1 against the shipped fake upstream:

- ``ours`` (the shipped config): RSS at start, after 2,000 small requests, then peak RSS
  while ``--streams`` slow streams are open, first streams that report their usage
  (``stream_options.include_usage``: nothing needs a token count, so the BPE tables stay
  unloaded), then streams that do not (the estimate at each stream's end loads them);
- the bare forwarder with the same streams, for scale;
- ``ours --workers N`` after the same warm-up: RSS and PSS (``/proc/PID/smaps_rollup``) of
  the supervisor and each worker, and how much of each worker is shared. The supervisor
  loads the tables and freezes the heap before forking, so the workers share those pages.

Streams are 20 events 250 ms apart (5 s each), all opened at once; RSS is sampled every
50 ms. Prints one Markdown table per part.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from procs import ROOT, RssSampler, Service, free_port, raise_nofile, spawn, tree_pids, wait_http
from report import table
from targets import MASTER_KEY, Slow, ours_config, start_services

CHAT = "/v1/chat/completions"


def _body(stream: bool, include_usage: bool) -> bytes:
    body: dict[str, object] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hi"}],
    }
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


async def _load(url: str, n: int, concurrency: int, body: bytes, headers: dict[str, str]) -> int:
    """``n`` requests, ``concurrency`` at a time, each read to its end; returns the 200s."""
    ok = 0
    limit = asyncio.Semaphore(concurrency)
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:

        async def one() -> None:
            nonlocal ok
            async with limit, session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                ok += resp.status == 200

        await asyncio.gather(*(one() for _ in range(n)))
    return ok


def load(svc: Service, prefix: str, n: int, concurrency: int, *, stream: bool, usage: bool) -> int:
    headers = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}
    if stream:
        slow = Slow()
        headers |= {"x-fake-chunks": str(slow.chunks), "x-fake-chunk-delay-ms": str(slow.delay_ms)}
    url = svc.base + prefix + CHAT
    return asyncio.run(_load(url, n, concurrency, _body(stream, usage), headers))


def streams_peak(svc: Service, prefix: str, n: int, *, usage: bool) -> tuple[float, int]:
    """(peak RSS while ``n`` slow streams are open, streams that completed)."""
    with RssSampler(svc) as sampler:
        ok = load(svc, prefix, n, n, stream=True, usage=usage)
    return sampler.peak_mb, ok


def smaps_kb(pid: int) -> dict[str, int]:
    """``Rss``, ``Pss``, ``Shared_*`` and ``Private_*`` of one process, in kB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        out[key.strip()] = int(rest.split()[0])
    return out


def start_workers(workdir: Path, fake: str, workers: int) -> Service:
    port = free_port()
    cfg = workdir / "ours-workers.yaml"
    cfg.write_text(yaml.safe_dump(ours_config(ROOT / "config.yaml", fake, port), sort_keys=False))
    log = workdir / "ours-workers.log"
    argv = [sys.executable, "-m", "proxy", "--config", str(cfg), "--port", str(port)]
    argv += ["--workers", str(workers)]
    proc = spawn(argv, log.with_suffix(".err"), cwd=ROOT)
    svc = Service("ours-workers", proc, f"http://127.0.0.1:{port}", log)
    wait_http(f"{svc.base}/healthz", proc, 60)
    deadline = time.monotonic() + 30
    while len(tree_pids(proc.pid)) < workers + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    return svc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warm", type=int, default=2000, help="small requests before measuring")
    args = parser.parse_args(argv)
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="llm-proxy-mem-") as tmp:
        workdir = Path(tmp)
        services = start_services(workdir, Slow(), litellm=False)
        try:
            rows = []
            for name, prefix in (("ours", "/openai"), ("forwarder", "")):
                svc = services[name]
                start = svc.rss_mb()
                ok = load(svc, prefix, args.warm, 16, stream=False, usage=False)
                warm = svc.rss_mb()
                p1, s1 = streams_peak(svc, prefix, args.streams, usage=True)
                p2, s2 = streams_peak(svc, prefix, args.streams, usage=False)
                after = svc.rss_mb()
                rows.append(
                    [
                        name,
                        f"{start:.1f}",
                        f"{warm:.1f} ({ok} ok)",
                        f"{p1:.1f} ({s1} ok)",
                        f"{p2:.1f} ({s2} ok)",
                        f"{after:.1f}",
                    ]
                )
            print(f"### One process, {args.streams} streams open at once\n")
            header = ["server", "RSS at start MB", f"after {args.warm} small requests"]
            header += ["peak, streams reporting usage", "peak, streams without usage"]
            header += ["after both"]
            print(table(header, rows))
            fake = services["direct"].base
            multi = start_workers(workdir, fake, args.workers)
            services["ours-workers"] = multi
            load(multi, "/openai", args.warm, 16, stream=False, usage=False)
            rows = []
            for pid in tree_pids(multi.pid):
                m = smaps_kb(pid)
                shared = m.get("Shared_Clean", 0) + m.get("Shared_Dirty", 0)
                role = "supervisor" if pid == multi.pid else "worker"
                rows.append(
                    [
                        role,
                        f"{m['Rss'] / 1024:.1f}",
                        f"{m['Pss'] / 1024:.1f}",
                        f"{shared / 1024:.1f}",
                        f"{100 * shared / m['Rss']:.0f} %",
                    ]
                )
            print(f"\n### `--workers {args.workers}` after {args.warm} small requests\n")
            print(table(["process", "RSS MB", "PSS MB", "shared MB", "shared share"], rows))
            pss = sum(float(r[2]) for r in rows)
            print(
                f"\nPSS of the whole tree: {pss:.1f} MB (RSS summed: "
                f"{sum(float(r[1]) for r in rows):.1f} MB)"
            )
        finally:
            for svc in services.values():
                svc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
