"""Operating the proxy: the startup line, build and process metrics, a second stop signal,
listen errors that name the address, and the shared state's loss and return being logged."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.fake_upstream import FakeUpstream
from tests.conftest import LogCapture, base_config, free_port
from tests.functional.service_support import (
    CHAT,
    JSON,
    STREAM_BODY,
    ServiceProcess,
    eventually,
    post,
    worker_pids,
)
from tests.redis_server import RedisServer, redis_server  # noqa: F401 (a fixture)

VERSION = "0.1.0"  # setup.cfg reads proxy/version.py; this pins what the metric must say


async def samples(url: str, name: str) -> list[tuple[dict[str, str], float]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/metrics", headers={"Connection": "close"}) as resp:
            text = await resp.text()
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


async def test_startup_line_says_version_config_routes_loop_metrics_and_workers(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    raw = base_config(fake.url, metrics={"host": "127.0.0.1", "port": free_port()})
    proxy = ServiceProcess(raw, tmp_path, free_port(), "--loop", "asyncio")
    await proxy.start()
    try:
        started = await eventually(lambda: proxy.events("started"))
        expected = {
            "version": VERSION,
            "config": str(proxy.config_path),
            "routes": ["/openai", "/anthropic"],
            "loop": "asyncio",
            "metrics": f"http://127.0.0.1:{raw['metrics']['port']}/metrics",
            "workers": 1,
            "addresses": [proxy.url],
        }
        assert [expected] == [{k: line[k] for k in expected} for line in started]
    finally:
        proxy.stop()


async def test_supervisor_writes_the_one_startup_line(fake: FakeUpstream, tmp_path: Path) -> None:
    proxy = ServiceProcess(base_config(fake.url), tmp_path, free_port(), "--workers", "2")
    await proxy.start()
    try:
        await proxy.all_workers_ready()
        started = await eventually(lambda: proxy.events("started"))
        assert [(2, f"{proxy.url}/metrics", VERSION)] == [
            (s["workers"], s["metrics"], s["version"]) for s in started
        ]
        assert [] == [s for s in started if "worker" in s]  # not a worker's line
    finally:
        proxy.stop()


async def test_metrics_carry_build_info_and_process_metrics(proxy_url: str) -> None:
    assert [({"version": VERSION}, 1.0)] == await samples(proxy_url, "llm_proxy_build_info")
    [(labels, rss)] = await samples(proxy_url, "process_resident_memory_bytes")
    assert ({}, True) == (labels, rss > 0)
    assert 1 == len(await samples(proxy_url, "process_open_fds"))


async def test_every_workers_process_metrics_on_any_scrape(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    proxy = ServiceProcess(base_config(fake.url), tmp_path, free_port(), "--workers", "2")
    await proxy.start()
    try:
        await proxy.all_workers_ready()
        assert proxy.proc is not None
        pids = {str(p) for p in worker_pids(proxy.proc)}

        async def every_worker_on_four_scrapes() -> bool:
            seen = [await samples(proxy.url, "process_resident_memory_bytes") for _ in "four"]
            return all({labels["pid"] for labels, _ in s} == pids for s in seen)

        await eventually(every_worker_on_four_scrapes)
        assert [({"version": VERSION}, 1.0)] == await samples(proxy.url, "llm_proxy_build_info")
    finally:
        proxy.stop()


async def hold_a_stream(
    url: str, fake: FakeUpstream, then: Callable[[], Any]
) -> tuple[bytes, BaseException | None]:
    """Open a stream the fake holds after its first chunk, run ``then``, read what is left."""
    fake.hold_after_chunk = 2  # role chunk + first content chunk: the proxy has relayed them
    async with aiohttp.ClientSession() as session:
        async with session.post(url + CHAT, data=STREAM_BODY, headers=JSON) as resp:
            assert (await resp.content.readline()).startswith(b"data:")
            await then()
            try:
                return await resp.read(), None
            except aiohttp.ClientPayloadError as exc:
                return b"", exc


async def test_a_second_stop_signal_cuts_the_drain_at_once(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    proxy = ServiceProcess(base_config(fake.url, drain_timeout_s=600), tmp_path, free_port())
    await proxy.start()
    try:

        async def twice() -> None:
            proxy.signal(signal.SIGTERM)
            await eventually(lambda: proxy.events("draining"))
            proxy.signal(signal.SIGINT)

        _, cut = await hold_a_stream(proxy.url, fake, twice)
        assert isinstance(cut, aiohttp.ClientPayloadError)
        assert 0 == await proxy.wait(timeout=30)  # long before the 600 s drain
        assert 1 == len(proxy.events("second stop signal, cutting running requests now"))
        assert ["cancelled by shutdown"] == [r["error"] for r in proxy.events("request")]
    finally:
        fake.release.set()
        proxy.stop()


@pytest.mark.parametrize("presses", [1, 2])
async def test_ctrl_c_drains_workers_and_a_second_one_stops_them_at_once(
    fake: FakeUpstream, tmp_path: Path, presses: int
) -> None:
    raw = base_config(fake.url, drain_timeout_s=600)
    proxy = ServiceProcess(raw, tmp_path, free_port(), "--workers", "2", new_session=True)
    await proxy.start()
    await proxy.all_workers_ready()
    try:

        async def ctrl_c() -> None:
            proxy.signal_group(signal.SIGINT)  # the terminal signals every process
            await eventually(lambda: len(proxy.events("draining")) == 2)
            if presses == 2:
                proxy.signal_group(signal.SIGINT)
            else:
                await asyncio.sleep(0.5)  # a drain is not cut by the doubled first signal
                assert None is proxy.proc.poll()  # type: ignore[union-attr]
                fake.release.set()

        rest, cut = await hold_a_stream(proxy.url, fake, ctrl_c)
        assert 0 == await proxy.wait(timeout=30)
        if presses == 1:
            assert (None, True) == (cut, rest.rstrip().endswith(b"data: [DONE]"))
            assert [200] == [r["status"] for r in proxy.events("request")]
        else:
            assert isinstance(cut, aiohttp.ClientPayloadError)
            assert 1 == len(proxy.events("second stop signal, workers stop now"))
    finally:
        fake.release.set()
        proxy.stop()


def taken_port() -> socket.socket:
    """A port bound by another socket (not listening, so the start-up health checks are
    refused rather than left waiting)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_taken_port_is_named_in_the_error(
    fake: FakeUpstream, tmp_path: Path, workers: str
) -> None:
    with taken_port() as taken:
        port = taken.getsockname()[1]
        proxy = ServiceProcess(base_config(fake.url), tmp_path, port, "--workers", workers)
        try:
            with pytest.raises(RuntimeError, match="exited early"):
                await proxy.start()
            assert 1 == await proxy.wait()
            assert (
                f"llm-proxy: cannot listen on http://127.0.0.1:{port}: Address already in use\n"
                == proxy.output()
            )
        finally:
            proxy.stop()


async def test_a_taken_metrics_port_is_named_in_the_error(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    with taken_port() as taken:
        port = taken.getsockname()[1]
        raw = base_config(fake.url, metrics={"host": "127.0.0.1", "port": port})
        proxy = ServiceProcess(raw, tmp_path, free_port())
        try:
            with pytest.raises(RuntimeError, match="exited early"):
                await proxy.start()
            assert 1 == await proxy.wait()
            assert (
                f"llm-proxy: cannot listen on http://127.0.0.1:{port} (metrics): "
                "Address already in use\n"
            ) == proxy.output()
        finally:
            proxy.stop()


async def test_redis_loss_and_return_are_logged_with_the_url_without_password(
    fake: FakeUpstream,
    start_proxy: Callable[..., Any],
    logs: LogCapture,
    redis_server: RedisServer,  # noqa: F811 (the fixture)
) -> None:
    url = f"redis://default:s3cret-pw@127.0.0.1:{redis_server.port}/0"
    shown = f"redis://default:***@127.0.0.1:{redis_server.port}/0"
    proxy = await start_proxy(base_config(fake.url, state={"backend": "redis", "url": url}))

    def events(name: str) -> list[dict[str, Any]]:
        return [line for line in logs.lines() if line["event"] == name]

    async def request_until(name: str) -> list[dict[str, Any]]:
        async def check() -> list[dict[str, Any]]:
            assert 200 == (await post(proxy + CHAT))[0]
            return events(name)

        return await eventually(check)  # type: ignore[no-any-return]

    assert 200 == (await post(proxy + CHAT))[0]
    redis_server.stop()
    lost = await request_until("shared state unavailable, using local memory")
    redis_server.start()
    back = await request_until("shared state is back")
    assert [shown] == [line["url"] for line in lost]
    assert [shown] == [line["url"] for line in back]
    assert "s3cret-pw" not in json.dumps(logs.lines())
