"""Offline token counting (proxy.context.tokens, proxy.context.images)."""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken.load
import tiktoken_ext.openai_public as openai_public
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.context import bpe, images, tokens
from proxy.context.tokens import (
    TokenCount,
    count_anthropic_messages,
    count_openai_chat,
    count_request,
    count_text,
    encoding_for_model,
    fixed_tokens,
    get_encoding,
    may_exceed,
    message_tokens,
    token_bound,
)
from proxy.context.windows import context_window, max_input_tokens

REPO = Path(__file__).resolve().parents[2]
ENCODINGS_DIR = REPO / "proxy" / "context" / "encodings"
NAMES = ("o200k_base", "cl100k_base")
BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"

# The OpenAI cookbook "How to count tokens with tiktoken", section 6 (published output:
# 129 prompt tokens for gpt-3.5-turbo / gpt-4 / gpt-4-0613, 124 for gpt-4o / gpt-4o-mini).
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]
# Section 7 (published: 105 prompt tokens for gpt-3.5-turbo / gpt-4, 101 for gpt-4o / mini).
COOKBOOK_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
COOKBOOK_TOOL_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]
# Token ids printed in the cookbook's sections 3 and 5.
PUBLISHED_IDS = {
    ("o200k_base", "tiktoken is great!"): [83, 8251, 2488, 382, 2212, 0],
    ("cl100k_base", "antidisestablishmentarianism"): [519, 85342, 34500, 479, 8997, 2191],
    ("o200k_base", "antidisestablishmentarianism"): [493, 129901, 376, 160388, 21203, 2367],
    ("cl100k_base", "2 + 2 = 4"): [17, 489, 220, 17, 284, 220, 19],
    ("o200k_base", "2 + 2 = 4"): [17, 659, 220, 17, 314, 220, 19],
    ("cl100k_base", "お誕生日おめでとう"): [
        33334,
        45918,
        243,
        21990,
        9080,
        33334,
        62004,
        16556,
        78699,
    ],
    ("o200k_base", "お誕生日おめでとう"): [8930, 9697, 243, 128225, 8930, 17693, 4344, 48669],
}
SAMPLES = [
    "",
    "hello world",
    "  leading and trailing spaces  \n\n\n",
    "def f(x):\n    return x ** 2  # comment\n",
    "<|endoftext|> is text here, not a special token",
    "Ünïcödé, 中文, русский, العربية, emoji 🎉👩‍👩‍👧",
    "1234567890 3.14159 1e10",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
]


def recorded_hash(name: str) -> str:
    """The expected_hash tiktoken itself records for an encoding's public file."""
    source = inspect.getsource(openai_public.ENCODING_CONSTRUCTORS[name])
    match = re.search(r'expected_hash="([0-9a-f]{64})"', source)
    assert match is not None
    return match.group(1)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def deny(*args: Any, **kwargs: Any) -> None:
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", deny)
    monkeypatch.setattr(socket, "create_connection", deny)


@pytest.fixture
def tiktoken_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None) -> Path:
    """A tiktoken cache dir seeded with the bundled files, so tiktoken itself runs offline."""
    for name in NAMES:
        key = hashlib.sha1(BLOB_URL.format(name).encode()).hexdigest()
        shutil.copyfile(ENCODINGS_DIR / f"{name}.tiktoken", tmp_path / key)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    return tmp_path


# ---------------------------------------------------------------- bundled encodings


@pytest.mark.parametrize("name", NAMES)
def test_bundled_file_matches_hash_recorded_by_tiktoken(name: str) -> None:
    data = (ENCODINGS_DIR / f"{name}.tiktoken").read_bytes()
    assert recorded_hash(name) == hashlib.sha256(data).hexdigest()
    assert recorded_hash(name) == bpe._SPECS[name].sha256


@pytest.mark.parametrize("name", NAMES)
def test_bundled_hashes_file_records_each_hash(name: str) -> None:
    assert recorded_hash(name) in (ENCODINGS_DIR / "HASHES.md").read_text()


@pytest.mark.parametrize("name", NAMES)
def test_parser_reads_the_same_ranks_as_tiktoken_loader(
    name: str, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken: "" disables its cache
    path = str(ENCODINGS_DIR / f"{name}.tiktoken")
    expected = tiktoken.load.load_tiktoken_bpe(path, expected_hash=recorded_hash(name))
    assert expected == bpe.parse_tiktoken_bpe(Path(path).read_bytes())


@pytest.mark.parametrize("name", NAMES)
def test_encoding_spec_equals_tiktoken_constructor(name: str, tiktoken_cache: Path) -> None:
    reference = openai_public.ENCODING_CONSTRUCTORS[name]()
    spec = bpe._SPECS[name]
    assert reference["pat_str"] == spec.pat_str
    assert reference["special_tokens"] == dict(spec.special_tokens)
    assert reference["mergeable_ranks"] == get_encoding(name)._mergeable_ranks


@pytest.mark.parametrize("name", NAMES)
def test_encoding_ids_equal_tiktoken_get_encoding(name: str, tiktoken_cache: Path) -> None:
    reference = tiktoken.get_encoding(name)
    ours = get_encoding(name)
    for text in SAMPLES:
        assert reference.encode(text, disallowed_special=()) == ours.encode_ordinary(text)


@pytest.mark.parametrize(("name", "text"), list(PUBLISHED_IDS))
def test_encoding_ids_match_cookbook_published_ids(name: str, text: str) -> None:
    assert PUBLISHED_IDS[(name, text)] == get_encoding(name).encode(text)


def test_get_encoding_builds_once_and_caches() -> None:
    assert get_encoding("o200k_base") is get_encoding("o200k_base")


OFFLINE_SCRIPT = """
import json, socket, sys
def deny(*a, **k):
    raise OSError("network access attempted")
socket.socket.connect = deny
socket.socket.connect_ex = deny
socket.create_connection = deny
socket.getaddrinfo = deny
from proxy.context import tokens, trim, windows
import threading
loaded = []
threads = [threading.Thread(target=lambda: loaded.append(tokens.get_encoding(sys.argv[2])))
           for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
texts = json.loads(sys.argv[1])
out = {n: [tokens.get_encoding(n).encode_ordinary(t) for t in texts] for n in sys.argv[2:]}
out["aiohttp_imported"] = "aiohttp" in sys.modules
out["distinct_objects"] = len({id(e) for e in [*loaded, tokens.get_encoding(sys.argv[2])]})
print(json.dumps(out))
"""


def test_encodings_load_in_fresh_process_with_network_denied_and_empty_cache(
    tmp_path: Path, tiktoken_cache: Path
) -> None:
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(empty), "DATA_GYM_CACHE_DIR": str(empty)}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT, json.dumps(SAMPLES), *NAMES],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    out = json.loads(done.stdout)
    for name in NAMES:
        reference = tiktoken.get_encoding(name)  # offline via the seeded cache
        assert [reference.encode(t, disallowed_special=()) for t in SAMPLES] == out[name]
    assert out["aiohttp_imported"] is False
    assert 1 == out["distinct_objects"]  # 8 racing threads built one encoding
    assert [] == list(empty.iterdir())  # nothing written to tiktoken's cache


def test_tampered_encoding_file_is_refused(tmp_path: Path) -> None:
    package = tmp_path / "proxy"
    shutil.copytree(REPO / "proxy" / "context", package / "context")
    for module in ("__init__.py", "models.py", "model_table.py"):  # the registry it asks
        shutil.copyfile(REPO / "proxy" / module, package / module)
    with (package / "context" / "encodings" / "cl100k_base.tiktoken").open("ab") as f:
        f.write(b"IQ== 100277\n")
    script = "from proxy.context import tokens; tokens.get_encoding('cl100k_base')"
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 0 != done.returncode
    assert "EncodingFileError" in done.stderr


# ---------------------------------------------------------------- long texts

WORD = st.text(
    st.characters(exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=10
)
SEPARATOR = st.sampled_from([" ", ", ", ". ", " \n", "  ", " \t", "'s "])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(WORD, SEPARATOR), max_size=60), st.sampled_from(NAMES))
def test_chunked_count_is_exact_when_a_space_follows_a_non_space_in_every_window(
    words: list[tuple[str, str]], name: str
) -> None:
    text = "".join(w + sep for w, sep in words)
    enc = get_encoding(name)  # type: ignore[arg-type]
    assert len(enc.encode_ordinary(text)) == bpe.count_chunked(enc, text, chunk=64)


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=400))
def test_chunked_count_of_any_text_stays_within_its_utf8_bytes(text: str) -> None:
    enc = get_encoding("o200k_base")
    assert bpe.count_chunked(enc, text, chunk=16) <= len(text.encode())


@pytest.mark.parametrize("text", [" " * 1_000_000, "\n" * 500_000, "a" * 1_000_000])
def test_huge_single_run_is_counted_without_tiktoken_panicking(text: str) -> None:
    counted = count_text(text, "gpt-4o")
    assert 0 < counted <= len(text)


# ---------------------------------------------------------------- model -> encoding


@pytest.mark.parametrize(
    ("model", "encoding", "exact"),
    [
        ("gpt-4o", "o200k_base", True),
        ("gpt-4o-2024-08-06", "o200k_base", True),
        ("gpt-4o-mini", "o200k_base", True),
        ("chatgpt-4o-latest", "o200k_base", True),
        ("gpt-4.1-nano", "o200k_base", True),
        ("o1", "o200k_base", True),
        ("o1-mini", "o200k_base", True),
        ("o3-mini-2025-01-31", "o200k_base", True),
        ("o4-mini", "o200k_base", True),
        ("gpt-5", "o200k_base", True),
        ("gpt-5-mini-2025-08-07", "o200k_base", True),
        ("ft:gpt-4o-mini-2024-07-18:org::abc", "o200k_base", True),
        ("openai/gpt-4o", "o200k_base", True),
        ("gpt-4", "cl100k_base", True),
        ("gpt-4-turbo-2024-04-09", "cl100k_base", True),
        ("gpt-4-0613", "cl100k_base", True),
        ("gpt-3.5-turbo", "cl100k_base", True),
        ("gpt-35-turbo", "cl100k_base", True),
        ("text-embedding-3-small", "cl100k_base", True),
        ("gpt-oss-120b", "o200k_base", False),
        ("claude-sonnet-4-20250514", "cl100k_base", False),
        ("llama-3.1-70b", "cl100k_base", False),
        ("o1x-custom", "cl100k_base", False),
        ("", "cl100k_base", False),
        (None, "cl100k_base", False),
    ],
)
def test_encoding_for_model(model: str | None, encoding: str, exact: bool) -> None:
    enc, is_exact = encoding_for_model(model)
    assert (encoding, exact) == (enc.name, is_exact)


# ---------------------------------------------------------------- OpenAI chat


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-3.5-turbo", 129),
        ("gpt-4-0613", 129),
        ("gpt-4", 129),
        ("gpt-4o", 124),
        ("gpt-4o-mini", 124),
    ],
)
def test_cookbook_conversation_matches_published_prompt_tokens(model: str, expected: int) -> None:
    body = {"model": model, "messages": COOKBOOK_MESSAGES}
    assert TokenCount(expected, "exact") == count_openai_chat(body)


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)],
)
def test_cookbook_tools_request_matches_published_prompt_tokens(model: str, expected: int) -> None:
    body = {"model": model, "messages": COOKBOOK_TOOL_MESSAGES, "tools": COOKBOOK_TOOLS}
    assert TokenCount(expected, "estimate") == count_openai_chat(body)


def test_model_argument_overrides_body_model() -> None:
    body = {"model": "gpt-4o", "messages": COOKBOOK_MESSAGES}
    assert 129 == count_openai_chat(body, model="gpt-4").tokens


def test_unknown_model_is_cl100k_times_safety_factor_rounded_up() -> None:
    body = {"model": "mistral-large", "messages": COOKBOOK_MESSAGES}
    per_message = [
        3 + sum(count_text(v) for v in m.values()) + ("name" in m) for m in COOKBOOK_MESSAGES
    ]
    expected = math.ceil(3 * 1.5) + sum(math.ceil(n * 1.5) for n in per_message)
    assert TokenCount(expected, "estimate") == count_openai_chat(body, safety_factor=1.5)


def test_special_token_text_is_counted_as_plain_text() -> None:
    assert len(get_encoding("o200k_base").encode_ordinary("<|endoftext|>")) == count_text(
        "<|endoftext|>", "gpt-4o"
    )


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": COOKBOOK_TOOLS},
        {"functions": [COOKBOOK_TOOLS[0]["function"]]},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
    ],
)
def test_requests_with_tool_or_schema_definitions_are_estimates(extra: dict[str, Any]) -> None:
    body = {"model": "gpt-4o", "messages": COOKBOOK_TOOL_MESSAGES, **extra}
    plain = count_openai_chat({"model": "gpt-4o", "messages": COOKBOOK_TOOL_MESSAGES})
    counted = count_openai_chat(body)
    assert "estimate" == counted.method
    assert counted.tokens > plain.tokens


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ],
)
def test_structured_messages_are_estimates(message: dict[str, Any]) -> None:
    assert "estimate" == count_openai_chat({"model": "gpt-4o", "messages": [message]}).method


def test_tool_calls_count_function_name_and_arguments() -> None:
    short = {
        "role": "assistant",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    long_args = json.dumps({"query": "a much longer argument string " * 10})
    long = {
        "role": "assistant",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": long_args}}
        ],
    }
    grown = message_tokens(long, "openai", "gpt-4o") - message_tokens(short, "openai", "gpt-4o")
    assert count_text(long_args, "gpt-4o") - count_text("{}", "gpt-4o") == grown


def test_nested_tool_schema_falls_back_to_json_count_above_flat_rule() -> None:
    nested = json.loads(json.dumps(COOKBOOK_TOOLS))
    props = nested[0]["function"]["parameters"]["properties"]
    props["location"]["items"] = {"type": "object", "properties": {"x": {"type": "string"}}}
    flat = count_openai_chat({"model": "gpt-4o", "messages": [], "tools": COOKBOOK_TOOLS})
    deep = count_openai_chat({"model": "gpt-4o", "messages": [], "tools": nested})
    assert deep.tokens > flat.tokens


def png(width: int, height: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I4sII", 13, b"IHDR", width, height) + b"\0" * 20


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        ({"url": "https://example.com/cat.png", "detail": "low"}, 85),
        ({"url": "https://example.com/cat.png"}, images.OPENAI_IMAGE_DEFAULT_TOKENS),
        ({"url": data_url(png(1024, 1024)), "detail": "high"}, 765),
        ({"url": data_url(png(2048, 4096)), "detail": "auto"}, 1105),
        ({"url": data_url(png(4096, 8192)), "detail": "low"}, 85),
        ({"url": data_url(png(100, 100))}, 255),
    ],
)
def test_openai_image_part_uses_tile_rule(part: dict[str, Any], expected: int) -> None:
    with_image = {"role": "user", "content": [{"type": "image_url", "image_url": part}]}
    without = {"role": "user", "content": []}
    cost = message_tokens(with_image, "openai", "gpt-4o") - message_tokens(
        without, "openai", "gpt-4o"
    )
    assert expected == cost
    assert "estimate" == count_openai_chat({"model": "gpt-4o", "messages": [with_image]}).method


# ---------------------------------------------------------------- images


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0" + b"\1\1\0\0\1\0\1\0\0"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\1\x11\0"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\0" * 8


def webp_vp8x(width: int, height: int) -> bytes:
    dims = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF\0\0\0\0WEBPVP8X" + b"\x0a\0\0\0" + b"\0\0\0\0" + dims


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        (png(640, 480), (640, 480)),
        (jpeg(1920, 1080), (1920, 1080)),
        (gif(32, 16), (32, 16)),
        (webp_vp8x(3000, 2000), (3000, 2000)),
        (b"not an image at all", None),
        (b"\xff\xd8\xff", None),
    ],
)
def test_image_size_reads_header(raw: bytes, size: tuple[int, int] | None) -> None:
    assert size == images.image_size(raw)
    assert size == images.base64_image_size(base64.b64encode(raw).decode())


def test_invalid_base64_image_has_no_size() -> None:
    assert images.base64_image_size("!!!! not base64 ####") is None


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((200, 200), 54),
        ((1000, 1000), 1334),
        ((1092, 1092), 1590),
        ((4000, 4000), 1600),
        (None, 1600),
    ],
)
def test_anthropic_image_tokens_follow_pixels_over_750(
    size: tuple[int, int] | None, expected: int
) -> None:
    assert expected == images.anthropic_image_tokens(size)


@given(st.integers(1, 20000), st.integers(1, 20000), st.sampled_from(["low", "high", "auto"]))
def test_image_estimates_never_exceed_max_media_tokens(w: int, h: int, detail: str) -> None:
    assert images.openai_image_tokens(detail, (w, h)) <= images.MAX_MEDIA_TOKENS
    assert images.anthropic_image_tokens((w, h)) <= images.MAX_MEDIA_TOKENS


# ---------------------------------------------------------------- Anthropic


def test_anthropic_count_is_inflated_estimate_of_system_messages_and_tools() -> None:
    body = {
        "model": "claude-sonnet-4-20250514",
        "system": [{"type": "text", "text": "Be terse."}],
        "messages": [{"role": "user", "content": "Hello there"}],
    }
    expected = math.ceil(count_text("Be terse.") * 1.2) + math.ceil(
        (3 + count_text("Hello there")) * 1.2
    )
    assert TokenCount(expected, "estimate") == count_anthropic_messages(body)
    with_tools = {**body, "tools": [{"name": "t", "input_schema": {"type": "object"}}]}
    grown = count_anthropic_messages(with_tools).tokens - expected
    assert grown > tokens.ANTHROPIC_TOOL_PROMPT_TOKENS


def test_anthropic_blocks_count_text_tool_use_tool_result_and_images() -> None:
    image = {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": "image/png",
            "data": base64.b64encode(png(200, 200)).decode(),
        },
    }
    msg = {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "t1",
                "content": [{"type": "text", "text": "result text"}, image],
            },
            {"type": "text", "text": "and a question"},
        ],
    }
    text = 3 + count_text("result text") + count_text("and a question")
    assert math.ceil(text * 1.2) + 54 == message_tokens(msg, "anthropic", None)


def test_anthropic_string_system_equals_single_text_block() -> None:
    base = {"messages": [{"role": "user", "content": "hi"}]}
    as_str = count_anthropic_messages({**base, "system": "Rules here."})
    as_blocks = count_anthropic_messages(
        {**base, "system": [{"type": "text", "text": "Rules here."}]}
    )
    assert as_str == as_blocks


# ---------------------------------------------------------------- invariants


@pytest.mark.parametrize(
    ("body", "provider"),
    [
        ({"model": "gpt-4o", "messages": COOKBOOK_MESSAGES}, "openai"),
        (
            {"model": "llama-3", "messages": COOKBOOK_TOOL_MESSAGES, "tools": COOKBOOK_TOOLS},
            "openai",
        ),
        (
            {
                "system": "s",
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ],
                "tools": [{"name": "t", "input_schema": {}}],
            },
            "anthropic",
        ),
    ],
)
def test_count_equals_fixed_plus_message_costs(body: dict[str, Any], provider: Any) -> None:
    model = body.get("model")
    parts = fixed_tokens(body, provider) + sum(
        message_tokens(m, provider, model) for m in body["messages"]
    )
    assert parts == count_request(body, provider).tokens


def test_garbage_body_shapes_do_not_raise() -> None:
    for body in ({}, {"messages": "nope"}, {"messages": [1, None, "x", {"content": {"a": 1}}]}):
        assert count_request(body, "openai").tokens >= 0
        assert count_request(body, "anthropic").tokens >= 0


def test_deeply_nested_json_is_counted_without_recursion() -> None:
    """Nesting depth costs no stack: the plugin may parse and count on different stacks."""
    deep: Any = "x"
    nested_result: Any = "leaf"
    for _ in range(5000):
        deep = [deep]
        nested_result = [{"type": "tool_result", "tool_use_id": "t", "content": nested_result}]
    tool_use = {"type": "tool_use", "id": "t", "name": "f", "input": deep}
    body = {"messages": [{"role": "user", "content": [tool_use, *nested_result]}]}
    assert count_request(body, "anthropic").tokens > 5000
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "q", "x": deep}]}
    assert count_request(body, "openai").tokens > 1


# ---------------------------------------------------------------- may_exceed

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
OPENAI_MODELS = st.sampled_from(["gpt-4o", "gpt-4", "o3-mini", "some-local-model"])
TOOL_CALL = st.fixed_dictionaries(
    {
        "id": TEXT,
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": TEXT, "arguments": TEXT}),
    }
)
OPENAI_PART = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
    st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.fixed_dictionaries(
                {"url": st.sampled_from(["x", data_url(png(4000, 3000))])},
                optional={"detail": st.sampled_from(["low", "high", "auto"])},
            ),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.just("file"), "file": st.fixed_dictionaries({"file_id": TEXT})}
    ),
)
OPENAI_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool"])},
    optional={
        "content": st.one_of(TEXT, st.lists(OPENAI_PART, max_size=3), st.none()),
        "name": TEXT,
        "tool_call_id": TEXT,
        "tool_calls": st.lists(TOOL_CALL, max_size=2),
    },
)
FLAT_PROPERTY = st.fixed_dictionaries(
    {"type": st.sampled_from(["string", "integer"])},
    optional={"description": TEXT, "enum": st.lists(TEXT, max_size=3)},
)
JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8,
)
FUNCTION = st.fixed_dictionaries(
    {"name": TEXT},
    optional={
        "description": TEXT,
        "parameters": st.one_of(
            st.fixed_dictionaries(
                {
                    "type": st.just("object"),
                    "properties": st.dictionaries(TEXT, FLAT_PROPERTY, max_size=3),
                }
            ),
            st.dictionaries(TEXT, JSON_VALUE, max_size=3),
        ),
    },
)
OPENAI_BODY = st.fixed_dictionaries(
    {"model": OPENAI_MODELS, "messages": st.lists(OPENAI_MESSAGE, max_size=6)},
    optional={
        "tools": st.lists(
            st.fixed_dictionaries({"type": st.just("function"), "function": FUNCTION}), max_size=3
        ),
        "functions": st.lists(FUNCTION, max_size=2),
        "response_format": st.fixed_dictionaries(
            {"type": st.just("json_schema"), "json_schema": JSON_VALUE}
        ),
    },
)
ANTHROPIC_BLOCK = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
    st.fixed_dictionaries(
        {
            "type": st.just("image"),
            "source": st.sampled_from(
                [
                    {"type": "url", "url": "u"},
                    {
                        "type": "base64",
                        "media_type": "image/png",
                        "data": base64.b64encode(png(9, 9)).decode(),
                    },
                ]
            ),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.just("tool_use"), "id": TEXT, "name": TEXT, "input": JSON_VALUE}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("tool_result"),
            "tool_use_id": TEXT,
            "content": st.one_of(
                TEXT,
                st.lists(
                    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), max_size=2
                ),
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("document"),
            "source": st.sampled_from(
                [
                    {"type": "text", "media_type": "text/plain", "data": "doc text"},
                    {"type": "url", "url": "u"},
                ]
            ),
        }
    ),
    st.fixed_dictionaries({"type": st.just("thinking"), "thinking": TEXT, "signature": TEXT}),
)
ANTHROPIC_BODY = st.fixed_dictionaries(
    {
        "model": st.just("claude-x"),
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "assistant"]),
                    "content": st.one_of(TEXT, st.lists(ANTHROPIC_BLOCK, max_size=3)),
                }
            ),
            max_size=6,
        ),
    },
    optional={
        "system": st.one_of(
            TEXT,
            st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), max_size=2),
        ),
        "tools": st.lists(
            st.fixed_dictionaries(
                {"name": TEXT, "input_schema": JSON_VALUE}, optional={"description": TEXT}
            ),
            max_size=2,
        ),
    },
)
SERIALIZE = st.sampled_from(
    [
        {"separators": (",", ":"), "ensure_ascii": False},
        {"separators": (",", ":"), "ensure_ascii": True},
        {"indent": 2, "ensure_ascii": False},
    ]
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.tuples(st.just("openai"), OPENAI_BODY), st.tuples(st.just("anthropic"), ANTHROPIC_BODY)
    ),
    SERIALIZE,
    st.sampled_from([1.0, 1.2, 2.0]),
)
def test_may_exceed_is_never_false_when_count_exceeds_budget(
    case: tuple[str, dict[str, Any]], dump: dict[str, Any], factor: float
) -> None:
    provider, body = case
    raw = json.dumps(body, **dump).encode()
    counted = count_request(json.loads(raw), provider, factor).tokens  # type: ignore[arg-type]
    assert may_exceed(raw, counted - 1, factor) is True


def test_small_text_body_cannot_exceed_a_large_budget() -> None:
    raw = json.dumps({"model": "gpt-4o", "messages": COOKBOOK_MESSAGES}).encode()
    assert may_exceed(raw, 100_000) is False


def test_short_url_images_force_counting() -> None:
    parts = [{"type": "image_url", "image_url": {"url": "https://x/y"}}] * 20
    raw = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": parts}]})
    assert count_request(json.loads(raw), "openai").tokens > 10_000
    assert may_exceed(raw.encode(), 10_000) is True


def test_escaped_ascii_forces_counting() -> None:
    raw = b'{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"image\\u005furl"}]}]}'
    assert may_exceed(raw, 1_000_000) is True


@given(st.binary(max_size=300), st.integers(0, 400), st.sampled_from([1.0, 1.2, 2.0]))
def test_may_exceed_is_the_bound_compared_with_the_budget(
    raw: bytes, budget: int, factor: float
) -> None:
    """The shortcut for bodies whose bytes alone are over changes no answer."""
    bound = token_bound(raw, factor)
    assert may_exceed(raw, budget, factor) == (bound is None or bound > budget)


# ---------------------------------------------------------------- context windows


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("gpt-4o", 128_000),
        ("gpt-4o-2024-08-06", 128_000),
        ("gpt-4o-mini", 128_000),
        ("GPT-4o-mini-2024-07-18", 128_000),
        ("openai/gpt-4o", 128_000),
        ("ft:gpt-4o-mini-2024-07-18:acme::x1", 128_000),
        ("gpt-4.1", 1_047_576),
        ("gpt-4.1-mini-2025-04-14", 1_047_576),
        ("gpt-5", 400_000),
        ("gpt-5-mini-2025-08-07", 400_000),
        ("gpt-5-chat-latest", 128_000),
        ("o1", 200_000),
        ("o1-mini", 128_000),
        ("o3-mini", 200_000),
        ("o4-mini-2025-04-16", 200_000),
        ("gpt-4-turbo-2024-04-09", 128_000),
        ("gpt-4-0125-preview", 128_000),
        ("gpt-4", 8_192),
        ("gpt-4-0613", 8_192),
        ("gpt-4-32k", 32_768),
        ("gpt-3.5-turbo", 16_385),
        ("gpt-3.5-turbo-instruct", 4_096),
        ("claude-sonnet-4-20250514", 200_000),
        ("claude-3-5-haiku-latest", 200_000),
        ("us.anthropic.claude-3-7-sonnet-20250219-v1:0", 200_000),
        ("claude-2.0", 100_000),
        ("claude-2.1", 200_000),
        ("gpt-40-experimental", None),
        ("llama-3.1-70b", None),
        ("", None),
        (None, None),
    ],
)
def test_builtin_context_window_by_longest_prefix(model: str | None, window: int | None) -> None:
    assert window == context_window(model)


def test_override_wins_over_longer_builtin_and_matches_by_prefix() -> None:
    overrides = {"gpt-4o": 64_000, "My-Deployment": 32_000}
    assert 64_000 == context_window("gpt-4o-mini", overrides)
    assert 32_000 == context_window("my-deployment-eu", overrides)
    assert 200_000 == context_window("claude-opus-4", overrides)


def test_gpt5_has_an_input_cap_below_its_window() -> None:
    assert (272_000, None) == (max_input_tokens("gpt-5-mini"), max_input_tokens("gpt-4o"))


@pytest.mark.parametrize(
    ("model", "encoding", "exact"),
    [
        ("gpt-5.1-2025-11-13", "o200k_base", True),
        ("gpt-5.4-mini", "o200k_base", True),
        ("azure/gpt-4o-mini", "o200k_base", True),
        ("ft:gpt-3.5-turbo-0125:org::x", "cl100k_base", True),
        ("openai.gpt-oss-120b-1:0", "o200k_base", False),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "cl100k_base", False),
        ("gpt-4.2-preview", "cl100k_base", False),  # not gpt-4: '.' is no boundary
    ],
)
def test_encoding_follows_the_registry_for_every_spelling(
    model: str, encoding: str, exact: bool
) -> None:
    enc, is_exact = encoding_for_model(model)
    assert (encoding, exact) == (enc.name, is_exact)


def test_gpt5_input_cap_for_every_gpt5_spelling() -> None:
    caps = {max_input_tokens(m) for m in ("gpt-5", "openai/gpt-5-mini", "gpt-5.1", "gpt-5.2")}
    assert {272_000} == caps
