"""sd_notify to a fake NOTIFY_SOCKET, as systemd's Type=notify sees it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from proxy.fake_upstream import FakeUpstream
from tests.conftest import base_config, free_port
from tests.functional.service_support import NotifySocket, ServiceProcess


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
async def test_notify_socket_gets_ready_reloading_ready_stopping(
    fake: FakeUpstream, tmp_path: Path, abstract: bool
) -> None:
    notify = NotifySocket(tmp_path, abstract=abstract)
    proxy = ServiceProcess(base_config(fake.url), tmp_path, free_port(), NOTIFY_SOCKET=notify.env)
    try:
        await proxy.start()
        ready = await notify.next()
        assert ("1", f"serving on http://127.0.0.1:{proxy.port}") == (
            ready.get("READY"),
            ready.get("STATUS"),
        )
        proxy.signal(signal.SIGHUP)
        reloading = await notify.next()
        assert "1" == reloading.get("RELOADING")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        assert ["READY=1"] == await notify.states(1)
        proxy.signal(signal.SIGTERM)
        assert ["STOPPING=1"] == await notify.states(1)
        assert 0 == await proxy.wait()
    finally:
        proxy.stop()
        notify.close()
