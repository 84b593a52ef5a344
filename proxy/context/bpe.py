"""Bundled BPE encodings (o200k_base, cl100k_base), loaded offline, and safe long-text counts.

The ``.tiktoken`` files in ``encodings/`` are checked against the SHA-256 that tiktoken itself
records, parsed, and turned into ``tiktoken.Encoding`` objects with tiktoken's own pattern and
special-token definitions. Nothing touches the network or tiktoken's download cache. Each
encoding is built on first use, once per process, under a lock.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import tiktoken
from tiktoken_ext.openai_public import (  # type: ignore[import-untyped]
    ENDOFPROMPT,
    ENDOFTEXT,
    FIM_MIDDLE,
    FIM_PREFIX,
    FIM_SUFFIX,
)

EncodingName = Literal["o200k_base", "cl100k_base"]


class EncodingFileError(RuntimeError):
    """A bundled encoding file is missing or does not match its recorded SHA-256."""


@dataclass(frozen=True)
class _Spec:
    sha256: str  # as recorded by tiktoken_ext/openai_public.py
    pat_str: str  # copied from tiktoken_ext/openai_public.py (built inside its functions)
    special_tokens: Mapping[str, int]


_SPECS: Mapping[str, _Spec] = {
    "cl100k_base": _Spec(
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "|".join(
            [
                r"""'(?i:[sdmt]|ll|ve|re)""",
                r"""[^\r\n\p{L}\p{N}]?+\p{L}++""",
                r"""\p{N}{1,3}+""",
                r""" ?[^\s\p{L}\p{N}]++[\r\n]*+""",
                r"""\s++$""",
                r"""\s*[\r\n]""",
                r"""\s+(?!\S)""",
                r"""\s""",
            ]
        ),
        {
            ENDOFTEXT: 100257,
            FIM_PREFIX: 100258,
            FIM_MIDDLE: 100259,
            FIM_SUFFIX: 100260,
            ENDOFPROMPT: 100276,
        },
    ),
    "o200k_base": _Spec(
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        {ENDOFTEXT: 199999, ENDOFPROMPT: 200018},
    ),
}
_ENCODINGS: dict[str, tiktoken.Encoding] = {}
_LOCK = threading.Lock()


def parse_tiktoken_bpe(data: bytes) -> dict[bytes, int]:
    """The ``.tiktoken`` format (``base64(token) rank`` per line), parsed like tiktoken does.

    tiktoken's own ``load_tiktoken_bpe`` reads local paths too, but it routes them through its
    download cache: it copies the file into ``TIKTOKEN_CACHE_DIR`` (or the temp dir) and raises
    when a user-set cache dir is read-only, a common offline-container setup.
    """
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _load(name: str) -> tiktoken.Encoding:
    spec = _SPECS[name]
    path = resources.files("proxy.context").joinpath("encodings").joinpath(f"{name}.tiktoken")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EncodingFileError(f"bundled encoding {name} not readable: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise EncodingFileError(f"bundled encoding {name}: sha256 {digest} != {spec.sha256}")
    return tiktoken.Encoding(
        name,
        pat_str=spec.pat_str,
        mergeable_ranks=parse_tiktoken_bpe(data),
        special_tokens=dict(spec.special_tokens),
    )


def all_loaded() -> bool:
    """True once every bundled encoding is built; until then counting belongs off the event
    loop (building one takes ~0.2 s and ~40-70 MB, so it happens on first use, not at start)."""
    return len(_ENCODINGS) == len(_SPECS)


def get_encoding(name: EncodingName) -> tiktoken.Encoding:
    """A bundled encoding, built on first use (thread-safe, then cached for the process)."""
    enc = _ENCODINGS.get(name)
    if enc is None:
        with _LOCK:
            enc = _ENCODINGS.get(name)
            if enc is None:
                enc = _ENCODINGS[name] = _load(name)
    return enc


# tiktoken's regex and BPE get superlinear on long texts and its Rust side panics (stack
# overflow, a BaseException) on ~1M chars of whitespace. Long texts are counted in pieces.
CHUNK_CHARS = 1 << 13


def _encode_len(enc: tiktoken.Encoding, text: str) -> int:
    # encode_ordinary: "<|endoftext|>" in user text is text, not a special token.
    try:
        return len(enc.encode_ordinary(text))
    except BaseException as exc:  # pyo3's PanicException derives from BaseException
        if type(exc).__name__ != "PanicException":
            raise
        return len(text.encode("utf-8", "surrogatepass"))  # tokens <= bytes


def _cut(text: str, lo: int, hi: int) -> int:
    """A split point in (lo, hi] that tokenizes exactly like the whole text, else hi.

    A space right after a non-space always starts a new pre-tokenizer piece (no cl100k or
    o200k pattern runs from a non-space through a following space), and BPE never crosses
    pieces, so the counts of both sides add up to the count of the whole.
    """
    end = hi
    while True:
        cut = text.rfind(" ", lo, end)
        if cut <= lo:
            return hi
        start_of_run = lo + len(text[lo:cut].rstrip())
        if start_of_run == cut:
            return cut
        if start_of_run > lo and text[start_of_run] == " ":
            return start_of_run
        end = start_of_run


def count_chunked(enc: tiktoken.Encoding, text: str, chunk: int = CHUNK_CHARS) -> int:
    """Token count of ``text``, encoded in pieces of at most ``chunk`` characters.

    Exact when every piece can end before a space that follows a non-space (ordinary prose
    and code); a text without such a space in a whole window (one huge word or whitespace
    run) is cut hard there, which may shift the count by a token or two per cut.
    """
    if len(text) <= chunk:
        return _encode_len(enc, text)
    total, start = 0, 0
    while len(text) - start > chunk:
        cut = _cut(text, start + chunk // 2, start + chunk)
        total += _encode_len(enc, text[start:cut])
        start = cut
    return total + _encode_len(enc, text[start:])
