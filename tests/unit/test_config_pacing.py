"""The ``pacing:`` config (top level, inherited and overridden per route like ``retry:``)
and ``retry.on_timeout``."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.config import ConfigError, Pacing, Retry, from_dict
from proxy.resilience.pacing import PacePolicy


def raw(**top: Any) -> dict[str, Any]:
    route: dict[str, Any] = {
        "prefix": "/openai",
        "provider": "openai",
        "upstreams": [{"name": "u", "base_url": "http://127.0.0.1:9"}],
    }
    route.update(top.pop("route", {}))
    return {"routes": [route], **top}


def test_defaults() -> None:
    config = from_dict(raw(), env={})
    assert Pacing(True, 0.95, 30.0, 60.0, None) == config.pacing == config.routes[0].pacing
    assert (False, False) == (Retry().on_timeout, config.routes[0].retry.on_timeout)


def test_routes_inherit_the_top_level_and_override_it() -> None:
    config = from_dict(
        raw(
            pacing={"target_utilisation": 0.9, "max_queue_wait_s": 10},
            route={"pacing": {"max_queue_wait_s": 5}, "retry": {"on_timeout": True}},
        ),
        env={},
    )
    assert Pacing(True, 0.9, 5.0, 60.0, None) == config.routes[0].pacing
    assert Pacing(True, 0.9, 10.0, 60.0, None) == config.pacing
    assert config.routes[0].retry.on_timeout


def test_pacing_can_be_switched_off_per_route() -> None:
    config = from_dict(raw(route={"pacing": {"enabled": False}}), env={})
    assert (True, False) == (config.pacing.enabled, config.routes[0].pacing.enabled)


@pytest.mark.parametrize(
    ("pacing", "message"),
    [
        (
            {"target_utilisation": 0},
            "pacing.target_utilisation: must be in (0, 1], got 0.0",
        ),
        (
            {"target_utilisation": 1.5},
            "pacing.target_utilisation: must be in (0, 1], got 1.5",
        ),
        ({"max_queue_wait_s": -1}, "pacing.max_queue_wait_s: must be >= 0, got -1.0"),
        ({"window_s": 0}, "pacing.window_s: must be > 0, got 0.0"),
        ({"enabled": "yes"}, "pacing.enabled: expected true or false, got 'yes'"),
        ({"burst": 3}, "pacing.burst: unknown key"),
    ],
)
def test_invalid_pacing_names_the_key(pacing: dict[str, Any], message: str) -> None:
    """The top level is checked on its own first, so the error names the key as written."""
    with pytest.raises(ConfigError) as raised:
        from_dict(raw(pacing=pacing), env={})
    assert str(raised.value).startswith(message)


def test_fingerprint_secret_is_top_level_only_and_never_shown() -> None:
    config = from_dict(raw(pacing={"fingerprint_secret": "${SECRET}"}), env={"SECRET": "s3cr3t"})
    assert "s3cr3t" == config.pacing.fingerprint_secret
    assert "s3cr3t" not in repr(config)
    with pytest.raises(ConfigError, match=r"routes\[0\].pacing.fingerprint_secret: top level"):
        from_dict(raw(route={"pacing": {"fingerprint_secret": "x"}}), env={})


def test_policy_from_config() -> None:
    pacing = Pacing(target_utilisation=0.8, window_s=30)
    assert PacePolicy(0.8, 30.0, 600.0) == PacePolicy.of(pacing, reservation_ttl_s=600)
