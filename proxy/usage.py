"""Token usage read from a copy of an upstream response, without altering or holding bytes.

The relay shows every upstream chunk to a :class:`UsageTap` after writing it to the client.
The tap parses SSE streams (OpenAI Chat Completions, OpenAI Responses, Anthropic Messages)
or a JSON body, and reports the first content event (time to first token), the usage block
the provider sent, the model, how the stream ended, why generation stopped (finish reasons),
and the generated text so a caller can estimate completion tokens when no usage came. It
never raises: bad input only means "no usage" (``source="none"``).

Once the first content is known, events that can only carry text (no usage, finish reason or
error: a cheap look at the raw data says which) are kept unparsed and parsed together, in one
JSON array, when the text is asked for or an event read at once brings text of its own:
per-event parsing was most of a stream's CPU, and when the provider reports usage the text
is never needed at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from proxy.sse import SSEEvent, SSEParser
from proxy.usage_held import HeldChunks

from .usage_wire import (
    CHAT_TEXT_KEYS,
    body_texts,
    error_type,
    loads_many,
    loads_object,
    make_inflater,
    only_text,
    responses_finish,
    strings_of,
)

__all__ = ["Usage", "UsageSource", "UsageTap"]

UsageSource = Literal["upstream", "estimate", "none"]

DEFAULT_TEXT_CAP = 1 << 20
"""Characters of generated text kept for estimation (~250k tokens)."""

_RESPONSES_END = frozenset({"response.completed", "response.incomplete", "response.failed"})
_RESPONSES_READ = _RESPONSES_END | {"response.created", "response.in_progress"}
_ANTHROPIC_DELTA = {
    "text_delta": "text",
    "input_json_delta": "partial_json",
    "thinking_delta": "thinking",
}
_DEFERRED_MAX_CHARS = 256 << 10
"""Unparsed event data kept before it is parsed anyway (bounds the memory it holds)."""


@dataclass(slots=True)
class Usage:
    """Token counts in ONE convention for every provider.

    - ``prompt_tokens``: all input tokens, cache reads and cache writes included. OpenAI's
      ``prompt_tokens`` / ``input_tokens`` already include cached tokens; Anthropic's
      ``input_tokens`` excludes them, so ``cache_read_input_tokens`` and
      ``cache_creation_input_tokens`` are added.
    - ``cached_tokens``: cache reads, a part of ``prompt_tokens``.
    - ``cache_creation_tokens``: cache writes, a part of ``prompt_tokens`` (Anthropic only).
    - ``completion_tokens``: all output tokens, reasoning/thinking included.
    - ``reasoning_tokens``: a part of ``completion_tokens`` (when the provider reports it).
    - ``source``: ``"upstream"`` (read from the response), ``"estimate"`` (a caller counted
      the text), ``"none"`` (nothing known). The tap itself never produces ``"estimate"``.
    """

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None
    reasoning_tokens: int | None = None
    source: UsageSource = "none"

    @property
    def total_tokens(self) -> int | None:
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


def _count(value: object) -> int | None:
    """A token count from JSON, or None for anything that is not a non-negative integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


def _sub(obj: dict, key: str, field: str) -> int | None:
    inner = obj.get(key)
    return _count(inner.get(field)) if isinstance(inner, dict) else None


@dataclass(slots=True)
class _Counts:
    """Provider-native counts; later non-null values win (Anthropic's message_delta)."""

    input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None
    reasoning: int | None = None

    def merge(self, other: _Counts) -> None:
        for name in ("input", "output", "cache_read", "cache_write", "reasoning"):
            value = getattr(other, name)
            if value is not None:
                setattr(self, name, value)

    def usage(self, anthropic: bool) -> Usage:
        prompt = self.input
        if anthropic and prompt is not None:
            prompt += (self.cache_read or 0) + (self.cache_write or 0)
        known = prompt is not None or self.output is not None
        return Usage(
            prompt,
            self.output,
            self.cache_read,
            self.cache_write,
            self.reasoning,
            "upstream" if known else "none",
        )


def _openai_counts(usage: dict) -> _Counts:
    """Chat Completions (prompt/completion) or Responses API (input/output) names."""
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        return _Counts(
            input=_count(usage.get("prompt_tokens")),
            output=_count(usage.get("completion_tokens")),
            cache_read=_sub(usage, "prompt_tokens_details", "cached_tokens"),
            reasoning=_sub(usage, "completion_tokens_details", "reasoning_tokens"),
        )
    return _Counts(
        input=_count(usage.get("input_tokens")),
        output=_count(usage.get("output_tokens")),
        cache_read=_sub(usage, "input_tokens_details", "cached_tokens"),
        reasoning=_sub(usage, "output_tokens_details", "reasoning_tokens"),
    )


def _anthropic_counts(usage: dict) -> _Counts:
    write = _count(usage.get("cache_creation_input_tokens"))
    split = usage.get("cache_creation")  # {"ephemeral_5m_input_tokens": n, "ephemeral_1h_...}
    if write is None and isinstance(split, dict):
        parts = [n for n in map(_count, split.values()) if n is not None]
        write = sum(parts) if parts else None
    return _Counts(
        input=_count(usage.get("input_tokens")),
        output=_count(usage.get("output_tokens")),
        cache_read=_count(usage.get("cache_read_input_tokens")),
        cache_write=write,
    )


def _plain_content(obj: dict) -> str | None:
    """The text of a chat chunk whose one choice's delta holds ``content`` and nothing else
    (nearly every chunk of a stream); None for any other shape."""
    choices = obj.get("choices")
    if type(choices) is not list or len(choices) != 1:
        return None
    choice = choices[0]
    delta = choice.get("delta") if type(choice) is dict else None
    if type(delta) is not dict or len(delta) != 1:
        return None
    text = delta.get("content")
    return text if type(text) is str else None


class UsageTap:
    """Observes one upstream response. ``feed`` every chunk, then ``finish`` once.

    Public state: ``completion_text`` (generated text, bounded), ``model`` (as reported
    upstream), ``finish_reasons`` (one per choice, in choice order), ``saw_terminal``
    (OpenAI ``[DONE]``, a Responses terminal event, Anthropic ``message_stop``),
    ``error_event`` (type of an in-stream error, e.g. ``overloaded_error``).
    Streams fill these as events arrive; a JSON body is parsed once, in ``finish``.
    """

    def __init__(
        self,
        provider: Literal["openai", "anthropic"],
        *,
        streaming: bool,
        content_encoding: str | None = None,
        max_json_bytes: int = 8 << 20,
        max_text_chars: int = DEFAULT_TEXT_CAP,
    ) -> None:
        self._anthropic = provider == "anthropic"
        self._streaming = streaming
        self._inflater, readable = make_inflater(content_encoding)
        self._dead = not readable  # stop looking: unreadable coding, overflow, internal bug
        self._parser = SSEParser(max_event_chars=max_json_bytes) if streaming else None
        self._max_json = max_json_bytes
        self._body: list[bytes] = []
        self._body_len = 0
        self._text: list[str] = []
        self._text_room = max_text_chars
        self._deferred: list[tuple[str, str]] = []  # (event name, data), in stream order
        self._deferred_chars = 0
        self._held = HeldChunks()
        self._unread: dict | None = None  # a parsed JSON body whose text was not read yet
        self._content_seen = False
        self._counts = _Counts()
        self._result: Usage | None = None
        self.model: str | None = None
        self.saw_terminal = False
        self.error_event: str | None = None
        self._finish: dict[int, str] = {}

    @property
    def finish_reasons(self) -> tuple[str, ...]:
        return tuple(self._finish[i] for i in sorted(self._finish))

    def _set_finish(self, index: object, reason: object) -> None:
        if isinstance(reason, str) and reason and isinstance(index, int) and 0 <= index < 128:
            self._finish[index] = reason

    @property
    def completion_text(self) -> str:
        try:
            if self._unread is not None:  # a JSON body's text, read only when asked for
                obj, self._unread = self._unread, None
                for text in body_texts(obj):
                    self._content(text)
            self._drain()
        except Exception:  # the tap must never raise
            self._deferred.clear()
        if len(self._text) > 1:
            self._text[:] = ["".join(self._text)]
        return self._text[0] if self._text else ""

    def feed(self, chunk: bytes) -> bool:
        """Observe one chunk. True exactly once: on the chunk that completes the first event
        carrying generated content (streams), or on the first non-empty chunk (JSON bodies,
        where the first byte stands in for the first token)."""
        if not chunk or self._result is not None:
            return False
        seen_before = self._content_seen
        if not self._streaming and not seen_before:
            self._content_seen = True
        if self._dead:
            return not seen_before and self._content_seen
        try:
            if self._inflater is None:
                self._consume(chunk)
            else:
                for piece in self._inflater.feed(chunk):
                    self._consume(piece)
        except Exception:  # the tap must never break the relay it observes
            self._dead = True
        return not seen_before and self._content_seen

    def finish(self) -> Usage:
        """Usage after the body ended (idempotent). Counts stay ``None`` when unknown."""
        if self._result is not None:
            return self._result
        try:
            if not self._dead and self._inflater is not None:
                self._consume(self._inflater.flush())
            if not self._dead and self._held:
                self._settle()
            if not self._streaming and not self._dead and self._body:
                self._read_body(b"".join(self._body))
        except Exception:
            self._dead = True
        self._body.clear()
        self._result = self._counts.usage(self._anthropic)
        return self._result

    # -- plumbing --------------------------------------------------------------------------

    def _consume(self, data: bytes) -> None:
        if not data:
            return
        if self._parser is not None:
            if self._holds(data):
                self._held.add(data)
                if self._held.size > _DEFERRED_MAX_CHARS:
                    self._settle()
                return
            if self._held:
                self._settle()
            on_event = self._anthropic_event if self._anthropic else self._openai_event
            for event in self._parser.feed(data):
                on_event(event)
            return
        self._body_len += len(data)
        if self._body_len > self._max_json:
            self._body.clear()
            self._dead = True
            return
        self._body.append(data if isinstance(data, bytes) else bytes(data))

    def _holds(self, data: bytes) -> bool:
        """Whether ``data`` joins the held chunks: a chat stream past its first content, the
        chunk whole events, and nothing of an earlier chunk left half-parsed."""
        if (
            self._anthropic
            or not self._content_seen
            or self.model is None
            or data[-2:] != b"\n\n"
            or self._text_room <= 0
        ):
            return False
        assert self._parser is not None
        return bool(self._held) or self._parser.at_boundary()

    def _settle(self) -> None:
        """Read the held chunks: their text events deferred, the rest parsed as usual."""
        datas, rest = self._held.take()
        if datas and self._text_room > 0:
            self._deferred.extend([("message", data) for data in datas])
            self._deferred_chars += sum(map(len, datas))
            if self._deferred_chars > _DEFERRED_MAX_CHARS:
                self._drain()
        if rest:
            assert self._parser is not None
            for event in self._parser.feed(rest):
                self._openai_event(event)

    def _content(self, text: str | None = None) -> None:
        self._content_seen = True
        if text and self._deferred:
            self._drain()  # the text deferred so far comes first
        if text and self._text_room > 0:
            if len(text) > self._text_room:
                text = text[: self._text_room]
            self._text.append(text)
            self._text_room -= len(text)

    def _defer(self, name: str, data: str) -> None:
        """Keep a text-only event for later (dropped once the kept text is full)."""
        if self._text_room <= 0:
            return
        self._deferred.append((name, data))
        self._deferred_chars += len(data)
        if self._deferred_chars > _DEFERRED_MAX_CHARS:
            self._drain()

    def _drain(self) -> None:
        """Parse the deferred events, in order, before anything else adds text."""
        if self._held:
            self._settle()
        if not self._deferred:
            return
        deferred, self._deferred = self._deferred, []
        self._deferred_chars = 0
        read = self._anthropic_object if self._anthropic else self._openai_object
        run: list[str] = []  # consecutive plain content deltas, added as one text
        for (name, _), obj in zip(deferred, loads_many([d for _, d in deferred]), strict=True):
            if obj is None:
                continue
            chat = name == "message" and not self._anthropic and "type" not in obj
            if chat:
                text = _plain_content(obj)
                if text is not None:
                    if text:
                        run.append(text)
                    continue
            if run:
                self._content("".join(run))
                run.clear()
            if chat:
                self._chat_text(obj)
            else:
                read(name, obj)
        if run:
            self._content("".join(run))

    def _set_model(self, value: object) -> None:
        if self.model is None and isinstance(value, str) and value:
            self.model = value

    def _set_error(self, payload: object) -> None:
        if self.error_event is None:
            self.error_event = error_type(payload)

    # -- OpenAI ----------------------------------------------------------------------------

    def _openai_event(self, ev: SSEEvent) -> None:
        name, data = ev.event, ev.data
        if name == "message":
            if len(data) < 16 and data.strip() == "[DONE]":
                self.saw_terminal = True
                return
            if self._content_seen and self.model is not None and only_text(data):
                self._defer(name, data)
                return
        elif name == "error":
            self._set_error(loads_object(data))
            return
        elif name.endswith(".delta"):
            if self._content_seen:
                self._defer(name, data)
                return
        elif name not in _RESPONSES_READ:
            return
        obj = loads_object(data)
        if obj is not None:
            self._openai_object(name, obj)

    def _openai_object(self, _name: str, obj: dict) -> None:
        kind = obj.get("type")
        if isinstance(kind, str) and (kind.startswith("response.") or kind == "error"):
            self._responses_event(kind, obj)
        else:
            self._chat_chunk(obj)

    def _chat_chunk(self, obj: dict) -> None:
        self._set_model(obj.get("model"))
        if obj.get("error"):
            self._set_error(obj)
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self._counts.merge(_openai_counts(usage))
        choices = obj.get("choices")
        if not isinstance(choices, list):
            return
        for n, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            self._set_finish(choice.get("index", n), choice.get("finish_reason"))
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._chat_delta(delta)
            elif isinstance(choice.get("text"), str) and choice["text"]:
                self._content(choice["text"])  # legacy /v1/completions stream

    def _chat_text(self, obj: dict) -> None:
        """A deferred chat chunk: only its text, since ``only_text`` ruled out a usage object,
        a finish reason and an error, and the model is known."""
        choices = obj.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict):
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    self._chat_delta(delta)
                elif isinstance(choice.get("text"), str) and choice["text"]:
                    self._content(choice["text"])

    def _chat_delta(self, delta: dict) -> None:
        """Content = non-empty text, refusal, reasoning or tool call; a role-only delta is not."""
        for key in CHAT_TEXT_KEYS:
            value = delta.get(key)
            if isinstance(value, str) and value:
                self._content(value)
        calls = delta.get("tool_calls")
        legacy = delta.get("function_call")  # legacy functions API
        if not calls and not legacy:
            return  # a text delta, nearly every one of a stream
        calls = calls if isinstance(calls, list) else []
        functions = [c.get("function") for c in calls if isinstance(c, dict)]
        functions.append(legacy)
        if calls or functions[-1]:
            self._content()
        for fn in functions:
            for text in strings_of(fn, ("name", "arguments")) if isinstance(fn, dict) else ():
                self._content(text)

    def _responses_event(self, kind: str, obj: dict) -> None:
        if kind.endswith(".delta"):
            delta = obj.get("delta")
            if isinstance(delta, str) and delta:
                is_audio = "audio" in kind and "transcript" not in kind
                self._content(None if is_audio else delta)
            return
        if kind == "error":
            self._set_error(obj)
            return
        response = obj.get("response")
        if isinstance(response, dict):
            self._set_model(response.get("model"))
            usage = response.get("usage")
            if isinstance(usage, dict):
                self._counts.merge(_openai_counts(usage))
            if kind == "response.failed":
                self._set_error(response)
        if kind in _RESPONSES_END:
            self.saw_terminal = True
            if isinstance(response, dict):
                self._set_finish(0, responses_finish(response))

    # -- Anthropic -------------------------------------------------------------------------

    def _anthropic_event(self, ev: SSEEvent) -> None:
        name = ev.event
        if name == "message_stop":
            self.saw_terminal = True
            return
        if name == "content_block_delta":
            if self._content_seen:
                self._defer(name, ev.data)
                return
        elif name not in ("message_start", "message_delta", "error", "message"):
            return  # ping, content_block_start/stop: nothing to read
        obj = loads_object(ev.data)
        if obj is None:
            if name == "error":
                self._set_error(None)
            return
        self._anthropic_object(name, obj)

    def _anthropic_object(self, name: str, obj: dict) -> None:
        kind = obj.get("type") if name == "message" else name
        if kind == "content_block_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                text = delta.get(_ANTHROPIC_DELTA.get(delta.get("type"), ""))  # type: ignore[arg-type]
                if isinstance(text, str) and text:
                    self._content(text)
        elif kind in ("message_start", "message_delta"):
            message = obj.get("message")
            holder = message if kind == "message_start" and isinstance(message, dict) else obj
            self._set_model(holder.get("model"))
            usage = holder.get("usage")
            if isinstance(usage, dict):
                self._counts.merge(_anthropic_counts(usage))
            delta = obj.get("delta")
            if kind == "message_delta" and isinstance(delta, dict):
                self._set_finish(0, delta.get("stop_reason"))
        elif kind == "message_stop":
            self.saw_terminal = True
        elif kind == "error":
            self._set_error(obj)

    # -- non-streaming JSON ----------------------------------------------------------------

    def _read_body(self, body: bytes) -> None:
        obj = loads_object(body)
        if obj is None:
            return
        self._set_model(obj.get("model"))
        usage = obj.get("usage")
        if isinstance(usage, dict):
            counts = _anthropic_counts(usage) if self._anthropic else _openai_counts(usage)
            self._counts.merge(counts)
        self._unread = obj
        self._body_finish(obj)

    def _body_finish(self, obj: dict) -> None:
        """Chat ``choices[].finish_reason``, Anthropic ``stop_reason``, Responses ``status``."""
        choices = obj.get("choices")
        for n, choice in enumerate(choices if isinstance(choices, list) else ()):
            if isinstance(choice, dict):
                self._set_finish(choice.get("index", n), choice.get("finish_reason"))
        if self._anthropic:
            self._set_finish(0, obj.get("stop_reason"))
        elif obj.get("object") == "response":
            self._set_finish(0, responses_finish(obj))
