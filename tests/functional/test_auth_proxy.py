"""Keys mode through the real proxy, with the official SDKs and the fake upstream, on SQLite and
PostgreSQL (every test that takes ``store_factory`` runs on both)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from proxy.auth.keys import Budget, BudgetPeriod, KeyLimits
from proxy.fake_upstream import FakeUpstream
from tests.auth_proxy_support import (
    ADMIN_TOKEN,
    UPSTREAM_KEYS,
    key_manager,
    keys_config,
    ledger_rows,
)
from tests.auth_support import StoreFactory, pg_database, pg_server, store_factory
from tests.conftest import fetch
from tests.redis_server import redis_server

__all__ = ["pg_database", "pg_server", "redis_server", "store_factory"]  # fixtures, used by name

MESSAGES = [{"role": "user", "content": "Say hello in three words"}]
StartProxy = Callable[..., Any]


async def make_key(factory: StoreFactory, name: str = "team-a", **options: Any) -> str:
    limits = options.pop("limits", None)
    async with key_manager(factory) as keys:
        return (await keys.create(name, limits, **options)).secret


def chat(model: str = "gpt-4o-mini", **extra: Any) -> bytes:
    return json.dumps({"model": model, "messages": MESSAGES, **extra}).encode()


async def post_chat(url: str, secret: str | None, body: bytes | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    status, resp_headers, raw = await fetch(
        "POST", f"{url}/openai/v1/chat/completions", data=body or chat(), headers=headers
    )
    return status, (resp_headers, json.loads(raw))


# -- who may come in -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [None, "sk-not-a-proxy-key", "lp-" + "A" * 43],
    ids=["missing", "foreign", "unknown"],
)
async def test_unknown_key_gets_401_in_openai_shape_and_nothing_goes_upstream(
    fake: FakeUpstream, start_proxy: StartProxy, store_factory: StoreFactory, secret: str | None
) -> None:
    url = await start_proxy(keys_config(fake.url, store_factory))  # type: ignore[attr-defined]
    status, (headers, body) = await post_chat(url, secret)
    assert 401 == status
    assert "false" == headers["x-should-retry"]
    assert {"type", "code", "message", "param"} == set(body["error"])
    assert ("invalid_request_error", "invalid_api_key") == (
        body["error"]["type"],
        body["error"]["code"],
    )
    client = openai.AsyncOpenAI(
        base_url=f"{url}/openai/v1", api_key=secret or "none", max_retries=0
    )
    async with client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert 401 == caught.value.status_code
    assert [] == fake.requests


async def test_unknown_key_gets_401_in_anthropic_shape_and_nothing_goes_upstream(
    fake: FakeUpstream, start_proxy: StartProxy, store_factory: StoreFactory
) -> None:
    url = await start_proxy(keys_config(fake.url, store_factory))  # type: ignore[attr-defined]
    client = anthropic.AsyncAnthropic(
        base_url=f"{url}/anthropic", api_key="lp-" + "B" * 43, max_retries=0
    )
    async with client:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await client.messages.create(
                model="claude-sonnet-4-5",
                max_tokens=50,
                messages=MESSAGES,  # type: ignore[arg-type]
            )
    assert 401 == caught.value.status_code
    error = {"type": "authentication_error", "message": "invalid API key"}
    assert {"type": "error", "error": error} == caught.value.body
    assert [] == fake.requests


async def test_key_swap_upstream_sees_its_own_key_never_the_clients(
    fake: FakeUpstream, start_proxy: StartProxy, store_factory: StoreFactory
) -> None:
    raw = keys_config(fake.url, store_factory)  # type: ignore[attr-defined]
    raw["routes"].append(
        {
            "prefix": "/local",
            "provider": "openai",
            "upstreams": [{"name": "keyless", "base_url": fake.url}],  # type: ignore[attr-defined]
        }
    )
    url = await start_proxy(raw)
    secret = await make_key(store_factory)
    async with openai.AsyncOpenAI(
        base_url=f"{url}/openai/v1", api_key=secret, max_retries=0
    ) as client:
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    async with anthropic.AsyncAnthropic(
        base_url=f"{url}/anthropic", api_key=secret, max_retries=0
    ) as claude:
        await claude.messages.create(model="claude-sonnet-4-5", max_tokens=20, messages=MESSAGES)  # type: ignore[arg-type]
    async with openai.AsyncOpenAI(
        base_url=f"{url}/local/v1", api_key=secret, max_retries=0
    ) as local:
        await local.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    seen = [(r.headers.get("Authorization"), r.headers.get("x-api-key")) for r in fake.requests]
    assert [
        (f"Bearer {UPSTREAM_KEYS['openai']}", None),
        (None, UPSTREAM_KEYS["anthropic"]),
        (None, None),  # an upstream without a key gets no credential at all
    ] == seen
    for recorded in fake.requests:
        assert all(secret not in value for value in recorded.headers.values())


async def test_a_key_not_allowed_on_a_route_or_model_gets_403_and_nothing_goes_upstream(
    fake: FakeUpstream, start_proxy: StartProxy, store_factory: StoreFactory
) -> None:
    url = await start_proxy(keys_config(fake.url, store_factory))  # type: ignore[attr-defined]
    secret = await make_key(store_factory, routes=["/openai"], models=["gpt-4o-mini*"])
    status, (_, body) = await post_chat(url, secret, chat("gpt-4o"))
    assert (403, "model_not_allowed") == (status, body["error"]["code"])
    assert "invalid_request_error" == body["error"]["type"]
    async with anthropic.AsyncAnthropic(
        base_url=f"{url}/anthropic", api_key=secret, max_retries=0
    ) as claude:
        with pytest.raises(anthropic.PermissionDeniedError) as caught:
            await claude.messages.create(
                model="claude-sonnet-4-5",
                max_tokens=20,
                messages=MESSAGES,  # type: ignore[arg-type]
            )
    assert 403 == caught.value.status_code
    assert "permission_error" == caught.value.body["error"]["type"]  # type: ignore[index]
    assert [] == fake.requests
    status, _ = await post_chat(url, secret, chat("gpt-4o-mini-2024-07-18"))
    assert 200 == status
    assert 1 == len(fake.requests)


async def test_a_model_restricted_key_needs_a_model_it_can_read(
    fake: FakeUpstream, start_proxy: StartProxy, store_factory: StoreFactory
) -> None:
    """Model restrictions are read from the parsed body: a content type that is not JSON or a
    compressed body does not hide the model, and a body with no readable model is refused."""
    import gzip

    url = await start_proxy(keys_config(fake.url, store_factory))  # type: ignore[attr-defined]
    secret = await make_key(store_factory, models=["gpt-4o-mini"])
    auth = {"Authorization": f"Bearer {secret}"}
    target = f"{url}/openai/v1/chat/completions"
    gz = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    cases = [
        ({"Content-Type": "text/plain"}, chat("gpt-4o")),
        (gz, gzip.compress(chat("gpt-4o"))),
        ({"Content-Type": "application/octet-stream"}, b"\x00\x01 not json"),
    ]
    for headers, body in cases:
        status, _, raw = await fetch("POST", target, data=body, headers={**auth, **headers})
        assert (403, "model_not_allowed") == (status, json.loads(raw)["error"]["code"])
    assert [] == fake.requests
    status, _, _ = await fetch("POST", target, data=gzip.compress(chat()), headers={**auth, **gz})
    assert 200 == status


# -- limits and budgets ----------------------------------------------------------------------


async def test_rpm_admits_exactly_the_limit_under_50_concurrent_clients(
    fake: FakeUpstream, start_proxy: StartProxy, store_factory: StoreFactory
) -> None:
    url = await start_proxy(keys_config(fake.url, store_factory))  # type: ignore[attr-defined]
    secret = await make_key(store_factory, limits=KeyLimits(rpm=7))
    answers = await asyncio.gather(*(post_chat(url, secret) for _ in range(50)))
    statuses = Counter(status for status, _ in answers)
    assert {200: 7, 429: 43} == statuses
    assert 7 == len(fake.requests)
    for status, (headers, body) in answers:
        if status == 429:
            assert ("requests", "rate_limit_exceeded") == (
                body["error"]["type"],
                body["error"]["code"],
            )
            assert 1 <= int(headers["Retry-After"]) <= 60


async def test_rpm_is_one_limit_across_two_instances_sharing_redis(
    fake: FakeUpstream,
    start_proxy: StartProxy,
    store_factory: StoreFactory,
    redis_server: Any,
) -> None:
    raw = keys_config(fake.url, store_factory, state={"backend": "redis", "url": redis_server.url})  # type: ignore[attr-defined]
    first, second = await start_proxy(raw), await start_proxy(raw)
    secret = await make_key(store_factory, limits=KeyLimits(rpm=9))
    urls = [first, second] * 25
    answers = await asyncio.gather(*(post_chat(u, secret) for u in urls))
    assert {200: 9, 429: 41} == Counter(status for status, _ in answers)
    assert 9 == len(fake.requests)


async def test_a_budget_is_never_overshot_by_concurrent_clients(
    fake: FakeUpstream, start_proxy: StartProxy, store_factory: StoreFactory
) -> None:
    """40 clients send until refused. Each request reserves its worst case (its byte bound of
    input and its max_tokens, priced) and settles to what the fake reported, so the spend the
    ledger shows never exceeds the budget, and the budget is used up to less than one
    request's worst case."""
    url = await start_proxy(keys_config(fake.url, store_factory))  # type: ignore[attr-defined]
    budget = 0.01
    secret = await make_key(
        store_factory, limits=KeyLimits(budget=Budget(budget, BudgetPeriod.TOTAL))
    )
    body = chat("gpt-4o", max_tokens=5)
    refusals: list[tuple[Any, Any]] = []

    async def client() -> int:
        sent = 0
        while True:
            status, (headers, answer) = await post_chat(url, secret, body)
            if status != 200:
                refusals.append((headers, answer))
                return sent
            sent += 1

    admitted = sum(await asyncio.gather(*(client() for _ in range(40))))
    assert 40 == len(refusals)
    for headers, answer in refusals:
        assert ("insufficient_quota", "budget_exceeded") == (
            answer["error"]["type"],
            answer["error"]["code"],
        )
        assert "false" == headers["x-should-retry"] and "Retry-After" not in headers
    rows = await ledger_rows(store_factory, admitted)
    assert admitted > 40 and admitted == len(rows) == len(fake.requests)
    spent = sum(r["cost_picousd"] for r in rows) / 1e12
    worst = (len(body) + 346) * 2.5e-6 + 5 * 10e-6  # the byte bound and max_tokens, priced
    assert budget - worst < spent <= budget


async def test_a_cancelled_request_releases_its_concurrency_slot(
    fake: FakeUpstream, start_proxy: StartProxy, store_factory: StoreFactory
) -> None:
    url = await start_proxy(keys_config(fake.url, store_factory))  # type: ignore[attr-defined]
    secret = await make_key(store_factory, limits=KeyLimits(max_concurrent=1))
    fake.hold_after_chunk = 2
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    target = f"{url}/openai/v1/chat/completions"
    async with aiohttp.ClientSession() as session:
        held = await session.post(target, data=chat(stream=True), headers=headers)
        assert 200 == held.status
        await held.content.readuntil(b"\n\n")  # the stream is running: the slot is taken
        status, _ = await post_chat(url, secret)
        assert 429 == status
        held.close()  # the client hangs up mid-stream
        await asyncio.wait_for(fake.stream_disconnected.wait(), 5)
    fake.hold_after_chunk = None
    for _ in range(100):  # the slot frees when the proxy has finished the cut request
        status, _ = await post_chat(url, secret)
        if status == 200:
            break
        await asyncio.sleep(0.02)
    assert 200 == status


# -- revoke, admin API, CLI ------------------------------------------------------------------


async def test_revoke_takes_effect_on_a_second_instance_within_the_cache_ttl(
    fake: FakeUpstream, start_proxy: StartProxy, store_factory: StoreFactory
) -> None:
    """Two proxies on one store. The instance that revokes refuses at once; the other one
    re-reads a key at most ``cache_ttl_s`` after it last read it, so once that much time has
    passed since the revoke it refuses too (the README states this bound)."""
    ttl = 0.3
    raw = keys_config(fake.url, store_factory, cache_ttl_s=ttl)  # type: ignore[attr-defined]
    first, second = await start_proxy(raw), await start_proxy(raw)
    secret = await make_key(store_factory)
    assert [200, 200] == [(await post_chat(u, secret))[0] for u in (first, second)]
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    status, _, _ = await fetch("POST", f"{first}/admin/keys/team-a/revoke", headers=admin)
    assert 200 == status
    revoked = asyncio.get_running_loop().time()
    status, (_, body) = await post_chat(first, secret)
    assert (401, "this API key was revoked") == (status, body["error"]["message"])
    await asyncio.sleep(max(0.0, revoked + ttl - asyncio.get_running_loop().time()) + 0.01)
    status, (_, body) = await post_chat(second, secret)
    assert (401, "this API key was revoked") == (status, body["error"]["message"])
    assert 2 == len(fake.requests)


async def test_the_admin_api_needs_its_token_and_its_keys_work_on_the_proxy(
    fake: FakeUpstream, start_proxy: StartProxy, store_factory: StoreFactory
) -> None:
    url = await start_proxy(keys_config(fake.url, store_factory))  # type: ignore[attr-defined]
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
        status, _, raw = await fetch("GET", f"{url}/admin/keys", headers=headers)
        assert (401, "invalid_admin_token") == (status, json.loads(raw)["error"]["code"])
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    spec = {"name": "bot", "rpm": 5, "budget": "1/day", "models": ["gpt-4o-mini"]}
    status, _, raw = await fetch("POST", f"{url}/admin/keys", json=spec, headers=admin)
    assert 201 == status
    made = json.loads(raw)
    assert 200 == (await post_chat(url, made["secret"]))[0]
    rows = await ledger_rows(store_factory, 1)
    assert [made["key"]["id"]] == [r["key_id"] for r in rows]
    status, _, raw = await fetch("GET", f"{url}/admin/spend?by=key&since=1d", headers=admin)
    (line,) = json.loads(raw)["rows"]
    assert (200, "bot", 1) == (status, line["name"], line["requests"])
    status, _, raw = await fetch("GET", f"{url}/dashboard/data", headers=admin)
    (shown,) = json.loads(raw)["keys"]  # tokens and cost per key, by id: never the secret
    assert (200, made["key"]["id"], 1) == (status, shown["name"], shown["requests"])
    assert made["secret"].encode() not in raw


async def test_without_an_admin_token_there_is_no_admin_api_and_health_needs_no_key(
    fake: FakeUpstream, start_proxy: StartProxy, store_factory: StoreFactory
) -> None:
    raw = keys_config(fake.url, store_factory)  # type: ignore[attr-defined]
    raw.pop("admin_token")
    url = await start_proxy(raw)
    status, _, body = await fetch("GET", f"{url}/admin/keys")
    assert (404, "unknown_route") == (status, json.loads(body)["error"]["code"])
    assert 200 == (await fetch("GET", f"{url}/healthz"))[0]
    status, _, metrics = await fetch("GET", f"{url}/metrics")
    assert 200 == status
    assert b'llm_proxy_auth_refusals_total{kind="invalid_api_key",route="/openai"}' not in metrics
    await post_chat(url, None)
    _, _, metrics = await fetch("GET", f"{url}/metrics")
    assert b'llm_proxy_auth_refusals_total{kind="missing_api_key",route="/openai"} 1.0' in metrics
    assert b'llm_proxy_auth_degraded{component="ledger"} 0.0' in metrics


async def test_a_key_made_with_the_cli_is_accepted_by_a_running_proxy(
    fake: FakeUpstream, aiohttp_server: Callable[..., Any], tmp_path: Any
) -> None:
    """The proxy and the CLI read one config file; its relative store path is taken from the
    file's folder by both."""
    import sys

    import yaml

    from proxy import config as config_mod
    from proxy.app import make_app
    from tests.process import ROOT

    raw = keys_config(fake.url, StoreFactory("sqlite", "llm-proxy.db"))  # type: ignore[attr-defined]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    server = await aiohttp_server(make_app(config_mod.load(path)))
    url = str(server.make_url("")).rstrip("/")
    assert 401 == (await post_chat(url, "lp-" + "C" * 43))[0]
    command = [sys.executable, "-m", "proxy", "keys", "create", "--config", str(path)]
    proc = await asyncio.create_subprocess_exec(
        *command, "--name", "ci", "--rpm", "10", cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert 0 == proc.returncode
    secret = out.decode().strip()
    assert 200 == (await post_chat(url, secret))[0]
    assert (tmp_path / "llm-proxy.db").exists()


async def test_the_log_line_names_the_key_and_the_refusal_never_the_secret(
    fake: FakeUpstream, start_proxy: StartProxy, store_factory: StoreFactory, logs: Any
) -> None:
    url = await start_proxy(keys_config(fake.url, store_factory))  # type: ignore[attr-defined]
    secret = await make_key(store_factory, limits=KeyLimits(rpm=1))
    await post_chat(url, secret)
    await post_chat(url, secret)
    first, second = await logs.settled(2)
    async with key_manager(store_factory) as keys:
        key_id = (await keys.find("team-a")).id
    assert (key_id, None, 200) == (first["key_id"], first["auth_refused"], first["status"])
    assert (key_id, "requests_per_minute", 429) == (
        second["key_id"],
        second["auth_refused"],
        second["status"],
    )
    assert secret not in logs.getvalue()


async def test_a_served_process_puts_the_admin_api_beside_metrics_and_writes_rows_at_stop(
    fake: FakeUpstream, tmp_path: Any
) -> None:
    """``python -m proxy`` with ``metrics.port``: /admin/ is there (token from the
    environment), not on the proxy's port; rows of the last requests are written at SIGTERM."""
    import signal

    from tests.conftest import free_port
    from tests.process import ProxyProcess

    store = StoreFactory("sqlite", str(tmp_path / "proxy" / "llm-proxy.db"))
    metrics_port = free_port()
    raw = keys_config(fake.url, store, metrics={"host": "127.0.0.1", "port": metrics_port})  # type: ignore[attr-defined]
    raw.pop("admin_token")
    raw["store"]["path"] = "llm-proxy.db"  # relative: next to the config file
    proc = ProxyProcess(raw, tmp_path / "proxy", free_port(), LLM_PROXY_ADMIN_TOKEN=ADMIN_TOKEN)
    await proc.start()
    try:
        admin = f"http://127.0.0.1:{metrics_port}/admin/keys"
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        status, _, raw_key = await fetch("POST", admin, json={"name": "svc"}, headers=auth)
        assert 201 == status
        secret = json.loads(raw_key)["secret"]
        status, _, body = await fetch("GET", f"{proc.url}/admin/keys", headers=auth)
        assert (404, "unknown_route") == (status, json.loads(body)["error"]["code"])
        assert [200, 200] == [(await post_chat(proc.url, secret))[0] for _ in range(2)]
        proc.signal(signal.SIGTERM)
        assert 0 == await proc.wait()
    finally:
        proc.stop()
    assert 2 == len(await ledger_rows(store, 2, timeout=0))
