"""Issue 11's findings on the request core, one regression test each: byte-for-byte on the edges,
request ids on every answer, broken upstream answers, path escapes, credentials, deep JSON."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from proxy.fake_upstream import FakeUpstream, Fault
from tests.conftest import LogCapture, fetch, free_port
from tests.fuzzing.client import Outcome, roundtrip
from tests.fuzzing.verdict import error_shape
from tests.raw_upstream import RawRequest, raw_upstream, reply, reset

CHAT = "/v1/chat/completions"
JSON = {"Content-Type": "application/json"}
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
StartProxy = Callable[[dict[str, Any]], Awaitable[str]]
Fetched = tuple[int, CIMultiDict[str], bytes]


def chat_body(content: str = "hi") -> bytes:
    return json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    ).encode()


def url_of(fake: FakeUpstream) -> str:
    assert fake.url is not None
    return fake.url


def upstream(name: str, base_url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "base_url": base_url, **extra}


def config(*upstreams: dict[str, Any], provider: str = "openai", **route: Any) -> dict[str, Any]:
    """One route at ``/r`` over ``upstreams``; ``route`` adds route keys (retry, context)."""
    routes = [{"prefix": "/r", "provider": provider, "upstreams": list(upstreams), **route}]
    return {"listen": {"host": "127.0.0.1", "port": 8080}, "routes": routes}


def one_attempt(*upstreams: dict[str, Any], **route: Any) -> dict[str, Any]:
    return config(*upstreams, retry={"max_attempts": 1}, **route)


def error_of(body: bytes) -> str | None:
    """Which provider's error shape ``body`` is in (None: not JSON or neither)."""
    try:
        return error_shape(json.loads(body))
    except ValueError:
        return None


async def raw_request(proxy_url: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as is (no client normalises the path or the header bytes)."""
    url = URL(proxy_url)
    assert url.host is not None and url.port is not None
    got = await roundtrip(url.host, url.port, data, timeout=30)
    assert Outcome.ANSWERED == got.outcome, got.detail
    assert got.response is not None
    return got.response.status, dict(got.response.headers), got.response.body


# ---- byte-for-byte on the edges ---------------------------------------------------------------


async def test_gzip_request_body_is_forwarded_compressed_and_unchanged(
    start_proxy: StartProxy,
) -> None:
    compressed = gzip.compress(chat_body(), mtime=0)
    headers = {**JSON, "Content-Encoding": "gzip"}
    async with raw_upstream(reply(OK)) as raw:
        url = await start_proxy(config(upstream("raw", raw.url)))
        status, _, _ = await fetch("POST", url + "/r" + CHAT, data=compressed, headers=headers)
    seen = raw.requests[-1]
    assert (200, compressed, b"gzip") == (status, seen.body, seen.header(b"content-encoding"))


async def test_upstream_error_body_read_for_retry_reaches_the_client_whole(
    start_proxy: StartProxy,
) -> None:
    message = "Rate limit reached for requests. " + "Please retry later. " * 15
    error = {"error": {"message": message, "type": "requests", "param": None, "code": "x"}}
    body = json.dumps(error).encode()
    head = b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
    head += b"Content-Length: %d\r\n\r\n" % len(body)

    async def in_two_writes(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(head + body[:100])
        await writer.drain()
        await asyncio.sleep(0.2)  # the proxy reads what has arrived so far meanwhile
        writer.write(body[100:])
        await writer.drain()

    async with raw_upstream(in_two_writes) as raw:
        url = await start_proxy(one_attempt(upstream("raw", raw.url)))
        status, headers, got = await fetch("POST", url + "/r" + CHAT, data=chat_body())
    assert (429, len(body), body) == (status, int(headers["Content-Length"]), got)


async def test_invalid_header_bytes_are_forwarded_as_received_or_refused(
    start_proxy: StartProxy,
) -> None:
    """``A\\xff\\xfe\\x80Z`` must not arrive upstream as ``AZ``: forwarded intact or refused."""
    body = chat_body()
    request = b"POST /r/v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    request += b"X-Custom: A\xff\xfe\x80Z\r\nContent-Type: application/json\r\n"
    request += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    async with raw_upstream(reply(OK)) as raw:
        url = await start_proxy(config(upstream("raw", raw.url)))
        status, _, answer = await raw_request(url, request)
    forwarded = [r.header(b"x-custom") for r in raw.requests]
    if forwarded:
        assert [b"A\xff\xfe\x80Z"] == forwarded
    else:
        assert (400, "openai") == (status, error_of(answer))


async def test_deeply_nested_json_on_a_context_route_gets_a_provider_shaped_answer(
    start_proxy: StartProxy,
) -> None:
    """100,000 levels: the body cannot be parsed, so it goes upstream untouched (whose own 400
    comes back), or the proxy answers a provider-shaped error; never aiohttp's plain-text 500."""
    nest = b"[" * 100_000 + b"]" * 100_000
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":' + nest + b"}]}"
    error = {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}
    upstream_400 = json.dumps({"error": error})
    answer_400 = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
    answer_400 += b"Content-Length: %d\r\n\r\n%s" % (len(upstream_400), upstream_400.encode())
    context = {"enabled": True, "max_input_tokens": 64}
    async with raw_upstream(reply(answer_400)) as raw:
        url = await start_proxy(config(upstream("raw", raw.url), context=context))
        _, headers, got = await fetch("POST", url + "/r" + CHAT, data=body, headers=JSON)
    assert ("application/json", "openai") == (headers["Content-Type"].split(";")[0], error_of(got))


# ---- request ids ------------------------------------------------------------------------------


async def test_long_client_request_id_is_replaced_and_a_short_one_kept(
    fake: FakeUpstream, start_proxy: StartProxy, logs: LogCapture
) -> None:
    url = await start_proxy(config(upstream("fake", url_of(fake))))
    long_id = "r" * 8000
    _, replaced, _ = await fetch("GET", url + "/r/v1/models", headers={"x-request-id": long_id})
    _, kept, _ = await fetch("GET", url + "/r/v1/models", headers={"x-request-id": "req-abc-1"})
    made = replaced["x-proxy-request-id"]
    assert (False, True) == (made == long_id, len(made) <= 128 and made.isprintable())
    sent_upstream = [r.headers["x-request-id"] for r in fake.requests]
    logged = [line["request_id"] for line in await logs.settled(2)]
    expected = [made, "req-abc-1"]
    assert ("req-abc-1", expected, expected) == (kept["x-proxy-request-id"], sent_upstream, logged)


@dataclass(frozen=True)
class ProxyErrorCase:
    """How to make the proxy answer with its own error of ``status``."""

    status: int
    config: Callable[[FakeUpstream], dict[str, Any]]
    request: Callable[[str, FakeUpstream], Awaitable[Fetched]]


async def _get_unknown_route(url: str, fake: FakeUpstream) -> Fetched:
    return await fetch("GET", url + "/nowhere/v1/models")


async def _post_chat(url: str, fake: FakeUpstream) -> Fetched:
    return await fetch("POST", url + "/r" + CHAT, data=chat_body("hello " * 200), headers=JSON)


async def _post_slow_chat(url: str, fake: FakeUpstream) -> Fetched:
    headers = {**JSON, "x-fake-first-byte-delay-ms": "10000"}
    return await fetch("POST", url + "/r" + CHAT, data=chat_body(), headers=headers)


async def _post_while_cooling(url: str, fake: FakeUpstream) -> Fetched:
    """The upstream's own 429 cools it for 30 s; the next request is refused by the proxy."""
    fake.enqueue(Fault(status=429, headers={"Retry-After": "30"}))
    await fetch("POST", url + "/r" + CHAT, data=chat_body(), headers=JSON)
    return await fetch("POST", url + "/r" + CHAT, data=chat_body(), headers=JSON)


PROXY_ERRORS = {
    "404 unknown route": ProxyErrorCase(
        404, lambda fake: config(upstream("fake", url_of(fake))), _get_unknown_route
    ),
    "400 context too long": ProxyErrorCase(
        400,
        lambda fake: config(upstream("fake", url_of(fake)), context={"max_input_tokens": 16}),
        _post_chat,
    ),
    "413 body too large": ProxyErrorCase(
        413,
        lambda fake: {**config(upstream("fake", url_of(fake))), "limits": {"max_body_bytes": 100}},
        _post_chat,
    ),
    "429 cooling down": ProxyErrorCase(
        429,
        lambda fake: config(upstream("fake", url_of(fake)), retry={"max_wait_s": 0}),
        _post_while_cooling,
    ),
    "502 unreachable": ProxyErrorCase(
        502,
        lambda fake: one_attempt(upstream("dead", f"http://127.0.0.1:{free_port()}")),
        _post_chat,
    ),
    "504 first byte timeout": ProxyErrorCase(
        504,
        lambda fake: {
            **one_attempt(upstream("fake", url_of(fake))),
            "timeouts": {"first_byte_s": 0.2},
        },
        _post_slow_chat,
    ),
}


@pytest.mark.parametrize("case", PROXY_ERRORS.values(), ids=PROXY_ERRORS.keys())
async def test_proxy_errors_carry_the_request_id(
    fake: FakeUpstream, start_proxy: StartProxy, case: ProxyErrorCase
) -> None:
    url = await start_proxy(case.config(fake))
    status, headers, body = await case.request(url, fake)
    own = "x-request-id" not in headers or not headers["x-request-id"].startswith("req_fake")
    has_id = bool(headers.get("x-proxy-request-id"))
    assert (case.status, "openai", True, True) == (status, error_of(body), own, has_id)


# ---- broken upstream answers ------------------------------------------------------------------


async def test_upstream_body_without_framing_cut_by_a_reset_is_cut_for_the_client(
    start_proxy: StartProxy, logs: LogCapture
) -> None:
    """No Content-Length, no chunking: the body ends with the connection, so a reset is a cut,
    not an end (aiohttp feeds EOF either way)."""
    release = asyncio.Event()

    async def cut_by_reset(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        writer.write(b'{"partial": ')
        await writer.drain()
        await release.wait()  # the client has the first bytes: now cut
        reset(writer)

    async with raw_upstream(cut_by_reset) as raw:
        url = await start_proxy(config(upstream("raw", raw.url)))
        async with aiohttp.ClientSession() as session:
            async with session.post(url + "/r" + CHAT, data=chat_body()) as resp:
                first = await resp.content.readany()
                release.set()
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
    assert (b'{"partial": ', True) == (first, (await logs.last())["error"] is not None)


MALFORMED_ANSWERS = {
    "status code not a number": b"HTTP/1.1 abc Broken\r\nContent-Length: 2\r\n\r\n{}",
    "not http at all": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    "header line without colon": b"HTTP/1.1 200 OK\r\nNo colon here\r\nContent-Length: 2\r\n\r\n{}",
    "NUL in a header": b"HTTP/1.1 200 OK\r\nX-Bad: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
}


@pytest.mark.parametrize("answer", MALFORMED_ANSWERS.values(), ids=MALFORMED_ANSWERS.keys())
async def test_malformed_upstream_answer_falls_back_to_the_next_upstream(
    fake: FakeUpstream, start_proxy: StartProxy, answer: bytes
) -> None:
    async with raw_upstream(reply(answer)) as raw:
        upstreams = (upstream("broken", raw.url), upstream("fallback", url_of(fake)))
        url = await start_proxy(one_attempt(*upstreams))
        status, headers, body = await fetch("POST", url + "/r" + CHAT, data=chat_body())
    served_by = headers.get("x-proxy-upstream")
    assert (200, "fallback", True) == (status, served_by, b'"chat.completion"' in body)


@pytest.mark.parametrize("answer", MALFORMED_ANSWERS.values(), ids=MALFORMED_ANSWERS.keys())
async def test_malformed_upstream_answer_with_no_fallback_is_a_provider_shaped_502(
    start_proxy: StartProxy, answer: bytes
) -> None:
    async with raw_upstream(reply(answer)) as raw:
        url = await start_proxy(one_attempt(upstream("broken", raw.url), provider="anthropic"))
        status, _, body = await fetch("POST", url + "/r/v1/messages", data=chat_body())
    assert (502, "anthropic") == (status, error_of(body))


# ---- the upstream's base path -----------------------------------------------------------------

ESCAPES = {
    "%2e%2e": b"/%2e%2e/secret",
    "mixed case": b"/%2E%2e/secret",
    "trailing slash": b"/v1/%2E%2e/",
    "encoded slash": b"/v1/..%2f..%2fsecret",
    "double encoding": b"/%252e%252e/secret",
    "backslashes": b"/v1\\..\\..\\secret",
    "encoded backslashes": b"/v1/%5c..%5c..%5csecret",
}


@pytest.mark.parametrize("tail", ESCAPES.values(), ids=ESCAPES.keys())
async def test_encoded_dot_segments_never_leave_the_upstream_base_path(
    fake: FakeUpstream, start_proxy: StartProxy, tail: bytes
) -> None:
    url = await start_proxy(config(upstream("fake", url_of(fake) + "/base")))
    request = b"GET /r" + tail + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    status, _, body = await raw_request(url, request)
    reached = [r.path for r in fake.requests]
    assert (400, "openai", []) == (status, error_of(body), reached)


# ---- credentials ------------------------------------------------------------------------------

CLIENT_KEYS = {
    "Authorization": "Bearer sk-client-openai",
    "x-api-key": "sk-ant-client",
    "api-key": "azure-client-key",
    "x-goog-api-key": "goog-client-key",
}


def credentials(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    names = {name.lower() for name in CLIENT_KEYS}
    return {name.lower(): value for name, value in headers.items() if name.lower() in names}


@pytest.mark.parametrize(
    ("provider", "path", "expected"),
    [
        ("openai", CHAT, {"authorization": "Bearer sk-configured"}),
        ("anthropic", "/v1/messages", {"x-api-key": "sk-configured"}),
    ],
)
async def test_upstream_with_a_key_receives_that_key_only(
    fake: FakeUpstream, start_proxy: StartProxy, provider: str, path: str, expected: dict[str, str]
) -> None:
    keyed = upstream("keyed", url_of(fake), api_key="sk-configured")
    url = await start_proxy(config(keyed, provider=provider))
    await fetch("POST", url + "/r" + path, data=chat_body(), headers={**JSON, **CLIENT_KEYS})
    assert expected == credentials(fake.requests[-1].headers)


@pytest.mark.parametrize(
    ("fallback_settings", "expected"),
    [
        ({}, {}),
        ({"pass_client_credentials": True}, {k.lower(): v for k, v in CLIENT_KEYS.items()}),
    ],
    ids=["not passed by default", "passed when the upstream says so"],
)
async def test_client_credentials_reach_a_fallback_upstream_only_when_it_says_so(
    fake: FakeUpstream,
    start_proxy: StartProxy,
    fallback_settings: dict[str, Any],
    expected: dict[str, str],
) -> None:
    dead = upstream("primary", f"http://127.0.0.1:{free_port()}")
    fallback = upstream("fallback", url_of(fake), **fallback_settings)
    url = await start_proxy(one_attempt(dead, fallback))
    headers = {**JSON, **CLIENT_KEYS}
    status, answer, _ = await fetch("POST", url + "/r" + CHAT, data=chat_body(), headers=headers)
    seen = credentials(fake.requests[-1].headers)
    assert (200, "fallback", expected) == (status, answer["x-proxy-upstream"], seen)
