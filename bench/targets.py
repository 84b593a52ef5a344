"""The four ways a request reaches the fake upstream, and what each scenario sends to each.

direct     the fake upstream itself (the zero point every "added" number is measured from)
forwarder  bench/forwarder.py, the bare aiohttp floor
ours       ``python -m proxy`` with the shipped config.yaml, every upstream pointed at the fake
litellm    LiteLLM's proxy from bench/.venv-litellm (bench/setup_litellm.sh), when installed
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from procs import Service, announced, drain_to, free_port, spawn, wait_http

ROOT = Path(__file__).resolve().parents[1]
LITELLM_BIN = ROOT / "bench" / ".venv-litellm" / "bin" / "litellm"
MASTER_KEY = "sk-bench-0123456789abcdef0123456789abcdef"
TARGETS = ("direct", "forwarder", "ours", "litellm")
TRIM_PREFIX = "/openai-trim"
TRIM_MAX_INPUT_TOKENS = 1500
BIG_BYTES = 1 << 20
SSE_CHUNKS = 200
PACED_DELAY_MS = 1
"""The paced SSE scenario's gap between events: each event arrives alone, as tokens do."""


@dataclass(frozen=True)
class Slow:
    """The slow-stream scenario's pacing: ``chunks`` SSE events ``delay_ms`` apart."""

    chunks: int = 20
    delay_ms: int = 250


@dataclass(frozen=True)
class Req:
    method: str
    url: str
    headers: dict[str, str]
    body: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"method": self.method, "url": self.url, "headers": self.headers, "body": self.body}


def ours_config(shipped: Path, fake: str, port: int) -> dict[str, Any]:
    """The shipped config with every upstream at the fake, plus one route that forces trimming.

    api_key entries are dropped so the client's credential passes through, as in the shipped file.
    """
    cfg = yaml.safe_load(shipped.read_text())
    cfg["listen"] = {"host": "127.0.0.1", "port": port}
    for route in cfg["routes"]:
        for up in route["upstreams"]:
            up["base_url"] = fake
            up.pop("api_key", None)
    cfg["routes"].append(
        {
            "prefix": TRIM_PREFIX,
            "provider": "openai",
            "upstreams": [{"name": "openai-trim", "base_url": fake}],
            "context": {"max_input_tokens": TRIM_MAX_INPUT_TOKENS},
            # the mix's scripted 429 is not a real limit (its headers say 1 of 60 requests
            # left): paced by it, the route would hold requests for seconds. The mix measures
            # trimming and one retry; pacing has its own bench (bench_pacing.py).
            "pacing": {"enabled": False},
        }
    )
    return cfg


def litellm_config(fake: str, slow: Slow) -> dict[str, Any]:
    """One OpenAI-compatible model per scenario (LiteLLM does not forward x-fake-* headers),
    telemetry and callbacks off, no retries (the load generator retries 429s for it)."""

    def model(name: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": "openai/gpt-4o-mini",
            "api_base": f"{fake}/v1",
            "api_key": "sk-fake",
        }
        if headers:
            params["extra_headers"] = headers
        return {"model_name": name, "litellm_params": params}

    return {
        "model_list": [
            model("gpt-4o-mini"),
            model("bench-sse", {"x-fake-chunks": str(SSE_CHUNKS)}),
            model(
                "bench-sse-paced",
                {"x-fake-chunks": str(SSE_CHUNKS), "x-fake-chunk-delay-ms": str(PACED_DELAY_MS)},
            ),
            model(
                "bench-slow",
                {"x-fake-chunks": str(slow.chunks), "x-fake-chunk-delay-ms": str(slow.delay_ms)},
            ),
        ],
        "litellm_settings": {
            "telemetry": False,
            "success_callback": [],
            "failure_callback": [],
            "callbacks": [],
            "num_retries": 0,
            "request_timeout": 600,
        },
        "general_settings": {
            "master_key": MASTER_KEY,
            "disable_spend_logs": True,
            "pass_through_endpoints": [
                {"path": "/v1/fake/binary", "target": f"{fake}/v1/fake/binary"}
            ],
        },
    }


def start_services(
    workdir: Path, slow: Slow, *, litellm: bool, root: Path = ROOT
) -> dict[str, Service]:
    """Start the fake, the forwarder, our proxy and (if asked) LiteLLM; keyed by target name.

    ``root`` is the checkout whose ``proxy`` package and config.yaml run as "ours" (and whose
    fake upstream is used), so a scratch copy with a candidate change runs on the same harness.
    """
    py = sys.executable
    out: dict[str, Service] = {}
    try:
        fake_log = workdir / "fake.log"
        out["direct"] = announced(
            "fake",
            spawn([py, "-m", "proxy.fake_upstream", "--port", "0"], fake_log, cwd=root),
            fake_log,
            30,
        )
        fake = out["direct"].base
        fwd_log = workdir / "forwarder.log"
        argv = [py, str(ROOT / "bench" / "forwarder.py"), "--upstream", fake, "--port", "0"]
        if has_uvloop():  # the same loop choice as the fake and our proxy's default
            argv.append("--uvloop")
        out["forwarder"] = announced("forwarder", spawn(argv, fwd_log, cwd=ROOT), fwd_log, 30)
        out["ours"] = start_ours(workdir, fake, root)
        if litellm:
            out["litellm"] = start_litellm(workdir, fake, slow)
    except BaseException:
        for svc in out.values():
            svc.stop()
        raise
    return out


UVLOOP_LAUNCH = (
    "import sys, uvloop; uvloop.install(); from proxy.cli import main; sys.exit(main(sys.argv[1:]))"
)
"""Runs our unchanged proxy on uvloop (asyncio.run picks up the installed policy)."""


def has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def loop_of(svc: Service) -> str:
    """Which event loop a running server uses: uvloop when its extension is mapped in."""
    try:
        maps = Path(f"/proc/{svc.pid}/maps").read_text()
    except OSError:
        return "unknown"
    return "uvloop" if "uvloop" in maps else "asyncio"


def start_ours(
    workdir: Path, fake: str, root: Path, *, name: str = "ours", uvloop: bool = False
) -> Service:
    """Our proxy from checkout ``root`` with its shipped config pointed at the fake."""
    port = free_port()
    cfg_path = workdir / f"{name}.yaml"
    cfg = ours_config(root / "config.yaml", fake, port)
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    log = workdir / f"{name}.log"
    entry = ["-c", UVLOOP_LAUNCH] if uvloop else ["-m", "proxy"]
    argv = [sys.executable, *entry, "--config", str(cfg_path), "--port", str(port)]
    proc = spawn(argv, log.with_suffix(".err"), cwd=root)
    svc = Service(name, proc, f"http://127.0.0.1:{port}", log, drain_to(proc, log))
    _ready(svc, f"{svc.base}/healthz", 60)
    return svc


def start_litellm(workdir: Path, fake: str, slow: Slow) -> Service:
    port = free_port()
    cfg_path = workdir / "litellm.yaml"
    cfg_path.write_text(yaml.safe_dump(litellm_config(fake, slow), sort_keys=False))
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list at startup
        "LITELLM_TELEMETRY": "False",
        "NO_PROXY": "*",
    }
    argv = [str(LITELLM_BIN), "--config", str(cfg_path), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--telemetry", "False"]
    log = workdir / "litellm.log"
    proc = spawn(argv, log.with_suffix(".err"), cwd=workdir, env=env)
    svc = Service("litellm", proc, f"http://127.0.0.1:{port}", log, drain_to(proc, log))
    _ready(svc, f"{svc.base}/health/liveliness", 120)
    return svc


def _ready(svc: Service, url: str, timeout_s: float) -> None:
    try:
        wait_http(url, svc.proc, timeout_s)
    except RuntimeError:
        svc.stop()
        raise


def _chat(model: str, content: str, *, stream: bool = False) -> str:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


PROSE = (
    "The quarterly report shows steady growth across every region, driven by new customers, "
    "better retention and a careful reduction of operating costs in the second half. "
)


def long_conversation(turns: int = 40) -> str:
    """About 4,000 tokens of history: far over the trim route's 1,500-token budget."""
    messages = [{"role": "system", "content": "You are a concise financial analyst."}]
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": f"Turn {i}. " + PROSE * 3})
    messages.append({"role": "user", "content": "Summarise the last answer in one line."})
    return json.dumps({"model": "gpt-4o-mini", "messages": messages}, separators=(",", ":"))


def requests_for(target: str, base: str, scenario: str, slow: Slow) -> list[Req]:
    """The request templates a scenario cycles through for ``target`` (base URL of its server)."""
    auth = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}
    api = base + ("/openai" if target == "ours" else "")
    is_ll = target == "litellm"
    chat = f"{api}/v1/chat/completions"
    if scenario == "small":
        return [Req("POST", chat, auth, _chat("gpt-4o-mini", "Say hi"))]
    if scenario == "big":
        return [Req("GET", f"{api}/v1/fake/binary?size={BIG_BYTES}", dict(auth))]
    if scenario in ("sse", "sse-paced"):
        headers = dict(auth)
        if not is_ll:
            headers["x-fake-chunks"] = str(SSE_CHUNKS)
            if scenario == "sse-paced":
                headers["x-fake-chunk-delay-ms"] = str(PACED_DELAY_MS)
        model = ("bench-" + scenario) if is_ll else "gpt-4o-mini"
        return [Req("POST", chat, headers, _chat(model, "Stream please", stream=True))]
    if scenario == "slow":
        headers = dict(auth)
        if not is_ll:
            headers["x-fake-chunks"] = str(slow.chunks)
            headers["x-fake-chunk-delay-ms"] = str(slow.delay_ms)
        model = "bench-slow" if is_ll else "gpt-4o-mini"
        return [Req("POST", chat, headers, _chat(model, "Slowly", stream=True))]
    if scenario == "mix":
        url = f"{base}{TRIM_PREFIX}/v1/chat/completions" if target == "ours" else chat
        small = Req("POST", url, auth, _chat("gpt-4o-mini", "Say hi"))
        return [small, small, small, Req("POST", url, auth, long_conversation())]
    raise ValueError(f"unknown scenario {scenario!r}")
