"""UsageTap: token usage, first content and generated text from copies of real wire bytes."""

from __future__ import annotations

import bisect
import gzip
import itertools
import json
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.usage import Usage, UsageTap

TEXT = ("héllo ", "wörld 🎉")


def sse_event(payload: object, name: str | None = None, eol: str = "\n") -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    head = f"event: {name}{eol}" if name else ""
    return f"{head}data: {data}{eol}{eol}".encode()


def chat_chunk(delta: dict | None, usage: dict | None = None, finish: str | None = None) -> dict:
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_1",
        "choices": choices,
        "usage": usage,
    }


OPENAI_USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 9,
    "total_tokens": 1209,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 3, "audio_tokens": 0},
}


def openai_events(include_usage: bool = True) -> list[bytes]:
    """A Chat Completions stream as the wire carries it; the first content is event 1."""
    events = [
        sse_event(chat_chunk({"role": "assistant", "content": "", "refusal": None})),
        sse_event(chat_chunk({"content": TEXT[0]})),
        sse_event(chat_chunk({"content": TEXT[1]})),
        sse_event(chat_chunk({}, finish="stop")),
    ]
    if include_usage:
        events.append(sse_event(chat_chunk(None, usage=OPENAI_USAGE)))
    return [*events, sse_event("[DONE]")]


def anthropic_events(eol: str = "\r\n") -> list[bytes]:
    """A Messages stream with text and a tool call; the first content is event 3."""

    def e(name: str, **fields: object) -> bytes:
        return sse_event({"type": name, **fields}, name, eol)

    start_usage = {
        "input_tokens": 25,
        "cache_creation_input_tokens": 200,
        "cache_read_input_tokens": 1000,
        "output_tokens": 1,
    }
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-sonnet-4-20250514",
        "stop_reason": None,
        "usage": start_usage,
    }
    return [
        e("message_start", message=message),
        e("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        e("ping"),
        e("content_block_delta", index=0, delta={"type": "text_delta", "text": TEXT[0]}),
        e("content_block_delta", index=0, delta={"type": "text_delta", "text": TEXT[1]}),
        e("content_block_stop", index=0),
        e(
            "content_block_start",
            index=1,
            content_block={"type": "tool_use", "id": "t1", "name": "weather", "input": {}},
        ),
        e("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": ""}),
        e(
            "content_block_delta",
            index=1,
            delta={"type": "input_json_delta", "partial_json": '{"city": "Zürich"}'},
        ),
        e("content_block_stop", index=1),
        e("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 42}),
        e("message_stop"),
    ]


def responses_events() -> list[bytes]:
    """A Responses API stream; the first content is event 2."""

    def e(name: str, **fields: object) -> bytes:
        return sse_event({"type": name, **fields}, name)

    resp = {
        "id": "resp_1",
        "object": "response",
        "model": "gpt-4.1-2025-04-14",
        "status": "in_progress",
        "usage": None,
    }
    usage = {
        "input_tokens": 300,
        "input_tokens_details": {"cached_tokens": 128},
        "output_tokens": 50,
        "output_tokens_details": {"reasoning_tokens": 20},
        "total_tokens": 350,
    }
    return [
        e("response.created", response=resp),
        e("response.output_item.added", output_index=0, item={"type": "message"}),
        e("response.output_text.delta", item_id="m", output_index=0, delta=TEXT[0]),
        e("response.output_text.delta", item_id="m", output_index=0, delta=TEXT[1]),
        e("response.output_text.done", item_id="m", output_index=0, text="".join(TEXT)),
        e("response.completed", response={**resp, "status": "completed", "usage": usage}),
    ]


CASES = {
    "openai": (
        "openai",
        openai_events(),
        1,
        "gpt-4o-mini-2024-07-18",
        "".join(TEXT),
        Usage(1200, 9, 1024, None, 3, "upstream"),
    ),
    "anthropic": (
        "anthropic",
        anthropic_events(),
        3,
        "claude-sonnet-4-20250514",
        "".join(TEXT) + '{"city": "Zürich"}',
        Usage(25 + 1000 + 200, 42, 1000, 200, None, "upstream"),
    ),
    "responses": (
        "openai",
        responses_events(),
        2,
        "gpt-4.1-2025-04-14",
        "".join(TEXT),
        Usage(300, 50, 128, None, 20, "upstream"),
    ),
}


def dispatch_offset(events: list[bytes], index: int) -> int:
    """Offset of the byte that completes event ``index``: its final LF, or for CRLF line
    ends the final CR (a lone CR already ends the blank line)."""
    end = sum(len(e) for e in events[: index + 1])
    return end - 2 if events[index].endswith(b"\r\n\r\n") else end - 1


def run(provider: str, stream: bytes, cuts: list[int], **kw: object) -> tuple:
    tap = UsageTap(provider, streaming=True, **kw)  # type: ignore[arg-type]
    bounds = [0, *sorted(cuts), len(stream)]
    hits = [i for i in range(len(bounds) - 1) if tap.feed(stream[bounds[i] : bounds[i + 1]])]
    usage = tap.finish()
    return usage, hits, tap.completion_text, tap.model, tap.saw_terminal, tap.error_event


@pytest.mark.parametrize("case", CASES)
def test_stream_whole_reports_usage_model_text_and_end(case: str) -> None:
    provider, events, _, model, text, usage = CASES[case]
    assert (usage, [0], text, model, True, None) == run(provider, b"".join(events), [])


@pytest.mark.parametrize("case", CASES)
def test_stream_split_at_every_boundary_gives_identical_results(case: str) -> None:
    provider, events, first, model, text, usage = CASES[case]
    stream = b"".join(events)
    at = dispatch_offset(events, first)
    for cut in range(len(stream) + 1):
        expected_hit = bisect.bisect_right([cut], at)
        assert (usage, [expected_hit], text, model, True, None) == run(provider, stream, [cut])


@pytest.mark.parametrize("case", CASES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_stream_random_multi_splits_give_identical_results(case: str, data: st.DataObject) -> None:
    provider, events, first, model, text, usage = CASES[case]
    stream = b"".join(events)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=40)))
    expected_hit = bisect.bisect_right(cuts, dispatch_offset(events, first))
    assert (usage, [expected_hit], text, model, True, None) == run(provider, stream, cuts)


def test_anthropic_lf_stream_matches_crlf_stream() -> None:
    crlf = run("anthropic", b"".join(anthropic_events("\r\n")), [])
    assert crlf == run("anthropic", b"".join(anthropic_events("\n")), [])


def test_openai_stream_without_include_usage_has_text_but_no_usage() -> None:
    usage, hits, text, _, terminal, _ = run("openai", b"".join(openai_events(False)), [])
    assert (Usage(source="none"), [0], "héllo wörld 🎉", True) == (usage, hits, text, terminal)


def test_role_only_first_chunk_is_not_content() -> None:
    tap = UsageTap("openai", streaming=True)
    events = openai_events()
    assert [False, True, False] == [tap.feed(e) for e in events[:3]]


@pytest.mark.parametrize(
    "delta",
    [
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "f", "arguments": ""},
                }
            ]
        },
        {"reasoning_content": "hmm"},
        {"refusal": "no"},
    ],
)
def test_tool_call_reasoning_and_refusal_deltas_are_content(delta: dict) -> None:
    tap = UsageTap("openai", streaming=True)
    assert [False, True] == [tap.feed(sse_event(chat_chunk(d))) for d in ({"role": "x"}, delta)]


def test_openai_in_band_error_is_captured_and_stream_is_not_terminal() -> None:
    error = {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}
    stream = openai_events()[1] + sse_event(error)
    usage, _, _, _, terminal, error_event = run("openai", stream, [])
    assert ("server_error", False, "none") == (error_event, terminal, usage.source)


def test_anthropic_overloaded_error_event_mid_stream_is_captured() -> None:
    events = anthropic_events("\n")[:5]
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    usage, hits, _, _, terminal, error_event = run(
        "anthropic", b"".join(events) + sse_event(error, "error"), []
    )
    assert ("overloaded_error", False, [0]) == (error_event, terminal, hits)
    assert Usage(1225, 1, 1000, 200, None, "upstream") == usage  # message_start counts remain


def test_anthropic_stream_cut_before_message_stop_is_not_terminal() -> None:
    usage, _, _, _, terminal, _ = run("anthropic", b"".join(anthropic_events()[:-1]), [])
    assert (False, 42) == (terminal, usage.completion_tokens)


def test_anthropic_message_delta_latest_non_null_counts_win() -> None:
    delta_usage = {
        "input_tokens": 30,
        "cache_read_input_tokens": 900,
        "cache_creation_input_tokens": None,
        "output_tokens": 7,
    }
    events = [
        *anthropic_events("\n")[:4],
        sse_event({"type": "message_delta", "delta": {}, "usage": delta_usage}, "message_delta"),
        sse_event({"type": "message_stop"}, "message_stop"),
    ]
    usage, *_ = run("anthropic", b"".join(events), [])
    assert Usage(30 + 900 + 200, 7, 900, 200, None, "upstream") == usage


def test_anthropic_ping_and_block_start_are_not_content() -> None:
    tap = UsageTap("anthropic", streaming=True)
    assert [False, False, False, True] == [tap.feed(e) for e in anthropic_events()[:4]]


def test_anthropic_empty_tool_json_delta_is_not_content() -> None:
    tool = anthropic_events("\n")[6:9]  # tool_use start, partial_json "", partial_json {...}
    tap = UsageTap("anthropic", streaming=True)
    assert [False, False, True] == [tap.feed(e) for e in tool]
    assert '{"city": "Zürich"}' == tap.completion_text


def test_unnamed_anthropic_events_are_read_from_their_type() -> None:
    events = [sse_event(json.loads(e.split(b"data: ", 1)[1])) for e in anthropic_events("\n")]
    assert CASES["anthropic"][5] == run("anthropic", b"".join(events), [])[0]


def test_responses_error_event_is_captured() -> None:
    error = {"type": "error", "code": "rate_limit_exceeded", "message": "slow down"}
    stream = b"".join(responses_events()[:3]) + sse_event(error, "error")
    assert "rate_limit_exceeded" == run("openai", stream, [])[5]


def test_text_cap_bounds_completion_text_but_usage_is_still_read() -> None:
    for provider, events, *_ in CASES.values():
        usage, hits, text, *_ = run(provider, b"".join(events), [], max_text_chars=4)
        assert ("héll", [0], "upstream") == (text, hits, usage.source)


def test_gzipped_stream_is_read_from_an_incrementally_decompressed_copy() -> None:
    events = openai_events()
    compressor = zlib.compressobj(wbits=31)
    wire = [compressor.compress(e) + compressor.flush(zlib.Z_SYNC_FLUSH) for e in events]
    wire[-1] += compressor.flush()
    tap = UsageTap("openai", streaming=True, content_encoding="gzip")
    hits = [i for i, chunk in enumerate(wire) if tap.feed(chunk)]
    assert ([1], CASES["openai"][5], True) == (hits, tap.finish(), tap.saw_terminal)


# -- non-streaming JSON --------------------------------------------------------------------

OPENAI_BODY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "héllo wörld 🎉"},
        }
    ],
    "usage": {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}
RESPONSES_BODY = {
    "id": "resp_1",
    "object": "response",
    "model": "o4-mini-2025-04-16",
    "output": [
        {"type": "reasoning", "summary": []},
        {"type": "message", "content": [{"type": "output_text", "text": "hi 🎉"}]},
    ],
    "usage": {
        "input_tokens": 500,
        "input_tokens_details": {"cached_tokens": 256},
        "output_tokens": 80,
        "output_tokens_details": {"reasoning_tokens": 64},
    },
}
ANTHROPIC_BODY = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5-20251001",
    "content": [
        {"type": "text", "text": "héllo"},
        {"type": "tool_use", "id": "t", "name": "f", "input": {"q": "ü"}},
    ],
    "usage": {
        "input_tokens": 10,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 0,
        "output_tokens": 20,
    },
}
BODIES = {
    "openai": (
        "openai",
        OPENAI_BODY,
        Usage(2006, 300, 1920, None, 0, "upstream"),
        "héllo wörld 🎉",
    ),
    "responses": ("openai", RESPONSES_BODY, Usage(500, 80, 256, None, 64, "upstream"), "hi 🎉"),
    "anthropic": (
        "anthropic",
        ANTHROPIC_BODY,
        Usage(2010, 20, 0, 2000, None, "upstream"),
        'héllo{"q": "ü"}',
    ),
    "embeddings": (
        "openai",
        {
            "object": "list",
            "model": "text-embedding-3-small",
            "data": [],
            "usage": {"prompt_tokens": 8, "total_tokens": 8},
        },
        Usage(8, None, None, None, None, "upstream"),
        "",
    ),
}


def run_body(provider: str, body: bytes, size: int, **kw: object) -> tuple:
    tap = UsageTap(provider, streaming=False, **kw)  # type: ignore[arg-type]
    hits = [i for i in range(0, len(body), size) if tap.feed(body[i : i + size])]
    return tap.finish(), hits, tap.completion_text, tap.model


@pytest.mark.parametrize("case", BODIES)
@pytest.mark.parametrize("encoding", [None, "gzip", "deflate", "raw-deflate"])
def test_json_body_usage_in_any_chunking_and_encoding(case: str, encoding: str | None) -> None:
    provider, body, usage, text = BODIES[case]
    raw = json.dumps(body, ensure_ascii=False).encode()
    wire = {None: raw, "gzip": gzip.compress(raw), "deflate": zlib.compress(raw)}.get(encoding)
    if encoding == "raw-deflate":
        packer = zlib.compressobj(wbits=-15)
        wire, encoding = packer.compress(raw) + packer.flush(), "deflate"
    for size in (1, 7, len(raw)):
        assert (usage, [0], text, body["model"]) == run_body(
            provider, wire, size, content_encoding=encoding
        )


def test_json_body_over_the_limit_gives_no_usage() -> None:
    raw = json.dumps(OPENAI_BODY).encode()
    assert Usage(source="none") == run_body("openai", raw, 16, max_json_bytes=100)[0]


def test_unreadable_encoding_gives_no_usage_without_raising() -> None:
    raw = json.dumps(OPENAI_BODY).encode()
    assert Usage(source="none") == run_body("openai", raw, 16, content_encoding="br")[0]
    stream = b"".join(openai_events())
    assert (Usage(source="none"), []) == run("openai", stream, [9], content_encoding="br")[:2]


def test_json_error_body_gives_no_usage() -> None:
    raw = b'{"error": {"message": "bad", "type": "invalid_request_error"}}'
    assert Usage(source="none") == run_body("openai", raw, 5)[0]


def test_finish_is_idempotent_and_later_feeds_are_ignored() -> None:
    tap = UsageTap("openai", streaming=True)
    tap.feed(b"".join(openai_events()))
    first = tap.finish()
    assert (first, False) == (tap.finish(), tap.feed(b"data: x\n\n"))


@settings(max_examples=300, deadline=None)
@given(
    blob=st.binary(max_size=400),
    provider=st.sampled_from(["openai", "anthropic"]),
    streaming=st.booleans(),
    encoding=st.sampled_from([None, "gzip", "deflate", "br"]),
    size=st.integers(1, 64),
)
def test_garbage_never_raises_and_first_content_is_reported_at_most_once(
    blob: bytes, provider: str, streaming: bool, encoding: str | None, size: int
) -> None:
    tap = UsageTap(provider, streaming=streaming, content_encoding=encoding)  # type: ignore[arg-type]
    hits = sum(tap.feed(blob[i : i + size]) for i in range(0, len(blob), size))
    assert hits <= 1
    assert tap.finish().source in ("upstream", "none")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"data: {}\n\n",
                b"data: null\n\n",
                b'data: {"choices": 5}\n\n',
                b'data: {"usage": 1}\n\n',
                b'data: {"choices": [{"delta": null}]}\n\n',
                b'data: {"type": 7}\n\n',
                b'event: message_start\ndata: {"message": []}\n\n',
                b"event: error\ndata: nope\n\n",
                b'data: {"usage": {"prompt_tokens": -1, "completion_tokens": true}}\n\n',
                b'event: message_delta\ndata: {"usage": {"output_tokens": 1.5}}\n\n',
                b'event: content_block_delta\ndata: {"delta": {"type": "text_delta", "text": 3}}\n\n',  # noqa: E501
                b'event: response.completed\ndata: {"response": {"usage": []}}\n\n',
                b"data: [DONE]\n\n",
            ]
        ),
        max_size=12,
    ),
    st.sampled_from(["openai", "anthropic"]),
)
def test_malformed_events_never_raise(events: list[bytes], provider: str) -> None:
    tap = UsageTap(provider, streaming=True)  # type: ignore[arg-type]
    for event in events:
        tap.feed(event)
    usage = tap.finish()
    assert usage.prompt_tokens is None or usage.prompt_tokens >= 0


# -- text-only events are parsed late, together ----------------------------------------------


def long_chat_stream(words: list[str], last: dict, *, usage: bool) -> bytes:
    events = [sse_event(chat_chunk({"role": "assistant", "content": ""}))]
    events += [sse_event(chat_chunk({"content": w})) for w in words]
    events.append(sse_event(chat_chunk(last, finish="stop")))
    if usage:
        events.append(sse_event(chat_chunk(None, usage=OPENAI_USAGE)))
    return b"".join([*events, b"data: [DONE]\n\n"])


def test_text_after_the_first_content_keeps_its_order_with_a_telling_last_event() -> None:
    """The finish chunk carries text too: the deferred words come before it."""
    words = [f"w{i} " for i in range(300)]
    stream = long_chat_stream(words, {"content": "END"}, usage=False)
    usage, hits, text, _, terminal, _ = run("openai", stream, list(range(0, len(stream), 97)))
    assert ("".join(words) + "END", 1, True) == (text, len(hits), terminal)
    assert usage.completion_tokens is None


def test_a_malformed_text_event_costs_only_its_own_text() -> None:
    good = [sse_event(chat_chunk({"content": w})) for w in ("a", "b", "c")]
    stream = b"".join(
        [sse_event(chat_chunk({"content": "first "})), good[0], b"data: {not json\n\n", *good[1:]]
    )
    _, _, text, _, _, _ = run("openai", stream, [])
    assert "first abc" == text


def test_text_only_events_are_never_parsed_when_usage_came_and_no_one_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import proxy.usage as usage_mod

    parsed: list[int] = []
    real = usage_mod.loads_many
    monkeypatch.setattr(
        usage_mod, "loads_many", lambda datas: parsed.append(len(datas)) or real(datas)
    )
    words = [f"w{i} " for i in range(50)]
    tap = UsageTap("openai", streaming=True)
    tap.feed(long_chat_stream(words, {}, usage=True))
    usage = tap.finish()
    assert (usage.completion_tokens, tap.finish_reasons) == (9, ("stop",))
    assert [] == parsed  # the finish chunk brought no text: nothing had to be read
    assert "".join(words) == tap.completion_text
    assert [49] == parsed  # read when asked for, in one array


def test_deferred_text_is_bounded_and_still_whole() -> None:
    words = [f"{i:05d}" + "x" * 95 for i in range(4000)]  # ~1 MB of event data
    stream = long_chat_stream(words, {}, usage=False)
    _, _, text, _, _, _ = run("openai", stream, list(range(0, len(stream), 4096)))
    assert "".join(words) == text


def test_anthropic_text_after_the_first_delta_is_read_late_in_order() -> None:
    events = anthropic_events("\n")
    _, _, text, _, _, _ = run("anthropic", b"".join(events), [])
    assert TEXT[0] + TEXT[1] + '{"city": "Zürich"}' == text


def event_cuts(events: list[bytes], per: int) -> list[int]:
    """Cut points after every ``per`` events: chunks of whole events, as providers send."""
    ends = list(itertools.accumulate(len(e) for e in events))
    return ends[per - 1 :: per]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("per", [1, 2, 3])
def test_stream_in_whole_event_chunks_gives_identical_results(case: str, per: int) -> None:
    """Whole-event chunks after the first content are held unparsed and read in bulk at the
    end; the result must equal the event-by-event parse of the stream fed whole."""
    provider, events, _, model, text, usage = CASES[case]
    stream = b"".join(events)
    got = run(provider, stream, event_cuts(events, per))
    assert (usage, text, model, True, None) == (got[0], got[2], got[3], got[4], got[5])


@pytest.mark.parametrize(
    "tail",
    [
        [b": keep-alive\n\n"],  # a comment among held chunks: read event by event
        [b"event: ping\ndata: {}\n\n"],
        [b'data: {"error":{"type":"server_error"}}\n\n'],  # an error mid-stream
        [b"data: {not json\n\n"],
    ],
)
def test_held_chunks_with_anything_but_plain_text_read_like_the_whole_stream(
    tail: list[bytes],
) -> None:
    words = [f"w{i} " for i in range(40)]
    body = long_chat_stream(words, {"content": "END"}, usage=True)
    events = [e + b"\n\n" for e in body.split(b"\n\n") if e]
    events[20:20] = tail  # in the middle of the text events
    whole = run("openai", b"".join(events), [])
    chunked = run("openai", b"".join(events), event_cuts(events, 1))
    assert whole[0] == chunked[0] and whole[2:] == chunked[2:]
    assert chunked[2].startswith("w0 w1 ") and chunked[2].endswith("w39 END")
    error = "server_error" if b"error" in tail[0] else None
    assert (chunked[0].completion_tokens, chunked[4], chunked[5]) == (9, True, error)


def test_text_chunks_after_the_first_content_skip_the_event_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from proxy.sse import SSEParser

    fed: list[bytes] = []
    real = SSEParser.feed
    monkeypatch.setattr(
        SSEParser, "feed", lambda self, chunk: fed.append(chunk) or real(self, chunk)
    )
    words = [f"w{i} " for i in range(100)]
    body = long_chat_stream(words, {}, usage=True)
    events = [e + b"\n\n" for e in body.split(b"\n\n") if e]
    tap = UsageTap("openai", streaming=True)
    for event in events:
        tap.feed(event)
    assert tap.finish().completion_tokens == 9 and tap.saw_terminal
    # the role chunk and the first word one by one; the held rest in one call, from the finish
    assert len(fed) == 3 and fed[2].startswith(b'data: {"id"') and fed[2].endswith(b"[DONE]\n\n")
    assert b"w99" not in fed[2]  # the text events before the finish chunk were never parsed
    assert "".join(words) == tap.completion_text
