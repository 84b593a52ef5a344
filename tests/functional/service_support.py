"""Helpers for the service tests: the real proxy process with extra arguments, environment and
inherited sockets; a fake systemd notify socket; waiting for a condition without sleeping blind."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from proxy.sdnotify import parse
from tests.process import ProxyProcess

CHAT = "/openai/v1/chat/completions"
STREAM_BODY = json.dumps(
    {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
)
CHAT_BODY = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
JSON = {"Content-Type": "application/json"}


class ServiceProcess(ProxyProcess):
    """:class:`ProxyProcess` that can wait for all workers and stops with SIGTERM first."""

    async def all_workers_ready(self) -> None:
        """With ``--workers``: the supervisor has seen every worker ready (start() returns as
        soon as one answers)."""
        await eventually(lambda: self.events("all workers ready"))

    def stop(self) -> None:
        """SIGTERM first, so a supervisor removes its metrics directory and its workers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        super().stop()


async def eventually(
    check: Callable[[], Any], timeout: float = 20.0, message: Callable[[], str] | None = None
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; a wait bound, not an
    assertion on time."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(message() if message else "condition not met")
        await asyncio.sleep(0.02)


async def health(url: str, connector: aiohttp.BaseConnector | None = None) -> dict[str, Any]:
    """GET /healthz on a new connection (so each call may land on another worker)."""
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(url + "/healthz", headers={"Connection": "close"}) as resp:
            resp.raise_for_status()
            return await resp.json()  # type: ignore[no-any-return]


async def post(url: str, body: str = CHAT_BODY) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=body, headers={**JSON, "Connection": "close"}) as r:
            return r.status, await r.read()


_DETAILS = ("STATUS", "MONOTONIC_USEC")


class NotifySocket:
    """What systemd listens on for sd_notify: a Unix datagram socket (abstract when asked)."""

    def __init__(self, tmp_path: Path, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"llm-proxy-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            path = str(tmp_path / "notify.sock")
            self.sock.bind(path)
            self.env = path
        self.sock.setblocking(False)

    async def next(self, timeout: float = 20.0) -> dict[str, str]:
        """The next message's fields."""
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), timeout)
        return parse(data)

    async def states(self, count: int, timeout: float = 20.0) -> list[str]:
        """The next ``count`` messages, each as its state field (READY=1, RELOADING=1, ...)."""
        out = []
        for _ in range(count):
            fields = await self.next(timeout)
            out.append(next(f"{k}={v}" for k, v in fields.items() if k not in _DETAILS))
        return out

    def close(self) -> None:
        self.sock.close()


def activated(sock: socket.socket) -> list[str]:
    """A command prefix that hands ``sock`` to the proxy as systemd does: at fd 3, with
    LISTEN_FDS=1 and LISTEN_PID set to the pid of the process it execs (exec keeps the pid)."""
    code = (
        "import os, sys; os.dup2(int(sys.argv[1]), 3); "
        "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
        "os.execv(sys.argv[2], sys.argv[2:])"
    )
    return [sys.executable, "-c", code, str(sock.fileno())]


def worker_pids(proc: subprocess.Popen[bytes]) -> set[int]:
    """The supervisor's children, from /proc (Linux)."""
    path = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()
