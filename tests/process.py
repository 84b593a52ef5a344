"""Run the real proxy as a separate process (as systemd or a user would) for service tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[1]


class ProxyProcess:
    """``python -m proxy`` on a free port with a config written to ``tmp_path``; ``args`` are
    extra command-line arguments, ``pass_fds`` inherited sockets, ``prefix`` a wrapper command."""

    def __init__(
        self,
        raw_config: dict[str, Any],
        tmp_path: Path,
        port: int,
        *args: str,
        pass_fds: Sequence[int] = (),
        prefix: Sequence[str] = (),
        new_session: bool = False,
        **env: str,
    ) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self.pass_fds = tuple(pass_fds)
        self.prefix = list(prefix)
        self.new_session = new_session
        """Its own process group, so a test can signal it as a terminal's Ctrl-C does."""
        self.config_path = tmp_path / "config.yaml"
        self.write_config(raw_config)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = tmp_path / "proxy.log"
        self._env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, raw: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(raw))

    async def start(self, timeout: float = 20.0) -> None:
        self._log = open(self.log_path, "wb")
        command = [*self.prefix, sys.executable, "-m", "proxy", "--config", str(self.config_path)]
        command += ["--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=self._env,
            pass_fds=self.pass_fds,
            start_new_session=self.new_session,
        )
        await self.wait_healthy(timeout)

    async def wait_healthy(self, timeout: float) -> None:
        """Until /healthz answers 200; an early exit or the timeout fails with the output.
        Each poll uses a new connection, so under ``--workers`` any worker may answer."""
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"proxy exited early:\n{self.output()}")
                try:
                    headers = {"Connection": "close"}
                    async with session.get(self.url + "/healthz", headers=headers) as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"proxy did not start:\n{self.output()}")
                await asyncio.sleep(0.05)

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.output().splitlines() if x.startswith("{")]

    def events(self, event: str) -> list[dict[str, Any]]:
        return [x for x in self.log_lines() if x.get("event") == event]

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def signal_group(self, sig: int) -> None:
        """``sig`` to the whole process group (needs ``new_session``), as Ctrl-C sends it."""
        assert self.proc is not None and self.new_session
        os.killpg(self.proc.pid, sig)

    async def wait(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return await asyncio.to_thread(self.proc.wait, timeout)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()
