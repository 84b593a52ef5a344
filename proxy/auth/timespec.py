"""Times on the command line and in the admin API: ``7d`` ago, ``30d`` from now, or a date."""

from __future__ import annotations

import datetime as dt
import re

__all__ = ["parse_duration", "parse_expires", "parse_since"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``15m``, ``12h``, ``7d``, ``2w``; raises ValueError."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r}: expected a duration like 30m, 12h, 7d or 2w")
    return float(match[1]) * _UNITS[match[2]]


def _instant(text: str) -> float | None:
    """An ISO date or date-time (UTC unless it says otherwise), or None if it is not one."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def parse_since(text: str, now: float) -> float:
    """``7d`` (that long before ``now``) or ``2026-05-01`` (that instant), as epoch seconds."""
    instant = _instant(text)
    return instant if instant is not None else now - parse_duration(text)


def parse_expires(text: str, now: float) -> float:
    """``30d`` (that long after ``now``) or ``2026-12-31`` (that instant), as epoch seconds."""
    instant = _instant(text)
    return instant if instant is not None else now + parse_duration(text)
