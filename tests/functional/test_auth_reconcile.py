"""The ledger against the fake upstream's bill: N requests across 20 keys, through the proxy.

Streamed and not, cached prompts (both providers), fallbacks and retries from injected
429/5xx faults, and clients that hang up mid-stream, 16 at a time, with the official SDKs. The
fake keeps its bill (``proxy/fake_upstream/billing.py``); every ledger row is joined with the
fake's answer to the same attempt (the proxy sends the client's ``x-request-id`` upstream).

What must hold, attempt by attempt:

- an answer the fake sent whole: the row's tokens (input, cache read, cache write, output,
  reasoning) and cost are exactly what the fake reported and billed; so are the totals, per
  key and per upstream credential;
- an error answer (a 429/5xx fault): the row has its status and zero tokens, and nothing was
  billed;
- a stream the client left: the fake bills the prompt it states and the content chunks it
  wrote before the client left; the proxy never got a usage report for it, so its row is an
  estimate (``usage_source: estimate``) of the tokens streamed so far. What the stream did
  report (Anthropic's ``message_start``: input, cache read, cache write) is exact; what it
  did not (output; an OpenAI stream's input) is the proxy's count, which must never be below
  the bill. The printed report shows both numbers.

A normal run sends a sample; ``LLM_PROXY_RECONCILE_COUNT=10000`` (and ``-o timeout=0``) runs
the issue's full count, ``LLM_PROXY_RECONCILE_SEED`` another sample.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import pytest
from aiohttp.test_utils import TestServer

from proxy.auth.keys import Budget, BudgetPeriod, KeyLimits
from proxy.fake_upstream import Billing, FakeUpstream, Fault, PriceRow, Tokens
from proxy.fake_upstream.billing import Answer
from proxy.fake_upstream.caching import credential_of
from tests.auth_proxy_support import PRICING, key_manager, keys_config, ledger_rows
from tests.auth_support import StoreFactory, pg_database, pg_server, store_factory

__all__ = ["pg_database", "pg_server", "store_factory"]  # fixtures, used by name

COUNT_ENV, SEED_ENV = "LLM_PROXY_RECONCILE_COUNT", "LLM_PROXY_RECONCILE_SEED"
DEFAULT_COUNT, DEFAULT_SEED = 240, 15
KEYS, CONCURRENCY = 20, 16
HOLD_AT = 20
"""Streams of more events than this are held there by the fake until their client leaves."""
LEFT_AFTER = {"openai": HOLD_AT - 1, "anthropic": HOLD_AT - 3}
"""Content events before the hold: OpenAI's role chunk, Anthropic's three preamble events."""
CREDENTIALS = {
    "primary": "sk-upstream-primary-0001",
    "secondary": "sk-upstream-secondary-0002",
    "claude": "sk-ant-upstream-0003",
}
FAULTS = [
    Fault(
        status=429,
        headers={
            "retry-after-ms": "5",
            "x-ratelimit-remaining-requests": "1",
            "x-ratelimit-reset-requests": "5ms",
        },
    ),
    Fault(status=500),
    Fault(status=503, headers={"retry-after-ms": "5"}),
]
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def long_prefix(n: int) -> str:
    """About 1,100 of the fake's tokens: one cacheable 1,024-token block and some."""
    rng = random.Random(n)
    return " ".join(rng.choice(WORDS) for _ in range(1100))


@dataclass(frozen=True)
class Case:
    request_id: str
    key: int
    provider: str
    stream: bool
    cached: int | None
    """Which long prefix the prompt starts with (None: a short prompt)."""
    chunks: int
    leaves: bool
    """The client hangs up mid-stream."""
    fault: Fault | None
    max_tokens: int | None


def make_cases(count: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for i in range(count):
        stream = rng.random() < 0.5
        leaves = stream and rng.random() < 0.1
        cases.append(
            Case(
                request_id=f"rc-{seed}-{i}",
                key=i % KEYS,
                provider="openai" if rng.random() < 0.6 else "anthropic",
                stream=stream,
                cached=rng.randrange(4) if rng.random() < 0.5 else None,
                chunks=30 if leaves else rng.randint(1, 8),
                leaves=leaves,
                fault=rng.choice(FAULTS) if rng.random() < 0.08 else None,
                max_tokens=rng.choice([None, 64]),
            )
        )
    return cases


def config(fake_url: str, factory: StoreFactory) -> dict[str, Any]:
    raw = keys_config(fake_url, factory)
    # The fake's scripted 429s say "60 rpm, none left" and its 200s carry no rate-limit
    # headers to say otherwise: paced by that, the sample would take a minute. Pacing is
    # tested on its own (test_pacing.py); here every attempt goes at once.
    raw["pacing"] = {"enabled": False}
    retry = {"max_attempts": 2, "backoff_base_s": 0.001, "backoff_cap_s": 0.005}
    raw["routes"] = [
        {
            "prefix": "/openai",
            "provider": "openai",
            "retry": retry,
            "upstreams": [
                {"name": "primary", "base_url": fake_url, "api_key": CREDENTIALS["primary"]},
                {
                    "name": "secondary",
                    "base_url": fake_url,
                    "api_key": CREDENTIALS["secondary"],
                    "models": {"gpt-4o": "gpt-4o-mini"},
                },
            ],
        },
        {
            "prefix": "/anthropic",
            "provider": "anthropic",
            "retry": retry,
            "upstreams": [
                {"name": "claude", "base_url": fake_url, "api_key": CREDENTIALS["claude"]}
            ],
        },
    ]
    return raw


@pytest.fixture
async def billed_fake(aiohttp_server: Callable[..., Any]) -> AsyncIterator[FakeUpstream]:
    prices = {
        model: PriceRow(p["input"], p["output"], p.get("cached_input"), p.get("cache_write"))
        for model, p in PRICING.items()
    }
    upstream = FakeUpstream(billing=Billing(prices))
    upstream.hold_after_chunk = HOLD_AT
    server: TestServer = await aiohttp_server(upstream.make_app())
    upstream.url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    yield upstream


# -- the clients ---------------------------------------------------------------------------


class Clients:
    """One OpenAI and one Anthropic SDK client per key, all through the proxy."""

    def __init__(self, url: str, secrets: list[str]) -> None:
        self.openai = [
            openai.AsyncOpenAI(base_url=f"{url}/openai/v1", api_key=s, max_retries=0)
            for s in secrets
        ]
        self.anthropic = [
            anthropic.AsyncAnthropic(base_url=f"{url}/anthropic", api_key=s, max_retries=0)
            for s in secrets
        ]

    async def close(self) -> None:
        for client in [*self.openai, *self.anthropic]:
            await client.close()


def prompt(case: Case) -> str:
    return f"question {case.request_id}: " + " ".join(WORDS[: 3 + case.key % 5])


async def send(clients: Clients, case: Case, fake: FakeUpstream) -> str:
    """One request; returns how it ended for the client (``ok``, ``left``, ``error``)."""
    if case.fault is not None:
        fake.enqueue(case.fault)
    headers = {"x-request-id": case.request_id, "x-fake-chunks": str(case.chunks)}
    try:
        if case.provider == "openai":
            return await _openai(clients.openai[case.key], case, headers)
        return await _anthropic(clients.anthropic[case.key], case, headers)
    except (openai.APIStatusError, anthropic.APIStatusError):
        return "error"


async def _openai(client: openai.AsyncOpenAI, case: Case, headers: dict[str, str]) -> str:
    messages: list[Any] = [{"role": "user", "content": prompt(case)}]
    if case.cached is not None:
        messages.insert(0, {"role": "system", "content": long_prefix(case.cached)})
    extra: dict[str, Any] = {} if case.max_tokens is None else {"max_tokens": case.max_tokens}
    if not case.stream:
        await client.chat.completions.create(
            model="gpt-4o", messages=messages, extra_headers=headers, **extra
        )
        return "ok"
    stream = await client.chat.completions.create(
        model="gpt-4o",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=headers,
        **extra,
    )
    seen = 0
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            seen += 1
            if case.leaves and seen == LEFT_AFTER["openai"]:
                await stream.close()
                return "left"
    return "ok"


async def _anthropic(client: anthropic.AsyncAnthropic, case: Case, headers: dict[str, str]) -> str:
    system: Any = anthropic.NOT_GIVEN
    if case.cached is not None:
        block = {"type": "text", "text": long_prefix(case.cached)}
        system = [{**block, "cache_control": {"type": "ephemeral"}}]
    args: dict[str, Any] = dict(
        model="claude-sonnet-4-5",
        max_tokens=case.max_tokens or 1024,
        system=system,
        messages=[{"role": "user", "content": prompt(case)}],
        extra_headers=headers,
    )
    if not case.stream:
        await client.messages.create(**args)
        return "ok"
    stream = await client.messages.create(stream=True, **args)
    seen = 0
    async for event in stream:
        if event.type == "content_block_delta":
            seen += 1
            if case.leaves and seen == LEFT_AFTER["anthropic"]:
                await stream.close()
                return "left"
    return "ok"


# -- the comparison ------------------------------------------------------------------------


@dataclass
class Totals:
    tokens: Tokens = field(default_factory=Tokens)
    picousd: int = 0

    def add(self, tokens: Tokens, picousd: int | None) -> None:
        self.tokens = self.tokens + tokens
        self.picousd += picousd or 0


@dataclass
class Report:
    ledger: dict[str, Totals] = field(default_factory=lambda: defaultdict(Totals))
    billed: dict[str, Totals] = field(default_factory=lambda: defaultdict(Totals))
    kinds: Counter[str] = field(default_factory=Counter)

    def table(self) -> str:
        lines = [
            f"{'':34} {'input':>10} {'cache rd':>10} {'cache wr':>10} {'output':>10} {'USD':>14}"
        ]
        for name in sorted(self.ledger.keys() | self.billed.keys()):
            for side, totals in (("ledger", self.ledger), ("billed", self.billed)):
                t = totals[name]
                lines.append(
                    f"{name + ' ' + side:34} {t.tokens.input:10} {t.tokens.cached_read:10}"
                    f" {t.tokens.cache_write:10} {t.tokens.output:10} {t.picousd / 1e12:14.8f}"
                )
        return "\n".join(lines)


def row_tokens(row: dict[str, Any]) -> Tokens:
    return Tokens(
        row["input_tokens"] or 0,
        row["cached_read_tokens"] or 0,
        row["cache_write_tokens"] or 0,
        row["output_tokens"] or 0,
        row["reasoning_tokens"] or 0,
    )


def reconcile(
    billing: Billing, rows: list[dict[str, Any]], key_of: dict[str, str]
) -> tuple[Report, list[str]]:
    """Pair each ledger row with the fake's answer to that attempt; the report and the
    mismatches (empty when everything reconciles)."""
    answers: dict[str, list[Answer]] = defaultdict(list)
    for answer in billing.answers:
        answers[answer.request_id or ""].append(answer)
    by_request: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_request[row["request_id"]].append(row)
    credential = {name: credential_of({"x-api-key": k}) for name, k in CREDENTIALS.items()}
    credential["primary"] = credential_of({"authorization": f"Bearer {CREDENTIALS['primary']}"})
    credential["secondary"] = credential_of({"authorization": f"Bearer {CREDENTIALS['secondary']}"})
    report, problems = Report(), []
    for request_id in answers.keys() | by_request.keys():
        got = sorted(by_request[request_id], key=lambda r: r["attempt"])
        sent = answers[request_id]
        if len(got) != len(sent):
            problems.append(f"{request_id}: {len(got)} ledger rows, {len(sent)} answers")
            continue
        for row, answer in zip(got, sent, strict=True):
            problems += check_pair(row, answer, billing, credential, key_of[request_id], report)
    return report, problems


def check_pair(
    row: dict[str, Any],
    answer: Answer,
    billing: Billing,
    credential: dict[str, str],
    key_id: str,
    report: Report,
) -> list[str]:
    where = f"{row['request_id']}#{row['attempt']}"
    problems = []
    if (credential[row["upstream"]], key_id) != (answer.credential, row["key_id"]):
        problems.append(f"{where}: upstream {row['upstream']} / key {row['key_id']} mismatch")
    tokens, cost = row_tokens(row), row["cost_picousd"]
    billed, billed_cost = answer.billed, billing.cost_picousd(answer)
    upstream = row["upstream"]
    if answer.status >= 400:
        report.kinds["error answers"] += 1
        if (row["status"], tokens, cost) != (answer.status, Tokens(), 0):
            problems.append(f"{where}: error answer {answer.status} recorded as {row}")
    elif answer.finished:
        report.kinds["answers reported"] += 1
        expected = ("upstream", answer.model, billed, billed_cost)
        if (row["usage_source"], row["model_served"], tokens, cost) != expected:
            problems.append(f"{where}: {row} != {expected}")
    else:
        report.kinds["streams left mid-way"] += 1
        upstream = f"left mid-way ({answer.provider})"
        reported = answer.reported or Tokens()
        exact = (reported.input, reported.cached_read, reported.cache_write)
        if row["usage_source"] != "estimate" or tokens.output < billed.output:
            problems.append(f"{where}: a cut stream recorded as {row}, billed {billed}")
        if answer.provider == "anthropic" and exact != (
            tokens.input,
            tokens.cached_read,
            tokens.cache_write,
        ):
            problems.append(f"{where}: reported input side {exact} recorded as {tokens}")
        if tokens.input < billed.input:
            problems.append(f"{where}: input {tokens.input} below the billed {billed.input}")
    report.ledger[upstream].add(tokens, cost)
    report.billed[upstream].add(billed, billed_cost)
    if answer.finished or answer.status >= 400:
        report.ledger[f"key {key_id[-6:]}"].add(tokens, cost)
        report.billed[f"key {key_id[-6:]}"].add(billed, billed_cost)
    return problems


# -- the test ------------------------------------------------------------------------------


async def test_the_ledger_equals_what_the_fake_reported_and_billed(
    billed_fake: FakeUpstream,
    start_proxy: Callable[..., Any],
    store_factory: StoreFactory,
) -> None:
    count = int(os.environ.get(COUNT_ENV, DEFAULT_COUNT))
    seed = int(os.environ.get(SEED_ENV, DEFAULT_SEED))
    url = await start_proxy(config(billed_fake.url, store_factory))  # type: ignore[attr-defined]
    limits = KeyLimits(rpm=10**6, tpm=10**9, budget=Budget(1000.0, BudgetPeriod.DAY))
    async with key_manager(store_factory) as keys:
        made = [await keys.create(f"team-{i}", limits) for i in range(KEYS)]
    clients = Clients(url, [m.secret for m in made])
    cases = make_cases(count, seed)
    queue = list(reversed(cases))
    endings: Counter[str] = Counter()

    async def worker() -> None:
        while queue:
            endings[await send(clients, queue.pop(), billed_fake)] += 1

    try:
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    finally:
        await clients.close()
    attempts = len(billed_fake.billing.answers)  # type: ignore[union-attr]
    rows = await ledger_rows(store_factory, attempts, timeout=30)
    key_of = {c.request_id: made[c.key].record.id for c in cases}
    report, problems = reconcile(billed_fake.billing, rows, key_of)  # type: ignore[arg-type]
    print(f"\n{count} requests (seed {seed}), client endings {dict(endings)},")
    print(f"{attempts} answers from the fake, {len(rows)} ledger rows, {dict(report.kinds)}")
    print(report.table())
    assert [] == problems[:20]
    assert count == sum(endings.values())
    assert endings["left"] > 0 and report.kinds["error answers"] > 0
    cached = [r for r in rows if (r["cached_read_tokens"] or 0) > 0]
    assert {"primary", "claude"} <= {r["upstream"] for r in cached}
    for name in ("primary", "secondary", "claude"):
        assert report.ledger[name] == report.billed[name]
