"""Which writing system a text is in, cheaply: the raw estimator's error depends on it.

cl100k_base against other tokenizers (bench/tokenizer_ratios.py, numbers in
docs/context-counting.md) is off by a factor that depends mostly on the script: about 1.0-1.2
on English prose and code, 0.65-1.8 on Korean, up to 3.0 on long digit runs, 0.35-1.9 on
Hindi, Arabic, Thai or Greek. One correction per model over all scripts would mix those, so
corrections are learned per (model, script class) and a request is counted in the class that
holds most of its text tokens.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from enum import StrEnum


class ScriptClass(StrEnum):
    LATIN = "latin"
    """Latin letters, ASCII punctuation and code."""
    CYRILLIC = "cyrillic"
    CJK = "cjk"
    """Han ideographs and Japanese kana."""
    HANGUL = "hangul"
    DIGITS = "digits"
    OTHER = "other"
    """Any other script (Arabic, Devanagari, Greek, Thai, Hebrew, ...) and emoji."""
    MIXED = "mixed"
    """No class holds DOMINANT_SHARE of the request's text tokens."""


DOMINANT_SHARE = 0.8

# Runs, not single characters: the characters a class holds are the total length of its runs,
# found with one match per word instead of one per character.
_PATTERNS: Mapping[ScriptClass, re.Pattern[str]] = {
    ScriptClass.CYRILLIC: re.compile(r"[\u0400-\u052f]+"),
    ScriptClass.CJK: re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+"),
    ScriptClass.HANGUL: re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]+"),
    ScriptClass.LATIN: re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]+"),
    ScriptClass.DIGITS: re.compile(r"[0-9]+"),
}
_LETTERS = re.compile(r"[^\W\d_]+")
_ASCII_CLASSES = bytes.maketrans(
    (string.digits + string.ascii_letters).encode(), b"D" * 10 + b"L" * 52
)
"""ASCII letters to ``L``, digits to ``D``: ``bytes.translate`` and ``count`` tally them in C."""

# Approximate cl100k tokens per character, so a class is weighed by tokens, not characters.
_TOKENS_PER_CHAR: Mapping[ScriptClass, float] = {
    ScriptClass.LATIN: 0.25,
    ScriptClass.DIGITS: 0.34,
    ScriptClass.CYRILLIC: 0.4,
    ScriptClass.CJK: 1.0,
    ScriptClass.HANGUL: 1.0,
    ScriptClass.OTHER: 0.8,
}


def classify(text: str) -> ScriptClass:
    """The class with the most (estimated) tokens in ``text``; LATIN for text without letters
    or digits (punctuation, whitespace)."""
    if text.isascii():
        tally = text.encode("ascii").translate(_ASCII_CLASSES)
        digits = tally.count(b"D") * _TOKENS_PER_CHAR[ScriptClass.DIGITS]
        letters = tally.count(b"L") * _TOKENS_PER_CHAR[ScriptClass.LATIN]
        return ScriptClass.DIGITS if digits > letters else ScriptClass.LATIN
    counts = {cls: _chars(pattern, text) for cls, pattern in _PATTERNS.items()}
    letters = _chars(_LETTERS, text)
    known_letters = sum(n for cls, n in counts.items() if cls is not ScriptClass.DIGITS)
    counts[ScriptClass.OTHER] = max(0, letters - known_letters)
    weighted = {cls: n * _TOKENS_PER_CHAR[cls] for cls, n in counts.items()}
    best = max(weighted, key=lambda cls: weighted[cls])
    return best if weighted[best] > 0 else ScriptClass.LATIN


def _chars(runs: re.Pattern[str], text: str) -> int:
    return sum(map(len, runs.findall(text)))


def dominant(tokens_by_class: Mapping[ScriptClass, int]) -> ScriptClass:
    """The class holding at least DOMINANT_SHARE of the tokens, else MIXED (LATIN if empty)."""
    total = sum(tokens_by_class.values())
    if total <= 0:
        return ScriptClass.LATIN
    best = max(tokens_by_class, key=lambda cls: tokens_by_class[cls])
    return best if tokens_by_class[best] >= DOMINANT_SHARE * total else ScriptClass.MIXED


_SKIP_PREFIXES = ("data:", "http://", "https://")
_STRUCTURAL_KEYS = frozenset({"role", "type", "id", "call_id", "tool_call_id", "tool_use_id"})


def script_of(value: object) -> ScriptClass:
    """The dominant class over the strings in a JSON value (keys, roles, types, ids, URLs and
    base64 excluded), each weighed by its estimated tokens. Iterative: any depth is fine."""
    return dominant(script_weights(value))


def add_weights(into: dict[ScriptClass, int], more: Mapping[ScriptClass, int]) -> None:
    for cls, n in more.items():
        into[cls] = into.get(cls, 0) + n


def script_weights(value: object) -> dict[ScriptClass, int]:
    """The estimated tokens per class that :func:`script_of` weighs. Additive: the weights of
    a list are the sums of its elements' weights, so a body's class can be put together from
    the weights of the messages that were looked at."""
    weights: dict[ScriptClass, int] = {}
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item or item.startswith(_SKIP_PREFIXES):
                continue
            cls = classify(item)
            weights[cls] = weights.get(cls, 0) + max(1, int(len(item) * _TOKENS_PER_CHAR[cls]))
        elif isinstance(item, dict):
            stack.extend(v for k, v in item.items() if k not in _STRUCTURAL_KEYS)
        elif isinstance(item, list):
            stack.extend(item)
    return weights
