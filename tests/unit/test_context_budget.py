"""The context plugin's parse-free peek: a lower bound on the budget from the raw bytes."""

from __future__ import annotations

import json

from proxy.config import Context
from proxy.models import DEFAULT_REGISTRY
from proxy.plugins.context_budget import peek_budget


def test_peek_reads_model_and_reserve_without_parsing() -> None:
    body = json.dumps({"model": "gpt-4", "max_tokens": 1000, "messages": []}).encode()
    peeked = peek_budget(body, Context(safety_margin=0), DEFAULT_REGISTRY)
    assert peeked is not None and ("gpt-4", 8192 - 1000) == (peeked[0], peeked[1].tokens)


def test_peek_takes_the_smallest_budget_when_nested_keys_match() -> None:
    """A tool schema may carry its own "model" key: the peek must stay a lower bound."""
    body = json.dumps(
        {
            "model": "gpt-4o",
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {"type": "object", "properties": {}, "model": "gpt-4"},
                    },
                }
            ],
            "messages": [],
            "max_tokens": 0,
        }
    ).encode()
    peeked = peek_budget(body, Context(safety_margin=0), DEFAULT_REGISTRY)
    assert peeked is not None and 8192 == peeked[1].tokens


def test_peek_without_model_or_with_an_unknown_one_says_unknown() -> None:
    assert peek_budget(b'{"messages": []}', Context(), DEFAULT_REGISTRY) is None
    body = b'{"model": "my-own-model", "messages": []}'
    assert peek_budget(body, Context(), DEFAULT_REGISTRY) is None


# ---------------------------------------------------------------- a large body, end to end

import math  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from aiohttp.test_utils import make_mocked_request  # noqa: E402

from proxy.config import Route, Upstream  # noqa: E402
from proxy.context.corpus import conversation  # noqa: E402
from proxy.context.correction import CorrectionKey, Corrections, MemorySampleStore  # noqa: E402
from proxy.context.counting import Api, raw_count  # noqa: E402
from proxy.errors import ContextLengthExceeded  # noqa: E402
from proxy.exchange import Exchange  # noqa: E402
from proxy.outcomes import UsageOutcome  # noqa: E402
from proxy.plugins.context_budget import ContextBudget  # noqa: E402
from proxy.providers import PROVIDERS  # noqa: E402
from proxy.routing import RouteTarget  # noqa: E402
from proxy.usage import Usage  # noqa: E402

UNKNOWN = "my-local-llama"
CTX = Context(models={UNKNOWN: 8192})


def exchange(body: dict[str, Any]) -> Exchange:
    headers = {"Content-Type": "application/json"}
    ex = Exchange(make_mocked_request("POST", "/openai/v1/chat/completions", headers=headers))
    upstream = Upstream(name="local", base_url="http://127.0.0.1:9")
    route = Route(prefix="/openai", provider="openai", upstreams=(upstream,), context=CTX)
    ex.routed(RouteTarget(route, PROVIDERS["openai"]), "/v1/chat/completions")
    ex.received(json.dumps(body).encode())
    return ex


async def test_a_long_history_is_trimmed_and_learned_from_by_what_was_sent() -> None:
    """2,000 messages far over an 8k window: trimmed after counting a fraction of them; the
    trimmed body's count is a fresh count of it, and learning divides the bill by it."""
    store = MemorySampleStore()
    plugin = ContextBudget(DEFAULT_REGISTRY, Corrections(store))
    body = {"model": UNKNOWN, "messages": conversation("en", 1000, seed=3)}
    ex = exchange(body)
    try:
        assert await plugin.on_request(ex) is None
        sent = json.loads(ex.body)
        assert ex.context is not None and ex.context.trimmed_messages > 1500
        assert len(sent["messages"]) == len(body["messages"]) - ex.context.trimmed_messages
        raw = raw_count(sent, Api.CHAT, DEFAULT_REGISTRY.for_context(CTX))
        assert ex.context.low is not None and ex.context.low <= ex.context.budget
        ex.status, ex.upstream = 200, ex.route.config.upstreams[0]  # type: ignore[union-attr]
        ex.usage = UsageOutcome(usage=Usage(prompt_tokens=raw.tokens, source="upstream"))
        await plugin.on_report(ex)
        key = CorrectionKey("local", UNKNOWN, raw.script)
        assert [0.0] == await store.recent(key.store_key())  # billed == raw of what was sent
    finally:
        await plugin.close()


async def test_the_newest_turn_alone_over_is_refused_with_a_lower_bound() -> None:
    plugin = ContextBudget(DEFAULT_REGISTRY, Corrections(MemorySampleStore()))
    messages = [*conversation("en", 1000, seed=3), {"role": "user", "content": "word " * 150_000}]
    ex = exchange({"model": "gpt-4o", "messages": messages, "max_tokens": 100})
    try:
        with pytest.raises(ContextLengthExceeded):
            await plugin.on_request(ex)
        full = raw_count({"model": "gpt-4o", "messages": messages}, Api.CHAT)
        assert ex.context is not None
        assert ex.context.prompt_tokens_est == full.fixed + full.items[-1]
        assert ex.context.low is not None and ex.context.low < full.tokens
        assert math.isclose(ex.context.low, ex.context.prompt_tokens_est, rel_tol=0.01)
    finally:
        await plugin.close()


async def test_a_body_larger_than_any_budget_is_not_peeked_at(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its bytes alone are over every budget the peek could find: straight to counting."""
    import proxy.plugins.context_budget as plugin_module

    peeked: list[int] = []
    real = plugin_module.peek_budget

    def spy(body: bytes, ctx: Context, registry: Any) -> Any:
        peeked.append(len(body))
        return real(body, ctx, registry)

    monkeypatch.setattr(plugin_module, "peek_budget", spy)
    plugin = ContextBudget(DEFAULT_REGISTRY, Corrections(MemorySampleStore()))
    try:
        small = exchange({"model": "gpt-4o", "messages": conversation("en", 2)})
        assert await plugin.on_request(small) is None and small.context is None  # peeked: fits
        assert 1 == len(peeked)
        big = exchange({"model": UNKNOWN, "messages": conversation("en", 1000, seed=3)})
        registry = plugin.registry(CTX)
        assert registry.largest_input > len(big.body)
        assert await plugin.on_request(big) is None  # peeked: may exceed, counted, trimmed
        assert 2 == len(peeked)
        monkeypatch.setattr(registry, "largest_input", 8192)  # as if no model had more
        big = exchange({"model": UNKNOWN, "messages": conversation("en", 1000, seed=3)})
        assert await plugin.on_request(big) is None
        assert 2 == len(peeked)
        assert big.context is not None and big.context.trimmed_messages > 0
    finally:
        await plugin.close()
