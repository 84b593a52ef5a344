"""Context trimming you can trust, measured offline (no proxy, no network).

Reproduce:  python bench/bench_context.py [--turns 300] [--window 16384] [--share 0.7]

(a) Prompt-cache simulation: one conversation of ``--turns`` turns that outgrows the window,
    trimmed on every request by ``proxy.context.trim`` turn by turn (``step=0``) and in steps
    (``stable_step(budget, share)``; cut points on the grid of token costs, on the grid of
    message bytes (issue 17), and on the proxy's choice between them: the token grid up to
    ``stepped.token_grid_bound``, 32 bytes per budget token), each trimmed prompt accounted by
    the fake
    upstream's prompt cache (``proxy.fake_upstream.caching``: 1,024-token blocks, per
    credential). Token costs are the fake's own (``content.prompt_tokens``), so the window is
    exact. Reports the share of requests after the first trim that read anything from the
    cache, the share of their prompt tokens that were cached, and the billed input cost at
    gpt-4o prices (OpenAI automatic caching) and at claude-sonnet-4-5 prices (a
    ``cache_control`` breakpoint on the newest user message, as agent clients place it). Run
    again with twice the turns, whose history passes the bound: the proxy's grid switches once.
(b) Needless trims: conversations of every corpus language sized to 90-100% of a budget by a
    tokenizer the proxy does not have (o200k_base stands in; the model is unknown to the
    registry), counted with the raw estimator (cl100k_base) and the learned-correction bounds.
    A needless trim = the low bound says "over budget" for a conversation that fits. Reported
    before any sample (prior bounds) and after learning from 20 earlier conversations; also
    the old rule (cl100k x 1.2 > budget) for comparison, and how many conversations just over
    the budget (100-115%) the low bound lets through to the error-driven retry.

Numbers only; the targets are asserted by tests/unit/test_bench_context.py on a small run.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.context import tokens
from proxy.context.corpus import LANGUAGES, conversation
from proxy.context.corpus import text as corpus_text
from proxy.context.correction import CorrectionKey, Corrections, MemorySampleStore
from proxy.context.counting import Api, raw_count
from proxy.context.stepped import byte_grid, grid_step, grid_weights
from proxy.context.trim import trim_anthropic, trim_openai
from proxy.fake_upstream.caching import PromptCache
from proxy.fake_upstream.content import TOKENS_PER_MESSAGE, words
from proxy.models import DEFAULT_REGISTRY

# ---------------------------------------------------------------- (a) prompt cache


def fake_cost(msg: dict[str, Any]) -> int:
    return TOKENS_PER_MESSAGE + words(msg.get("content"))


def long_conversation(turns: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(turns):
        out.append({"role": "user", "content": corpus_text("en", rng, rng.randint(2, 6))})
        out.append({"role": "assistant", "content": corpus_text("en", rng, rng.randint(6, 24))})
    return out


@dataclass
class CacheRun:
    requests: int = 0
    after_first_trim: int = 0
    hits: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    hit_log: list[bool] = field(default_factory=list)
    """Per request after the first trim: did it read from the cache."""
    byte_grid_from: int | None = None
    """Where in ``hit_log`` the byte grid began (None: never used)."""

    def row(self, name: str) -> str:
        hit = self.hits / self.after_first_trim if self.after_first_trim else 0.0
        cached = self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
        return (
            f"| {name} | {self.after_first_trim} | {hit:.1%} | {cached:.1%} "
            f"| ${self.cost_usd:.4f} |"
        )


def with_breakpoint(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic: a cache_control breakpoint on the newest user message."""
    last = messages[-1]
    block = {"type": "text", "text": last["content"], "cache_control": {"type": "ephemeral"}}
    return [*messages[:-1], {"role": "user", "content": [block]}]


def simulate(
    provider: str,
    turns: int,
    window: int,
    share: float,
    stepped: bool,
    system_words: int,
    *,
    grid: str = "tokens",
) -> CacheRun:
    """``grid`` (stepped): cut points on the grid of token costs (``tokens``), of message
    bytes (``bytes``, issue 17), or the proxy's choice between the two for each request
    (``proxy``: ``stepped.byte_grid``, bytes once the history passes the bound)."""
    if grid not in GRIDS:
        raise ValueError(f"grid: one of {GRIDS}")
    model = "gpt-4o" if provider == "openai" else "claude-sonnet-4-5"
    price = DEFAULT_REGISTRY.facts(model).price
    assert price is not None
    reserve, margin = 1024, 256
    budget = window - reserve - margin
    system = " ".join(f"rule{i}" for i in range(system_words))
    history = long_conversation(turns)
    cache = PromptCache()
    run = CacheRun()
    trimmed_once = False
    for t in range(turns):
        msgs = history[: 2 * t + 1]  # the turns so far and the new question
        items = [{"role": "system", "content": system}, *msgs] if provider == "openai" else msgs
        sizes = _grid(grid, items, budget)
        step = grid_step(budget, share, sizes) if stepped else 0
        if provider == "openai":
            out = trim_openai(items, budget, fake_cost, 3, step=step, grid=sizes)
            payload: dict[str, Any] = {"model": model, "messages": out.messages}
        else:
            fixed = TOKENS_PER_MESSAGE + len(system.split())
            out = trim_anthropic(msgs, budget, fake_cost, fixed, step=step, grid=sizes)
            payload = {"model": model, "system": system, "messages": with_breakpoint(out.messages)}
        use = cache.use("credential", provider, payload)
        prompt = fake_cost({"content": system}) + sum(fake_cost(m) for m in out.messages)
        run.requests += 1
        trimmed_once = trimmed_once or out.removed > 0
        if trimmed_once:
            run.after_first_trim += 1
            run.hits += use.read > 0
            run.hit_log.append(use.read > 0)
            if stepped and sizes is not None and run.byte_grid_from is None:
                run.byte_grid_from = len(run.hit_log) - 1
            run.prompt_tokens += prompt
            run.cached_tokens += use.read
        read_rate = price.cached_input if price.cached_input is not None else price.input
        write_rate = price.cache_write if price.cache_write is not None else price.input
        fresh = prompt - use.read - use.written
        run.cost_usd += (
            fresh * price.input + use.read * read_rate + use.written * write_rate
        ) / 1e6
    return run


GRIDS = ("tokens", "bytes", "proxy")


def _grid(grid: str, items: list[dict[str, Any]], budget: int) -> list[int] | None:
    if grid == "proxy":
        return byte_grid(items, budget)
    return grid_weights(items) if grid == "bytes" else None


# ---------------------------------------------------------------- (b) needless trims

UNKNOWN_MODEL = "my-local-model"  # no tokenizer in the registry: the raw estimator + bounds


def o200k(messages: list[dict[str, Any]]) -> list[int]:
    return [tokens.message_tokens(m, "openai", "gpt-4o") for m in messages]


def sized(
    lang: str, seed: int, budget: int, low: float, high: float
) -> list[dict[str, Any]] | None:
    """A conversation whose o200k count is within [low, high] x budget (front turns dropped)."""
    msgs = conversation(lang, max(20, budget // 25), seed)
    costs = o200k(msgs)
    total = 3 + sum(costs)
    drop = 0
    while total > high * budget and drop + 1 < len(msgs):
        total -= costs[drop] + costs[drop + 1]
        drop += 2
    return msgs[drop:] if total >= low * budget else None


@dataclass
class TrimRates:
    fits: int = 0
    needless_prior: int = 0
    needless_learned: int = 0
    needless_old: int = 0
    over: int = 0
    let_through: int = 0


async def needless(budget: int, per_lang: int) -> dict[str, TrimRates]:
    out: dict[str, TrimRates] = {}
    for lang in LANGUAGES:
        rates = out[lang] = TrimRates()
        corrections = Corrections(MemorySampleStore(), refresh_s=0)
        for seed in range(20):  # learning: earlier conversations of this language
            msgs = conversation(lang, 10 + seed, 1000 + seed)
            raw = raw_count({"model": UNKNOWN_MODEL, "messages": msgs}, Api.CHAT)
            key = CorrectionKey("local", UNKNOWN_MODEL, raw.script)
            await corrections.observe(key, raw.tokens, 3 + sum(o200k(msgs)))
        prior = Corrections(MemorySampleStore())
        for seed in range(per_lang):
            await _measure(rates, lang, seed, budget, corrections, prior)
    return out


async def _measure(
    rates: TrimRates, lang: str, seed: int, budget: int, learned: Corrections, prior: Corrections
) -> None:
    fitting = sized(lang, seed, budget, 0.9, 1.0)
    if fitting is not None:
        raw = raw_count({"model": UNKNOWN_MODEL, "messages": fitting}, Api.CHAT)
        key = CorrectionKey("local", UNKNOWN_MODEL, raw.script)
        rates.fits += 1
        rates.needless_prior += (await prior.bounds(key, raw.tokens)).low > budget
        rates.needless_learned += (await learned.bounds(key, raw.tokens)).low > budget
        old = tokens.count_openai_chat({"model": UNKNOWN_MODEL, "messages": fitting}).tokens
        rates.needless_old += old > budget
    over = sized(lang, seed + 500, budget, 1.0, 1.15)
    if over is not None and 3 + sum(o200k(over)) > budget:
        raw = raw_count({"model": UNKNOWN_MODEL, "messages": over}, Api.CHAT)
        key = CorrectionKey("local", UNKNOWN_MODEL, raw.script)
        rates.over += 1
        rates.let_through += (await learned.bounds(key, raw.tokens)).low <= budget


# ---------------------------------------------------------------- report


def cache_report(turns: int, window: int, share: float, system_words: int) -> list[str]:
    lines = [
        f"### (a) Prompt cache: {turns} turns, window {window} fake tokens, share {share}",
        "",
        "| provider / trimming | requests after first trim | with a cache hit "
        "| prompt tokens cached | billed input |",
        "|---|---|---|---|---|",
    ]
    modes = (("turn-wise", False, "tokens"), ("stepped, token grid", True, "tokens"))
    modes += (("stepped, byte grid", True, "bytes"), ("stepped, the proxy's grid", True, "proxy"))
    for provider in ("openai", "anthropic"):
        for mode, stepped, grid in modes:
            args = (provider, turns, window, share, stepped, system_words)
            run = simulate(*args, grid=grid)
            switch = ""
            if grid == "proxy" and run.byte_grid_from is not None:
                switch = f" (bytes from request {run.byte_grid_from + 1})"
            lines.append(run.row(f"{provider} {mode}{switch}"))
    return lines


def needless_report(budget: int, per_lang: int) -> list[str]:
    rates = asyncio.run(needless(budget, per_lang))
    lines = [
        f"### (b) Needless trims: budget {budget} tokens (o200k as the unknown tokenizer)",
        "",
        "| language | fitting (90-100%) | needless: prior | needless: learned "
        "| needless: old x1.2 | over (100-115%) | let through to the retry |",
        "|---|---|---|---|---|---|---|",
    ]
    total = TrimRates()
    for lang, r in rates.items():
        lines.append(
            f"| {lang} | {r.fits} | {r.needless_prior} | {r.needless_learned} "
            f"| {r.needless_old} | {r.over} | {r.let_through} |"
        )
        for name in vars(total):
            setattr(total, name, getattr(total, name) + getattr(r, name))
    lines.append(
        f"| **all** | {total.fits} | {total.needless_prior} | {total.needless_learned} "
        f"| {total.needless_old} | {total.over} | {total.let_through} |"
    )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--window", type=int, default=16_384)
    parser.add_argument("--share", type=float, default=0.7)
    parser.add_argument("--system-words", type=int, default=200)
    parser.add_argument("--budget", type=int, default=4000, help="(b): the input budget")
    parser.add_argument("--per-language", type=int, default=20, help="(b): conversations")
    args = parser.parse_args(argv)
    for turns in (args.turns, 2 * args.turns):  # the longer one passes the token grid's bound
        print("\n".join(cache_report(turns, args.window, args.share, args.system_words)))
        print()
    print("\n".join(needless_report(args.budget, args.per_language)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
