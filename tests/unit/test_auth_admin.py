"""The /admin/ API: token required, keys managed, spend answered from the ledger."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.auth.admin import make_admin_app
from proxy.auth.cache import KeyCache
from proxy.auth.gate import Admission, Gate, Refusal, RefusalKind
from proxy.auth.limits import Limiter
from proxy.auth.manage import KeyManager
from proxy.auth.sqlite_store import SqliteStore
from proxy.pricing import PriceTable
from tests.auth_support import row

TOKEN = "admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def no_spend(key_id: str, since: float) -> int:
    return 0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "llm-proxy.db")
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
def gate(store: SqliteStore) -> Gate:
    return Gate(KeyCache(store), Limiter(no_spend), PriceTable())


async def catch_all(request: web.Request) -> web.Response:
    return web.Response(text="proxied")


def proxy_app(token: str | None, keys: Callable[[], KeyManager | None]) -> web.Application:
    """Mounted like the proxy will: the sub-app first, the catch-all route after it."""
    app = web.Application()
    app.add_subapp("/admin/", make_admin_app(token, keys))
    app.router.add_route("*", "/{tail:.*}", catch_all)
    return app


@pytest.fixture
async def client(aiohttp_client: Callable[..., Any], store: SqliteStore, gate: Gate) -> TestClient:
    keys = KeyManager(store, on_change=gate.cache.forget)
    return await aiohttp_client(proxy_app(TOKEN, lambda: keys))


async def call(client: TestClient, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    kwargs.setdefault("headers", AUTH)
    async with client.request(method, path, **kwargs) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN},
     {"x-api-key": TOKEN}],
)  # fmt: skip
async def test_every_admin_call_needs_the_bearer_token(
    client: TestClient, headers: dict[str, str]
) -> None:
    for method, path in (("GET", "/admin/keys"), ("POST", "/admin/keys"), ("GET", "/admin/spend")):
        status, body = await call(client, method, path, headers=headers)
        assert (401, "invalid_admin_token") == (status, body["error"]["code"])
        assert {"message", "type", "param", "code"} == set(body["error"])


async def test_without_a_configured_token_the_api_is_disabled(
    aiohttp_client: Callable[..., Any], store: SqliteStore
) -> None:
    client = await aiohttp_client(proxy_app(None, lambda: KeyManager(store)))
    status, body = await call(client, "GET", "/admin/keys", headers={"Authorization": "Bearer "})
    assert (403, "admin_disabled") == (status, body["error"]["code"])


async def test_other_paths_still_reach_the_proxy(client: TestClient) -> None:
    async with client.get("/openai/v1/models") as resp:
        assert (200, "proxied") == (resp.status, await resp.text())


async def test_create_returns_the_secret_once_and_it_works(
    client: TestClient, gate: Gate, store: SqliteStore
) -> None:
    status, body = await call(client, "POST", "/admin/keys", json={
        "name": "team-a", "rpm": 60, "tpm": 200000, "budget": "50/month",
        "routes": ["/openai"], "models": ["gpt-4o*"], "expires": "30d",
    })  # fmt: skip
    assert 201 == status
    secret, key = body["secret"], body["key"]
    assert secret.startswith(key["secret_hint"]) and "key_hash" not in key
    assert ("team-a", 60, 200000, "50/month", ["/openai"], ["gpt-4o*"]) == (
        key["name"], key["rpm"], key["tpm"], key["budget"], key["routes"], key["models"]
    )  # fmt: skip
    assert 30 * 86400 == pytest.approx(key["expires"] - time.time(), abs=60)
    admitted = await gate.check(secret, "/openai", "gpt-4o", input_tokens=10, max_output_tokens=10)
    assert isinstance(admitted, Admission)
    status, listed = await call(client, "GET", "/admin/keys")
    assert [key] == listed["keys"]
    assert secret not in str(listed)


async def test_rotate_and_revoke_take_effect_at_once_on_this_instance(
    client: TestClient, gate: Gate
) -> None:
    _, created = await call(client, "POST", "/admin/keys", json={"name": "team-a"})
    old = created["secret"]
    assert isinstance(await gate.check(old, "/openai", "gpt-4o"), Admission)  # now cached
    status, rotated = await call(client, "POST", "/admin/keys/team-a/rotate")
    assert 200 == status and rotated["secret"] != old
    refused = await gate.check(old, "/openai", "gpt-4o")
    assert isinstance(refused, Refusal) and RefusalKind.INVALID_KEY == refused.kind
    assert isinstance(await gate.check(rotated["secret"], "/openai", "gpt-4o"), Admission)
    status, revoked = await call(client, "POST", f"/admin/keys/{created['key']['id']}/revoke")
    assert 200 == status and revoked["key"]["revoked"] is not None
    refused = await gate.check(rotated["secret"], "/openai", "gpt-4o")
    assert isinstance(refused, Refusal) and RefusalKind.REVOKED_KEY == refused.kind
    assert [] == (await call(client, "GET", "/admin/keys"))[1]["keys"]
    assert ["team-a"] == [
        k["name"] for k in (await call(client, "GET", "/admin/keys?all=1"))[1]["keys"]
    ]


@pytest.mark.parametrize(
    ("method", "path", "json_body", "status", "code"),
    [
        ("POST", "/admin/keys", {"name": "bad name"}, 400, "invalid_request"),
        ("POST", "/admin/keys", {"name": "a", "rpm": "60"}, 400, "invalid_request"),
        ("POST", "/admin/keys", {"name": "a", "budget": "5/week"}, 400, "invalid_request"),
        ("POST", "/admin/keys", {"name": "a", "colour": "red"}, 400, "invalid_request"),
        ("POST", "/admin/keys", ["a"], 400, "invalid_request"),
        ("GET", "/admin/keys/nobody", None, 404, "key_not_found"),
        ("POST", "/admin/keys/nobody/revoke", None, 404, "key_not_found"),
        ("GET", "/admin/spend?by=colour", None, 400, "invalid_request"),
        ("GET", "/admin/nothing-here", None, 404, "not_found"),
    ],
)
async def test_bad_requests_get_openai_shaped_errors(
    client: TestClient, method: str, path: str, json_body: Any, status: int, code: str
) -> None:
    got_status, body = await call(client, method, path, json=json_body)
    assert (status, code) == (got_status, body["error"]["code"])


async def test_a_taken_name_is_a_conflict(client: TestClient) -> None:
    await call(client, "POST", "/admin/keys", json={"name": "team-a"})
    status, body = await call(client, "POST", "/admin/keys", json={"name": "team-a"})
    assert (409, "name_taken") == (status, body["error"]["code"])


async def test_spend_groups_the_ledger(client: TestClient, store: SqliteStore) -> None:
    _, created = await call(client, "POST", "/admin/keys", json={"name": "team-a"})
    key_id = created["key"]["id"]
    now = time.time()
    await store.insert_ledger([
        row(request_id="a", key_id=key_id, model_served="gpt-4o", cost_usd=0.25, ts=now),
        row(request_id="b", key_id=key_id, model_served="gpt-4o-mini", cost_usd=0.5, ts=now),
        row(request_id="c", key_id=key_id, model_served="gpt-4o", cost_usd=4.0, ts=now - 9 * 86400),
    ])  # fmt: skip
    status, by_key = await call(client, "GET", "/admin/spend?by=key&since=7d")
    assert 200 == status
    assert [(key_id, "team-a", 2, 0.75)] == [
        (r["key"], r["name"], r["requests"], r["cost_usd"]) for r in by_key["rows"]
    ]
    _, by_model = await call(client, "GET", "/admin/spend?by=model&since=30d&key=team-a")
    assert {"gpt-4o": 4.25, "gpt-4o-mini": 0.5} == {
        r["model"]: r["cost_usd"] for r in by_model["rows"]
    }
    assert 4.75 == by_model["total_cost_usd"]
