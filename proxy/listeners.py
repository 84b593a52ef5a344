"""Where the proxy listens: TCP, a Unix socket, or sockets handed over by systemd.

One process binds its own TCP address and Unix socket. With workers, each worker binds the TCP
address itself with SO_REUSEPORT (the kernel spreads connections evenly across their accept
queues), while a Unix socket, which SO_REUSEPORT cannot share on Linux, is bound once by the
supervisor and inherited: every worker accepts on the same socket. Sockets from systemd's
socket activation replace the configured addresses entirely, in either mode.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from .config import Listen

SD_LISTEN_FDS_START = 3


def activation_sockets(env: Mapping[str, str], pid: int) -> list[socket.socket]:
    """The listening sockets systemd passed (fd 3 onward), when ``LISTEN_PID`` names us."""
    if env.get("LISTEN_PID") != str(pid):
        return []
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    fds = range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + max(count, 0))
    return [socket.socket(fileno=fd) for fd in fds]


def bind_unix(path: str, backlog: int = 1024) -> socket.socket:
    """A listening Unix socket at ``path``; a stale socket file left by a crash is replaced,
    any other file there is an error (never delete what is not ours)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def remove_unix(path: str | None) -> None:
    """Remove the socket file we bound, so a stopped proxy leaves no dead endpoint behind."""
    if path:
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)


def reserve_tcp(host: str, port: int) -> tuple[list[socket.socket], int]:
    """Bind (without listening) every address of ``host:port`` with SO_REUSEPORT.

    Held by a supervisor, this reports "address in use" once before any worker starts, turns
    port 0 into one concrete port every worker then binds, and keeps the port in the group
    while a worker restarts. A socket that does not listen never receives connections.
    """
    held: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, addr in infos:
            sock = socket.socket(family, kind, proto)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((addr[0], port, *addr[2:]))
            port = sock.getsockname()[1]
    except OSError:
        for sock in held:
            sock.close()
        raise
    return held, port


@dataclass(frozen=True, slots=True)
class Plan:
    """What one serving process listens on."""

    sockets: tuple[socket.socket, ...] = ()
    """Already listening (socket activation, or a supervisor's Unix socket): served as they are."""
    tcp: tuple[str, int] | None = None
    """Bound by this process."""
    unix: str | None = None
    """Bound by this process, and removed when it stops."""

    @classmethod
    def from_config(cls, listen: Listen, inherited: Sequence[socket.socket] = ()) -> Plan:
        if inherited:
            return cls(sockets=tuple(inherited))
        return cls(tcp=(listen.host, listen.port), unix=listen.unix)


def describe(address: object) -> str:
    """One entry of ``AppRunner.addresses`` for the log line and STATUS=."""
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"http://[{host}]:{address[1]}" if ":" in host else f"http://{host}:{address[1]}"
    if isinstance(address, bytes):  # an abstract Unix socket name
        address = "@" + address[1:].decode(errors="replace")
    return f"unix:{address}"


async def start_sites(runner: web.AppRunner, plan: Plan, *, reuse_port: bool) -> list[str]:
    """Start serving ``plan`` on ``runner``; returns the addresses, for the log and STATUS=."""
    for sock in plan.sockets:
        await web.SockSite(runner, sock).start()
    if plan.tcp is not None:
        host, port = plan.tcp
        await web.TCPSite(
            runner, host, port, reuse_address=True, reuse_port=reuse_port or None
        ).start()
    if plan.unix is not None:
        await web.SockSite(runner, bind_unix(plan.unix)).start()
    return [describe(a) for a in runner.addresses]
