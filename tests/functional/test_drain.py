"""SIGTERM: stop accepting, let the running stream finish (cut it after drain_timeout_s), exit 0;
with workers, the supervisor exits 0 once every worker has drained."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp
import pytest

from proxy.fake_upstream import FakeUpstream
from tests.conftest import base_config, free_port
from tests.functional.service_support import CHAT, ServiceProcess, eventually
from tests.process import ProxyProcess

STREAM = json.dumps(
    {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
)


async def test_sigterm_lets_running_stream_finish(fake: FakeUpstream, tmp_path: Path) -> None:
    proxy = ProxyProcess(base_config(fake.url, drain_timeout_s=20), tmp_path, free_port())
    await proxy.start()
    try:
        fake.hold_after_chunk = 2  # role chunk + first content chunk: the proxy has relayed them
        body = json.dumps(
            {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        )
        async with aiohttp.ClientSession() as session:
            async with session.post(
                proxy.url + "/openai/v1/chat/completions",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as resp:
                first = await resp.content.readline()
                assert first.startswith(b"data:")
                proxy.signal(signal.SIGTERM)
                await asyncio.sleep(0.3)  # the proxy is draining while the stream is held
                fake.release.set()
                rest = await resp.read()
        assert rest.rstrip().endswith(b"data: [DONE]")
        assert 0 == await proxy.wait()
        assert [200] == [x["status"] for x in proxy.events("request")]
    finally:
        proxy.stop()


async def test_stream_running_past_the_drain_timeout_is_cut_and_the_process_exits_zero(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    proxy = ProxyProcess(base_config(fake.url, drain_timeout_s=0.5), tmp_path, free_port())
    await proxy.start()
    try:
        fake.hold_after_chunk = 2  # never released: the stream outlives the drain timeout
        async with aiohttp.ClientSession() as session:
            async with session.post(
                proxy.url + CHAT, data=STREAM, headers={"Content-Type": "application/json"}
            ) as resp:
                assert (await resp.content.readline()).startswith(b"data:")
                proxy.signal(signal.SIGTERM)
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
        assert 0 == await proxy.wait()
        errors = [x["error"] for x in proxy.events("request")]
        assert ["cancelled by shutdown"] == errors, proxy.output()
    finally:
        fake.release.set()
        proxy.stop()


async def test_workers_drain_a_running_stream_and_the_supervisor_exits_zero(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    raw = base_config(fake.url, drain_timeout_s=20)
    proxy = ServiceProcess(raw, tmp_path, free_port(), "--workers", "2")
    await proxy.start()
    await proxy.all_workers_ready()
    try:
        fake.hold_after_chunk = 2  # role chunk + first content chunk: the proxy has relayed them
        async with aiohttp.ClientSession() as session:
            async with session.post(
                proxy.url + CHAT, data=STREAM, headers={"Content-Type": "application/json"}
            ) as resp:
                assert (await resp.content.readline()).startswith(b"data:")
                proxy.signal(signal.SIGTERM)
                await eventually(lambda: len(proxy.events("draining")) == 2)
                assert None is proxy.proc.poll()  # type: ignore[union-attr]
                fake.release.set()
                rest = await resp.read()
        assert rest.rstrip().endswith(b"data: [DONE]")
        assert 0 == await proxy.wait()
        assert [0, 0] == [e["exit_code"] for e in proxy.events("worker exited")]
        assert [200] == [r["status"] for r in proxy.events("request")]
    finally:
        proxy.stop()
