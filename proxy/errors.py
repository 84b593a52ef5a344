"""The proxy's own failures, rendered once at the boundary in the route's provider error shape."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from .providers import ProviderSpec


class ProxyError(Exception):
    """A failure the proxy answers itself, typed in the provider's vocabulary."""

    status = 500
    openai_type = "server_error"
    anthropic_type = "api_error"
    code: str | None = None

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})

    def render(self, provider: ProviderSpec, request_id: str | None = None) -> web.Response:
        type_ = self.anthropic_type if provider.name == "anthropic" else self.openai_type
        headers = {"Content-Type": "application/json", **self.headers}
        if request_id:
            headers["x-request-id"] = request_id
        return web.Response(
            status=self.status,
            body=provider.error_body(type_, self.message, self.code),
            headers=headers,
        )


class BadRequest(ProxyError):
    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    code = "invalid_request"


class ContextLengthExceeded(BadRequest):
    code = "context_length_exceeded"


class RouteNotFound(ProxyError):
    status = 404
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"
    code = "unknown_route"


class BodyTooLarge(ProxyError):
    status = 413
    openai_type = "invalid_request_error"
    anthropic_type = "request_too_large"
    code = "request_too_large"


class UpstreamUnreachable(ProxyError):
    status = 502
    openai_type = "server_error"
    anthropic_type = "api_error"
    code = "upstream_unreachable"


class UpstreamTimeout(ProxyError):
    status = 504
    openai_type = "server_error"
    anthropic_type = "timeout_error"
    code = "upstream_timeout"


class ServiceUnavailable(ProxyError):
    status = 503
    openai_type = "server_error"
    anthropic_type = "overloaded_error"
    code = "proxy_unavailable"
