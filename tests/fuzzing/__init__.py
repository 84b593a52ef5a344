"""Malformed raw HTTP/1.1 requests for the proxy's fuzz test, deterministic from a seed.

A case is a function of ``(seed, index)`` alone, so any case of a 10,000-case run can be rebuilt
on its own and replayed by hand against a proxy started with :func:`fuzz_routes`::

    python -m tests.fuzzing SEED INDEX 127.0.0.1:PORT  # sends it, prints the answer
    python -m tests.fuzzing SEED INDEX > case.bin      # or just its bytes

Categories rotate with the index and the four routes (OpenAI and Anthropic, each with and
without the context budget) with every full turn of categories, so any 40 consecutive cases
cover every (category, route) pair; everything else comes from the case's own RNG.

Each case says how the client ends its side (:class:`Ending`), which decides what may come back:

- ``WAIT``: the request is complete, or its framing is broken in a way a parser sees in the bytes
  sent (a bad chunk size, a NUL in a header, a line over the limit). The client keeps the
  connection open: the proxy must answer; closing without an answer is a violation.
- ``HALF_CLOSE``: the request is incomplete (Content-Length larger than what was sent, a chunked
  body without its last chunk, headers cut off) and the client then shuts down its sending side.
  An answer or a close are both fine; staying open is not. A body that never completes on a
  connection the client keeps open is the slow-client tests' concern: the proxy's wait there is
  its configured read timeout, not something a fuzz run should sit through.
- ``ABORT``: the client closes (FIN or RST) right after sending; nothing can come back, and the
  proxy must only survive it without a traceback.

:class:`Shape` says whose error shape a proxy error may take: the route's provider, or either
provider's where the proxy cannot know the route (the HTTP parser refuses the request line or
headers before any routing, or the path matches no route).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .cases import BUILDERS, Category
from .wire import MAX_BODY_BYTES, SECRET, TARGETS, Ending, Request, Shape, Target

__all__ = [
    "CONTEXT_INPUT_CAP",
    "MAX_BODY_BYTES",
    "SECRET",
    "TARGETS",
    "Category",
    "Ending",
    "FuzzCase",
    "Shape",
    "Target",
    "fuzz_routes",
    "generate",
    "make_case",
]

CONTEXT_INPUT_CAP = 64
"""``max_input_tokens`` on the context routes: small, so nearly every chat body is parsed,
counted and often trimmed or refused, which is where odd JSON meets the budget's code."""


def fuzz_routes(upstream_url: str) -> list[dict[str, Any]]:
    """The routes the cases aim at, all on one upstream, with fast retries."""
    retry = {"max_attempts": 2, "backoff_base_s": 0.01, "backoff_cap_s": 0.05}
    routes = []
    for target in TARGETS:
        context: dict[str, Any] = {"enabled": target.context}
        if target.context:
            context["max_input_tokens"] = CONTEXT_INPUT_CAP
        upstream = {"name": "fake", "base_url": upstream_url}
        routes.append(
            {
                "prefix": target.prefix,
                "provider": target.provider,
                "context": context,
                "retry": retry,
                "upstreams": [upstream],
            }
        )
    return routes


@dataclass(frozen=True, slots=True)
class FuzzCase:
    seed: int
    index: int
    category: Category
    target: Target
    endpoint: str
    kind: str
    data: bytes
    ending: Ending
    shape: Shape

    def describe(self) -> str:
        return (
            f"#{self.index} {self.category.value}/{self.kind} on {self.target.prefix} "
            f"{self.endpoint} ({self.ending.value}, {len(self.data)} bytes, seed {self.seed})"
        )


def make_case(seed: int, index: int) -> FuzzCase:
    categories = list(Category)
    category = categories[index % len(categories)]
    target = TARGETS[(index // len(categories)) % len(TARGETS)]
    rng = random.Random(f"{seed}:{index}")
    request = Request.start(rng, target)
    draft = BUILDERS[category](rng, request)
    return FuzzCase(
        seed=seed,
        index=index,
        category=category,
        target=target,
        endpoint=request.endpoint.name,
        kind=draft.kind,
        data=draft.data,
        ending=draft.ending,
        shape=draft.shape,
    )


def generate(seed: int, count: int, start: int = 0) -> Iterator[FuzzCase]:
    """``count`` cases from index ``start``; the same ``(seed, index)`` is always the same case."""
    for index in range(start, start + count):
        yield make_case(seed, index)
