"""Binding the listening sockets: Unix socket mode, group and ownership, named bind errors, the
backlog, and the helpers that describe a malformed request without echoing it."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, LineTooLong

from proxy.config import Listen
from proxy.connections import ConnectionLimits, describe_parse_error, request_line
from proxy.listeners import (
    ListenError,
    bind_tcp,
    bind_unix,
    effective_backlog,
    reserve_tcp,
    somaxconn,
)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A Unix socket path must fit in 107 bytes; pytest's tmp_path may not."""
    path = Path(tempfile.mkdtemp(prefix="llmp-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_live_socket_is_never_taken_over(short_dir: Path) -> None:
    path = str(short_dir / "proxy.sock")
    first = bind_unix(path)
    try:
        with pytest.raises(ListenError) as refused:
            bind_unix(path)
        assert str(refused.value).startswith(
            f"cannot listen on unix:{path}: another process is listening on this socket"
        )
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)  # the first listener still owns the path
    finally:
        first.sock.close()
        first.remove()
    assert not os.path.exists(path)


def test_a_stale_socket_is_replaced(short_dir: Path) -> None:
    path = str(short_dir / "proxy.sock")
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(path)  # bound, never listening: what a crash leaves
    listener = bind_unix(path)
    with listener.sock:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)


def test_remove_leaves_a_socket_file_that_is_not_ours(short_dir: Path) -> None:
    path = str(short_dir / "proxy.sock")
    ours = bind_unix(path)
    ours.sock.close()
    theirs = bind_unix(str(short_dir / "other.sock"))
    os.replace(theirs.path, path)  # another instance took the path after ours went away
    with theirs.sock:
        ours.remove()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)  # still there, and still theirs


def test_mode_and_group_are_set_before_listening(short_dir: Path) -> None:
    group = 65534 if os.geteuid() == 0 else os.getgid()  # root may pick any group
    path = str(short_dir / "proxy.sock")
    old = os.umask(0o077)  # the shipped unit's UMask
    try:
        listener = bind_unix(path, mode=0o660, group=group)
    finally:
        os.umask(old)
    with listener.sock:
        st = os.stat(path)
        assert (0o660, group) == (stat.S_IMODE(st.st_mode), st.st_gid)


def test_bind_errors_name_the_address() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ListenError) as exc:
            bind_tcp("127.0.0.1", port, backlog=16)
        assert f"cannot listen on http://127.0.0.1:{port}: Address already in use" == str(exc.value)
        with pytest.raises(ListenError) as reserved:
            reserve_tcp("127.0.0.1", port)
        assert str(reserved.value).startswith(f"cannot listen on http://127.0.0.1:{port}:")


def test_backlog_is_bounded_by_somaxconn(tmp_path: Path) -> None:
    proc = tmp_path / "somaxconn"
    proc.write_text("4096\n")
    assert 4096 == somaxconn(str(proc))
    assert None is somaxconn(str(tmp_path / "absent"))
    assert [1024, 4096, 512] == [
        effective_backlog(1024, 4096),
        effective_backlog(65535, 4096),
        effective_backlog(512, None),
    ]


def test_connection_bound_defaults_to_half_the_file_descriptors() -> None:
    assert 480 == ConnectionLimits.from_listen(Listen(), 1024).max_connections
    assert 7 == ConnectionLimits.from_listen(Listen(max_connections=7), 1024).max_connections
    limits = ConnectionLimits.from_listen(Listen(idle_timeout_s=5, max_header_bytes=4096), 1024)
    assert {
        "keepalive_timeout": 5.0,
        "max_line_size": 4096,
        "max_field_size": 4096,
        "max_headers": 128,
    } == limits.runner_kwargs()


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"POST /anthropic/v1/messages?k=sk-1 HTTP/1.1\r\n", ("POST", "/anthropic/v1/messages")),
        (b"GET http://h:1/openai/v1/models HTTP/1.1\r\n", ("GET", "/openai/v1/models")),
        (b"G\x00T /a\xff HTTP/1.1\r\n", ("?", "")),
        (b"\x16\x03\x01\x02\x00", ("?", "")),
        (b"", ("?", "")),
    ],
)
def test_request_line_keeps_only_a_printable_method_and_path(
    head: bytes, expected: tuple[str, str]
) -> None:
    assert expected == request_line(head)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (
            LineTooLong(b"Bearer sk-secret" * 600, 8190),
            "a request line or header is longer than 8190 bytes",
        ),
        (
            BadHttpMessage("Invalid header value char:\n\n  b'x-api-key: sk-ant-1\\x00'\n  ^"),
            "invalid header value char",
        ),
        (BadHttpMessage("b'x-api-key: sk-ant-1' is bad"), "malformed headers or framing"),
        (BadHttpMethod("\x16\x03"), "bad HTTP method (TLS sent to a plain HTTP port?)"),
    ],
)
def test_parse_errors_are_described_without_the_requests_bytes(
    exc: BadHttpMessage, reason: str
) -> None:
    assert reason == describe_parse_error(exc, 8190)
