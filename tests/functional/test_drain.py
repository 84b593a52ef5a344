"""SIGTERM: stop accepting, let the running stream finish, exit 0."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp

from proxy.fake_upstream import FakeUpstream
from tests.conftest import base_config, free_port
from tests.process import ProxyProcess


async def test_sigterm_lets_running_stream_finish(fake: FakeUpstream, tmp_path: Path) -> None:
    proxy = ProxyProcess(base_config(fake.url, drain_timeout_s=20), tmp_path, free_port())
    await proxy.start()
    try:
        fake.hold_after_chunk = 1
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
        lines = [json.loads(x) for x in proxy.output().splitlines() if x.startswith("{")]
        assert [200] == [x["status"] for x in lines if x.get("event") == "request"]
    finally:
        proxy.stop()
