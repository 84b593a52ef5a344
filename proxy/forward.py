"""Send one attempt to one upstream on the shared session. Knows nothing of plugins."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .config import Timeouts, Upstream
from .errors import UpstreamBadResponse, UpstreamTimeout, UpstreamUnreachable
from .exchange import Exchange
from .providers import CREDENTIAL_HEADERS, PROVIDERS, ProviderSpec
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


def upstream_provider(ex: Exchange, upstream: Upstream) -> ProviderSpec:
    """The auth and error style the upstream itself speaks (its own API family, if declared)."""
    assert ex.route is not None
    if upstream.api is None:
        return ex.route.provider
    return PROVIDERS["anthropic" if upstream.api == "anthropic" else "openai"]


def sends_client_credentials(ex: Exchange, upstream: Upstream) -> bool:
    """A client's own credential is meant for the route's first upstream only.

    An upstream with a configured key gets that key and nothing else; a fallback without one
    gets no credential at all (a local server may need none) unless it opts in. A client's
    key never goes to an upstream of another provider family. In keys mode what the client
    sends is a proxy key: it goes nowhere, whatever the upstream's settings.
    """
    assert ex.route is not None
    if ex.route.client_keys or upstream.api_key:
        return False
    if upstream_provider(ex, upstream) is not ex.route.provider:
        return False
    first = ex.route.config.upstreams[0]
    return upstream is first or upstream.pass_client_credentials


def request_headers(
    ex: Exchange, upstream: Upstream, replace: Mapping[str, str] | None = None
) -> CIMultiDict[str]:
    """The client's headers minus hop-by-hop and ``x-proxy-*`` controls, plus id and credential.

    ``replace``: headers a translation sets instead of the client's (content type, API version).
    """
    src = ex.request.headers
    drop = _NOT_FORWARDED_UP | _connection_tokens(src)
    if not sends_client_credentials(ex, upstream):
        drop = drop | CREDENTIAL_HEADERS
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in src.items():
        lower = name.lower()
        if lower not in drop and not lower.startswith("x-proxy-"):
            out.add(name, value)
    for name, value in (replace or {}).items():
        out[name] = value
    out["x-request-id"] = ex.request_id
    for name, value in ex.outgoing_headers.items():
        out[name] = value
    if "Accept-Encoding" not in out:
        out["Accept-Encoding"] = "identity"
    if upstream.api_key:
        provider = upstream_provider(ex, upstream)
        out[provider.auth_header] = provider.auth_prefix + upstream.api_key
    return out


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One attempt's request as it goes on the wire."""

    method: str
    tail: str
    """The path after the upstream's base URL, as encoded."""
    query: str
    headers: CIMultiDict[str]
    body: bytes

    @classmethod
    def forwarded(cls, ex: Exchange, upstream: Upstream, body: bytes) -> Outgoing:
        """The client's request as it came (``body`` may carry a mapped model name)."""
        query = ex.request.rel_url.raw_query_string
        headers = request_headers(ex, upstream)
        return cls(ex.request.method, ex.tail, query, headers, body)


def response_headers(upstream_headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Upstream response headers verbatim, minus hop-by-hop ones."""
    drop = HOP_BY_HOP | _connection_tokens(upstream_headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream_headers.items():
        if name.lower() not in drop:
            out.add(name, value)
    return out


class ByteSource(Protocol):
    async def readany(self) -> bytes:
        """The next bytes as they arrive; ``b""`` at the end of the body."""
        ...

    def read_nowait(self) -> bytes:
        """The bytes already here, without waiting; ``b""`` when none are (aiohttp's name)."""
        ...


class UpstreamResponse(Protocol):
    """An upstream answer whose head has arrived and whose body the relay streams."""

    status: int
    reason: str | None
    headers: CIMultiDictProxy[str]
    content_length: int | None
    content: ByteSource

    def cut_short(self) -> str | None:
        """After the body ended: why it ended early, or None for a clean end."""
        ...

    def release(self) -> None:
        """The body was read to its end: the connection may be reused."""
        ...

    def close(self) -> None:
        """Give up on the body: the connection is closed, not reused."""
        ...


class LiveResponse:
    """An aiohttp response as the relay sees it; ``content`` is aiohttp's own reader, so
    reading a chunk costs nothing extra."""

    __slots__ = ("_protocol", "_resp", "content", "content_length", "headers", "reason", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.reason = resp.reason
        self.headers = resp.headers
        self.content_length = resp.content_length
        self.content: ByteSource = resp.content
        connection = resp.connection
        self._protocol = connection.protocol if connection is not None else None

    def cut_short(self) -> str | None:
        """A body framed by the connection's end (no length, not chunked) ends "cleanly" in
        aiohttp even when the upstream reset the connection; the protocol remembers which."""
        if (
            self.content_length is not None
            or "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        ):
            return None
        exc = self._protocol.exception() if self._protocol is not None else None
        if isinstance(exc, aiohttp.ClientOSError):
            return f"upstream connection reset: {exc.strerror or type(exc).__name__}"
        return None

    def release(self) -> None:
        self._resp.release()

    def close(self) -> None:
        self._resp.close()


class _Replay:
    """Bytes already read, then whatever the live body still holds."""

    __slots__ = ("_head", "_rest")

    def __init__(self, head: bytes, rest: ByteSource | None) -> None:
        self._head = head
        self._rest = rest

    async def readany(self) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        return await self._rest.readany() if self._rest is not None else b""

    def read_nowait(self) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        return self._rest.read_nowait() if self._rest is not None else b""


class ReplayResponse:
    """An upstream answer whose body start was read (to decide about a retry), replayed to
    the client byte for byte: the bytes read first, then the rest of the live body."""

    __slots__ = ("_live", "content", "content_length", "head", "headers", "reason", "status")

    def __init__(self, live: LiveResponse, head: bytes, complete: bool) -> None:
        self._live = live
        self.status = live.status
        self.reason = live.reason
        self.headers = live.headers
        self.content_length = live.content_length
        self.head = head
        """The body bytes read so far (all of it when ``complete``)."""
        self.content: ByteSource = _Replay(head, None if complete else live.content)
        if complete:
            live.release()

    def cut_short(self) -> str | None:
        return self._live.cut_short()

    def release(self) -> None:
        self._live.release()

    def close(self) -> None:
        self._live.close()


async def read_head(live: LiveResponse, limit: int, timeout_s: float) -> ReplayResponse:
    """Read up to ``limit`` body bytes (the whole body when it is smaller), for inspection.

    ``StreamReader.read(n)`` returns what is buffered, not ``n`` bytes, so it loops until the
    end or the limit. A body that breaks or stalls is kept as far as it came: the client gets
    what the upstream sent and the relay reports the break.
    """
    parts: list[bytes] = []
    size = 0
    complete = False
    try:
        async with asyncio.timeout(timeout_s):
            while size < limit:
                part = await live.content.readany()
                if not part:
                    complete = True
                    break
                parts.append(part)
                size += len(part)
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass
    return ReplayResponse(live, b"".join(parts), complete)


async def open_attempt(
    session: aiohttp.ClientSession, upstream: Upstream, out: Outgoing, timeouts: Timeouts
) -> LiveResponse:
    """Send the request and return once response headers arrived (first byte), body unread.

    Connect errors become 502, a malformed answer 502 and a first-byte timeout 504; the
    caller decides about retries. Messages name the upstream, never a credential.
    """
    url = URL(upstream_url(upstream.base_url, out.tail, out.query), encoded=True)
    try:
        async with asyncio.timeout(timeouts.first_byte_s):
            resp = await session.request(
                out.method,
                url,
                headers=out.headers,
                data=out.body if out.body or out.method not in ("GET", "HEAD") else None,
                allow_redirects=False,
            )
    except TimeoutError:
        raise UpstreamTimeout(
            f"upstream {upstream.name!r} ({_host(url)}) sent no response within "
            f"{timeouts.first_byte_s:g}s"
        ) from None
    except (aiohttp.ClientConnectionError, OSError) as exc:
        raise UpstreamUnreachable(
            f"upstream {upstream.name!r} ({_host(url)}) is unreachable: {type(exc).__name__}"
        ) from None
    except aiohttp.ClientResponseError as exc:  # the head could not be parsed
        what = (exc.message or "").strip().split("\n", 1)[0].rstrip(":")[:80]
        raise UpstreamBadResponse(
            f"upstream {upstream.name!r} ({_host(url)}) sent a malformed response ({what})"
        ) from None
    return LiveResponse(resp)


def _host(url: URL) -> str:
    return f"{url.host}:{url.port}" if url.port else str(url.host)
