"""``--workers 2``: both workers serve the shared port, a dead one is restarted, /metrics counts
every worker's requests, and the supervisor speaks for all of them to systemd."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.fake_upstream import FakeUpstream
from tests.conftest import base_config, free_port
from tests.functional.service_support import (
    CHAT,
    JSON,
    STREAM_BODY,
    NotifySocket,
    ServiceProcess,
    eventually,
    health,
    post,
    worker_pids,
)


async def workers(proxy: ServiceProcess, count: int = 2, gone: Iterable[int] = ()) -> set[int]:
    """Wait until the supervisor has ``count`` children, none of them ``gone``; their pids."""
    assert proxy.proc is not None
    proc, old = proxy.proc, set(gone)

    def check() -> set[int] | None:
        pids = worker_pids(proc)
        return pids if len(pids) == count and not pids & old else None

    return await eventually(check)  # type: ignore[no-any-return]


async def ready(proxy: ServiceProcess, pids: set[int]) -> None:
    """Wait until the supervisor has seen each of ``pids`` ready."""
    await eventually(lambda: pids <= {e["pid"] for e in proxy.events("worker ready")})


async def serving_pids(url: str, expected: set[int]) -> set[int]:
    """Pids answering /healthz over new connections, until they are exactly ``expected``."""
    seen: set[int] = set()

    async def all_seen() -> bool:
        seen.add((await health(url))["pid"])
        return seen == expected

    await eventually(all_seen)
    return seen


async def scrape(url: str, name: str) -> float:
    """The sum of one metric's samples on the ``/openai`` route (or unlabelled)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/metrics", headers={"Connection": "close"}) as resp:
            text = await resp.text()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and s.labels.get("route", "/openai") == "/openai"
    )


async def requests_total(url: str) -> float:
    return await scrape(url, "llm_proxy_requests_total")


async def streams_everywhere(url: str, expected: float) -> bool:
    """Four scrapes in a row (any worker may answer each) all read ``expected`` streams."""
    return [expected] * 4 == [await scrape(url, "llm_proxy_in_flight_streams") for _ in "four"]


@pytest.fixture
def sock_path() -> Iterator[str]:
    """A short path: a Unix socket path must fit in 107 bytes, pytest's tmp_path may not."""
    path = Path(tempfile.mkdtemp(prefix="llmp-"))
    yield str(path / "proxy.sock")
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def two_workers(fake: FakeUpstream, tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    """The proxy under a supervisor with two workers, both ready."""
    proxy = ServiceProcess(base_config(fake.url), tmp_path, free_port(), "--workers", "2")
    await proxy.start()
    try:
        await proxy.all_workers_ready()
        yield proxy
    finally:
        proxy.stop()


async def test_both_workers_serve_and_a_killed_one_is_restarted(
    two_workers: ServiceProcess,
) -> None:
    proxy = two_workers
    first = await workers(proxy)
    assert first == await serving_pids(proxy.url, first)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    now = await workers(proxy, gone=[victim])
    assert now == await serving_pids(proxy.url, now)
    died = proxy.events("worker died, restarting")
    assert [(victim, -signal.SIGKILL)] == [(d["pid"], d["exit_code"]) for d in died]


async def test_metrics_count_every_worker_and_keep_a_dead_worker_counts(
    two_workers: ServiceProcess,
) -> None:
    proxy = two_workers
    for _ in range(20):  # a new connection each: SO_REUSEPORT spreads them
        assert 200 == (await post(proxy.url + CHAT))[0]
    lines = await eventually(lambda: len(proxy.events("request")) == 20 and proxy.events("request"))
    assert {0, 1} == {line["worker"] for line in lines}
    assert [20.0] * 4 == [await requests_total(proxy.url) for _ in range(4)]
    victim = min(await workers(proxy))
    os.kill(victim, signal.SIGKILL)
    await workers(proxy, gone=[victim])
    assert [20.0] * 4 == [await requests_total(proxy.url) for _ in range(4)]


async def test_in_flight_gauge_sums_workers_and_forgets_dead_ones(
    fake: FakeUpstream, two_workers: ServiceProcess
) -> None:
    proxy = two_workers
    try:
        fake.hold_after_chunk = 2  # role chunk + first content chunk: the proxy has relayed them
        async with aiohttp.ClientSession() as session:
            async with session.post(proxy.url + CHAT, data=STREAM_BODY, headers=JSON) as resp:
                assert (await resp.content.readline()).startswith(b"data:")
                await eventually(lambda: streams_everywhere(proxy.url, 1.0))
                pids = await workers(proxy)
                for pid in pids:  # the one holding the stream among them
                    os.kill(pid, signal.SIGKILL)
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
        await ready(proxy, await workers(proxy, gone=pids))
        await eventually(lambda: streams_everywhere(proxy.url, 0.0))
    finally:
        fake.release.set()


async def test_supervisor_notifies_for_all_workers_and_forwards_sighup(
    fake: FakeUpstream, tmp_path: Path, sock_path: str
) -> None:
    notify = NotifySocket(tmp_path)
    raw = base_config(fake.url, listen={"host": "127.0.0.1", "port": 8080, "unix": sock_path})
    proxy = ServiceProcess(raw, tmp_path, free_port(), "--workers", "2", NOTIFY_SOCKET=notify.env)
    try:
        await proxy.start()
        ready = await notify.next()
        assert ("1", "2 workers serving") == (ready.get("READY"), ready.get("STATUS"))
        raw["routes"][0]["prefix"] = "/oa"
        proxy.write_config(raw)
        proxy.signal(signal.SIGHUP)
        assert ["RELOADING=1", "READY=1"] == await notify.states(2)
        await eventually(lambda: len(proxy.events("config reloaded")) == 2)  # a log thread
        assert [0, 1] == sorted(e["worker"] for e in proxy.events("config reloaded"))
        via_unix = await health("http://proxy", aiohttp.UnixConnector(sock_path))
        assert ["/oa", "/anthropic"] == via_unix["routes"]
        proxy.signal(signal.SIGTERM)
        assert ["STOPPING=1"] == await notify.states(1)
        assert 0 == await proxy.wait()
        assert [] == list(Path(sock_path).parent.iterdir())
    finally:
        proxy.stop()
        notify.close()


async def test_supervisor_exits_1_when_its_workers_cannot_start(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    taken = socket.create_server(("127.0.0.1", 0))  # the workers' metrics port is in use
    raw = base_config(fake.url, metrics={"host": "127.0.0.1", "port": taken.getsockname()[1]})
    proxy = ServiceProcess(raw, tmp_path, free_port(), "--workers", "2")
    try:
        with pytest.raises(RuntimeError, match="exited early"):
            await proxy.start()
        assert 1 == await proxy.wait()
        assert 1 <= len(proxy.events("worker failed to start"))
    finally:
        proxy.stop()
        taken.close()
