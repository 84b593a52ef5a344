"""Chunks of a chat stream kept as they came, and read in bulk only when needed.

After a stream's first content nearly every event can only add text (the usage object, the
finish reason, an error and ``[DONE]`` come at the end). Parsing each event as it passes is
most of what observing a stream costs, so whole-event chunks are held as bytes and split in
one pass when the stream ends, the text is wanted or the hold is full.
"""

from __future__ import annotations

from .sse import plain_datas
from .usage_wire import FINISH_REASON, USAGE_OBJECT

_MARKERS = ('"error"', "[DONE]")
"""What :func:`proxy.usage_wire.only_text` looks for, plus the end of the stream. One search
each: a literal start lets the regex engine skip ahead, an alternation would not (~20x)."""


def _first_non_text(text: str) -> int:
    """Where the first sign of something other than text is, or -1."""
    found = [
        m.start() for m in (USAGE_OBJECT.search(text), FINISH_REASON.search(text)) if m is not None
    ]
    found += [i for i in (text.find(marker) for marker in _MARKERS) if i >= 0]
    return min(found, default=-1)


class HeldChunks:
    """Whole-event chunks (each ends in a blank line, none splits an event) in stream order."""

    __slots__ = ("_chunks", "size")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self.size = 0

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def add(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self.size += len(chunk)

    def take(self) -> tuple[list[str], bytes]:
        """Empties the hold: the data of the leading events that can only carry text, and the
        bytes from the first event that may carry more (all of them when the held events are
        not all plain ``data:`` events), for the event-by-event parse."""
        raw = b"".join(self._chunks)
        self._chunks.clear()
        self.size = 0
        text = raw.decode("utf-8", "replace")
        first = _first_non_text(text)
        if first < 0:
            cut = len(text)
        else:
            end = text.rfind("\n\n", 0, first)
            cut = end + 2 if end >= 0 else 0
        datas = plain_datas(text[:cut]) if cut else []
        if datas is None:
            return [], raw
        return datas, text[cut:].encode()
