"""Send one attempt to one upstream on the shared session. Knows nothing of plugins."""

from __future__ import annotations

import asyncio
from typing import Protocol

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .config import Timeouts, Upstream
from .errors import UpstreamTimeout, UpstreamUnreachable
from .exchange import Exchange
from .routing import upstream_url

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Trailers",
        "Transfer-Encoding",
        "Upgrade",
    )
)
_NOT_FORWARDED_UP = HOP_BY_HOP | {"host", "content-length", "expect"}


def make_session(timeouts: Timeouts) -> aiohttp.ClientSession:
    """The one upstream session for the server's life: pooled keep-alive, cached DNS.

    No auto-decompression (gzip passes through as bytes), no cookie jar (one client's cookies
    must never reach another's request), no default headers (upstream sees the client's).
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect_s),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Content-Type", "Accept", "Accept-Encoding"),
        trust_env=False,
    )


def _connection_tokens(headers: CIMultiDictProxy[str]) -> set[str]:
    """Headers named in ``Connection`` are hop-by-hop too (RFC 9110 section 7.6.1)."""
    value = headers.get("Connection")
    return {t.strip().lower() for t in value.split(",")} if value else set()


def request_headers(ex: Exchange, upstream: Upstream) -> CIMultiDict[str]:
    """The client's headers minus hop-by-hop and ``x-proxy-*`` controls, plus id and credential."""
    src = ex.request.headers
    drop = _NOT_FORWARDED_UP | _connection_tokens(src)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in src.items():
        lower = name.lower()
        if lower not in drop and not lower.startswith("x-proxy-"):
            out.add(name, value)
    out["x-request-id"] = ex.request_id
    if "Accept-Encoding" not in out:
        out["Accept-Encoding"] = "identity"
    if upstream.api_key:
        provider = ex.route.provider
        for name in provider.credential_headers:
            out.popall(name, None)
        out[provider.auth_header] = provider.auth_prefix + upstream.api_key
    return out


def response_headers(upstream_headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Upstream response headers verbatim, minus hop-by-hop ones."""
    drop = HOP_BY_HOP | _connection_tokens(upstream_headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream_headers.items():
        if name.lower() not in drop:
            out.add(name, value)
    return out


async def open_attempt(
    session: aiohttp.ClientSession,
    ex: Exchange,
    upstream: Upstream,
    body: bytes,
    timeouts: Timeouts,
) -> aiohttp.ClientResponse:
    """Send the request and return once response headers arrived (first byte), body unread.

    Connect errors become 502 and a first-byte timeout 504; the caller decides about retries.
    """
    query = ex.request.rel_url.raw_query_string
    url = URL(upstream_url(upstream.base_url, ex.tail, query), encoded=True)
    try:
        async with asyncio.timeout(timeouts.first_byte_s):
            return await session.request(
                ex.request.method,
                url,
                headers=request_headers(ex, upstream),
                data=body if body or ex.request.method not in ("GET", "HEAD") else None,
                allow_redirects=False,
            )
    except TimeoutError:
        raise UpstreamTimeout(
            f"upstream {upstream.name!r} sent no response within {timeouts.first_byte_s:g}s"
        ) from None
    except (aiohttp.ClientConnectionError, OSError) as exc:
        raise UpstreamUnreachable(
            f"upstream {upstream.name!r} is unreachable: {type(exc).__name__}"
        ) from None


class Dispatcher(Protocol):
    """Chooses upstreams and attempts for a request and returns one open upstream response."""

    async def open(self, ex: Exchange) -> aiohttp.ClientResponse: ...
