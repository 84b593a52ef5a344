"""The malformed-request categories: each builder turns one valid request into one case."""

from __future__ import annotations

import copy
import functools
import gzip
import random
import zlib
from collections.abc import Callable
from enum import StrEnum

from .bodies import dumps
from .wire import MAX_BODY_BYTES, SECRET, Draft, Ending, Request, Shape, chunk, set_path

Builder = Callable[[random.Random, Request], Draft]
_R, _A = Shape.ROUTE, Shape.ANY  # for the table of odd headers


class Category(StrEnum):
    VALID = "valid"
    BAD_JSON = "bad_json"
    DEEP_NESTING = "deep_nesting"
    WRONG_TYPES = "wrong_types"
    HEADERS = "headers_and_sizes"
    TRUNCATED = "truncated_body"
    BAD_CHUNKED = "bad_chunked"
    NON_UTF8 = "non_utf8"
    PATHS = "methods_and_paths"
    CONTENT_ENCODING = "content_encoding"


# ---- valid (the control group: the harness must see upstream answers here) ----------------


def valid(rng: random.Random, req: Request) -> Draft:
    if req.body and rng.random() < 0.3:
        return Draft("chunked", req.chunked(chunk(req.body, rng)))
    if rng.random() < 0.1:  # the client hangs up while the proxy works on it
        return Draft("client_gone", req.frame(), Ending.ABORT)
    return Draft("plain", req.frame())


# ---- bad JSON -------------------------------------------------------------------------------

_GARBAGE = (b"}", b",", b"]", b"garbage", b"\x00", b"{}", b" \n x", b"\x1b[0m")
_ESCAPES = (rb'"\x41"', rb'"\u12"', rb'"\uZZZZ"', rb'"\'"', b'"\x01"', b'"a\nb"', b'"\\')
_SURROGATES = (rb'"\ud800"', rb'"\udfff"', rb'"\ud800\u0041"', rb'"\ud800\ud800"', rb'"a\udbff"')
_NON_FINITE = (b"NaN", b"Infinity", b"-Infinity", b"1e999999", b"-1e999999", b"1" * 5000)
_NOT_OBJECTS = (b"", b" ", b"null", b"[]", b'"text"', b"123", b"true", b"{}{}", b"{'model': 1}")
_JSON_KINDS = (
    "truncated", "trailing", "escape", "surrogate", "non_finite", "bom", "utf16", "not_object",
)  # fmt: skip


def bad_json(rng: random.Random, req: Request) -> Draft:
    req = req.with_body(rng)
    body, where = req.body, rng.choice((("messages", -1, "content"), ("model",), ("metadata",)))
    kind = rng.choice(_JSON_KINDS)
    if kind == "truncated":
        body = body[: rng.randrange(1, len(body))]
    elif kind == "trailing":
        body += rng.choice(_GARBAGE)
    elif kind == "escape":
        body = req.spliced(rng, where, rng.choice(_ESCAPES))
    elif kind == "surrogate":
        body = req.spliced(rng, where, rng.choice(_SURROGATES))
    elif kind == "non_finite":
        where = rng.choice((("max_tokens",), ("temperature",), ("messages", 0, "content")))
        body = req.spliced(rng, where, rng.choice(_NON_FINITE))
    elif kind == "bom":
        body = b"\xef\xbb\xbf" + body
    elif kind == "utf16":
        body = body.decode().encode(rng.choice(("utf-16", "utf-16-le", "utf-32")))
    else:
        body = rng.choice(_NOT_OBJECTS)
    return Draft(kind, req.frame(body=body))


# ---- deep nesting ---------------------------------------------------------------------------


def deep_nesting(rng: random.Random, req: Request) -> Draft:
    req = req.with_body(rng)
    depth = int(10 ** rng.uniform(1, 5))  # 10 .. 100,000 levels, log-uniform
    form = rng.choice(("arrays", "objects", "mixed", "unclosed"))
    if form == "arrays":
        nest = b"[" * depth + b"]" * depth
    elif form == "objects":
        nest = b'{"a":' * depth + b"1" + b"}" * depth
    elif form == "mixed":
        nest = b'[{"a":' * (depth // 2) + b"null" + b"}]" * (depth // 2)
    else:
        nest = b"[" * depth
    place = rng.choice(("body", "messages", "content", "metadata"))
    if place == "body":
        body = nest
    elif place == "messages":
        body = req.spliced(rng, ("messages",), nest)
    elif place == "content":
        body = req.spliced(rng, ("messages", -1, "content"), nest)
    else:
        body = req.spliced(rng, ("metadata",), nest)
    return Draft(f"{form}_in_{place}", req.frame(body=body))


# ---- wrong types ----------------------------------------------------------------------------

_WRONG: tuple[object, ...] = (
    "yes", "", 0, -1, 1.5, 1e308, 10**30, True, None, [], {}, [1, "a", None],
    {"a": {"b": []}}, "x" * 5000, [[["deep"]]], [{"type": 5}],
)  # fmt: skip
_FIELDS: tuple[tuple[str | int, ...], ...] = (
    ("messages",),
    ("messages", 0),
    ("messages", -1, "content"),
    ("messages", -1, "role"),
    ("messages", 0, "content", 0),
    ("messages", 0, "content", 0, "text"),
    ("messages", -1, "tool_calls"),
    ("messages", -1, "name"),
    ("model",),
    ("max_tokens",),
    ("max_completion_tokens",),
    ("max_output_tokens",),
    ("stream",),
    ("stream_options",),
    ("tools",),
    ("tools", 0, "function"),
    ("system",),
    ("input",),
    ("response_format",),
)


def wrong_types(rng: random.Random, req: Request) -> Draft:
    req = req.with_body(rng)
    data = req.valid_body(rng)
    changes = rng.randint(1, 3)
    for _ in range(changes):  # a copy: a later change may write into a value placed here
        set_path(data, rng.choice(_FIELDS), copy.deepcopy(rng.choice(_WRONG)))
    if rng.random() < 0.2:  # many messages, so the budget must count (and trim) the odd ones
        messages = data.get("messages")
        if isinstance(messages, list):
            data["messages"] = messages * rng.randint(2, 20)
    return Draft(f"{changes}_fields", req.frame(body=dumps(rng, data)))


# ---- headers and URLs -----------------------------------------------------------------------


def _token(rng: random.Random) -> bytes:
    """A header value the parser accepts (the point is the count, not the bytes)."""
    return b"v-%d" % rng.randrange(1 << 32)


def _header_count(rng: random.Random, req: Request) -> Draft:
    n = rng.choice((50, 100, 120, 127, 128, 129, 200, 1000))
    extra = [b"X-Fuzz-%d: %s" % (i, _token(rng)) for i in range(n)]
    shape = Shape.ROUTE if n <= 100 else Shape.ANY  # aiohttp's limit is 128 header lines
    return Draft(f"{n}_headers", req.frame(extra=extra), shape=shape)


def _header_size(rng: random.Random, req: Request) -> Draft:
    size = rng.choice((4096, 8000, 8180, 8189, 8190, 8191, 8200, 16384, 65536))
    name = rng.choice((b"X-Big", b"Authorization", b"x-request-id", b"User-Agent"))
    if name == b"Authorization":  # the credential itself is the over-long line
        value = b"Bearer " + SECRET + b"a" * size
    else:
        value = b"v" * size
    shape = Shape.ROUTE if size <= 4096 else Shape.ANY  # near the field limit: maybe unrouted
    if rng.random() < 0.2:
        return Draft(f"name_{size}", req.frame(extra=[b"X-" + b"n" * size + b": v"]), shape=shape)
    return Draft(f"value_{size}", req.frame(extra=[name + b": " + value]), shape=shape)


def _header_total(rng: random.Random, req: Request) -> Draft:
    n, size = rng.choice(((20, 8000), (100, 4000), (100, 8000)))
    extra = [b"X-Fill-%d: %s" % (i, b"f" * size) for i in range(n)]
    return Draft(f"{n}x{size}", req.frame(extra=extra), shape=Shape.ANY)


def _long_url(rng: random.Random, req: Request) -> Draft:
    size = rng.choice((2000, 8000, 8150, 8190, 8200, 20000, 100000))
    shape = Shape.ROUTE if size < 8000 else Shape.ANY  # over the line limit: refused unrouted
    if rng.random() < 0.5:
        return Draft(f"query_{size}", req.at(req.path + b"?q=" + b"a" * size).frame(), shape=shape)
    return Draft(f"path_{size}", req.at(req.path + b"/x" * (size // 2)).frame(), shape=shape)


_ODD_HEADERS: tuple[tuple[str, bytes, Shape], ...] = (
    # parsed fine: the route is known, so a proxy error must be in its shape
    ("request_id_long", b"x-request-id: " + b"r" * 8000, _R),
    ("request_id_high", b"x-request-id: id-\xc3\xa9-\xff", _R),
    ("request_id_spaces", b"x-request-id:    ", _R),
    ("expect_continue", b"Expect: 100-continue", _R),
    ("upgrade_ws", b"Upgrade: websocket", _R),
    ("max_wait_nan", b"x-proxy-max-wait: nan", _R),
    ("max_wait_huge", b"x-proxy-max-wait: 1e309", _R),
    ("max_wait_neg", b"x-proxy-max-wait: -1", _R),
    ("accept_encoding_odd", b"Accept-Encoding: gzip;q=abc, *;q=-1", _R),
    ("cookie", b"Cookie: session=abc; " + b"c=" * 100, _R),
    ("expect_unknown", b"Expect: garbage", _R),
    # refused by the HTTP parser before any routing
    ("host_twice", b"Host: other.example", _A),
    ("content_type_twice", b"Content-Type: text/plain", _A),
    ("request_id_ctl", b"x-request-id: abc\x01\x7fdef", _A),
    ("nul_in_credential", b"Authorization: Bearer " + SECRET + b"\x00", _A),
    ("del_in_api_key", b"x-api-key: " + SECRET + b"\x7f", _A),
    ("obs_fold", b"X-Folded: a\r\n  continued", _A),
    ("space_before_colon", b"X-Space : v", _A),
    ("no_colon", b"X-No-Colon v", _A),
    ("empty_name", b": v", _A),
    ("bare_cr", b"X-CR: a\rb", _A),
)


_CONTENT_TYPES = (b"application/json; charset=utf-16", b"text/plain", b"", b"multipart/form-data")


def _odd_header(rng: random.Random, req: Request) -> Draft:
    if rng.random() < 0.2:  # the body stays JSON, its label does not
        ctype = rng.choice(_CONTENT_TYPES)
        lines = [h for h in req.headers() if not h.startswith(b"Content-Type")]
        lines += [b"Content-Type: " + ctype, b"Content-Length: %d" % len(req.body)]
        return Draft("content_type", req.frame(lines=lines))
    kind, line, shape = rng.choice(_ODD_HEADERS)
    return Draft(kind, req.frame(extra=[line]), shape=shape)


_LENGTHS = (b"-5", b"+12", b"0x10", b"abc", b"99999999999999999999999", b"1 2", b"", b"1e3")


def _content_length(rng: random.Random, req: Request) -> Draft:
    req = req.with_body(rng)
    kind = rng.choice(("invalid", "duplicate", "over_limit"))
    shape = Shape.ROUTE if kind == "over_limit" else Shape.ANY
    lines = req.headers()
    if kind == "invalid":
        lines.append(b"Content-Length: " + rng.choice(_LENGTHS))
    elif kind == "duplicate":
        lines += [
            b"Content-Length: %d" % len(req.body),
            b"Content-Length: %d" % (len(req.body) + 1),
        ]
    else:  # refused by its declared length before the body arrives
        lines.append(b"Content-Length: %d" % rng.choice((1 << 21, 1 << 30, 1 << 40)))
    return Draft(f"content_length_{kind}", req.frame(lines=lines), shape=shape)


def _huge_body(rng: random.Random, req: Request) -> Draft:
    """One huge JSON string value; the largest is just over the body limit (a 413)."""
    req = req.with_body(rng)
    name, size = rng.choice((("64k", 1 << 16), ("512k", 1 << 19), ("over_limit", MAX_BODY_BYTES)))
    body = req.spliced(rng, ("messages", -1, "content"), b'"' + b"x" * size + b'"')
    return Draft(f"huge_body_{name}", req.frame(body=body))


_HEADER_BUILDERS: tuple[Builder, ...] = (
    _huge_body,
    _header_count,
    _header_size,
    _header_total,
    _long_url,
    _odd_header,
    _content_length,
)


def headers(rng: random.Random, req: Request) -> Draft:
    return rng.choice(_HEADER_BUILDERS)(rng, req)


# ---- truncated bodies -----------------------------------------------------------------------


def truncated(rng: random.Random, req: Request) -> Draft:
    req = req.with_body(rng)
    ending = rng.choice((Ending.HALF_CLOSE, Ending.HALF_CLOSE, Ending.ABORT))
    kind = rng.choice(("short_body", "chunked_unfinished", "head_cut", "nothing"))
    if kind == "short_body":
        sent = rng.randrange(0, len(req.body))
        missing = rng.choice((1, 100, 1 << 16, 1 << 19))
        data = req.frame(body=req.body[:sent], length=len(req.body) + missing)
    elif kind == "chunked_unfinished":
        whole = chunk(req.body, rng)
        data = req.chunked(whole[: rng.randrange(0, len(whole) - 2)])
    elif kind == "head_cut":
        full = req.frame()
        head_end = full.index(b"\r\n\r\n")
        data = full[: rng.randrange(1, head_end + 2)]
    else:
        data = b""
    return Draft(kind, data, ending, Shape.ANY)


# ---- bad chunked encoding -------------------------------------------------------------------

_SIZES = (b"zz", b"-1", b"0x5", b"+5", b" 5", b"5 ", b"", b"5\t", b"f" * 20, b"1" * 40)
_CHUNKED_KINDS = (
    "bad_size", "no_crlf", "longer_data", "lf_only", "nul_extension", "bad_trailer",
    "with_length", "te_twice", "te_not_last", "te_unknown", "garbage_after", "shorter_data",
)  # fmt: skip


def bad_chunked(rng: random.Random, req: Request) -> Draft:
    req = req.with_body(rng)
    body = req.body
    head, tail = body[: len(body) // 2], body[len(body) // 2 :]
    good_head = b"%x\r\n%s\r\n" % (len(head), head)
    kind = rng.choice(_CHUNKED_KINDS)
    extra: list[bytes] = []
    ending, coding = Ending.WAIT, b"chunked"
    if kind == "bad_size":
        chunks = good_head + rng.choice(_SIZES) + b"\r\n" + tail + b"\r\n0\r\n\r\n"
    elif kind == "no_crlf":
        chunks = b"%x\r\n%sXX0\r\n\r\n" % (len(head), head)
    elif kind == "longer_data":
        chunks = b"%x\r\n%s%s\r\n0\r\n\r\n" % (max(1, len(head) - 3), head, tail)
    elif kind == "lf_only":
        chunks = b"%x\n%s\n0\n\n" % (len(body), body)
    elif kind == "nul_extension":
        chunks = b"%x;\x00\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    elif kind == "bad_trailer":
        chunks = chunk(body, rng)[:-2] + b"X\x00: v\r\n\r\n"
    elif kind == "shorter_data":  # the declared size is never reached
        chunks = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body) + 100, body)
        ending = Ending.HALF_CLOSE
    else:
        chunks = chunk(body, rng)
        if kind == "with_length":
            extra = [b"Content-Length: %d" % len(body)]
        elif kind == "te_twice":
            extra = [b"Transfer-Encoding: chunked"]
        elif kind == "garbage_after":
            chunks += b"GARBAGE /x HTTP/1.1\r\n\r\n"
        coding = {"te_not_last": b"chunked, identity", "te_unknown": b"xchunked"}.get(kind, coding)
    return Draft(kind, req.chunked(chunks, extra=extra, coding=coding), ending, Shape.ANY)


# ---- non-UTF-8 bytes ------------------------------------------------------------------------

_BAD_UTF8 = (b"\xff", b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xe9t\xe9", b"\x80")


def non_utf8(rng: random.Random, req: Request) -> Draft:
    bad = rng.choice(_BAD_UTF8)
    place = rng.choice(("body", "model", "header", "credential", "header_name", "path", "query"))
    if place in ("body", "model"):
        req = req.with_body(rng)
        where = ("model",) if place == "model" else ("messages", -1, "content")
        return Draft(place, req.frame(body=req.spliced(rng, where, b'"a' + bad + b'z"')))
    if place == "header":
        return Draft(place, req.frame(extra=[b"X-Custom: A" + bad + b"Z"]))
    if place == "credential":
        anthropic = req.target.provider == "anthropic"
        line = (b"x-api-key: " if anthropic else b"Authorization: Bearer ") + SECRET + bad
        lines = [h for h in req.headers() if SECRET not in h] + [line]
        if req.body:
            lines.append(b"Content-Length: %d" % len(req.body))
        return Draft(place, req.frame(lines=lines), shape=Shape.ANY)
    if place == "header_name":
        return Draft(place, req.frame(extra=[b"X-" + bad + b": v"]), shape=Shape.ANY)
    if place == "path":
        path = req.path + rng.choice((bad, b"/%ff%fe", b"/%c0%ae%c0%ae", b"/%00", b"/%e2%80%ae"))
        return Draft(place, req.at(path).frame(), shape=Shape.ANY)
    query = req.path + b"?q=" + rng.choice((bad, b"%ff%fe", b"%zz", b"%"))
    return Draft(place, req.at(query).frame(), shape=Shape.ANY)


# ---- odd methods and paths ------------------------------------------------------------------

_UNKNOWN_ROUTES = (
    b"/", b"/v1/chat/completions", b"/openaix/v1/chat/completions", b"/OPENAI/v1/models",
    b"/anthropic-ctxx/v1/messages", b"/api", b"/openai-ctx-/v1", b"/%6fpenai/v1/models",
)  # fmt: skip
_ESCAPES_BASE = (
    b"/v1/%2e%2e/%2e%2e/secret", b"/%2E%2e/", b"/..%2f..%2fsecret", b"/%252e%252e/secret",
    b"/v1\\..\\..\\secret", b"/v1/%5c..%5c..%5csecret", b"/.%2e/secret", b"/%2e",
    b"/v1/..;/secret", b"/v1/%2e%2e%2fsecret", b"/./v1/models", b"//v1//models",
)  # fmt: skip
_STAYS_INSIDE = (b"/v1/x/../models", b"/v1/./models", b"/v1/models/..")
_METHODS = (b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"TRACE", b"PROPFIND", b"BREW", b"M-SEARCH")
_REQUEST_LINES = (
    b"post {path} HTTP/1.1", b"G\x00T {path} HTTP/1.1", b"POST  {path} HTTP/1.1",
    b"POST {path} HTTP/1.0", b"POST {path} HTTP/2.0", b"POST {path} HTTP/9.9",
    b"POST {path} HTTP/1.1 extra", b"POST {path}", b"OPTIONS * HTTP/1.1",
    b"CONNECT 127.0.0.1:1 HTTP/1.1", b"POST http://evil.example{path} HTTP/1.1",
    b"POST {path}#fragment HTTP/1.1", b"POST \t{path} HTTP/1.1", b"P" * 9000 + b" {path} HTTP/1.1",
)  # fmt: skip


def paths(rng: random.Random, req: Request) -> Draft:
    kind = rng.choice(("unknown_route", "escape", "inside", "method", "request_line", "slashes"))
    prefix = req.target.prefix.encode()
    shape = Shape.ROUTE
    if kind == "unknown_route":
        path, shape = rng.choice(_UNKNOWN_ROUTES), Shape.ANY
    elif kind == "escape":
        path = prefix + rng.choice(_ESCAPES_BASE)
    elif kind == "inside":
        path = prefix + rng.choice(_STAYS_INSIDE)
    elif kind == "slashes":
        lead = rng.choice((b"//", b"/../", b"/./"))
        path, shape = lead + prefix[1:] + req.endpoint.path, Shape.ANY
    else:
        path = req.path
    odd = req.at(path, rng.choice(_METHODS) if kind == "method" else None)
    if kind == "request_line":
        line = rng.choice(_REQUEST_LINES).replace(b"{path}", req.path)
        lines = [*odd.headers(json_body=bool(req.body)), b"Content-Length: %d" % len(req.body)]
        return Draft(kind, odd.head(lines, start=line) + req.body, shape=Shape.ANY)
    return Draft(kind, odd.frame(), shape=shape)


# ---- Content-Encoding -----------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _bomb(size: int, layers: int) -> bytes:
    """A small gzip bomb of ``size`` bytes of JSON; cached, since deflating megabytes is slow."""
    data = b'{"model":"gpt-4o","messages":[{"role":"user","content":"' + b"a" * size + b'"}]}'
    for _ in range(layers):
        data = gzip.compress(data, compresslevel=9, mtime=0)
    return data


_ENCODING_KINDS = (
    "gzip_valid", "gzip_not_gzip", "gzip_truncated", "gzip_trailing", "deflate_valid",
    "deflate_invalid", "br_invalid", "zstd_invalid", "unknown", "double", "bomb",
)  # fmt: skip


def content_encoding(rng: random.Random, req: Request) -> Draft:
    req = req.with_body(rng)
    body, zipped = req.body, gzip.compress(req.body, mtime=0)
    kind = rng.choice(_ENCODING_KINDS)
    encoding = b"gzip"
    if kind == "gzip_valid":
        body = zipped
    elif kind == "gzip_truncated":
        body = zipped[: rng.randrange(1, len(zipped) - 1)]
    elif kind == "gzip_trailing":
        body = zipped + b"trailing"
    elif kind == "deflate_valid":
        body, encoding = zlib.compress(body), b"deflate"
    elif kind == "deflate_invalid":
        encoding = b"deflate"
    elif kind in ("br_invalid", "zstd_invalid"):
        encoding = kind.split("_")[0].encode()
    elif kind == "unknown":
        encoding = rng.choice((b"foo", b"GZIP", b"identity, gzip", b"compress"))
    elif kind == "double":
        body, encoding = gzip.compress(zipped, mtime=0), b"gzip, gzip"
    elif kind == "bomb":
        layers = rng.choice((1, 1, 2))
        body = _bomb(rng.choice((1 << 18, 1 << 20, 1 << 21, 1 << 23)), layers)
        encoding = b", ".join([b"gzip"] * layers)
    shape = Shape.ANY if encoding in (b"br", b"zstd") else Shape.ROUTE  # no decoder installed
    return Draft(kind, req.frame(extra=[b"Content-Encoding: " + encoding], body=body), shape=shape)


BUILDERS: dict[Category, Builder] = {
    Category.VALID: valid,
    Category.BAD_JSON: bad_json,
    Category.DEEP_NESTING: deep_nesting,
    Category.WRONG_TYPES: wrong_types,
    Category.HEADERS: headers,
    Category.TRUNCATED: truncated,
    Category.BAD_CHUNKED: bad_chunked,
    Category.NON_UTF8: non_utf8,
    Category.PATHS: paths,
    Category.CONTENT_ENCODING: content_encoding,
}
