"""The pacer's live state as dashboard rows: per model scope, how full its buckets are, how
many requests wait, and when the next one is expected to fit."""

from __future__ import annotations

from ..resilience.pacer import Pacer
from ..resilience.ratelimits import DEFAULT_WINDOW_S
from ..resilience.scope import LimitKind, Scope
from .view import PacingState


class PacerView:
    """A :class:`~proxy.dashboard.view.PacingSource` over this process's pacer (sync, no IO)."""

    def __init__(self, pacer: Pacer, window_s: float = DEFAULT_WINDOW_S) -> None:
        self._pacer = pacer
        self._window_s = window_s

    def pacing_snapshot(self) -> list[PacingState]:
        rows = []
        for key in self._pacer.store.local_keys():
            scope = Scope.from_key(key)
            level = self._pacer.store.local_level(key)
            if scope is None or scope.kind is not LimitKind.MODEL or level is None:
                continue
            levels = self._pacer.remaining(scope)
            queued = self._pacer.queue_length(scope)
            waits = [
                (1.0 - left) * self._window_s / level.buckets[bucket].limit
                for bucket, left in levels.items()
                if left < 1.0
            ]
            state = "holding" if queued else ("throttled" if waits else "open")
            parts = [
                f"{bucket.value} {max(0.0, left):.0f}/{level.buckets[bucket].limit:.0f}"
                for bucket, left in levels.items()
            ]
            if queued:
                parts.append(f"{queued} queued")
            remaining = round(max(waits), 1) if waits else None
            rows.append(PacingState(scope.label, state, remaining, ", ".join(parts) or None))
        return rows
