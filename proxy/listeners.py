"""Where the proxy listens: TCP, a Unix socket, or sockets handed over by systemd.

Every listening socket is bound here (never by aiohttp's TCPSite), so the backlog is ours, a
failure names the address, and every socket is served through the same protocol factory (see
connections.py). One process binds its own TCP address and Unix socket. With workers, each
worker binds the TCP address itself with SO_REUSEPORT (the kernel spreads connections evenly
across their accept queues), while a Unix socket, which SO_REUSEPORT cannot share on Linux, is
bound once by the supervisor and inherited: every worker accepts on the same socket. Sockets
from systemd's socket activation replace the configured addresses entirely, in either mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .config import Listen

SD_LISTEN_FDS_START = 3
SOMAXCONN_PATH = "/proc/sys/net/core/somaxconn"


class ListenError(OSError):
    """A listening address could not be set up; the message names it and the OS error."""

    def __init__(self, address: str, reason: OSError | str) -> None:
        why = reason if isinstance(reason, str) else (reason.strerror or str(reason))
        super().__init__(getattr(reason, "errno", None), f"cannot listen on {address}: {why}")
        self.address = address
        self.reason = why

    def __str__(self) -> str:
        return str(self.strerror)


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


def open_file_limit() -> int | None:
    """Raise this process's soft limit on open files to its hard limit (what a server should
    run with; systemd's LimitNOFILE= sets both), and return it."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = _NOFILE_CAP if hard == resource.RLIM_INFINITY else min(hard, _NOFILE_CAP)
        if soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    except (OSError, ValueError):
        return None
    return soft


_NOFILE_CAP = 1 << 20


def somaxconn(path: str = SOMAXCONN_PATH) -> int | None:
    """The kernel's cap on a listen backlog (net.core.somaxconn); None where it is not known."""
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def effective_backlog(requested: int, cap: int | None) -> int:
    """What the kernel will really use: ``listen()`` silently truncates to somaxconn."""
    return requested if cap is None else max(1, min(requested, cap))


def tcp_address(host: str, port: int) -> str:
    return describe((host or "0.0.0.0", port))


def _addresses(host: str, port: int) -> list[tuple[int, int, int, Any]]:
    """Every address ``host`` names, as asyncio's create_server binds them ("" is all)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    seen: set[Any] = set()
    out: list[tuple[int, int, int, Any]] = []
    for family, kind, proto, _, addr in infos:
        if addr not in seen:
            seen.add(addr)
            out.append((family, kind, proto, addr))
    return out


def _tcp_socket(family: int, kind: int, proto: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def bind_tcp(
    host: str, port: int, *, backlog: int, reuse_port: bool = False
) -> list[socket.socket]:
    """Listening sockets for every address of ``host:port``; ListenError names the one that
    failed (and nothing stays bound)."""
    held: list[socket.socket] = []
    address = tcp_address(host, port)
    try:
        for family, kind, proto, addr in _addresses(host, port):
            address = describe(addr)
            sock = _tcp_socket(family, kind, proto, reuse_port)
            held.append(sock)
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError as exc:
        for sock in held:
            sock.close()
        raise ListenError(address, exc) from None
    return held


def reserve_tcp(host: str, port: int) -> tuple[list[socket.socket], int]:
    """Bind (without listening) every address of ``host:port`` with SO_REUSEPORT.

    Held by a supervisor, this reports "address in use" once before any worker starts, and
    keeps the port in the group while a worker restarts. A socket that does not listen never
    receives connections.
    """
    held: list[socket.socket] = []
    address = tcp_address(host, port)
    try:
        for family, kind, proto, addr in _addresses(host, port):
            address = describe(addr)
            sock = _tcp_socket(family, kind, proto, reuse_port=True)
            held.append(sock)
            sock.bind(addr)
            port = sock.getsockname()[1]
    except OSError as exc:
        for sock in held:
            sock.close()
        raise ListenError(address, exc) from None
    return held, port


@dataclass(slots=True)
class UnixListener:
    """A listening Unix socket this process created, and the file it created for it."""

    sock: socket.socket
    path: str
    identity: tuple[int, int, int] = (0, 0, 0)
    """(st_dev, st_ino, st_ctime_ns) of the socket file right after bind: remove() deletes
    only that file, never one that another process put at the same path since (an inode
    number alone may be reused at once)."""

    def remove(self) -> None:
        """Remove our socket file, so a stopped proxy leaves no dead endpoint behind."""
        with contextlib.suppress(OSError):
            st = os.stat(self.path)
            if stat.S_ISSOCK(st.st_mode) and _identity(st) == self.identity:
                os.unlink(self.path)


def _live(path: str) -> bool:
    """Someone accepts connections on the socket file at ``path`` (a connect probe)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True  # e.g. a full accept queue (EAGAIN) or no permission: not ours to take
        return True


def bind_unix(
    path: str, backlog: int = 1024, mode: int | None = None, group: int | None = None
) -> UnixListener:
    """A listening Unix socket at ``path`` with the given file mode and group.

    A socket file nobody listens on (left by a crash) is replaced; a live one is an error, as
    is any other file there (never delete what is not ours). The mode and group are applied
    before ``listen()``, so no client can connect in between.
    """
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            if _live(path):
                raise ListenError(
                    f"unix:{path}",
                    "another process is listening on this socket (a second llm-proxy?); "
                    "stop it or set another listen.unix path",
                )
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        if group is not None:
            os.chown(path, -1, group)
        if mode is not None:
            os.chmod(path, mode)
        st = os.stat(path)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(f"unix:{path}", exc) from None
    return UnixListener(sock, path, _identity(st))


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_dev, st.st_ino, st.st_ctime_ns


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


@dataclass(slots=True)
class Bound:
    """The sockets of a Plan, all listening; ``close()`` undoes what this process created."""

    sockets: list[socket.socket] = field(default_factory=list)
    unix: UnixListener | None = None

    def close(self) -> None:
        if self.unix is not None:
            self.unix.remove()


def bind_plan(plan: Plan, listen: Listen, *, backlog: int, reuse_port: bool) -> Bound:
    """Bind what ``plan`` asks for (TCP first, then the Unix socket); all or nothing."""
    bound = Bound(sockets=list(plan.sockets))
    created: list[socket.socket] = []
    try:
        if plan.tcp is not None:
            created += bind_tcp(*plan.tcp, backlog=backlog, reuse_port=reuse_port)
        if plan.unix is not None:
            unix = bind_unix(plan.unix, backlog, listen.unix_mode, _gid(listen.unix_group))
            created.append(unix.sock)
            bound.unix = unix
    except OSError:
        for sock in created:
            sock.close()
        if bound.unix is not None:
            bound.unix.remove()
        raise
    bound.sockets += created
    return bound


def _gid(group: str | int | None) -> int | None:
    """config.Listen resolves a group name to its gid while validating."""
    return group if isinstance(group, int) else None


def describe(address: object) -> str:
    """One entry of ``AppRunner.addresses`` for the log line and STATUS=."""
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"http://[{host}]:{address[1]}" if ":" in host else f"http://{host}:{address[1]}"
    if isinstance(address, bytes):  # an abstract Unix socket name
        address = "@" + address[1:].decode(errors="replace")
    return f"unix:{address}"


class SocketSite(web.BaseSite):
    """Serves one already-listening socket with ``factory`` as the protocol factory.

    aiohttp's own sites always use the runner's ``Server`` as the factory; this is the one
    place that lets connections.py put its guard in front of it.
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        factory: Callable[[], object],
        backlog: int,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._sock = sock
        self._factory = factory

    @property
    def name(self) -> str:
        return describe(self._sock.getsockname())

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory,  # type: ignore[arg-type]
            sock=self._sock,
            backlog=self._backlog,
        )


async def start_sites(
    runner: web.BaseRunner, bound: Bound, factory: Callable[[], object], backlog: int
) -> list[str]:
    """Serve every socket of ``bound`` on ``runner``; the addresses, for the log and STATUS=."""
    for sock in bound.sockets:
        await SocketSite(runner, sock, factory, backlog).start()
    return [describe(a) for a in runner.addresses]
