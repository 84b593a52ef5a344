"""Built-in context windows and model-name matching.

Sizes are total context windows in tokens (input + output) as published by OpenAI and
Anthropic. Config overrides cover deployments, fine-tunes and anything newer than this table.

Matching: a key matches a model name equal to it or starting with it followed by a
non-alphanumeric character, and the longest matching key wins. So dated names resolve
(``gpt-4o-2024-08-06`` -> ``gpt-4o``) while ``gpt-4`` never captures ``gpt-4o`` or ``gpt-40``.
Names are lower-cased, a routing prefix up to the last ``/`` (``openai/gpt-4o``) and a
fine-tune ``ft:`` prefix are dropped, and cloud prefixes before ``claude`` (Bedrock's
``us.anthropic.claude-...``) are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

BUILTIN_WINDOWS: Mapping[str, int] = {
    # OpenAI
    "gpt-5": 400_000,
    "gpt-5-chat": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.5": 128_000,
    "gpt-4o": 128_000,
    "chatgpt-4o": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4-1106-preview": 128_000,
    "gpt-4-0125-preview": 128_000,
    "gpt-4-vision-preview": 128_000,
    "gpt-4-32k": 32_768,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "gpt-3.5-turbo-instruct": 4_096,
    "gpt-35-turbo": 16_385,
    "o1": 200_000,
    "o1-mini": 128_000,
    "o1-preview": 128_000,
    "o3": 200_000,
    "o3-mini": 200_000,
    "o4-mini": 200_000,
    "text-embedding-3": 8_191,
    "text-embedding-ada-002": 8_191,
    # Anthropic (the 1M window of some models needs a beta header, so 200k is the default)
    "claude": 200_000,
    "claude-2.0": 100_000,
    "claude-instant": 100_000,
}

# Hard input caps below (window - output): gpt-5 accepts at most 272k input tokens even
# when max_output_tokens is small.
BUILTIN_MAX_INPUT: Mapping[str, int] = {
    "gpt-5": 272_000,
}


def normalize_model(model: str) -> str:
    """The comparable form of a model name (see the module docstring)."""
    name = model.strip().lower()
    name = name.rsplit("/", 1)[-1]
    name = name.removeprefix("ft:")
    claude_at = name.find("claude")
    if claude_at > 0:
        name = name[claude_at:]
    return name


def longest_prefix(keys: Iterable[str], model: str) -> str | None:
    """The longest key that names ``model`` or a prefix of it ending at a word boundary."""
    best: str | None = None
    for key in keys:
        if not model.startswith(key):
            continue
        if len(model) > len(key) and model[len(key)].isalnum():
            continue
        if best is None or len(key) > len(best):
            best = key
    return best


def _lookup(table: Mapping[str, int], model: str) -> int | None:
    key = longest_prefix(table, model)
    return None if key is None else table[key]


def context_window(model: str | None, overrides: Mapping[str, int] | None = None) -> int | None:
    """Context window for ``model``; an override that matches wins over any built-in entry.

    None: unknown model (the caller should not trim what it cannot size).
    """
    if not model:
        return None
    name = normalize_model(model)
    if overrides:
        found = _lookup({normalize_model(k): v for k, v in overrides.items()}, name)
        if found is not None:
            return found
    return _lookup(BUILTIN_WINDOWS, name)


def max_input_tokens(model: str | None) -> int | None:
    """Published cap on input tokens when it is lower than the window minus output."""
    if not model:
        return None
    return _lookup(BUILTIN_MAX_INPUT, normalize_model(model))
