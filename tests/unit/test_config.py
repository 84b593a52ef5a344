"""Config is validated once; every error names the key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proxy.config import ConfigError, from_dict, load

ROOT = Path(__file__).resolve().parents[2]


def minimal(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "routes": [
            {
                "prefix": "/openai",
                "provider": "openai",
                "upstreams": [{"name": "a", "base_url": "https://api.openai.com"}],
            }
        ]
    }
    raw.update(overrides)
    return raw


def test_shipped_config_is_valid() -> None:
    cfg = load(ROOT / "config.yaml", env={})
    assert ("/openai", "/anthropic") == tuple(r.prefix for r in cfg.routes)
    assert ("127.0.0.1", 8080) == (cfg.listen.host, cfg.listen.port)


def test_env_expansion() -> None:
    raw = minimal()
    raw["routes"][0]["upstreams"][0]["api_key"] = "${KEY}"
    cfg = from_dict(raw, env={"KEY": "sk-1"})
    assert "sk-1" == cfg.routes[0].upstreams[0].api_key


def test_env_default() -> None:
    raw = minimal()
    raw["routes"][0]["upstreams"][0]["base_url"] = "${BASE:-http://127.0.0.1:9000}"
    assert "http://127.0.0.1:9000" == from_dict(raw, env={}).routes[0].upstreams[0].base_url


def test_api_key_not_in_repr() -> None:
    raw = minimal()
    raw["routes"][0]["upstreams"][0]["api_key"] = "sk-hidden"
    assert "sk-hidden" not in repr(from_dict(raw, env={}))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda r: r["routes"][0]["upstreams"][0].update(api_key="${NOPE}"),
            "routes[0].upstreams[0].api_key: environment variable NOPE is not set",
        ),
        (lambda r: r.update(bogus=1), "bogus: unknown key"),
        (lambda r: r["routes"][0].update(colour="red"), "routes[0].colour: unknown key"),
        (
            lambda r: r["routes"][0]["upstreams"][0].update(base_url="ftp://x"),
            "routes[0].upstreams[0].base_url: not an http(s) URL",
        ),
        (
            lambda r: r["routes"][0]["upstreams"][0].update(base_url="not a url"),
            "routes[0].upstreams[0].base_url: not an http(s) URL",
        ),
        (
            lambda r: r.update(timeouts={"connect_s": "fast"}),
            "timeouts.connect_s: expected a number",
        ),
        (lambda r: r.update(listen={"port": "80"}), "listen.port: expected an integer"),
        (lambda r: r["routes"][0].update(provider="gemini"), "routes[0].provider: must be one of"),
        (lambda r: r["routes"][0].update(upstreams=[]), "routes[0].upstreams: at least one"),
        (lambda r: r["routes"][0].update(prefix="openai"), "routes[0].prefix: must be empty or"),
        (
            lambda r: r["routes"][0]["upstreams"][0].pop("name"),
            "routes[0].upstreams[0].name: required key is missing",
        ),
        (lambda r: r.update(limits={"max_body_bytes": 0}), "limits.max_body_bytes: must be > 0"),
        (lambda r: r.pop("routes"), "routes: required key is missing"),
    ],
)
def test_errors_name_the_key_path(mutate: Any, message: str) -> None:
    raw = minimal()
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        from_dict(raw, env={})
    assert message in str(info.value)


def test_route_context_inherits_top_level() -> None:
    raw = minimal(context={"reserve_output_tokens": 100, "safety_margin": 7})
    raw["routes"][0]["context"] = {"max_input_tokens": 5000}
    ctx = from_dict(raw, env={}).routes[0].context
    assert (100, 7, 5000) == (ctx.reserve_output_tokens, ctx.safety_margin, ctx.max_input_tokens)


def test_empty_prefix_allowed() -> None:
    raw = minimal()
    raw["routes"][0]["prefix"] = ""
    assert "" == from_dict(raw, env={}).routes[0].prefix


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_cli_check_accepts_shipped_config() -> None:
    result = run_cli("--config", "config.yaml", "--check")
    assert 0 == result.returncode
    assert "is valid" in result.stdout


def test_cli_check_rejects_bad_config_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "routes:\n  - prefix: /x\n    provider: openai\n    upstreams:\n"
        "      - {name: a, base_url: 'nope://'}\n"
    )
    result = run_cli("--config", str(bad), "--check")
    assert 2 == result.returncode
    assert "routes[0].upstreams[0].base_url" in result.stderr


def test_cli_missing_file_is_an_error(tmp_path: Path) -> None:
    result = run_cli("--config", str(tmp_path / "absent.yaml"), "--check")
    assert 2 == result.returncode
    assert "cannot read config" in result.stderr


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda r: r.update(context={"safety_margin": 2048, "models": {"Small-Model": 2048}}),
            "context.safety_margin: 2048 leaves no input budget for model 'Small-Model' "
            "(window 2048 from context.models.Small-Model)",
        ),
        (
            lambda r: r["routes"][0].update(
                context={"safety_margin": 1600, "models": {"tiny": 2048}}
            ),
            "routes[0].context.safety_margin: 1600 leaves no input budget for model 'tiny' "
            "(window 2048 from routes[0].context.models.tiny)",
        ),
        (
            lambda r: r.update(
                models={"my-llama": {"window": 1024}}, context={"safety_margin": 900}
            ),
            "context.safety_margin: 900 leaves no input budget for model 'my-llama' "
            "(window 1024 from models.my-llama.window)",
        ),
        (
            lambda r: (
                r.update(context={"safety_margin": 7000}),
                r["routes"][0]["upstreams"][0].update(models={"x": "gpt-4-0613"}),
            ),
            "context.safety_margin: 7000 leaves no input budget for model 'gpt-4-0613' "
            "(window 8192 from the built-in table (routes[0].upstreams[0].models))",
        ),
        (lambda r: r.update(context={"trim_target_share": 0}), "context.trim_target_share"),
        (lambda r: r.update(context={"output_reserve_share": 1}), "context.output_reserve_share"),
    ],
)
def test_a_route_whose_budget_can_never_be_positive_is_refused(mutate: Any, message: str) -> None:
    raw = minimal()
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        from_dict(raw, env={})
    assert message in str(info.value)


def test_a_small_window_with_the_default_reserve_has_a_positive_budget() -> None:
    """2048 - min(4096, 25% of 2048) - 256 = 1280: accepted (it was 0 before the share cap)."""
    cfg = from_dict(minimal(context={"models": {"small-model": 2048}}), env={})
    ctx = cfg.routes[0].context
    assert (4096, 0.25, 256, False) == (
        ctx.reserve_output_tokens,
        ctx.output_reserve_share,
        ctx.safety_margin,
        ctx.count_tokens_endpoint,
    )
