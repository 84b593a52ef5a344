"""``/dashboard``: a live page and its JSON, served where ``/metrics`` is served.

Access: without an admin token only loopback clients (and Unix-socket peers) are answered.
With ``LLM_PROXY_ADMIN_TOKEN`` set every client must present it, either as
``Authorization: Bearer <token>`` (scripts) or as the session cookie the login form sets
(browsers). The cookie holds an HMAC of the token, not the token; it is HttpOnly,
SameSite=Strict and scoped to ``/dashboard``; comparisons are constant-time. The token never
travels in a URL. Every answer forbids framing, caching and any script or style not shipped
in the package (the page works offline).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from importlib import resources
from typing import Any

from aiohttp import web
from yarl import URL

from ..config import Config
from ..reload import RELOADER, RESOURCES
from ..state import STATE
from .view import build_view

COOKIE = "llm_proxy_dashboard"
_SESSION_CONTEXT = b"llm-proxy dashboard session v1"
_STATIC = {
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


def session_value(token: str) -> str:
    """What the cookie carries: proof of the token without the token itself."""
    return hmac.new(token.encode(), _SESSION_CONTEXT, hashlib.sha256).hexdigest()


def is_local(request: web.BaseRequest) -> bool:
    """A loopback TCP peer or a Unix-socket peer (only local processes can connect)."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and getattr(sock, "family", None) == socket.AF_UNIX:
        return True
    try:
        address = ipaddress.ip_address((request.remote or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def presented_token_ok(request: web.BaseRequest, token: str) -> bool:
    """A matching Bearer token or session cookie, compared in constant time."""
    auth = request.headers.get("Authorization", "")
    scheme, _, given = auth.partition(" ")
    if scheme.lower() == "bearer" and given:
        return hmac.compare_digest(given.strip().encode(), token.encode())
    cookie = request.cookies.get(COOKIE)
    if cookie:
        return hmac.compare_digest(cookie.encode(), session_value(token).encode())
    return False


def _file(name: str) -> bytes:
    return (resources.files("proxy.dashboard") / "static" / name).read_bytes()


class DashboardSite:
    """The dashboard's handlers, reading the proxy app's live state at each request."""

    def __init__(self, proxy_app: web.Application) -> None:
        self._app = proxy_app
        self._files: dict[str, bytes] = {}

    def _config(self) -> Config:
        return self._app[STATE].current.config

    def _asset(self, name: str) -> bytes:
        data = self._files.get(name)
        if data is None:
            data = self._files[name] = _file(name)
        return data

    def _respond(self, body: bytes, content_type: str, status: int = 200) -> web.Response:
        response = web.Response(body=body, status=status, content_type=content_type)
        if content_type.startswith("text/"):
            response.charset = "utf-8"
        response.headers.update(_SECURITY_HEADERS)
        return response

    def _denied(self, request: web.Request) -> web.Response | None:
        """None when the client may see the dashboard, else the answer that says why not
        (a browser without the session cookie is sent to the login form)."""
        token = self._config().admin_token
        if token is None:
            if is_local(request):
                return None
            text = b"The dashboard answers loopback clients only; set LLM_PROXY_ADMIN_TOKEN "
            return self._respond(text + b"to open it to others.\n", "text/plain", 403)
        if presented_token_ok(request, token):
            return None
        return _see_other("/dashboard/login")

    async def page(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        return denied or self._respond(self._asset("index.html"), "text/html")

    async def login_form(self, request: web.Request) -> web.Response:
        token = self._config().admin_token
        if token is None or presented_token_ok(request, token):
            return _see_other("/dashboard")
        return self._respond(self._asset("login.html"), "text/html")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return self._respond(self._asset(name), _STATIC[name])

    async def data(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied is not None:
            status = 403 if denied.status == 403 else 401
            response = self._respond(b'{"error": "not authorized"}', "application/json", status)
            if status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="llm-proxy dashboard"'
            return response
        res = self._app[RESOURCES]
        if res.live is None:
            raise web.HTTPNotFound()
        view = build_view(
            res.live,
            cooldowns=res.cooldowns.snapshot(),
            config=self._config(),
            in_flight=self._app[RELOADER].generations.in_flight,
            pacing=res.pacing,
        )
        return self._respond(view.to_json().encode(), "application/json")

    async def login(self, request: web.Request) -> web.Response:
        """The login form's POST: a right token sets the session cookie and goes to the page."""
        origin = request.headers.get("Origin")
        if origin is not None and origin != "null" and URL(origin).host != request.url.host:
            return self._respond(b"cross-site login refused\n", "text/plain", 403)
        token = self._config().admin_token
        form = await request.post()
        given = form.get("token")
        response = _see_other("/dashboard")
        if token is None or not isinstance(given, str):
            return response
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            return self._respond(self._asset("login.html"), "text/html", 401)
        response.set_cookie(
            COOKIE,
            session_value(token),
            path="/dashboard",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        return response


def _see_other(location: str) -> web.Response:
    response = web.Response(status=303, headers={"Location": location})
    response.headers.update(_SECURITY_HEADERS)
    return response


def add_dashboard_routes(target: web.Application, proxy_app: web.Application) -> Any:
    """Serve the dashboard on ``target`` (the proxy app itself or its metrics app)."""
    site = DashboardSite(proxy_app)
    target.router.add_get("/dashboard", site.page)
    target.router.add_get("/dashboard/data", site.data)
    target.router.add_get("/dashboard/static/{name}", site.static)
    target.router.add_get("/dashboard/login", site.login_form)
    target.router.add_post("/dashboard/login", site.login)
    return site
