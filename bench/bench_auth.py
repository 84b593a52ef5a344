"""Hot-path cost of ``auth: keys``: the library alone, or the whole proxy (``--proxy``).

Reproduce:  python bench/bench_auth.py [--requests 20000] [--concurrency 1] [--redis URL]
            python bench/bench_auth.py --proxy [--rounds 3] [--seconds 10] [--redis]

``--proxy`` (bench/auth_proxy.py): req/s of ``python -m proxy`` with ``auth: keys`` against
``auth: off``, interleaved in one run (``--redis``: also with the counters in a redis-server
the run starts). The rest of this docstring is the library mode.

A SQLite store in a temporary folder holds three keys; each is looked up once (filling the
cache) and then checked and settled ``--requests`` times:

- ``no limits``: key check, route and model permission only;
- ``rpm+tpm``: also the sliding window (reserve at check, settle the real tokens);
- ``rpm+tpm+budget``: also the worst-case price, the budget reservation and the settlement.

Counters in memory, or in Redis with ``--redis redis://127.0.0.1:6379/0`` (one round trip per
check and per settle). Prints this process's CPU microseconds per request (check + settle) and
the wall time per request; compare the CPU with the proxy's own CPU per request in
bench/RESULTS.md (462 us for a small request at c=64) to get the share. Numbers only.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.auth.cache import KeyCache
from proxy.auth.gate import Admission, Gate
from proxy.auth.keys import Budget, BudgetPeriod, KeyLimits
from proxy.auth.limits import Limiter
from proxy.auth.limits_redis import RedisCounters
from proxy.auth.manage import KeyManager
from proxy.auth.sqlite_store import SqliteStore
from proxy.pricing import PriceTable
from proxy.usage import Usage

KEYS = {
    "no limits": KeyLimits(),
    "rpm+tpm": KeyLimits(rpm=10**9, tpm=10**12),
    "rpm+tpm+budget": KeyLimits(rpm=10**9, tpm=10**12, budget=Budget(10.0**9, BudgetPeriod.MONTH)),
}
USAGE = Usage(prompt_tokens=812, completion_tokens=230, cached_tokens=512, source="upstream")


async def one_request(gate: Gate, secret: str, cost: float | None) -> None:
    outcome = await gate.check(
        secret, "/openai", "gpt-4o", input_tokens=812, max_output_tokens=1024
    )
    assert isinstance(outcome, Admission), outcome
    await outcome.settle(USAGE, cost)


async def measure(gate: Gate, secret: str, requests: int, concurrency: int) -> tuple[float, float]:
    """(wall, CPU) microseconds per request. CPU is this process's only (not Redis's): what
    the proxy would spend; wall also includes waiting for Redis."""
    cost = PriceTable().cost("gpt-4o", USAGE)
    per_worker = requests // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await one_request(gate, secret, cost)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    done = per_worker * concurrency
    return (time.perf_counter() - wall) / done * 1e6, (time.process_time() - cpu) / done * 1e6


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    store = SqliteStore(folder / "llm-proxy.db")
    await store.open()
    manager = KeyManager(store)
    secrets = {}
    for i, (name, limits) in enumerate(KEYS.items()):
        secrets[name] = (await manager.create(f"bench-{i}", limits)).secret

    async def spent(key_id: str, since: float) -> int:
        return await store.key_spend_picousd(key_id, since) // 1000

    shared = RedisCounters(args.redis) if args.redis else None
    gate = Gate(KeyCache(store, ttl_s=3600), Limiter(spent, shared), PriceTable())
    where = f"Redis {args.redis}" if args.redis else "memory"
    print(f"counters in {where}; {args.requests} requests x {args.rounds} rounds,"
          f" concurrency {args.concurrency}; best (median) of the rounds")  # fmt: skip
    for name, secret in secrets.items():
        await one_request(gate, secret, None)  # fills the cache and seeds the budget counter
        rounds = [
            await measure(gate, secret, args.requests, args.concurrency) for _ in range(args.rounds)
        ]
        wall = min(r[0] for r in rounds)
        cpu = min(r[1] for r in rounds)
        median = statistics.median(r[1] for r in rounds)
        print(
            f"  {name:16s} CPU {cpu:7.1f} us/request (median {median:6.1f}),"
            f" wall {wall:7.1f} us/request"
        )
    if shared is not None:
        await shared.close()
    await store.close()
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--proxy", action="store_true", help="through the proxy, keys vs off")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=None, help="default: 5 (library), 3")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64, help="--proxy: wrk connections")
    parser.add_argument("--seconds", type=float, default=10.0, help="--proxy: per wrk run")
    parser.add_argument(
        "--redis",
        nargs="?",
        const="start",
        help="redis://... : counters in Redis (--proxy: starts its own redis-server)",
    )
    parsed = parser.parse_args()
    if parsed.proxy:
        import auth_proxy

        parsed.rounds = parsed.rounds or 3
        auth_proxy.run(parsed)
    else:
        parsed.rounds = parsed.rounds or 5
        if parsed.redis == "start":
            parser.error("the library mode takes --redis URL")
        asyncio.run(main(parsed))
