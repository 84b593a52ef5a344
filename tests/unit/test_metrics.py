"""Prometheus collectors and the metrics plugin: names, bounded labels, counts derived from what a
request did (attempts, tokens, cost, trims, aborts), read back from the text exposition."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from proxy import config as config_mod
from proxy.exchange import Exchange
from proxy.metrics import Metrics, ModelLabels, metrics_handler, status_class
from proxy.models import ModelRegistry
from proxy.outcomes import Attempt, AttemptReason, ContextOutcome, UsageOutcome
from proxy.plugins.metrics import MetricsPlugin
from proxy.routing import Router
from proxy.usage import Usage
from tests.conftest import base_config

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(got: Samples, name: str, **labels: str) -> float | None:
    return got.get((name, frozenset(labels.items())))


def total(got: Samples, name: str, **match: str) -> float:
    """Sum of a metric over every series whose labels include ``match``."""
    return sum(
        v for (n, labels), v in got.items() if n == name and set(match.items()) <= set(labels)
    )


def two_upstream_config(**overrides: Any) -> config_mod.Config:
    raw = base_config("http://up.test", **overrides)
    raw["routes"][0]["upstreams"] = [
        {"name": "primary", "base_url": "http://up.test"},
        {"name": "secondary", "base_url": "http://up.test", "models": {"gpt-4o": "llama-3.3"}},
    ]
    return config_mod.from_dict(raw, env={})


def exchange(
    cfg: config_mod.Config, path: str = "/openai/v1/chat/completions", body: bytes = b"{}"
) -> Exchange:
    route, tail = Router(cfg.routes).match(path) or (None, "")
    assert route is not None
    headers = {"Content-Type": "application/json", "x-request-id": "rid"}
    ex = Exchange(make_mocked_request("POST", path, headers=headers))
    ex.routed(route, tail)
    ex.received(body)
    ex.upstream = route.config.upstreams[0]
    ex.status = 200
    return ex


def plugin_for(cfg: config_mod.Config) -> tuple[MetricsPlugin, Metrics]:
    metrics = Metrics()
    return MetricsPlugin(
        metrics, ModelRegistry.from_config(cfg).known_names(), logger=None
    ), metrics


# -- labels ------------------------------------------------------------------------------------

LABELS = ModelLabels(
    ModelRegistry.from_config(
        two_upstream_config(pricing={"my-finetune": {"input": 1.0, "output": 2.0}})
    ).known_names()
)


@pytest.mark.parametrize(
    ("model", "label"),
    [
        ("gpt-4o", "gpt-4o"),
        ("GPT-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-3-5-sonnet@20240620", "claude-3-5-sonnet"),
        ("claude-new-family-9", "claude"),  # the context-window table knows "claude"
        ("gpt-4.5-preview", "gpt-4.5"),
        ("llama-3.3", "llama-3.3"),  # a fallback mapping target in config
        ("my-finetune", "my-finetune"),  # a config price entry
        ("my-finetune-v2", "my-finetune"),
        ("gpt-4oo", "other"),
        ("x" * 300, "other"),
        ("attacker-chosen-name-123", "other"),
        ("", "none"),
        (None, "none"),
    ],
)
def test_model_label_is_a_known_name_or_other(model: str | None, label: str) -> None:
    assert label == LABELS(model)


@pytest.mark.parametrize(
    ("status", "label"),
    [
        (200, "2xx"),
        (204, "2xx"),
        (304, "3xx"),
        (404, "4xx"),
        (429, "4xx"),
        (529, "5xx"),
        (None, "none"),
        (99, "none"),
    ],
)
def test_status_class(status: int | None, label: str) -> None:
    assert label == status_class(status)


# -- collectors --------------------------------------------------------------------------------


def test_every_metric_follows_prometheus_naming() -> None:
    families = list(Metrics().registry.collect())
    for family in families:  # process_*: prometheus-client's standard process collector
        assert family.name.startswith(("llm_proxy_", "process_"))
        if family.type == "histogram":
            assert family.name.endswith("_seconds")
    names = {f.name for f in families}
    assert {
        "llm_proxy_requests",
        "llm_proxy_request_duration_seconds",
        "llm_proxy_time_to_first_token_seconds",
        "llm_proxy_prompt_tokens",
        "llm_proxy_completion_tokens",
        "llm_proxy_cost_usd",
        "llm_proxy_retries",
        "llm_proxy_fallbacks",
        "llm_proxy_cooldown_waits",
        "llm_proxy_context_trims",
        "llm_proxy_in_flight_requests",
        "llm_proxy_in_flight_streams",
        "llm_proxy_build_info",
        "llm_proxy_connections_refused",
        "llm_proxy_client_timeouts",
        "process_resident_memory_bytes",
        "process_open_fds",
    } <= names


def test_each_metrics_object_has_its_own_registry_not_the_global_one() -> None:
    a, b = Metrics(), Metrics()
    a.count_refused(None, 404)
    assert 1.0 == value(
        samples(a.exposition().decode()),
        "llm_proxy_requests_total",
        route="none",
        upstream="none",
        model="none",
        status_class="4xx",
    )
    assert 0.0 == total(samples(b.exposition().decode()), "llm_proxy_requests_total")
    assert None is REGISTRY.get_sample_value("llm_proxy_requests_total")


def test_exposition_has_no_created_series() -> None:
    metrics = Metrics()
    metrics.count_refused("/openai", 413)
    text = metrics.exposition().decode()
    assert "llm_proxy_requests_total{" in text
    assert "_created" not in text


async def test_handler_serves_the_classic_text_format() -> None:
    metrics = Metrics()
    resp = await metrics_handler(metrics)(make_mocked_request("GET", "/metrics"))
    assert "text/plain; version=0.0.4; charset=utf-8" == resp.headers["Content-Type"]
    assert isinstance(resp.body, bytes)
    assert steady(metrics.exposition()) == steady(resp.body)


def steady(exposition: bytes) -> list[bytes]:
    """The exposition without ``process_*`` lines, whose values (CPU, memory) move between two
    scrapes."""
    return [line for line in exposition.splitlines() if b"process_" not in line]


def test_in_flight_gauges_count_tracked_requests_and_their_streams() -> None:
    class Ex:
        def __init__(self, stream: bool) -> None:
            self.stream = stream

    metrics = Metrics()
    live = [Ex(True), Ex(False), Ex(True)]
    for ex in live:
        metrics.track(ex)
    got = samples(metrics.exposition().decode())
    assert (3.0, 2.0) == (
        value(got, "llm_proxy_in_flight_requests"),
        value(got, "llm_proxy_in_flight_streams"),
    )
    for ex in live:
        metrics.untrack(ex)
    metrics.untrack(live[0])  # twice is harmless
    got = samples(metrics.exposition().decode())
    assert (0.0, 0.0) == (
        value(got, "llm_proxy_in_flight_requests"),
        value(got, "llm_proxy_in_flight_streams"),
    )


# -- the plugin --------------------------------------------------------------------------------


def attempt(upstream: str, status: int | None, reason: str, waited_ms: float = 0.0) -> Attempt:
    kinds = {
        "ok": AttemptReason.ANSWERED,
        "passed": AttemptReason.ANSWERED,
        "cooling down": AttemptReason.COOLING_DOWN,
    }
    kind = kinds.get(reason, AttemptReason.RETRYABLE_STATUS)
    return Attempt(upstream, kind, status, waited_s=waited_ms / 1000, duration_s=0.001)


@pytest.mark.parametrize(
    ("attempts", "retry_wait_ms", "expected", "cooldown_waits"),
    [
        ([attempt("primary", 200, "ok")], 0.0, {}, []),
        (
            [attempt("primary", 429, "retry-after", 1000.0), attempt("primary", 200, "ok")],
            1000.0,
            {("retries", "primary"): 1},
            [],
        ),
        (
            [
                attempt("primary", 503, "backoff", 500.0),
                attempt("primary", 503, "backoff", 1000.0),
                attempt("primary", 200, "ok"),
            ],
            1500.0,
            {("retries", "primary"): 2},
            [],
        ),
        (
            [attempt("primary", 429, "retry-after"), attempt("secondary", 200, "ok")],
            0.0,
            {("fallbacks", "primary"): 1},
            [],
        ),
        (
            [attempt("primary", None, "cooling down"), attempt("secondary", 200, "ok")],
            0.0,
            {("cooldown_skips", "primary"): 1, ("fallbacks", "primary"): 1},
            [],
        ),
        (
            [attempt("primary", 200, "ok")],  # waited 800 ms for a cooldown before sending
            800.0,
            {("cooldown_waits", "primary"): 1},
            ["primary"],
        ),
        (
            [
                attempt("primary", 429, "x-ratelimit-reset", 2000.0),
                attempt("primary", 429, "retry-after"),
                attempt("secondary", 500, "passed"),
            ],
            2000.0,
            {("retries", "primary"): 1, ("fallbacks", "primary"): 1},
            [],
        ),
    ],
)
def test_retries_fallbacks_and_cooldowns_are_read_from_the_attempt_records(
    attempts: list[Attempt],
    retry_wait_ms: float,
    expected: Mapping[tuple[str, str], int],
    cooldown_waits: list[str],
) -> None:
    cfg = two_upstream_config()
    plugin, metrics = plugin_for(cfg)
    ex = exchange(cfg)
    ex.attempts.extend(attempts)
    ex.retry.waited_s = retry_wait_ms / 1000
    ex.retry.cooldown_waits.extend(cooldown_waits)
    plugin.observe(ex)
    got = samples(metrics.exposition().decode())
    for kind in ("retries", "fallbacks", "cooldown_waits", "cooldown_skips"):
        for upstream in ("primary", "secondary"):
            assert expected.get((kind, upstream), 0) == total(
                got, f"llm_proxy_{kind}_total", route="/openai", upstream=upstream
            ), (kind, upstream)
    assert retry_wait_ms / 1000 == total(got, "llm_proxy_retry_wait_seconds_total")


def test_tokens_cost_and_duration_are_counted_under_bounded_labels() -> None:
    cfg = two_upstream_config()
    plugin, metrics = plugin_for(cfg)
    for model in ("gpt-4o-2024-08-06", "gpt-4o", "someone-elses-model"):
        ex = exchange(cfg)
        ex.stream = True
        ex.t_first_token = ex.t_start + 0.25
        ex.usage = UsageOutcome(
            model,
            Usage(prompt_tokens=10, completion_tokens=4, cached_tokens=2, source="upstream"),
            cost_usd=0.5 if model != "someone-elses-model" else None,
        )
        plugin.observe(ex)
    got = samples(metrics.exposition().decode())
    gpt = {"route": "/openai", "upstream": "primary", "model": "gpt-4o"}
    other = {**gpt, "model": "other"}
    assert 2.0 == value(got, "llm_proxy_requests_total", **gpt, status_class="2xx")
    assert 1.0 == value(got, "llm_proxy_requests_total", **other, status_class="2xx")
    assert 20.0 == value(got, "llm_proxy_prompt_tokens_total", **gpt, source="upstream")
    assert 8.0 == value(got, "llm_proxy_completion_tokens_total", **gpt, source="upstream")
    assert 4.0 == value(got, "llm_proxy_cached_tokens_total", **gpt)
    assert 1.0 == value(got, "llm_proxy_cost_usd_total", **gpt)
    assert None is value(got, "llm_proxy_cost_usd_total", **other)
    assert 1.0 == value(got, "llm_proxy_unpriced_requests_total", **other)
    assert 2.0 == value(got, "llm_proxy_time_to_first_token_seconds_count", **gpt)
    assert 0.5 == pytest.approx(value(got, "llm_proxy_time_to_first_token_seconds_sum", **gpt))
    assert 0.0 == value(got, "llm_proxy_time_to_first_token_seconds_bucket", **gpt, le="0.2")
    assert 2.0 == value(got, "llm_proxy_time_to_first_token_seconds_bucket", **gpt, le="0.3")
    assert 2.0 == value(got, "llm_proxy_request_duration_seconds_count", **gpt, stream="true")
    models = {dict(labels).get("model") for (_, labels) in got if dict(labels).get("model")}
    assert {"gpt-4o", "other"} == models


def test_non_streams_have_no_ttft_and_unknown_usage_counts_no_tokens() -> None:
    cfg = two_upstream_config()
    plugin, metrics = plugin_for(cfg)
    ex = exchange(cfg)
    ex.t_first_token = ex.t_start + 0.1  # a JSON body's first byte: not a token stream
    ex.status = 429
    ex.usage = UsageOutcome("gpt-4o")
    plugin.observe(ex)
    got = samples(metrics.exposition().decode())
    assert 1.0 == total(got, "llm_proxy_requests_total", status_class="4xx")
    assert 0.0 == total(got, "llm_proxy_time_to_first_token_seconds_count")
    assert 1.0 == total(got, "llm_proxy_request_duration_seconds_count", stream="false")
    assert 0.0 == total(got, "llm_proxy_prompt_tokens_total")
    assert 0.0 == total(got, "llm_proxy_unpriced_requests_total")


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [
        (200, "upstream stream broke: ...", "upstream"),
        (200, "upstream idle timeout", "upstream"),
        (200, "upstream error event: overloaded_error", "upstream"),
        (200, "client disconnected", "client"),
        (502, "upstream unreachable", None),  # an error answer, counted as 5xx instead
        (None, "client disconnected", None),  # left before any response
        (200, None, None),
    ],
)
def test_responses_that_started_and_broke_are_counted_by_side(
    status: int | None, error: str | None, reason: str | None
) -> None:
    cfg = two_upstream_config()
    plugin, metrics = plugin_for(cfg)
    ex = exchange(cfg)
    ex.status, ex.error = status, error
    plugin.observe(ex)
    got = samples(metrics.exposition().decode())
    for side in ("upstream", "client"):
        assert (1.0 if side == reason else 0.0) == total(
            got, "llm_proxy_incomplete_responses_total", reason=side
        )


def test_context_trims_count_requests_and_messages() -> None:
    cfg = two_upstream_config()
    plugin, metrics = plugin_for(cfg)
    for trimmed in (3, 0, 2):
        ex = exchange(cfg)
        ex.usage = UsageOutcome("gpt-4o")
        ex.context = ContextOutcome(10, "exact", 100, trimmed)
        plugin.observe(ex)
    got = samples(metrics.exposition().decode())
    assert 2.0 == value(got, "llm_proxy_context_trims_total", route="/openai", model="gpt-4o")
    assert 5.0 == value(
        got, "llm_proxy_context_trimmed_messages_total", route="/openai", model="gpt-4o"
    )


async def test_plugin_tracks_in_flight_from_request_to_completion() -> None:
    cfg = two_upstream_config()
    plugin, metrics = plugin_for(cfg)
    ex = exchange(cfg)
    await plugin.on_request(ex)
    assert {ex} == metrics.live
    await plugin.on_report(ex)
    assert set() == metrics.live


async def test_a_failing_observation_is_logged_not_raised() -> None:
    class Log:
        def __init__(self) -> None:
            self.errors: list[tuple[str, dict]] = []

        def error(self, event: str, **kw: Any) -> None:
            self.errors.append((event, kw))

    cfg = two_upstream_config()
    log = Log()
    plugin = MetricsPlugin(Metrics(), ModelRegistry.from_config(cfg).known_names(), log)
    ex = exchange(cfg)
    # a counter refuses to go down
    ex.usage = UsageOutcome("gpt-4o", Usage(prompt_tokens=-1, source="upstream"))
    await plugin.on_report(ex)
    assert ["metrics failed"] == [e for e, _ in log.errors]
    assert "rid" == log.errors[0][1]["request_id"]
