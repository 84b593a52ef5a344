"""Starting and stopping the servers under test, and reading their CPU and memory from /proc.

Everything listens on 127.0.0.1 only. Every wait is bounded; every process started here is
stopped here (by its own pid, then its process group if it spawned children).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
_LISTENING = re.compile(r"listening on (http://\S+)")


@dataclass
class Service:
    """One running server: its process, base URL and log file."""

    name: str
    proc: subprocess.Popen[bytes]
    base: str
    log: Path
    _drain: threading.Thread | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        """The process and all its descendants (LiteLLM may fork workers)."""
        return tree_pids(self.proc.pid)

    def cpu_s(self) -> float:
        return cpu_seconds(self.pids())

    def rss_mb(self) -> float:
        return rss_mb(self.pids())

    def hwm_mb(self) -> float:
        return hwm_mb(self.pids())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; only this service's own process group."""
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile() -> int:
    """1,000 concurrent streams need a few thousand descriptors per process; children inherit."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def spawn(
    argv: list[str], log: Path, *, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    try:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=out,
            start_new_session=True,  # own process group: stop() reaches its children, no more
        )
    finally:
        out.close()


def announced(name: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> Service:
    """A service that prints ``listening on URL`` first; the rest of stdout goes to ``log``."""
    assert proc.stdout is not None
    found: list[str] = []

    def read_first() -> None:
        line = proc.stdout.readline().decode(errors="replace")  # type: ignore[union-attr]
        m = _LISTENING.search(line)
        if m:
            found.append(m.group(1))

    reader = threading.Thread(target=read_first, daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not found:
        proc.kill()
        raise RuntimeError(f"{name} did not announce its address within {timeout_s}s; see {log}")
    svc = Service(name, proc, found[0], log)
    svc._drain = drain_to(proc, log)
    return svc


def drain_to(proc: subprocess.Popen[bytes], log: Path) -> threading.Thread:
    """Copy the rest of ``proc``'s stdout into ``log`` so a full pipe never blocks it."""

    def copy() -> None:
        assert proc.stdout is not None
        with log.open("ab") as out:
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
                out.write(chunk)

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    return thread


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Poll ``url`` until it answers 200, the process dies, or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU time of these processes (fields 14 and 15 of /proc/PID/stat)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(pids: list[int]) -> float:
    return sum(_status_kb(p, "VmRSS:") for p in pids) / 1024


def hwm_mb(pids: list[int]) -> float:
    """Peak RSS over each process's life (summed over the tree: an upper bound)."""
    return sum(_status_kb(p, "VmHWM:") for p in pids) / 1024


class RssSampler:
    """Samples a service's RSS every ``period_s`` in a thread, to catch the peak of a scenario."""

    def __init__(self, service: Service, period_s: float = 0.05) -> None:
        self._svc, self._period = service, period_s
        self._stop = threading.Event()
        self.peak_mb = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pids = self._svc.pids()
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, rss_mb(pids))
            self._stop.wait(self._period)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak_mb = max(self.peak_mb, self._svc.rss_mb())


ROOT = Path(__file__).resolve().parents[1]


def start_proxy(workdir: Path, name: str, raw: dict[str, Any], *, root: Path = ROOT) -> Service:
    """``python -m proxy`` from checkout ``root`` (this one by default) with config ``raw``,
    once its /healthz answers."""
    port = raw["listen"]["port"]
    cfg = workdir / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    log = workdir / f"{name}.log"
    argv = [sys.executable, "-m", "proxy", "--config", str(cfg), "--port", str(port)]
    with log.open("wb") as out:  # straight to the file: its lines are read during the run
        proc = subprocess.Popen(
            argv,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    svc = Service(name, proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_http(f"{svc.base}/healthz", proc, 60)
    except RuntimeError:
        svc.stop()
        raise
    return svc


def load_average() -> str:
    """The 1/5/15-minute load averages (the machine is shared)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
