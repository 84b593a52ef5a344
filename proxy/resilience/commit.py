"""Commit point: hold a stream's head until its first content, so a failure before it is just
another failed attempt (retried, or served by a fallback) instead of a broken stream.

Nothing reaches the client while held; when content arrives, everything held is released
byte-identical in one write and the relay takes over. A hold is bounded in time and size:
past either bound the stream is committed as it is, as it would have been without a hold.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

import aiohttp

from ..forward import LiveResponse, ReplayResponse
from ..outcomes import StreamFailure
from ..sse import SSEParser
from ..stream_content import EventKind, StreamFamily, classify


class CommitCause(enum.StrEnum):
    CONTENT = "content"
    HOLD_TIME = "hold_time"
    HOLD_SIZE = "hold_size"


@dataclass(frozen=True, slots=True)
class HoldLimits:
    max_hold_s: float
    max_hold_bytes: int
    first_content_s: float


@dataclass(frozen=True, slots=True)
class Committed:
    """Relay ``response``: the held bytes first (one chunk), then the live rest."""

    response: ReplayResponse
    cause: CommitCause


@dataclass(frozen=True, slots=True)
class StreamFailed:
    """The stream failed before content; ``response`` replays what came, should nothing
    better be found."""

    response: ReplayResponse
    failure: StreamFailure
    event_type: str | None = None

    @property
    def held_bytes(self) -> int:
        return len(self.response.head)


async def hold_until_content(
    live: LiveResponse, family: StreamFamily, limits: HoldLimits
) -> Committed | StreamFailed:
    """Read the stream's head until it carries content, fails, or a hold bound is reached."""
    loop = asyncio.get_running_loop()
    cap = loop.time() + limits.max_hold_s
    parser = SSEParser()
    held: list[bytes] = []
    size = 0

    def replay(complete: bool = False) -> ReplayResponse:
        return ReplayResponse(live, b"".join(held), complete)

    while True:
        now = loop.time()
        if now >= cap:
            return Committed(replay(), CommitCause.HOLD_TIME)
        try:
            async with asyncio.timeout(min(limits.first_content_s, cap - now)):
                chunk = await live.content.readany()
        except TimeoutError:
            if loop.time() >= cap:
                return Committed(replay(), CommitCause.HOLD_TIME)
            return StreamFailed(replay(), StreamFailure.IDLE)
        except (aiohttp.ClientError, OSError):
            return StreamFailed(replay(), StreamFailure.CUT)
        if not chunk:
            cut = live.cut_short() is not None
            return StreamFailed(replay(True), StreamFailure.CUT if cut else StreamFailure.EMPTY)
        held.append(chunk)
        size += len(chunk)
        for event in parser.feed(chunk):
            seen = classify(family, event)
            if seen.kind is EventKind.CONTENT:
                return Committed(replay(), CommitCause.CONTENT)
            if seen.kind is EventKind.ERROR:
                return StreamFailed(replay(), StreamFailure.ERROR_EVENT, seen.event_type)
            if seen.kind is EventKind.END:
                return StreamFailed(replay(), StreamFailure.EMPTY)
        if size >= limits.max_hold_bytes:
            return Committed(replay(), CommitCause.HOLD_SIZE)
