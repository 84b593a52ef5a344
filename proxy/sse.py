"""Incremental Server-Sent Events parser (WHATWG HTML "Interpreting an event stream").

The relay forwards upstream bytes untouched; this parser reads a *copy* of them so taps
(usage, time to first token) can see events. Chunks split anywhere: inside a UTF-8
sequence, inside a CRLF pair, inside a field name. Only the incomplete tail is kept, and
it is bounded: an event larger than ``max_event_chars`` is dropped and the parser
resynchronises on the next blank line instead of growing without limit.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_EVENT_CHARS", "SSEEvent", "SSEParser", "plain_datas"]

DEFAULT_MAX_EVENT_CHARS = 8 << 20
"""One event (its data plus the line being assembled) may hold this many characters."""

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(slots=True)
class SSEEvent:
    """One dispatched event. ``event`` is ``"message"`` when the stream named no type;
    ``id`` is the stream's last event ID at dispatch time (None if it never sent one)."""

    event: str
    data: str
    id: str | None = None


def plain_datas(text: str, max_chars: int = DEFAULT_MAX_EVENT_CHARS) -> list[str] | None:
    """The data of each event in ``text`` when it is whole events of one ``data:`` line each
    (ends in a blank line, no CR): how every LLM provider streams. None for anything else."""
    if text[-2:] != "\n\n" or "\r" in text:
        return None
    datas: list[str] = []
    for block in text[:-2].split("\n\n"):
        if block[:5] != "data:" or "\n" in block or len(block) > max_chars:
            return None
        datas.append(block[6:] if block[5:6] == " " else block[5:])
    return datas


class SSEParser:
    """Bytes in, complete events out; never raises on malformed input.

    Invalid UTF-8 decodes to U+FFFD, as the spec requires. An event still open when the
    stream ends is never dispatched (the spec discards it), so there is no flush.
    """

    __slots__ = (
        "_data",
        "_data_len",
        "_decoder",
        "_discarding",
        "_event",
        "_last_id",
        "_max",
        "_skip_lf",
        "_started",
        "_tail",
        "_tail_len",
        "retry",
    )

    def __init__(self, max_event_chars: int = DEFAULT_MAX_EVENT_CHARS) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._max = max_event_chars
        self._started = False  # a first character was seen (BOM handling)
        self._skip_lf = False  # previous text ended in CR: a leading LF completes that CRLF
        self._tail: list[str] = []  # pieces of the line not yet terminated
        self._tail_len = 0
        self._data: list[str] = []  # one entry per ``data`` field of the open event
        self._data_len = 0
        self._event = ""
        self._last_id: str | None = None
        self._discarding = False  # an oversized event is being skipped up to its blank line
        self.retry: int | None = None
        """Reconnection time in ms from the last valid ``retry`` field, if any."""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse ``chunk`` and return the events it completed, in stream order."""
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        if not text:
            return []
        if "\n" not in text and "\r" not in text:
            self._hold(text)
            return []
        if text[-2:] == "\n\n" and self._clean():
            plain = self._plain_events(text)
            if plain is not None:
                return plain
        if self._tail:
            self._tail.append(text)
            text = "".join(self._tail)
            self._tail.clear()
            self._tail_len = 0
        lines = _LINE_END.split(text) if "\r" in text else text.split("\n")
        rest = lines.pop()  # after the last terminator: an unfinished line, often ""
        if not rest and text[-1] == "\r":
            self._skip_lf = True
        events: list[SSEEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        if rest:
            self._hold(rest)
        return events

    def _clean(self) -> bool:
        """Between events: nothing of an unfinished line, event or skipped event is held."""
        return not (self._tail or self._data or self._event or self._discarding)

    def at_boundary(self) -> bool:
        """Nothing of the stream is pending (no partial line, event, CRLF or UTF-8
        sequence): bytes that start here may be read without this parser."""
        return self._clean() and not self._skip_lf and not self._decoder.getstate()[0]

    def _plain_events(self, text: str) -> list[SSEEvent] | None:
        """The common case in one pass: whole events of one ``data:`` line each, as every
        LLM provider streams them (~3x cheaper than line by line). None when any block is
        anything else (names, ids, comments, several data lines, blank runs, oversized):
        the caller then parses ``text`` line by line, with the same result."""
        datas = plain_datas(text, self._max)
        if datas is None:
            return None
        last_id = self._last_id
        return [SSEEvent("message", data, last_id) for data in datas]

    def _hold(self, piece: str) -> None:
        """Keep an unterminated line piece, or drop the whole event when it grows too big."""
        if self._discarding:
            return  # the piece continues a line of the event being skipped
        self._tail.append(piece)
        self._tail_len += len(piece)
        if self._tail_len + self._data_len > self._max:
            self._drop_event()

    def _drop_event(self) -> None:
        self._tail.clear()
        self._tail_len = 0
        self._data.clear()
        self._data_len = 0
        self._event = ""
        self._discarding = True

    def _line(self, line: str) -> SSEEvent | None:
        """Apply one complete line; return an event when it was a dispatching blank line."""
        if not line:
            if self._discarding:
                self._discarding = False
                return None
            return self._dispatch()
        if self._discarding or line[0] == ":":
            return None
        colon = line.find(":")
        if colon < 0:
            field, value = line, ""
        else:
            field, value = line[:colon], line[colon + 1 :]
            if value[:1] == " ":
                value = value[1:]
        if field == "data":
            self._data.append(value)
            self._data_len += len(value) + 1
            if self._data_len > self._max:
                self._drop_event()
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._last_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            return None
        data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        event = SSEEvent(self._event or "message", data, self._last_id)
        self._data.clear()
        self._data_len = 0
        self._event = ""
        return event
