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


# -- issue 11: everything startup would refuse or misbehave on is refused by validation -------


def with_upstream(**fields: Any) -> dict[str, Any]:
    raw = minimal()
    raw["routes"][0]["upstreams"][0].update(fields)
    return raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (minimal(listen={"port": 0}), "listen.port: must be 1..65535, got 0"),
        (minimal(listen={"port": 65536}), "listen.port: must be 1..65535, got 65536"),
        (minimal(metrics={"port": 0}), "metrics.port: must be 1..65535, got 0"),
        (minimal(metrics={"port": 70000}), "metrics.port: must be 1..65535, got 70000"),
        (
            minimal(state={"backend": "redis", "url": "localhost:6379"}),
            "state.url: not a Redis URL (redis://host:port/db, rediss://, unix://path): "
            "'localhost:6379'",
        ),
        (
            minimal(state={"backend": "redis", "url": "127.0.0.1:6379/0"}),
            "state.url: not a Redis URL",
        ),
        (minimal(retry={"retry_on": [429, 600]}), "retry.retry_on: HTTP statuses are 100..599"),
        (minimal(retry={"retry_on": [99]}), "retry.retry_on: HTTP statuses are 100..599, got 99"),
        (minimal(retry={"max_wait_s": -1}), "retry.max_wait_s: must be >= 0, got -1.0"),
        (minimal(retry={"backoff_base_s": -0.5}), "retry.backoff_base_s: must be >= 0"),
        (minimal(retry={"backoff_cap_s": -1}), "retry.backoff_cap_s: must be >= 0"),
        (minimal(drain_timeout_s=-1), "drain_timeout_s: must be >= 0, got -1.0"),
        (minimal(timeouts={"idle_s": -1}), "timeouts.idle_s: must be > 0"),
        (minimal(listen={"header_timeout_s": -1}), "listen.header_timeout_s: must be > 0"),
        (minimal(listen={"body_timeout_s": 0}), "listen.body_timeout_s: must be > 0"),
        (minimal(listen={"idle_timeout_s": -2}), "listen.idle_timeout_s: must be > 0"),
        (minimal(listen={"backlog": 0}), "listen.backlog: must be > 0"),
        (minimal(listen={"max_connections": 0}), "listen.max_connections: must be > 0"),
        (minimal(routes=[]), "routes: at least one route is required"),
        (minimal(context={"bogus": 1}), "context.bogus: unknown key"),
        (minimal(retry={"max_atempts": 2}), "retry.max_atempts: unknown key"),
        (minimal(context={"safety_factor": 0.5}), "context.safety_factor: must be >= 1.0"),
        (minimal(listen={"unix_mode": 660}), "listen.unix_mode: must be 0..0777, got 660"),
        (minimal(listen={"unix_mode": "rw"}), "listen.unix_mode: expected an octal file mode"),
        (
            minimal(listen={"unix_group": "no-such-group-llmp"}),
            "listen.unix_group: no such group: 'no-such-group-llmp'",
        ),
        (with_upstream(api_key=""), "routes[0].upstreams[0].api_key: is empty"),
        (with_upstream(api_key="${EMPTY}"), "routes[0].upstreams[0].api_key: is empty"),
    ],
)
def test_validation_refuses_what_startup_would_refuse_naming_the_key(
    raw: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(raw, env={"EMPTY": ""})
    assert str(info.value).startswith(message), str(info.value)


def test_a_routes_own_typo_is_named_under_the_route() -> None:
    raw = minimal(context={"safety_margin": 10})
    raw["routes"][0]["context"] = {"bogus": 1}
    with pytest.raises(ConfigError) as info:
        from_dict(raw, env={})
    assert str(info.value).startswith("routes[0].context.bogus: unknown key")


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "10.1.2.3", "proxy.example.com"])
def test_a_non_loopback_host_needs_allow_remote(host: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(minimal(listen={"host": host}), env={})
    message = str(info.value)
    assert message.startswith(f"listen.host: {host!r} ")
    assert "other machines could use the proxy" in message
    assert "listen.allow_remote: true (or pass --allow-remote)" in message
    allowed = from_dict(minimal(listen={"host": host, "allow_remote": True}), env={})
    assert (host, True) == (allowed.listen.host, allowed.listen.allow_remote)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"])
def test_loopback_hosts_need_no_switch(host: str) -> None:
    assert host == from_dict(minimal(listen={"host": host}), env={}).listen.host


def test_env_variables_fill_number_boolean_and_optional_fields() -> None:
    raw = minimal(
        listen={
            "port": "${PORT:-8080}",
            "host": "${HOST}",
            "allow_remote": "${REMOTE:-false}",
            "header_timeout_s": "${HEAD_S}",
            "unix_mode": "${MODE:-0660}",
        },
        metrics={"port": "${METRICS_PORT:-}"},
        workers="${WORKERS:-1}",
    )
    env = {"HOST": "0.0.0.0", "REMOTE": "true", "HEAD_S": "2.5", "WORKERS": "3"}
    cfg = from_dict(raw, env=env)
    listen = cfg.listen
    assert (8080, True, 2.5, 0o660, 3, None) == (
        listen.port,
        listen.allow_remote,
        listen.header_timeout_s,
        listen.unix_mode,
        cfg.workers,
        cfg.metrics.port,
    )
    assert 9000 == from_dict(raw, env={**env, "PORT": "9000"}).listen.port


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "80a"}, "listen.port: expected an integer, got '80a' (from the environment)"),
        ({"REMOTE": "maybe"}, "listen.allow_remote: expected true or false, got 'maybe'"),
    ],
)
def test_env_values_that_are_not_numbers_name_the_key(env: dict[str, str], message: str) -> None:
    raw = minimal(listen={"port": "${PORT:-8080}", "allow_remote": "${REMOTE:-false}"})
    with pytest.raises(ConfigError) as info:
        from_dict(raw, env=env)
    assert str(info.value).startswith(message)


def test_text_fields_keep_env_values_as_text() -> None:
    raw = with_upstream(api_key="${KEY}", name="${NAME}")
    upstream = from_dict(raw, env={"KEY": "0123", "NAME": "007"}).routes[0].upstreams[0]
    assert ("0123", "007") == (upstream.api_key, upstream.name)


def test_unix_mode_accepts_yaml_octal_and_strings_and_group_by_name(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "listen: {unix: /tmp/x.sock, unix_mode: 0660, unix_group: root}\n"
        "routes: [{prefix: /o, provider: openai, upstreams: [{name: a, base_url: 'http://a'}]}]\n"
    )
    listen = load(path, env={}).listen
    assert (0o660, 0) == (listen.unix_mode, listen.unix_group)
    assert 0o640 == from_dict(minimal(listen={"unix_mode": "0640"}), env={}).listen.unix_mode


ROUTES_YAML = (
    "routes: [{prefix: /o, provider: openai, upstreams: [{name: a, base_url: 'http://a'}]}]\n"
)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"listen: {port: 1}\nlisten: {port: 2}\n" + ROUTES_YAML.encode(), ":2: duplicate key"),
        (
            b"listen:\n  port: 1\n  host: 127.0.0.1\n  port: 2\n" + ROUTES_YAML.encode(),
            ":4: duplicate key 'port' (first on line 2)",
        ),
        (b"# caf\xe9\n" + ROUTES_YAML.encode(), ":1: not UTF-8 text (byte 0xe9)"),
        (b"routes: [\n", ":2:1: invalid YAML: "),
        (b"", ": expected a mapping of settings"),
    ],
)
def test_file_problems_are_one_line_naming_the_file(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    text = str(info.value)
    assert text.startswith(str(path)) and message in text, text
    assert "\n" not in text


def test_yaml_merge_keys_may_override_without_a_duplicate_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "routes:\n  - prefix: /o\n    provider: openai\n    upstreams:\n"
        "      - &up {name: a, base_url: 'http://a'}\n"
        "      - {<<: *up, name: b}\n"
    )
    assert ["a", "b"] == [u.name for u in load(path, env={}).routes[0].upstreams]


def test_redis_url_password_is_masked_for_messages() -> None:
    state = from_dict(
        minimal(state={"backend": "redis", "url": "redis://user:s3cret@cache:6379/0"}), env={}
    ).state
    assert "redis://user:***@cache:6379/0" == state.display_url
    with pytest.raises(ConfigError) as info:
        from_dict(minimal(state={"backend": "redis", "url": "cache:s3cret@x"}), env={})
    assert "s3cret" not in str(info.value)


def test_cli_check_reports_an_unreadable_or_non_utf8_file_in_one_line(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"# caf\xe9\n" + ROUTES_YAML.encode())
    for path, words in ((latin1, "not UTF-8 text"), (tmp_path, "cannot read config")):
        result = run_cli("--config", str(path), "--check")
        assert (2, "") == (result.returncode, result.stdout)
        assert [f"llm-proxy: config error: {path}"] == [
            line[: len(f"llm-proxy: config error: {path}")] for line in result.stderr.splitlines()
        ]
        assert words in result.stderr and "Traceback" not in result.stderr


def test_cli_check_explains_why_a_remote_host_needs_the_switch(tmp_path: Path) -> None:
    path = tmp_path / "remote.yaml"
    path.write_text("listen: {host: 0.0.0.0, port: 8080}\n" + ROUTES_YAML)
    refused = run_cli("--config", str(path), "--check")
    assert 2 == refused.returncode
    assert "listen.host: '0.0.0.0' listens on every interface: other machines could use" in (
        refused.stderr
    )
    accepted = run_cli("--config", str(path), "--check", "--allow-remote")
    assert (0, f"llm-proxy: {path} is valid (1 routes)\n") == (accepted.returncode, accepted.stdout)
