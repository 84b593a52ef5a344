"""The config sections for keys: auth, store, and the admin token from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from proxy import config as config_mod
from tests.conftest import base_config

TOKEN = "a-long-enough-admin-token"


def test_auth_is_off_by_default_with_a_sqlite_store() -> None:
    cfg = config_mod.from_dict(base_config("http://up.test"), env={})
    assert ("off", "sqlite", "llm-proxy.db", None) == (
        cfg.auth.mode,
        cfg.store.backend,
        cfg.store.path,
        cfg.admin_token,
    )


def test_the_admin_token_comes_from_the_environment_unless_the_file_sets_one() -> None:
    raw = base_config("http://up.test")
    env = {"LLM_PROXY_ADMIN_TOKEN": TOKEN}
    assert TOKEN == config_mod.from_dict(raw, env=env).admin_token
    own = base_config("http://up.test", admin_token="x" * 20)
    assert "x" * 20 == config_mod.from_dict(own, env=env).admin_token


@pytest.mark.parametrize(
    ("overrides", "env", "error"),
    [
        ({}, {"LLM_PROXY_ADMIN_TOKEN": "short"},
         "admin_token: must be at least 16 characters"),
        ({"auth": {"mode": "on"}}, {}, "auth.mode: must be one of off, keys; got 'on'"),
        ({"store": {"backend": "postgres"}}, {}, "store.url: required when backend is postgres"),
        ({"auth": {"cache_ttl_s": 0}}, {}, "auth.cache_ttl_s: must be > 0, got 0.0"),
    ],
)  # fmt: skip
def test_errors_name_the_key(overrides: dict, env: dict, error: str) -> None:
    with pytest.raises(config_mod.ConfigError) as exc:
        config_mod.from_dict(base_config("http://up.test", **overrides), env=env)
    assert error == str(exc.value)


def test_secrets_stay_out_of_the_config_repr() -> None:
    raw = base_config(
        "http://up.test",
        store={"backend": "postgres", "url": "postgresql://u:hunter2@db/x"},
        admin_token=TOKEN,
    )
    text = repr(config_mod.from_dict(raw, env={}))
    assert "hunter2" not in text and TOKEN not in text


def test_a_relative_sqlite_path_is_taken_from_the_config_files_folder(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "config.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(base_config("http://up.test", store={"path": "data/k.db"})))
    assert str(tmp_path / "etc" / "data" / "k.db") == config_mod.load(path, env={}).store.path
    absolute = str(tmp_path / "elsewhere.db")
    path.write_text(yaml.safe_dump(base_config("http://up.test", store={"path": absolute})))
    assert absolute == config_mod.load(path, env={}).store.path
