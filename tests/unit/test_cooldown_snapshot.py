"""The cooldown stores' read-only snapshot (what the dashboard shows), and redis-py imported
only when a Redis store is built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from proxy.resilience.cooldown import MemoryCooldownStore, RedisCooldownStore

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def test_memory_snapshot_lists_only_running_cooldowns_and_changes_nothing() -> None:
    clock = Clock(100.0)
    store = MemoryCooldownStore(clock)
    await store.cool("a", 130.0)
    await store.cool("b", 101.0)
    assert {"a": 130.0, "b": 101.0} == store.snapshot()
    clock.t = 102.0
    assert {"a": 130.0} == store.snapshot()
    snap = store.snapshot()
    snap["c"] = 500.0  # a copy: the store is untouched
    assert (0.0, 130.0) == (await store.until("c"), await store.until("a"))


async def test_redis_snapshot_is_this_process_view_and_needs_no_server() -> None:
    clock = Clock(100.0)
    store = RedisCooldownStore("redis://127.0.0.1:1/0", clock=clock, timeout_s=0.05)
    await store.cool("a", 130.0)  # Redis is unreachable: kept locally
    assert {"a": 130.0} == store.snapshot()
    await store.close()


def test_importing_the_store_module_does_not_import_redis() -> None:
    code = (
        "import sys; import proxy.resilience.cooldown as c; c.make_store('memory', None);"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('redis', 'opentelemetry')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert "[]" == done.stdout.strip()
