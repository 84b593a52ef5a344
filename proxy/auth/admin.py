"""The admin HTTP API under ``/admin/``: keys and spend, for automation.

Mount it before the proxy's catch-all route: ``app.add_subapp("/admin/", make_admin_app(token,
lambda: runtime.keys))``. Every call needs ``Authorization: Bearer <admin token>`` (compared in
constant time); without a configured token the API answers 403 to everything. Errors use the
OpenAI error shape. Endpoints (JSON in and out):

- ``GET  /admin/keys``                 list (``?all=1`` includes revoked keys)
- ``POST /admin/keys``                 create: ``{"name", "rpm", "tpm", "max_concurrent",
  "budget": "50/month", "routes": ["/openai"], "models": ["gpt-4o*"], "expires": "30d"}``
  -> 201 ``{"key": {...}, "secret": "lp-..."}`` (the only time the secret is shown)
- ``GET  /admin/keys/{id or name}``
- ``POST /admin/keys/{id or name}/rotate`` -> ``{"key", "secret"}``
- ``POST /admin/keys/{id or name}/revoke`` -> ``{"key"}``
- ``GET  /admin/spend?by=key|model|route|day&since=7d[&key=...]``
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..providers import OPENAI
from .keys import KeyLimits, parse_budget
from .manage import KeyManager, key_view
from .store import KeyConflict, KeyNotFound, KeyRevoked, SpendGroup, StoreError, StoreUnavailable
from .timespec import parse_expires, parse_since

__all__ = ["make_admin_app"]

KeysGetter = Callable[[], KeyManager | None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class _Admin:
    token: str = field(repr=False)
    keys: KeysGetter


_ADMIN = web.AppKey("admin", _Admin)


def make_admin_app(token: str | None, keys: KeysGetter) -> web.Application:
    """``keys`` returns the serving process's KeyManager (None until the store is open)."""
    app = web.Application(middlewares=[_errors, _authorize])
    app[_ADMIN] = _Admin(token or "", keys)
    app.router.add_get("/keys", list_keys)
    app.router.add_post("/keys", create_key)
    app.router.add_get("/keys/{ref}", get_key)
    app.router.add_post("/keys/{ref}/rotate", rotate_key)
    app.router.add_post("/keys/{ref}/revoke", revoke_key)
    app.router.add_get("/spend", spend)
    return app


def _error(status: int, message: str, type_: str, code: str) -> web.Response:
    return web.Response(
        status=status,
        body=OPENAI.error_body(type_, message, code),
        content_type="application/json",
    )


@web.middleware
async def _authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[_ADMIN].token
    if not token:
        return _error(
            403,
            "the admin API is disabled: set LLM_PROXY_ADMIN_TOKEN",
            "invalid_request_error",
            "admin_disabled",
        )
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    ok = scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())
    if not ok:
        return _error(
            401, "missing or wrong admin token", "invalid_request_error", "invalid_admin_token"
        )
    return await handler(request)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The admin API's one exception boundary."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        code = exc.reason.lower().replace(" ", "_")
        return _error(exc.status, exc.reason, "invalid_request_error", code)
    except (ValueError, TypeError) as exc:
        return _error(400, str(exc), "invalid_request_error", "invalid_request")
    except KeyNotFound as exc:
        return _error(404, f"no key {exc}", "invalid_request_error", "key_not_found")
    except KeyConflict:
        return _error(409, "a key with that name exists", "invalid_request_error", "name_taken")
    except KeyRevoked as exc:
        return _error(409, f"key {exc} is revoked", "invalid_request_error", "key_revoked")
    except StoreUnavailable:
        return _error(503, "the key store is unavailable", "server_error", "store_unavailable")
    except StoreError:
        return _error(500, "key store error", "server_error", "store_error")


def _keys(request: web.Request) -> KeyManager:
    keys = request.app[_ADMIN].keys()
    if keys is None:
        raise StoreUnavailable("not open")
    return keys


async def list_keys(request: web.Request) -> web.Response:
    show_all = request.query.get("all", "") in ("1", "true", "yes")
    records = await _keys(request).list()
    return web.json_response(
        {"keys": [key_view(r) for r in records if show_all or r.revoked is None]}
    )


async def create_key(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        raise ValueError("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    allowed = {"name", "rpm", "tpm", "max_concurrent", "budget", "routes", "models", "expires"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    made = await _keys(request).create(
        _str(body, "name"),
        KeyLimits(
            rpm=_int(body, "rpm"),
            tpm=_int(body, "tpm"),
            max_concurrent=_int(body, "max_concurrent"),
            budget=parse_budget(_str(body, "budget")) if body.get("budget") else None,
        ),
        routes=_strings(body, "routes"),
        models=_strings(body, "models"),
        expires=parse_expires(_str(body, "expires"), time.time()) if body.get("expires") else None,
    )
    return web.json_response({"key": key_view(made.record), "secret": made.secret}, status=201)


async def get_key(request: web.Request) -> web.Response:
    return web.json_response(key_view(await _keys(request).find(request.match_info["ref"])))


async def rotate_key(request: web.Request) -> web.Response:
    made = await _keys(request).rotate(request.match_info["ref"])
    return web.json_response({"key": key_view(made.record), "secret": made.secret})


async def revoke_key(request: web.Request) -> web.Response:
    record = await _keys(request).revoke(request.match_info["ref"])
    return web.json_response({"key": key_view(record)})


async def spend(request: web.Request) -> web.Response:
    by = SpendGroup(request.query.get("by", "key"))
    since = parse_since(request.query.get("since", "7d"), time.time())
    report = await _keys(request).spend(by, since, request.query.get("key"))
    return web.json_response(report.view())


def _str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected a string")
    return value


def _int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: expected an integer")
    return value


def _strings(body: dict[str, Any], name: str) -> tuple[str, ...]:
    value = body.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name}: expected a list of strings")
    return tuple(value)
