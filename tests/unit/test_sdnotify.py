"""The sd_notify protocol and socket activation's environment, against real sockets."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.listeners import activation_sockets, bind_unix, describe
from proxy.sdnotify import Notifier, notify_address, parse


@pytest.mark.parametrize(
    ("value", "address"),
    [
        (None, None),
        ("", None),
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@/org/freedesktop/systemd1/notify/123", "\0/org/freedesktop/systemd1/notify/123"),
        ("vsock:2:1234", None),
        ("relative/path", None),
    ],
)
def test_notify_address_from_the_environment_value(value: str | None, address: str | None) -> None:
    assert address == notify_address(value)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def test_ready_is_one_datagram_with_status(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert Notifier.from_env({"NOTIFY_SOCKET": path}).ready(status="serving on x")
    assert b"READY=1\nSTATUS=serving on x" == sock.recv(4096)


def test_abstract_socket_names_reach_the_abstract_namespace() -> None:
    name = f"llm-proxy-unit-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).stopping()
        assert b"STOPPING=1" == sock.recv(4096)


def test_reloading_carries_the_monotonic_clock_in_microseconds(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier(path).reloading()
    fields = parse(sock.recv(4096))
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert "1" == fields["RELOADING"]
    assert before <= int(fields["MONOTONIC_USEC"]) <= after


def test_without_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier.from_env({})
    assert (False, False) == (notifier.enabled, notifier.ready())


def test_a_gone_socket_is_reported_not_raised(tmp_path: Path) -> None:
    assert False is Notifier(str(tmp_path / "nobody-listens")).ready()


def test_a_connected_socket_carries_the_same_messages() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        Notifier(sock=ours).ready()
        Notifier(sock=ours).stopping()
        assert [{"READY": "1"}, {"STOPPING": "1"}] == [parse(theirs.recv(99)) for _ in "ab"]


# -- socket activation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"LISTEN_FDS": "1"},
        {"LISTEN_FDS": "1", "LISTEN_PID": "1"},  # meant for another process
        {"LISTEN_FDS": "x", "LISTEN_PID": "{pid}"},
        {"LISTEN_FDS": "0", "LISTEN_PID": "{pid}"},
    ],
)
def test_no_activation_sockets_unless_meant_for_this_process(env: dict[str, str]) -> None:
    env = {k: v.format(pid=os.getpid()) for k, v in env.items()}
    assert [] == activation_sockets(env, os.getpid())


def test_activation_sockets_start_at_fd_3() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        saved = os.dup(3) if _is_open(3) else None
        os.dup2(server.fileno(), 3)
        try:
            [sock] = activation_sockets({"LISTEN_FDS": "1", "LISTEN_PID": "7"}, 7)
            assert (3, server.getsockname()) == (sock.fileno(), sock.getsockname())
            sock.detach()
        finally:
            if saved is None:
                os.close(3)
            else:
                os.dup2(saved, 3)
                os.close(saved)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_bind_unix_replaces_a_stale_socket_but_never_another_file(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(stale))
    with bind_unix(str(stale)).sock as sock:
        assert str(stale) == sock.getsockname()
    regular = tmp_path / "config.yaml"
    regular.write_text("keep me")
    with pytest.raises(OSError):
        bind_unix(str(regular))
    assert "keep me" == regular.read_text()


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (("127.0.0.1", 8080), "http://127.0.0.1:8080"),
        (("::1", 8080, 0, 0), "http://[::1]:8080"),
        ("/run/llm-proxy.sock", "unix:/run/llm-proxy.sock"),
        (b"\0abstract", "unix:@abstract"),
    ],
)
def test_listen_addresses_are_described_for_the_log(address: object, text: str) -> None:
    assert text == describe(address)
