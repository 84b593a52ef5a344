"""The README as a new user follows it: the quickstart installs into a virtual environment on
Python >= 3.11, the offline demo block, pasted into a shell, prints the answers, and every
config key is documented."""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.config import Config
from tests.process import ROOT

README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_quickstart_creates_a_venv_on_python_3_11_in_two_commands() -> None:
    quickstart = section("Quickstart")
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert ">=3.11" == setup["options"]["python_requires"]
    assert "Python >= 3.11" in quickstart and "PEP 668" in quickstart
    assert [
        "python3 -m venv .venv && . .venv/bin/activate && pip install .",
        "llm-proxy --config config.yaml",
    ] == code_blocks(quickstart, "sh")[0].strip().splitlines()


def config_keys(cls: type, path: str = "") -> Iterator[str]:
    """Every key a config file can hold, as a dotted path."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        yield path + f.name
        kinds = [hints[f.name], *typing.get_args(hints[f.name])]
        for kind in kinds + [a for k in kinds for a in typing.get_args(k)]:
            if dataclasses.is_dataclass(kind):
                yield from config_keys(kind, f"{path}{f.name}.")  # type: ignore[arg-type]


def test_every_config_key_is_documented() -> None:
    text = section("Configuration")
    missing = sorted(
        {k for k in config_keys(Config) if not re.search(rf"\b{k.rsplit('.', 1)[-1]}:", text)}
    )
    assert [] == missing


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("curl") is None, reason="the demo uses curl (apt install curl)")
def test_offline_demo_block_prints_the_answers(tmp_path: Path) -> None:
    block = code_blocks(section("Demo without internet"), "sh")[0]
    for port in ("8080", "9000"):  # the README's ports, unless this machine already uses one
        if not port_is_free(int(port)):
            block = re.sub(rf"\b{port}\b", str(free_port()), block)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "llm-proxy"  # the installed entry point, for this checkout
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m proxy "$@"\n')
    shim.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    log = tmp_path / "output.txt"
    with open(log, "wb") as out:  # a file, not a pipe: the servers it starts keep it open
        shell = subprocess.Popen(
            ["bash", "-c", block],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the servers stay in its group: stopped below
        )
        try:
            shell.wait(timeout=100)
        finally:
            stop_group(shell.pid)
    output = log.read_text()
    assert '"object":"chat.completion"' in output.replace(" ", ""), output
    headers = dict(
        line.lower().split(": ", 1)
        for line in output.splitlines()
        if line.lower().startswith("x-proxy")
    )
    assert ("2", "fake") == (headers.get("x-proxy-attempts"), headers.get("x-proxy-upstream"))


def stop_group(pgid: int) -> None:
    """SIGTERM the demo's servers (the proxy drains), SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        if sig == signal.SIGTERM:
            subprocess.run(["sleep", "1"], check=False)


@pytest.fixture(autouse=True)
def _no_leftover_demo_file() -> Iterator[None]:
    yield
    assert not (ROOT / "demo.yaml").exists()  # the block writes into its own directory
