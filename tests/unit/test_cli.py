"""The command line and the listen settings it validates before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from proxy import config as config_mod
from proxy.cli import load_config, main, parse_args
from proxy.service import loop_factory
from tests.conftest import base_config


@pytest.mark.parametrize(
    ("listen", "error"),
    [
        ({"port": 70000}, "listen.port: must be 1..65535, got 70000"),
        ({"unix": ""}, "listen.unix: a socket path must be 1..107 bytes, got ''"),
        ({"unix": "/" + "x" * 107}, "listen.unix: a socket path must be 1..107 bytes"),
    ],
)
def test_listen_errors_name_the_key(listen: dict[str, object], error: str) -> None:
    with pytest.raises(config_mod.ConfigError) as exc:
        config_mod.from_dict(base_config("http://up.test", listen=listen), env={})
    assert str(exc.value).startswith(error)


def write(tmp_path: Path, **overrides: object) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base_config("http://up.test", **overrides)))
    return str(path)


def test_command_line_overrides_apply_to_every_load(tmp_path: Path) -> None:
    args = parse_args(["-c", write(tmp_path, workers=3), "--port", "9", "--workers", "2"])
    first = load_config(args)
    assert (9, 2) == (first.listen.port, first.workers)
    assert first == load_config(args)  # what a reload re-reads: no restart-only key "changed"


def test_workers_below_one_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert 2 == main(["-c", write(tmp_path), "--workers", "0"])
    assert "llm-proxy: config error: --workers: workers: must be > 0, got 0\n" == (
        capsys.readouterr().err
    )


def test_check_validates_without_serving(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, workers=4)
    assert 0 == main(["-c", path, "--check"])
    assert f"llm-proxy: {path} is valid (2 routes)\n" == capsys.readouterr().out


def test_event_loop_is_uvloop_when_installed_unless_asyncio_is_asked_for() -> None:
    uvloop = pytest.importorskip("uvloop")
    assert (uvloop.new_event_loop, uvloop.new_event_loop, None) == (
        loop_factory("auto"),
        loop_factory("uvloop"),
        loop_factory("asyncio"),
    )


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.version import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert (0, f"llm-proxy {__version__}\n") == (exit_.value.code, capsys.readouterr().out)


def test_allow_remote_flag_accepts_a_files_remote_host(tmp_path: Path) -> None:
    path = write(tmp_path, listen={"host": "0.0.0.0", "port": 8080})
    with pytest.raises(config_mod.ConfigError) as refused:
        load_config(parse_args(["-c", path]))
    assert str(refused.value).startswith("listen.host: '0.0.0.0' listens on every interface")
    allowed = load_config(parse_args(["-c", path, "--allow-remote"])).listen
    assert ("0.0.0.0", True) == (allowed.host, allowed.allow_remote)


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--port", "0"], "--port: listen.port: must be 1..65535, got 0"),
        (["--host", "0.0.0.0"], "--host: listen.host: '0.0.0.0' listens on every interface"),
    ],
)
def test_command_line_values_are_validated_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], error: str
) -> None:
    assert 2 == main(["-c", write(tmp_path), "--check", *flags])
    assert capsys.readouterr().err.startswith(f"llm-proxy: config error: {error}")
