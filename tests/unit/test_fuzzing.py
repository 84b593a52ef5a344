"""The fuzz harness itself: cases are reproducible and cover every route, the client reads
answers as a strict HTTP parser does, and the verdict flags exactly what the issue forbids."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from tests.fuzzing import (
    SECRET,
    TARGETS,
    Category,
    Ending,
    FuzzCase,
    Shape,
    generate,
    make_case,
)
from tests.fuzzing.client import Outcome, Reply, Response, Result, send
from tests.fuzzing.verdict import Violation, check

OPENAI_ERROR = {
    "error": {"message": "m", "type": "invalid_request_error", "param": None, "code": None}
}
ANTHROPIC_ERROR = {"type": "error", "error": {"type": "invalid_request_error", "message": "m"}}
JSON = ("content-type", "application/json")
REQUEST_ID = ("x-proxy-request-id", "0123abcd")


def test_a_case_depends_only_on_its_seed_and_index() -> None:
    """Not on the cases made before it, so any case of a long run can be rebuilt alone."""
    in_order = list(generate(11, 1000))
    one_by_one = [make_case(11, index) for index in reversed(range(1000))]
    assert in_order == one_by_one[::-1]
    assert [c.data for c in in_order[:20]] != [c.data for c in generate(12, 20)]


def test_forty_consecutive_cases_cover_every_category_on_every_route() -> None:
    expected = {(category, target) for category in Category for target in TARGETS}
    assert expected == {(c.category, c.target) for c in generate(7, 40, start=400)}


def test_every_case_carries_the_marked_credential() -> None:
    cases = [c for c in generate(3, 200) if c.category is Category.VALID]
    assert all(SECRET in c.data for c in cases)


def a_case(provider: str, ending: Ending = Ending.WAIT, shape: Shape = Shape.ROUTE) -> FuzzCase:
    target = next(t for t in TARGETS if t.provider == provider and not t.context)
    data = b"GET " + target.prefix.encode() + b"/v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
    return FuzzCase(1, 0, Category.VALID, target, "models", "plain", data, ending, shape)


def result(provider: str, response: Response, shape: Shape = Shape.ROUTE) -> Result:
    return Result(a_case(provider, shape=shape), Reply(Outcome.ANSWERED, response, response.body))


def answer(status: int, body: object, *headers: tuple[str, str]) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(status=status, headers=headers, body=raw)


VERDICTS = [
    ("openai error", "openai", answer(400, OPENAI_ERROR, JSON, REQUEST_ID), []),
    ("anthropic error", "anthropic", answer(404, ANTHROPIC_ERROR, JSON, REQUEST_ID), []),
    ("upstream success", "openai", answer(200, {"id": "x"}, JSON, REQUEST_ID), []),
    (
        "upstream stream",
        "anthropic",
        answer(200, b"event: ping\n\n", ("content-type", "text/event-stream"), REQUEST_ID),
        [],
    ),
    (
        "relayed error in the other shape",
        "anthropic",
        answer(404, OPENAI_ERROR, JSON, REQUEST_ID, ("x-proxy-upstream", "fake")),
        [],
    ),
    (
        "aiohttp's plain-text 400",
        "openai",
        answer(400, b"Invalid header value char", ("content-type", "text/plain")),
        [Violation.NO_REQUEST_ID, Violation.NOT_JSON],
    ),
    (
        "empty 500",
        "openai",
        answer(500, b"", REQUEST_ID),
        [Violation.NOT_JSON],
    ),
    (
        "relayed plain-text 500",
        "openai",
        answer(500, b"oops", ("content-type", "text/plain"), REQUEST_ID, ("x-proxy-upstream", "f")),
        [Violation.RELAYED_NOT_JSON],
    ),
    (
        "own error in the other provider's shape",
        "anthropic",
        answer(400, OPENAI_ERROR, JSON, REQUEST_ID),
        [Violation.WRONG_PROVIDER],
    ),
    (
        "JSON but no error shape",
        "openai",
        answer(400, {"detail": "bad"}, JSON, REQUEST_ID),
        [Violation.NOT_ERROR_SHAPE],
    ),
    (
        "reflected long request id",
        "openai",
        answer(200, {"id": "x"}, JSON, ("x-proxy-request-id", "r" * 8000)),
        [Violation.BAD_REQUEST_ID],
    ),
    (
        "echoed credential",
        "openai",
        answer(400, {**OPENAI_ERROR, "echo": SECRET.decode()}, JSON, REQUEST_ID),
        [Violation.SECRET_ECHOED],
    ),
]


@pytest.mark.parametrize(("provider", "response", "expected"), [v[1:] for v in VERDICTS],
                         ids=[v[0] for v in VERDICTS])  # fmt: skip
def test_verdict(provider: str, response: Response, expected: list[Violation]) -> None:
    assert expected == check(result(provider, response))


def test_either_shape_where_the_route_is_unknowable() -> None:
    response = answer(400, OPENAI_ERROR, JSON, REQUEST_ID)
    assert [] == check(result("anthropic", response, Shape.ANY))


@pytest.mark.parametrize(
    ("ending", "outcome", "expected"),
    [
        (Ending.WAIT, Outcome.CLOSED, [Violation.CLOSED]),
        (Ending.HALF_CLOSE, Outcome.CLOSED, []),
        (Ending.WAIT, Outcome.TIMED_OUT, [Violation.TIMED_OUT]),
        (Ending.HALF_CLOSE, Outcome.TIMED_OUT, [Violation.TIMED_OUT]),
        (Ending.ABORT, Outcome.ABORTED, []),
        (Ending.WAIT, Outcome.MALFORMED, [Violation.MALFORMED]),
    ],
)
def test_verdict_without_an_answer(
    ending: Ending, outcome: Outcome, expected: list[Violation]
) -> None:
    assert expected == check(Result(a_case("openai", ending), Reply(outcome)))


@contextlib.asynccontextmanager
async def canned_server(reply: bytes, *, close: bool = True) -> AsyncIterator[int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        writer.write(reply)
        await writer.drain()
        if close:
            writer.close()
        else:
            await asyncio.sleep(3600)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


CANNED = [
    (
        "interim then chunked",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        Outcome.ANSWERED,
    ),
    ("nothing", b"", Outcome.CLOSED),
    ("cut body", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", Outcome.MALFORMED),
    ("not http", b"garbage\r\n\r\n", Outcome.MALFORMED),
]


@pytest.mark.parametrize(("reply", "outcome"), [c[1:] for c in CANNED], ids=[c[0] for c in CANNED])
async def test_client_reads_like_a_strict_parser(reply: bytes, outcome: Outcome) -> None:
    async with canned_server(reply) as port:
        got = await send(a_case("openai"), "127.0.0.1", port, timeout=10)
        assert outcome == got.reply.outcome
        if got.reply.response is not None:
            assert (200, b"abc") == (got.reply.response.status, got.reply.response.body)


async def test_client_gives_up_on_a_silent_server() -> None:
    async with canned_server(b"", close=False) as port:
        got = await send(a_case("openai"), "127.0.0.1", port, timeout=0.2)
        assert Outcome.TIMED_OUT == got.reply.outcome
