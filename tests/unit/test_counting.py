"""BodyCounter: a body counted item by item, only as far as asked, adding up to raw_count."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.context.corpus import conversation
from proxy.context.counting import Api, BodyCounter, raw_count

UNKNOWN = "my-local-llama"


def bodies() -> list[tuple[Api, dict[str, Any]]]:
    chat = conversation("en", 5, system="Be brief.") + conversation("ko", 4)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    anthropic = [{"role": m["role"], "content": m["content"]} for m in chat[1:]]
    return [
        (Api.CHAT, {"model": "gpt-4o", "messages": chat, "tools": tools}),
        (Api.CHAT, {"model": UNKNOWN, "messages": chat}),
        (Api.MESSAGES, {"model": "claude-sonnet-4-5", "system": "Всегда", "messages": anthropic}),
        (Api.RESPONSES, {"model": UNKNOWN, "instructions": "Be brief.", "input": chat[1:]}),
        (Api.RESPONSES, {"model": UNKNOWN, "input": "one string: всё в fixed"}),
    ]


@pytest.mark.parametrize(("api", "body"), bodies())
def test_items_are_counted_when_asked_and_once(api: Api, body: dict[str, Any]) -> None:
    full = raw_count(body, api)
    counter = BodyCounter(body, api)
    assert (0, full.fixed) == (counter.counted, counter.fixed)
    for i in reversed(range(len(counter.items))):
        assert full.items[i] == counter.cost(i) == counter.costs[i]
    assert len(full.items) == counter.counted
    assert full == counter.raw()
    assert len(full.items) == counter.counted


@pytest.mark.parametrize(("api", "body"), bodies())
def test_the_count_of_a_part_is_the_count_of_the_body_made_of_it(
    api: Api, body: dict[str, Any]
) -> None:
    """What trimming relies on: the kept items' costs are the trimmed body's raw count."""
    counter = BodyCounter(body, api)
    kept = list(range(len(counter.items)))[len(counter.items) // 2 :]
    key = "input" if api is Api.RESPONSES else "messages"
    value = body[key]
    part = {**body, key: [value[i] for i in kept]} if isinstance(value, list) else body
    assert raw_count(part, api) == counter.raw(kept)
    assert len(kept) == counter.counted


def test_a_known_count_is_not_counted_again() -> None:
    api, body = bodies()[1]
    full = raw_count(body, api)
    counter = BodyCounter(body, api, known=full)
    assert full == counter.raw()
    assert 0 == counter.counted
    with pytest.raises(ValueError):
        BodyCounter(body, api, known=raw_count({**body, "messages": []}, api))
