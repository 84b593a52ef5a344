"""The shipped systemd units: ``systemd-analyze verify`` accepts them, and they say what the
service relies on (notify, reload by SIGHUP, drain on SIGTERM, sandbox)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.cli import EXIT_CONFIG
from tests.process import ROOT

UNITS = ROOT / "systemd"
INSTALLED = "/opt/llm-proxy/bin/llm-proxy"


def directives(unit: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, values in order (keys may repeat)."""
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def local_command() -> str:
    """The installed entry point when the package is installed, else this interpreter."""
    script = Path(sys.executable).with_name("llm-proxy")
    return str(script) if script.exists() else f"{sys.executable} -m proxy"


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (apt-get install systemd; .ci/run does)",
)
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    service = (UNITS / "llm-proxy.service").read_text()
    assert f"ExecStart={INSTALLED} " in service
    # verify checks that ExecStart exists: point a copy at this checkout's interpreter
    (tmp_path / "llm-proxy.service").write_text(service.replace(INSTALLED, local_command()))
    shutil.copy(UNITS / "llm-proxy.socket", tmp_path / "llm-proxy.socket")
    result = subprocess.run(
        ["systemd-analyze", "verify", "llm-proxy.service", "llm-proxy.socket"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (0, "") == (result.returncode, result.stdout + result.stderr)


def test_service_unit_is_notify_reloads_by_sighup_and_is_sandboxed() -> None:
    unit = directives(UNITS / "llm-proxy.service")
    expected = {
        "Type": ["notify"],
        "ExecReload": ["/bin/kill -HUP $MAINPID"],
        "Restart": ["on-failure"],
        "KillMode": ["mixed"],
        "EnvironmentFile": ["-/etc/llm-proxy/env"],
        "DynamicUser": ["yes"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "NoNewPrivileges": ["yes"],
        "CapabilityBoundingSet": [""],
        "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"],
        "LimitNOFILE": ["65536"],
        "RestartPreventExitStatus": [str(EXIT_CONFIG)],
    }
    assert expected == {key: unit.get(key) for key in expected}
    assert "--config /etc/llm-proxy/config.yaml" in unit["ExecStart"][0]
    # prometheus-client's process collector needs /proc/stat (boot time), which ProcSubset=pid
    # hides: the process_* metrics would be silently empty
    assert None is unit.get("ProcSubset")


def test_socket_unit_activates_the_service_on_the_default_address() -> None:
    unit = directives(UNITS / "llm-proxy.socket")
    assert ["127.0.0.1:8080"] == unit["ListenStream"]


def test_a_refused_config_exits_with_the_status_the_unit_does_not_restart_on(
    tmp_path: Path,
) -> None:
    unit = directives(UNITS / "llm-proxy.service")
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "--config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unit["RestartPreventExitStatus"] == [str(result.returncode)]
    assert "llm-proxy: config error: routes: at least one route is required\n" == result.stderr
