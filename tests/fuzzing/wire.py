"""Routes, raw request framing, and what a case says about the answer it may get."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from .bodies import Endpoint, Provider, dumps, pick_endpoint

SECRET = b"sk-fuzz-0123456789abcdef-SECRET"
"""Every case carries it as the client's credential: it must never appear in any output."""

MAX_BODY_BYTES = 1 << 20
"""``limits.max_body_bytes`` for the fuzz config; some bodies and bombs exceed it."""

_PLACEHOLDER = "__FUZZ__"


class Ending(StrEnum):
    """How the client ends its side of the connection (see the package docstring)."""

    WAIT = "wait"
    HALF_CLOSE = "half_close"
    ABORT = "abort"


class Shape(StrEnum):
    """Whose error shape a proxy error may take: the route's, or either provider's."""

    ROUTE = "route"
    ANY = "any"


@dataclass(frozen=True, slots=True)
class Target:
    prefix: str
    provider: Provider
    context: bool


TARGETS = (
    Target("/openai", "openai", False),
    Target("/openai-ctx", "openai", True),
    Target("/anthropic", "anthropic", False),
    Target("/anthropic-ctx", "anthropic", True),
)


@dataclass(frozen=True, slots=True)
class Draft:
    """What a category builder makes: the raw request and what may come back."""

    kind: str
    data: bytes
    ending: Ending = Ending.WAIT
    shape: Shape = Shape.ROUTE


@dataclass(frozen=True, slots=True)
class Request:
    """A valid request before it becomes bytes; a case changes one part and frames it."""

    target: Target
    endpoint: Endpoint
    method: bytes
    path: bytes
    body: bytes

    @classmethod
    def start(cls, rng: random.Random, target: Target) -> Request:
        endpoint = pick_endpoint(rng, target.provider)
        body = dumps(rng, endpoint.body(rng)) if endpoint.body is not None else b""
        path = target.prefix.encode() + endpoint.path
        return cls(target, endpoint, endpoint.method, path, body)

    def with_body(self, rng: random.Random) -> Request:
        """This request, made a POST with a body when its endpoint is a GET."""
        if self.body:
            return self
        body = dumps(rng, self.valid_body(rng))
        return replace(self, method=b"POST", body=body)

    def at(self, path: bytes, method: bytes | None = None) -> Request:
        """This request sent to another path (and method)."""
        return replace(self, path=path, method=self.method if method is None else method)

    def valid_body(self, rng: random.Random) -> dict[str, Any]:
        return self.endpoint.valid_body(rng, self.target.provider)

    def headers(self, extra: Sequence[bytes] = (), *, json_body: bool = True) -> list[bytes]:
        """Host, ``Connection: close``, JSON type, the provider's credential, then ``extra``."""
        lines = [b"Host: 127.0.0.1", b"Connection: close"]
        if json_body:
            lines.append(b"Content-Type: application/json")
        if self.target.provider == "anthropic":
            lines += [b"x-api-key: " + SECRET, b"anthropic-version: 2023-06-01"]
        else:
            lines.append(b"Authorization: Bearer " + SECRET)
        return [*lines, *extra]

    def frame(
        self,
        *,
        extra: Sequence[bytes] = (),
        body: bytes | None = None,
        length: int | None = None,
        lines: Sequence[bytes] | None = None,
    ) -> bytes:
        """Content-Length framing: ``length`` overrides the declared length, ``lines`` all the
        headers (then no Content-Length is added)."""
        payload = self.body if body is None else body
        if lines is None:
            lines = self.headers(extra, json_body=bool(payload))
            if payload or self.method != b"GET" or length is not None:
                lines.append(b"Content-Length: %d" % (len(payload) if length is None else length))
        return self.head(lines) + payload

    def chunked(
        self, chunks: bytes, *, extra: Sequence[bytes] = (), coding: bytes = b"chunked"
    ) -> bytes:
        """``chunks`` is the raw chunked body, well-formed or not; ``coding`` the value of the
        Transfer-Encoding header, which comes after ``extra``."""
        return self.head([*self.headers(extra), b"Transfer-Encoding: " + coding]) + chunks

    def head(self, lines: Sequence[bytes], start: bytes | None = None) -> bytes:
        """Request line (``start`` replaces it) and header ``lines``, up to the blank line."""
        first = self.method + b" " + self.path + b" HTTP/1.1" if start is None else start
        return first + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"

    def spliced(self, rng: random.Random, path: Sequence[str | int], raw: bytes) -> bytes:
        """A valid body whose value at ``path`` is replaced by ``raw`` bytes, unchecked."""
        data = self.valid_body(rng)
        set_path(data, path, _PLACEHOLDER)
        return dumps(rng, data).replace(json.dumps(_PLACEHOLDER).encode(), raw, 1)


def chunk(data: bytes, rng: random.Random) -> bytes:
    """``data`` as a well-formed chunked body in random pieces, with the last chunk."""
    out, i = b"", 0
    while i < len(data):
        n = min(rng.randint(1, max(1, len(data) // 3)), len(data) - i)
        out += b"%x\r\n%s\r\n" % (n, data[i : i + n])
        i += n
    return out + b"0\r\n\r\n"


def set_path(data: Any, path: Sequence[str | int], value: Any) -> None:
    """``data[path...] = value`` as far as the path exists (ints index lists modulo length);
    a missing key on the way becomes a dict, so the value always lands somewhere."""
    for key in path[:-1]:
        if isinstance(key, int):
            if not isinstance(data, list) or not data:
                break
            data = data[key % len(data)]
        elif isinstance(data, dict):
            if not isinstance(data.get(key), dict | list):
                data[key] = {}
            data = data[key]
    last = path[-1]
    if isinstance(data, list) and data:
        data[(last if isinstance(last, int) else 0) % len(data)] = value
    elif isinstance(data, dict):
        data[str(last)] = value
