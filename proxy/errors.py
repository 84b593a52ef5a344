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

    def render(
        self, provider: ProviderSpec, request_id: str, extra: Mapping[str, str] | None = None
    ) -> web.Response:
        """The provider-shaped error response, with the proxy's headers (``extra``) and id."""
        type_ = self.anthropic_type if provider.name == "anthropic" else self.openai_type
        headers = {"Content-Type": "application/json", **(extra or {}), **self.headers}
        headers["x-request-id"] = request_id
        headers["x-proxy-request-id"] = request_id
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


class UpstreamBadResponse(ProxyError):
    status = 502
    openai_type = "server_error"
    anthropic_type = "api_error"
    code = "upstream_bad_response"


class RateLimited(ProxyError):
    """The proxy itself holds the request back (a cooldown or pacing): a provider-shaped 429
    with an honest Retry-After, so the client's SDK backs off on its own."""

    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class InternalError(ProxyError):
    """Anything unexpected: the client still gets a provider-shaped 500 with the request id."""

    status = 500
    openai_type = "server_error"
    anthropic_type = "api_error"
    code = "proxy_internal_error"
