"""Script classes: the fast classifier agrees with the per-character rule it replaced, and a
body's class can be put together from its messages' weights."""

from __future__ import annotations

import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.context.corpus import LANGUAGES, conversation, text
from proxy.context.scripts import (
    _TOKENS_PER_CHAR,
    ScriptClass,
    add_weights,
    classify,
    dominant,
    script_of,
    script_weights,
)

_REFERENCE = {
    ScriptClass.CYRILLIC: re.compile(r"[\u0400-\u052f]"),
    ScriptClass.CJK: re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"),
    ScriptClass.HANGUL: re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]"),
    ScriptClass.LATIN: re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]"),
    ScriptClass.DIGITS: re.compile(r"[0-9]"),
}


def reference_classify(text: str) -> ScriptClass:
    """The rule as first written: one regex match per character of each class."""
    counts = {cls: pattern.subn("", text)[1] for cls, pattern in _REFERENCE.items()}
    letters = re.compile(r"[^\W\d_]").subn("", text)[1]
    known = sum(n for cls, n in counts.items() if cls is not ScriptClass.DIGITS)
    counts[ScriptClass.OTHER] = max(0, letters - known)
    if text.isascii():
        counts = {k: v for k, v in counts.items() if k in (ScriptClass.DIGITS, ScriptClass.LATIN)}
        digits = counts[ScriptClass.DIGITS] * _TOKENS_PER_CHAR[ScriptClass.DIGITS]
        latin = counts[ScriptClass.LATIN] * _TOKENS_PER_CHAR[ScriptClass.LATIN]
        return ScriptClass.DIGITS if digits > latin else ScriptClass.LATIN
    weighted = {cls: n * _TOKENS_PER_CHAR[cls] for cls, n in counts.items()}
    best = max(weighted, key=lambda cls: weighted[cls])
    return best if weighted[best] > 0 else ScriptClass.LATIN


_ALPHABET = st.sampled_from(
    "aZ09 _.,-\n\t\u00e9\u00d7\u00f7\u00aa\u0401\u0482\u0500\u0530\u3041\u30a0\u30fb\u3402"
    "\u4e2d\u4dc0\uf900\uac00\ud7a4\u1100\u3131\u3190\u1e00\u0627\u0905\u0e01\u03b1\u05d0"
    "\U0001f600\U00020000\u2163\u00b2"
)


@settings(max_examples=500)
@given(st.text(_ALPHABET, max_size=60) | st.text(max_size=60))
def test_classify_agrees_with_the_per_character_rule(value: str) -> None:
    assert reference_classify(value) == classify(value)


def test_classify_agrees_on_the_corpus() -> None:
    rng = random.Random(3)
    for lang in LANGUAGES:
        sample = text(lang, rng, 30)
        assert reference_classify(sample) == classify(sample), lang
    mixed = "".join(text(lang, rng, 2) for lang in LANGUAGES)
    assert reference_classify(mixed) == classify(mixed)


def test_a_bodys_weights_are_the_sums_of_its_messages_weights() -> None:
    messages = conversation("ru", 6) + conversation("en", 2) + conversation("zh", 3)
    weights: dict[ScriptClass, int] = {}
    for message in messages:
        add_weights(weights, script_weights(message))
    assert script_weights(messages) == weights
    assert script_of(messages) == dominant(weights)
