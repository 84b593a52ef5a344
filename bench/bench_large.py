"""Large bodies on context routes (issue 17): CPU per stage in-process, and end to end.

Reproduce:  python bench/bench_large.py [--mb 24] [--reps 3] [--concurrent 4] [--proxy-root DIR]

Bodies (``large_bodies.py``): ``--mb`` MB long-history conversations over the budget on gpt-4o
(128k window, exact o200k count), on claude-sonnet-4-5 (Anthropic Messages, cl100k + prior
bounds) and on a model the registry does not know (cl100k + prior bounds, the route gives a
128k window); a 300 KB gpt-4o conversation that fits (too big for the byte peek, so it is
counted); a ``--mb`` MB gpt-4o body whose newest message alone is over (refused, 400); and
gpt-4o and Claude bodies whose text is just under and just over the stepped grid's bound
for their budget (``stepped.token_grid_bound``, ~4 and ~6.4 MB: the token grid counts every
turn, the byte grid does not).

(a) In-process, CPU time per stage of the checkout's path (JSON parse as ``Exchange`` does
    it; before issue 17 ``raw_count`` of the whole body, ``fit_request``, ``json_bytes`` of the
    trimmed body and ``raw_count`` of it again; since, ``fit_request`` counting only what the
    decision needs, and ``json_bytes``), the items counted, the stepped grid of a trimmed
    body (tokens or bytes; - when the checkout does not say), then the plugin's whole
    ``on_request`` (process CPU, its counting thread included, and wall time; median of
    ``--reps``).
(b) End to end: the fake upstream (``python -m proxy.fake_upstream``) behind ``python -m
    proxy`` from the checkout, both on ephemeral ports: each body sent ``--reps`` times one
    at a time (client wall time, the proxy's CPU per request from /proc), then
    ``--concurrent`` copies at once while a prober sends one small request after another
    (their latency is the event-loop stall other clients see).

``--proxy-root DIR`` measures another checkout's ``proxy/`` on the same bodies (e.g. ``git
archive core | tar -x -C /tmp/core`` for the numbers before a change). ``--profile NAME``
prints a cProfile of ``on_request`` (counting run inline) for the first body whose name holds
NAME. Numbers only; no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def _root(argv: list[str]) -> Path:
    if "--proxy-root" in argv[:-1]:
        return Path(argv[argv.index("--proxy-root") + 1]).resolve()
    return BENCH.parent


ROOT = _root(sys.argv)
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp.test_utils import make_mocked_request  # noqa: E402
from large_bodies import UNKNOWN_MODEL, UNKNOWN_WINDOW, Body, bodies  # noqa: E402
from procs import Service, announced, free_port, load_average, spawn, start_proxy  # noqa: E402

from proxy.config import Context, Route, Upstream  # noqa: E402
from proxy.context import stepped, tokens  # noqa: E402
from proxy.context.budget import input_budget, requested_output  # noqa: E402
from proxy.context.correction import Corrections, MemorySampleStore  # noqa: E402
from proxy.context.counting import Api, raw_count  # noqa: E402

try:  # issue 17: fit_request counts the body itself, only as far as it needs
    from proxy.context.counting import BodyCounter  # noqa: F401

    LAZY = True
except ImportError:
    LAZY = False

from proxy.context.fit import fit_request  # noqa: E402
from proxy.context.trim import ContextTooLarge  # noqa: E402
from proxy.errors import ContextLengthExceeded  # noqa: E402
from proxy.exchange import Exchange  # noqa: E402
from proxy.jsonbytes import json_bytes  # noqa: E402
from proxy.models import DEFAULT_REGISTRY  # noqa: E402
from proxy.plugins import context_budget  # noqa: E402
from proxy.providers import PROVIDERS  # noqa: E402
from proxy.routing import RouteTarget  # noqa: E402

CONTEXT = Context(models={UNKNOWN_MODEL: UNKNOWN_WINDOW})
SMALL = b'{"model":"gpt-4o","messages":[{"role":"user","content":"Say hi"}]}'
HEADERS = {
    "/openai": {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"},
    "/anthropic": {
        "Content-Type": "application/json",
        "x-api-key": "sk-ant-bench",
        "anthropic-version": "2023-06-01",
    },
}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------- (a) in-process


def _target(prefix: str) -> RouteTarget:
    provider = "anthropic" if prefix == "/anthropic" else "openai"
    upstream = Upstream(name=provider, base_url="http://127.0.0.1:9")
    route = Route(prefix=prefix, provider=provider, upstreams=(upstream,), context=CONTEXT)
    return RouteTarget(route, PROVIDERS[provider])


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """(CPU seconds, result); a refusal comes back as the result."""
    start = time.thread_time()
    try:
        result = fn(*args)
    except ContextTooLarge as exc:
        result = exc
    return time.thread_time() - start, result


def stages(body: Body) -> dict[str, float]:
    """CPU seconds of each stage of the checkout's path, run one after the other as the plugin
    runs them: before issue 17 a whole-body ``raw_count``, ``fit_request`` on it, and the
    trimmed body counted again; since, ``fit_request`` counting as far as it needs."""
    api = Api.MESSAGES if body.prefix == "/anthropic" else Api.CHAT
    registry = DEFAULT_REGISTRY.for_context(CONTEXT)
    out: dict[str, float] = {}
    headers = {"Content-Type": "application/json"}
    ex = Exchange(make_mocked_request("POST", body.prefix + body.path, headers=headers))
    ex.received(body.raw)
    out["parse"], data = _timed(ex.json_object)
    facts = registry.facts(data["model"])
    budget = input_budget(facts, CONTEXT, requested_output(data))
    corrections = Corrections(MemorySampleStore())
    share = CONTEXT.trim_target_share
    if LAZY:
        table = None
        if not facts.tokenizer.exact:
            table = asyncio.run(corrections.table("x", facts.name))
        out["fit_request"], fit = _timed(fit_request, data, api, table, budget, share, registry)
        if isinstance(fit, ContextTooLarge):
            return out
        out["counted"] = fit.counted
        if hasattr(fit, "byte_grid") and fit.body is not None:
            out["byte_grid"] = float(fit.byte_grid)
    else:
        out["raw_count"], raw = _timed(raw_count, data, api, registry)
        measured = asyncio.run(corrections.measure("x", facts.name, raw))
        args = (data, api, raw, measured.bounds, budget, share)
        out["fit_request"], fit = _timed(fit_request, *args)
        out["counted"] = len(raw.items)
        if isinstance(fit, ContextTooLarge):
            return out
    if fit.body is not None:
        out["json_bytes"], _ = _timed(json_bytes, fit.body)
        if not LAZY:
            out["recount"], _ = _timed(raw_count, fit.body, api, registry)
    return out


async def plugin_once(plugin: context_budget.ContextBudget, body: Body) -> dict[str, Any]:
    """One ``on_request`` on a fresh exchange: CPU of the process (its counting thread too)."""
    headers = {"Content-Type": "application/json"}
    ex = Exchange(make_mocked_request("POST", body.prefix + body.path, headers=headers))
    ex.routed(_target(body.prefix), body.path)
    ex.received(body.raw)
    cpu, wall = time.process_time(), time.perf_counter()
    status = 200
    try:
        await plugin.on_request(ex)
    except ContextLengthExceeded:
        status = 400
    return {
        "cpu": time.process_time() - cpu,
        "wall": time.perf_counter() - wall,
        "status": status,
        "trimmed": ex.context.trimmed_messages if ex.context else 0,
        "out_kb": len(ex.body) / 1000,
    }


async def plugin_runs(body: Body, reps: int) -> list[dict[str, Any]]:
    plugin = context_budget.ContextBudget(DEFAULT_REGISTRY, Corrections(MemorySampleStore()))
    try:
        return [await plugin_once(plugin, body) for _ in range(reps)]
    finally:
        await plugin.close()


STAGES = ("parse", "raw_count", "fit_request", "json_bytes", "recount")


def in_process(cases: list[Body], reps: int) -> list[str]:
    lines = [
        f"### (a) In-process CPU, ms (median of {reps}; - : a stage this checkout does not run)",
        "",
        "| body | messages | MB | " + " | ".join(STAGES) + " | stages sum | items counted "
        "| grid | plugin CPU | plugin wall | status | trimmed | out KB |",
        "|---|---|---|" + "---|" * (len(STAGES) + 8),
    ]
    for body in cases:
        runs = [stages(body) for _ in range(reps)]
        stage = {s: median([r[s] for r in runs if s in r]) for s in STAGES}
        total = sum(v for v in stage.values() if v == v)
        counted = runs[-1].get("counted")
        grid = {0.0: "tokens", 1.0: "bytes"}.get(runs[-1].get("byte_grid", -1.0), "-")
        plug = asyncio.run(plugin_runs(body, reps))
        cells = [ms(v) if v == v else "-" for v in stage.values()]
        lines.append(
            f"| {body.name} | {body.messages:,} | {len(body.raw) / 1e6:.1f} | "
            + " | ".join(cells)
            + f" | {ms(total)} | {'-' if counted is None else f'{counted:,.0f}'} | {grid} "
            f"| {ms(median([p['cpu'] for p in plug]))} "
            f"| {ms(median([p['wall'] for p in plug]))} | {plug[-1]['status']} "
            f"| {plug[-1]['trimmed']:,} | {plug[-1]['out_kb']:,.0f} |"
        )
    return lines


def profile(body: Body, top: int = 25) -> None:
    """cProfile of one on_request, counting inline (cProfile sees one thread)."""
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
    sys.modules.pop("profile", None)  # bench/profile.py is not the stdlib's
    try:
        import cProfile
        import pstats
    finally:
        sys.path[:] = saved
    context_budget.OFF_LOOP_BYTES = 1 << 62
    asyncio.run(plugin_runs(body, 1))  # warm
    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(plugin_runs(body, 1))
    prof.disable()
    print(f"### cProfile of on_request: {body.name}\n\n```")
    pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(top)
    print("```")


# ---------------------------------------------------------------- (b) end to end


async def send(session: aiohttp.ClientSession, base: str, body: Body) -> tuple[int, float]:
    start = time.perf_counter()
    url = base + body.prefix + body.path
    async with session.post(url, data=body.raw, headers=HEADERS[body.prefix]) as resp:
        await resp.read()
        return resp.status, time.perf_counter() - start


class Prober:
    """Small requests one after another (10 ms apart) from a thread with its own event loop,
    so the client sending the large bodies does not delay them: their latencies."""

    def __init__(self, base: str) -> None:
        self._base = base
        self._stop = threading.Event()
        self.latencies: list[float] = []
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        small = Body("small", "/openai", "/v1/chat/completions", SMALL, 1, 200)
        async with aiohttp.ClientSession() as session:
            while not self._stop.is_set():
                status, took = await send(session, self._base, small)
                if status == 200:
                    self.latencies.append(took)
                await asyncio.sleep(0.01)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


async def end_to_end(proxy: Service, cases: list[Body], reps: int, conc: int) -> list[str]:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with Prober(proxy.base) as idle:
            await asyncio.sleep(2.0)
        for body in cases:  # warm: the proxy loads its encodings on first use
            await send(session, proxy.base, body)
        lines = [
            f"### (b) End to end, {conc} concurrent with small requests probing "
            f"(idle small request: p50 {ms(median(idle.latencies))} ms, "
            f"max {ms(max(idle.latencies))} ms)",
            "",
            "| body | status | one at a time: wall p50 ms | proxy CPU ms/req "
            f"| {conc} at once: all done ms | proxy CPU ms/req | small p50 ms "
            "| small max ms | small n |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for body in cases:
            walls, statuses = [], set()
            cpu = proxy.cpu_s()
            for _ in range(reps):
                status, took = await send(session, proxy.base, body)
                walls.append(took)
                statuses.add(status)
            one_cpu = (proxy.cpu_s() - cpu) / reps
            with Prober(proxy.base) as prober:
                await asyncio.sleep(0.1)
                cpu, start = proxy.cpu_s(), time.perf_counter()
                batch = await asyncio.gather(
                    *(send(session, proxy.base, body) for _ in range(conc))
                )
                all_done = time.perf_counter() - start
                many_cpu = (proxy.cpu_s() - cpu) / conc
            small = prober.latencies
            statuses |= {s for s, _ in batch}
            lines.append(
                f"| {body.name} | {'/'.join(map(str, sorted(statuses)))} | {ms(median(walls))} "
                f"| {ms(one_cpu)} | {ms(all_done)} | {ms(many_cpu)} | {ms(median(small))} "
                f"| {ms(max(small, default=float('nan')))} | {len(small)} |"
            )
    return lines


def run_services(workdir: Path) -> tuple[Service, Service]:
    log = workdir / "fake.log"
    argv = [sys.executable, "-m", "proxy.fake_upstream", "--port", "0"]
    fake = announced("fake", spawn(argv, log, cwd=ROOT), log, 30)
    routes = [
        {
            "prefix": prefix,
            "provider": prefix.strip("/"),
            "upstreams": [{"name": prefix.strip("/"), "base_url": fake.base}],
            "context": {"models": {UNKNOWN_MODEL: UNKNOWN_WINDOW}},
        }
        for prefix in ("/openai", "/anthropic")
    ]
    raw = {"listen": {"host": "127.0.0.1", "port": free_port()}, "routes": routes}
    try:
        return fake, start_proxy(workdir, "proxy", raw, root=ROOT)
    except BaseException:
        fake.stop()
        raise


def grid_bounds() -> dict[str, int]:
    """The stepped grid's bound for gpt-4o's and Claude's budgets (``stepped.token_grid_bound``;
    32 bytes per budget token for a checkout without one)."""
    out = {}
    for model in ("gpt-4o", "claude-sonnet-4-5"):
        budget = input_budget(DEFAULT_REGISTRY.facts(model), CONTEXT, 1024)
        assert budget is not None
        bound = getattr(stepped, "token_grid_bound", None)
        out[model] = bound(budget.tokens) if bound is not None else 32 * budget.tokens
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=24.0)
    parser.add_argument("--fits-kb", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--proxy-root", type=Path, default=None)
    parser.add_argument("--only", choices=("in-process", "end-to-end"), default=None)
    parser.add_argument("--profile", metavar="NAME", default=None)
    args = parser.parse_args()
    tokens.get_encoding("o200k_base")
    tokens.get_encoding("cl100k_base")
    cases = bodies(args.mb, args.fits_kb, grid_bounds())
    if args.profile is not None:
        profile(next(b for b in cases if args.profile in b.name))
        return 0
    print(f"proxy from {ROOT.name}/, load average {load_average()}\n")
    if args.only != "end-to-end":
        print("\n".join(in_process(cases, args.reps)) + "\n")
    if args.only != "in-process":
        with tempfile.TemporaryDirectory(prefix="bench-large-") as tmp:
            fake, proxy = run_services(Path(tmp))
            try:
                lines = asyncio.run(end_to_end(proxy, cases, args.reps, args.concurrent))
            finally:
                proxy.stop()
                fake.stop()
        print("\n".join(lines) + "\n")
    print(f"load average {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
