"""Garbage-collector settings for the long-running server process.

Why: with CPython's default gen-0 threshold (700 net container allocations) a young
collection ran every ~12 proxied requests and the collector took ~115 µs per request in all
on the bench machine; at 20,000 it takes ~14 µs (bench/RESULTS.md). Almost every object a
request creates is freed by reference counting anyway; the cyclic collector only has to find
the few cycles (tasks, exceptions with tracebacks), which it still does several times a
second under load, for a bounded extra footprint (about ``GEN0_THRESHOLD`` objects).

Everything alive once the server has started (imported modules, config, routes, the token
tables when loaded) lives as long as the process: ``gc.freeze`` takes it out of every future
collection, and in a supervisor it keeps those pages shared with the forked workers instead
of being written to (collections mark every object they visit).
"""

from __future__ import annotations

import gc

__all__ = ["GEN0_THRESHOLD", "settle_heap"]

GEN0_THRESHOLD = 20_000
"""Net container allocations between young collections (CPython's default: 700)."""


def settle_heap() -> None:
    """Collect once, freeze what survived, and raise the young generation's threshold.

    Call it in the serving process (or the supervisor, before forking) once the long-lived
    state exists; never in a process that keeps creating and dropping servers (tests), where
    frozen objects would never be collected.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, older, oldest)
