"""The sidecar's endpoints: a Unix socket the official SDK reaches through an httpx transport,
and a socket handed over by systemd's socket activation."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import anthropic
import httpx2
import openai
import pytest

from proxy.fake_upstream import FakeUpstream
from tests.conftest import base_config, free_port
from tests.functional.service_support import ServiceProcess, activated, eventually, health

MESSAGES = [{"role": "user", "content": "Say hello in three words"}]


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory: a Unix socket path must fit in 107 bytes, pytest's tmp_path may not."""
    path = Path(tempfile.mkdtemp(prefix="llmp-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_official_sdks_work_over_the_unix_socket(
    fake: FakeUpstream, tmp_path: Path, sock_dir: Path
) -> None:
    path = str(sock_dir / "proxy.sock")
    raw = base_config(fake.url, listen={"host": "127.0.0.1", "port": 8080, "unix": path})
    proxy = ServiceProcess(raw, tmp_path, free_port())
    await proxy.start()
    try:
        transport = httpx2.AsyncHTTPTransport(uds=path)
        client = openai.AsyncOpenAI(
            base_url="http://proxy/openai/v1",
            api_key="sk-test",
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(transport=transport),
        )
        async with client:
            chat = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            streamed = [c.choices[0].delta.content async for c in stream if c.choices]
        with openai.OpenAI(
            base_url="http://proxy/openai/v1",
            api_key="sk-test",
            max_retries=0,
            http_client=openai.DefaultHttpxClient(transport=httpx2.HTTPTransport(uds=path)),
        ) as sync_client:
            sync_chat = await asyncio.to_thread(
                sync_client.chat.completions.create, model="gpt-4o-mini", messages=MESSAGES
            )
        claude = anthropic.AsyncAnthropic(
            base_url="http://proxy/anthropic",
            api_key="sk-ant-test",
            max_retries=0,
            http_client=anthropic.DefaultAsyncHttpxClient(
                transport=httpx2.AsyncHTTPTransport(uds=path)
            ),
        )
        async with claude:
            message = await claude.messages.create(
                model="claude-sonnet-4-5",
                max_tokens=50,
                messages=MESSAGES,  # type: ignore[arg-type]
            )
        assert chat.choices[0].message.content
        assert chat.choices[0].message.content == sync_chat.choices[0].message.content
        assert len(streamed) > 1
        assert message.content[0].text  # type: ignore[union-attr]
        assert ["POST"] * 4 == [r.method for r in fake.requests]
    finally:
        proxy.stop()


async def test_stale_socket_file_is_replaced_and_removed_on_exit(
    fake: FakeUpstream, tmp_path: Path, sock_dir: Path
) -> None:
    path = sock_dir / "proxy.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # a socket file nobody listens on, as a crash leaves it
    stale.close()
    raw = base_config(fake.url, listen={"host": "127.0.0.1", "port": 8080, "unix": str(path)})
    proxy = ServiceProcess(raw, tmp_path, free_port())
    await proxy.start()
    try:
        assert "ok" == (await health("http://proxy", aiohttp.UnixConnector(str(path))))["status"]
        proxy.signal(signal.SIGTERM)
        assert 0 == await proxy.wait()
        assert not path.exists()
    finally:
        proxy.stop()


async def test_socket_activation_serves_on_the_inherited_socket(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    configured = free_port()  # the file's address is not used when systemd passes sockets
    proxy = ServiceProcess(
        base_config(fake.url),
        tmp_path,
        configured,
        prefix=activated(listener),
        pass_fds=[listener.fileno()],
    )
    proxy.url = f"http://127.0.0.1:{port}"
    try:
        await proxy.start()
        listener.close()  # the proxy holds its own copy now
        assert "ok" == (await health(proxy.url))["status"]
        listening = await eventually(lambda: proxy.events("listening"))
        assert [[f"http://127.0.0.1:{port}"]] == [e["addresses"] for e in listening]
        with pytest.raises(aiohttp.ClientConnectionError):
            await health(f"http://127.0.0.1:{configured}")
    finally:
        proxy.stop()
        listener.close()


async def test_a_second_instance_refuses_to_take_over_a_live_socket(
    fake: FakeUpstream, tmp_path: Path, sock_dir: Path
) -> None:
    path = sock_dir / "proxy.sock"
    raw = base_config(fake.url, listen={"host": "127.0.0.1", "port": 8080, "unix": str(path)})
    first = ServiceProcess(raw, tmp_path / "first", free_port())
    second = ServiceProcess(raw, tmp_path / "second", free_port())
    await first.start()
    try:
        with pytest.raises(RuntimeError, match="exited early"):
            await second.start()
        assert 1 == await second.wait()
        assert (
            f"llm-proxy: cannot listen on unix:{path}: another process is listening on this "
            "socket (a second llm-proxy?); stop it or set another listen.unix path\n"
        ) == second.output()
        assert "ok" == (await health("http://proxy", aiohttp.UnixConnector(str(path))))["status"]
    finally:
        second.stop()
        first.stop()


NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
async def test_unix_mode_and_group_let_another_user_connect_under_umask_0077(
    fake: FakeUpstream, tmp_path: Path, sock_dir: Path
) -> None:
    os.chmod(sock_dir, 0o755)  # the client must reach the directory
    path = str(sock_dir / "proxy.sock")
    umask = ["sh", "-c", 'umask 0077 && exec "$@"', "umask"]  # the shipped unit's UMask=0077

    async def connect_as_nobody(listen: dict[str, object]) -> int:
        raw = base_config(fake.url, listen={"host": "127.0.0.1", "port": 8080, **listen})
        proxy = ServiceProcess(raw, tmp_path / str(len(listen)), free_port(), prefix=umask)
        await proxy.start()
        try:
            client = await asyncio.create_subprocess_exec(
                "setpriv",
                f"--reuid={NOBODY}",
                f"--regid={NOBODY}",
                "--clear-groups",
                sys.executable,
                "-c",
                "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])",
                path,
                stderr=asyncio.subprocess.DEVNULL,
            )
            return await client.wait()
        finally:
            proxy.stop()

    assert 1 == await connect_as_nobody({"unix": path})  # 0600 under the umask: refused
    assert 0 == await connect_as_nobody({"unix": path, "unix_mode": "0660", "unix_group": NOBODY})
