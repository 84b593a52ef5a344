"""SIGHUP on the real proxy process: new requests get the new config, running ones keep the old;
a bad file changes nothing; keys that need a restart are kept and named in a warning."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp

from proxy.fake_upstream import FakeUpstream
from tests.conftest import base_config, free_port
from tests.functional.service_support import (
    CHAT,
    JSON,
    STREAM_BODY,
    ServiceProcess,
    eventually,
    health,
    post,
)


def renamed(url: str, old: str, new: str, **overrides: object) -> dict[str, object]:
    raw = base_config(url, drain_timeout_s=20, **overrides)
    for route in raw["routes"]:
        if route["prefix"] == old:
            route["prefix"] = new
    return raw


async def test_sighup_swaps_a_route_without_dropping_the_running_stream(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    proxy = ServiceProcess(base_config(fake.url, drain_timeout_s=20), tmp_path, free_port())
    await proxy.start()
    try:
        fake.hold_after_chunk = 2  # role chunk + first content chunk: the proxy has relayed them
        async with aiohttp.ClientSession() as session:
            async with session.post(proxy.url + CHAT, data=STREAM_BODY, headers=JSON) as resp:
                assert (await resp.content.readline()).startswith(b"data:")
                proxy.write_config(renamed(fake.url, "/openai", "/oa"))  # type: ignore[arg-type]
                proxy.signal(signal.SIGHUP)
                await eventually(lambda: proxy.events("config reloaded"))
                assert ["/oa", "/anthropic"] == (await health(proxy.url))["routes"]
                fake.release.set()
                assert 200 == (await post(proxy.url + "/oa/v1/chat/completions"))[0]
                assert 404 == (await post(proxy.url + CHAT))[0]
                rest = await resp.read()
        assert rest.rstrip().endswith(b"data: [DONE]")
        streams = await eventually(lambda: [r for r in proxy.events("request") if r.get("stream")])
        assert [("/openai", 200, None)] == [(r["route"], r["status"], r["error"]) for r in streams]
    finally:
        proxy.stop()


async def test_bad_config_on_sighup_keeps_the_running_one(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    proxy = ServiceProcess(base_config(fake.url), tmp_path, free_port())
    await proxy.start()
    try:
        proxy.config_path.write_text("routes:\n  - prefix: /openai\n    provider: nope\n")
        proxy.signal(signal.SIGHUP)
        failed = await eventually(
            lambda: proxy.events("config reload failed, keeping the running config")
        )
        assert (
            "routes[0].provider: must be one of openai, anthropic; got 'nope'"
            == (failed[0]["error"])
        )
        assert "error" == failed[0]["level"]
        assert 200 == (await post(proxy.url + CHAT))[0]
        assert ["/openai", "/anthropic"] == (await health(proxy.url))["routes"]
        assert [] == proxy.events("config reloaded")
    finally:
        proxy.stop()


async def test_keys_that_need_a_restart_keep_their_running_values_and_are_named(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    port = free_port()
    proxy = ServiceProcess(base_config(fake.url), tmp_path, port)
    await proxy.start()
    try:
        changed = base_config(
            fake.url,
            drain_timeout_s=5,
            limits={"max_body_bytes": 10},
            timeouts={"connect_s": 1, "total_s": 60},
        )
        proxy.write_config(changed)
        proxy.signal(signal.SIGHUP)
        warned = await eventually(
            lambda: proxy.events("config keys changed that take effect only after a restart")
        )
        assert ["limits", "drain_timeout_s", "timeouts.connect_s"] == warned[0]["keys"]
        await eventually(lambda: proxy.events("config reloaded"))
        # the body limit stayed at its running value: a 200-byte body still goes through
        assert 200 == (await post(proxy.url + CHAT))[0]
    finally:
        proxy.stop()
