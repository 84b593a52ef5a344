"""SSE parsing per the WHATWG EventSource rules, across arbitrary chunk boundaries."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.sse import SSEEvent, SSEParser


def parse(stream: bytes, *, sizes: list[int] | None = None, **kw: int) -> list[SSEEvent]:
    """Feed ``stream`` whole, or in pieces of the given sizes (the last piece takes the rest)."""
    parser = SSEParser(**kw)
    events: list[SSEEvent] = []
    pos = 0
    for size in sizes or []:
        events += parser.feed(stream[pos : pos + size])
        pos += size
    events += parser.feed(stream[pos:])
    return events


def ev(data: str, event: str = "message", id: str | None = None) -> SSEEvent:
    return SSEEvent(event=event, data=data, id=id)


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        pytest.param(b"data: a\n\n", [ev("a")], id="lf"),
        pytest.param(b"data: a\r\n\r\n", [ev("a")], id="crlf"),
        pytest.param(b"data: a\r\r", [ev("a")], id="cr"),
        pytest.param(
            b"data: a\r\n\ndata: b\r\rdata: c\n\r\n",
            [ev("a"), ev("b"), ev("c")],
            id="mixed-line-endings",
        ),
        pytest.param(b"data: one\ndata: two\n\n", [ev("one\ntwo")], id="multi-line-data"),
        pytest.param(b": ping\n\ndata: x\n: mid-event comment\n\n", [ev("x")], id="comments"),
        pytest.param(b"data\n\n", [ev("")], id="field-without-colon-is-empty-value"),
        pytest.param(b"data:\n\n", [ev("")], id="empty-data-still-dispatches"),
        pytest.param(b"data:\ndata:\n\n", [ev("\n")], id="two-empty-data-lines"),
        pytest.param(b"data:no-space\n\n", [ev("no-space")], id="no-leading-space"),
        pytest.param(b"data:  two spaces\n\n", [ev(" two spaces")], id="only-one-space-stripped"),
        pytest.param(b"data: a:b: c\n\n", [ev("a:b: c")], id="colon-inside-value"),
        pytest.param(b"event: delta\ndata: x\n\n", [ev("x", "delta")], id="named-event"),
        pytest.param(b"event: x\n\ndata: y\n\n", [ev("y")], id="event-without-data-not-sent"),
        pytest.param(b"event\ndata: y\n\n", [ev("y")], id="empty-event-name-is-message"),
        pytest.param(
            b"id: 7\ndata: a\n\ndata: b\n\n",
            [ev("a", id="7"), ev("b", id="7")],
            id="last-event-id-persists",
        ),
        pytest.param(
            b"id: 1\ndata: a\n\nid\ndata: b\n\n", [ev("a", id="1"), ev("b", id="")], id="id-reset"
        ),
        pytest.param(
            b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
            [ev("a", id="1"), ev("b", id="1")],
            id="id-with-nul-ignored",
        ),
        pytest.param(b"\xef\xbb\xbfdata: a\n\n", [ev("a")], id="bom-at-start-stripped"),
        pytest.param(
            b"data: a\n\n\xef\xbb\xbfdata: b\n\n", [ev("a")], id="bom-later-makes-unknown-field"
        ),
        pytest.param(b"foo: bar\ndata: a\n\n", [ev("a")], id="unknown-field-ignored"),
        pytest.param(b"data: a\n\ndata: unterminated", [ev("a")], id="open-event-not-sent"),
        pytest.param(b"data: \xff\xfe ok\n\n", [ev("\ufffd\ufffd ok")], id="invalid-utf8-replaced"),
        pytest.param("data: héllo wörld 🎉\n\n".encode(), [ev("héllo wörld 🎉")], id="utf8"),
    ],
)
def test_parses_stream_per_spec(stream: bytes, expected: list[SSEEvent]) -> None:
    assert expected == parse(stream)


STREAM = (
    "\ufeff: hello\r\nevent: a\r\ndata: héllo\r\ndata: wörld 🎉\r\nid: 1\r\n\r\n"
    "data: second\rdata: line\r\r"
    "data\nevent: b\n\n"
    'retry: 300\ndata: {"x": "日本"}\n\n'
).encode()


def test_every_single_split_gives_the_same_events() -> None:
    expected = parse(STREAM)
    assert [
        ev("héllo\nwörld 🎉", "a", "1"),
        ev("second\nline", id="1"),
        ev("", "b", "1"),
        ev('{"x": "日本"}', id="1"),
    ] == expected
    for cut in range(len(STREAM) + 1):
        assert expected == parse(STREAM, sizes=[cut]), cut


def test_byte_by_byte_gives_the_same_events() -> None:
    assert parse(STREAM) == parse(STREAM, sizes=[1] * len(STREAM))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=12), max_size=40))
def test_random_multi_splits_give_the_same_events(sizes: list[int]) -> None:
    assert parse(STREAM) == parse(STREAM, sizes=sizes)


def test_cr_at_chunk_end_then_lf_is_one_line_break() -> None:
    parser = SSEParser()
    assert [] == parser.feed(b"data: a\r")
    assert [] == parser.feed(b"\ndata: b\r")
    assert [ev("a\nb")] == parser.feed(b"\n\r\n")


def test_event_is_dispatched_at_a_cr_without_waiting_for_a_possible_lf() -> None:
    parser = SSEParser()
    assert [ev("a")] == parser.feed(b"data: a\r\n\r")
    assert [] == parser.feed(b"\n")  # that LF completes the CRLF; it is no second blank line
    assert [ev("b")] == parser.feed(b"data: b\n\n")


def test_retry_field_is_recorded_when_numeric() -> None:
    parser = SSEParser()
    parser.feed(b"retry: 1500\n\nretry: soon\n\n")
    assert 1500 == parser.retry


def test_oversized_event_is_dropped_and_parser_resyncs() -> None:
    big = b"data: " + b"x" * 5000 + b"\n"
    stream = b"data: before\n\n" + big + b"data: more\n\ndata: after\n\n"
    expected = [ev("before"), ev("after")]
    assert expected == parse(stream, max_event_chars=1000)
    assert expected == parse(stream, sizes=[7] * (len(stream) // 7), max_event_chars=1000)


def test_oversized_data_over_many_lines_is_dropped() -> None:
    stream = b"data: 0123456789\n" * 200 + b"\ndata: after\n\n"
    assert [ev("after")] == parse(stream, max_event_chars=1000)


def test_unterminated_line_does_not_grow_memory_without_bound() -> None:
    parser = SSEParser(max_event_chars=1 << 20)
    piece = b"x" * (64 << 10)
    tracemalloc.start()
    try:
        parser.feed(b"data: ")
        for _ in range(320):  # 20 MiB without a line break
            parser.feed(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    assert [ev("ok")] == parser.feed(b"\n\ndata: ok\n\n")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=50), max_size=10))
def test_garbage_never_raises_and_split_does_not_matter(blob: bytes, sizes: list[int]) -> None:
    assert parse(blob) == parse(blob, sizes=sizes)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "data: a",
                "data",
                "data:é",
                "event: e",
                ": c",
                "id: 1",
                "",
                "\r",
                "\n",
                "\r\n",
                "data: 🎉",
                "retry: 5",
                "x",
            ]
        ),
        max_size=30,
    ),
    st.lists(st.integers(min_value=0, max_value=9), max_size=20),
)
def test_sse_shaped_input_split_does_not_matter(parts: list[str], sizes: list[int]) -> None:
    stream = "\n".join(parts).encode()
    assert parse(stream) == parse(stream, sizes=sizes)


def test_whole_events_in_one_pass_equal_the_line_by_line_parse() -> None:
    """Chunks of whole one-line ``data:`` events take the one-pass path; byte by byte takes
    the line-by-line one. Both must give the same events, and a chunk with anything else in
    it (a name, an id, a comment, two data lines) falls back without losing state."""
    stream = [
        b'data: {"a":1}\n\n',
        b'data:{"b":2}\n\ndata: \n\n',
        b"id: 7\n\n",
        b"data: after-id\n\n",
        b"event: ping\ndata: x\n\ndata: plain\n\n",
        b": comment\n\ndata: 1\ndata: 2\n\n",
        b"data: caf\xc3\xa9\n\n",
    ]
    whole = SSEParser()
    by_chunk = [e for chunk in stream for e in whole.feed(chunk)]
    bytewise = SSEParser()
    by_byte = [e for b in b"".join(stream) for e in bytewise.feed(bytes([b]))]
    assert by_chunk == by_byte
    assert [e.data for e in by_chunk] == [
        '{"a":1}',
        '{"b":2}',
        "",
        "after-id",
        "x",
        "plain",
        "1\n2",
        "café",
    ]
    assert by_chunk[3].id == "7" and by_chunk[0].id is None
    assert by_chunk[4].event == "ping" and by_chunk[5].event == "message"
