"""Reload's pieces: which keys a reload may change, when a replaced generation is closed, and
what a failed reload leaves behind."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from proxy import config as config_mod
from proxy.reload import RESTART_ONLY, Generations, Reloader, adopt, pinned
from proxy.sdnotify import Notifier
from proxy.state import AppState, StateHolder
from tests.conftest import base_config


def cfg(**overrides: Any) -> config_mod.Config:
    return config_mod.from_dict(base_config("http://up.test", **overrides), env={})


class Pipeline:
    def __init__(self) -> None:
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


def state(config: config_mod.Config | None = None) -> AppState:
    return AppState(
        config=config or cfg(),
        router=None,
        pipeline=Pipeline(),  # type: ignore[arg-type]
        dispatcher=None,
        logger=None,  # type: ignore[arg-type]
    )


def closed(s: AppState) -> int:
    return s.pipeline.closed  # type: ignore[attr-defined, no-any-return]


# -- adopt -------------------------------------------------------------------------------------


def test_reloadable_keys_change_and_restart_only_keys_keep_their_running_values() -> None:
    running = cfg()
    new = cfg(
        listen={"host": "0.0.0.0", "port": 9, "allow_remote": True},
        workers=4,
        limits={"max_body_bytes": 10},
        logging={"level": "debug"},
        metrics={"enabled": False},
        drain_timeout_s=1,
        state={"backend": "redis", "url": "redis://x"},
        auth={"mode": "keys"},
        store={"path": "elsewhere.db"},
        timeouts={"connect_s": 1, "first_byte_s": 2},
        retry={"max_attempts": 9},
        otel={"endpoint": "http://127.0.0.1:4318"},
        dashboard={"enabled": False},
    )
    adopted, changed = adopt(running, new)
    assert [*RESTART_ONLY, "timeouts.connect_s"] == changed
    for key in RESTART_ONLY:
        assert getattr(running, key) == getattr(adopted, key)
    assert (running.timeouts.connect_s, 2.0) == (
        adopted.timeouts.connect_s,
        adopted.timeouts.first_byte_s,
    )
    assert 9 == adopted.routes[0].retry.max_attempts


def test_a_config_with_only_reloadable_changes_names_no_keys() -> None:
    running = cfg()
    new = dataclasses.replace(running, routes=running.routes[:1], pricing={})
    assert (new, []) == adopt(running, new)


# -- generations -------------------------------------------------------------------------------


async def test_a_replaced_generation_closes_after_its_last_request() -> None:
    holder = StateHolder()
    holder.current = old = state()
    gens = Generations(holder)
    first, second = gens.enter(), gens.enter()
    new = state()
    assert old is gens.swap(new)
    assert (new, 1, 0) == (holder.current, gens.retired, closed(old))
    gens.leave(first)
    await asyncio.sleep(0)
    assert 0 == closed(old)  # one request still runs on it
    gens.leave(second)
    await asyncio.sleep(0)
    assert (1, 0, 0) == (closed(old), gens.retired, closed(new))


async def test_an_idle_generation_closes_when_replaced() -> None:
    holder = StateHolder()
    holder.current = old = state()
    gens = Generations(holder)
    gens.leave(gens.enter())
    gens.swap(state())
    await asyncio.sleep(0)
    assert 1 == closed(old)


async def test_shutdown_closes_the_current_and_still_running_generations_once() -> None:
    holder = StateHolder()
    holder.current = old = state()
    gens = Generations(holder)
    gens.enter()  # cancelled at shutdown: never leaves
    new = state()
    gens.swap(new)
    await gens.close()
    assert (1, 1) == (closed(old), closed(new))


async def test_pinned_handler_counts_the_request_on_the_generation_it_started_with() -> None:
    holder = StateHolder()
    holder.current = old = state()
    gens = Generations(holder)
    started, finish = asyncio.Event(), asyncio.Event()

    async def handler(request: Any, seen: Any) -> Any:
        started.set()
        await finish.wait()
        return seen

    task = asyncio.create_task(pinned(handler, gens)(make_mocked_request("GET", "/")))
    await started.wait()
    gens.swap(state())
    await asyncio.sleep(0)
    assert (0, 1) == (closed(old), gens.retired)
    finish.set()
    assert old is await task
    await asyncio.sleep(0)
    assert 1 == closed(old)


# -- reloader ----------------------------------------------------------------------------------


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.lines.append((level, event, kw))


class Sent(Notifier):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def send(self, *fields: str) -> bool:
        self.sent.append(fields[0])
        return True


@pytest.mark.parametrize(
    "loader_error",
    [config_mod.ConfigError("routes[0].provider: bad"), OSError("disk gone")],
    ids=["invalid", "unreadable"],
)
async def test_failed_reload_keeps_the_running_generation_and_logs_why(
    loader_error: Exception,
) -> None:
    holder = StateHolder()
    holder.current = running = state()
    log, notifier = Log(), Sent()

    def loader() -> config_mod.Config:
        raise loader_error

    reloader = Reloader(Generations(holder), state, log)
    assert False is await reloader.reload(loader, notifier)
    assert running is holder.current
    assert [
        ("error", "config reload failed, keeping the running config", {"error": str(loader_error)})
    ] == log.lines
    assert ["RELOADING=1", "READY=1"] == notifier.sent


async def test_reload_builds_from_the_adopted_config_and_warns_about_restart_keys() -> None:
    holder = StateHolder()
    holder.current = state()
    log, notifier = Log(), Sent()
    new = cfg(drain_timeout_s=1, routes=base_config("http://up.test")["routes"][:1])
    reloader = Reloader(Generations(holder), state, log)
    assert True is await reloader.reload(lambda: new, notifier)
    assert (30.0, ("/openai",)) == (
        holder.current.config.drain_timeout_s,
        tuple(r.prefix for r in holder.current.config.routes),
    )
    assert [
        (
            "warning",
            "config keys changed that take effect only after a restart",
            {"keys": ["drain_timeout_s"]},
        ),
        ("info", "config reloaded", {"routes": ["/openai"]}),
    ] == log.lines
    assert ["RELOADING=1", "READY=1"] == notifier.sent
