"""The shipped alert rules and Grafana dashboard: valid, over metrics the proxy really exports,
and (with promtool installed) each alert proven to fire past its threshold and not before."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy import monitoring
from proxy.metrics import Metrics, ModelLabels
from proxy.pacing_metrics import PacingCollector
from proxy.resilience.pacer import Pacer
from proxy.resilience.pacing_store import MemoryPacingStore

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
}


def exported_names() -> set[str]:
    """Series names GET /metrics can show (labelled families included before any sample)."""
    metrics = Metrics()  # the app also registers the pacer's gauges (collected on scrape)
    metrics.registry.register(PacingCollector(Pacer(MemoryPacingStore()), ModelLabels([])))
    return {
        family.name + suffix
        for family in metrics.registry.collect()
        for suffix in _SUFFIXES[family.type]
    }


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names, grouping labels, durations or dashboard variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\w+", "", expr)
    expr = re.sub(r"\boffset\s+\w+", "", expr)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        if m.group(2) is None and m.group(1).lower() not in _KEYWORDS:
            names.add(m.group(1))
    return names


def alerts() -> dict[str, Any]:
    return yaml.safe_load(monitoring.read(monitoring.ALERTS))


def rules() -> list[dict[str, Any]]:
    return [rule for group in alerts()["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(monitoring.read(monitoring.DASHBOARD))


def dashboard_exprs() -> list[str]:
    exprs = [
        target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])
    ]
    for var in dashboard()["templating"]["list"]:
        query = var.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", text or "")
        if match:
            exprs.append(match.group(1))
    return exprs


def test_metric_name_extraction_ignores_functions_labels_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (route, le) (rate(a_bucket{x="y"}[5m]))) > 0.5 '
        "and on (route) b_total offset 1h or vector(0) + 0 * c:rec:rate1h[7d] / $route"
    )
    assert {"a_bucket", "b_total", "c:rec:rate1h"} == metric_names(expr)


# -- alert rules -------------------------------------------------------------------------------


def test_alert_rules_cover_the_brief_thresholds() -> None:
    by_name = {r["alert"]: r["expr"] for r in rules() if "alert" in r}
    assert {
        "LLMProxyTimeToFirstTokenSlow",
        "LLMProxyLatencyHigh",
        "LLMProxyErrorRateHigh",
        "LLMProxyCacheHitRateLow",
        "LLMProxyCostPerHourAnomaly",
    } == set(by_name)
    assert re.search(r"\)\s*> 0\.5\s*$", by_name["LLMProxyTimeToFirstTokenSlow"])
    assert re.search(r"\)\s*> 10\s*$", by_name["LLMProxyLatencyHigh"])
    assert re.search(r"> 0\.01\s*$", by_name["LLMProxyErrorRateHigh"])
    assert re.search(r"< 0\.3\s*$", by_name["LLMProxyCacheHitRateLow"])


def test_alert_rules_are_well_formed() -> None:
    doc = alerts()
    assert ["groups"] == list(doc)
    for group in doc["groups"]:
        assert {"name", "rules"} <= set(group)
        for rule in group["rules"]:
            assert rule["expr"].strip()
            if "record" in rule:
                assert {"record", "expr"} == set(rule)
                assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", rule["record"])
                continue
            assert {"alert", "expr", "for", "labels", "annotations"} == set(rule)
            assert re.fullmatch(r"\d+[smhd]", rule["for"])
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}
            assert {"summary", "description"} == set(rule["annotations"])


def test_alert_rules_use_only_exported_metrics_and_recorded_series() -> None:
    known = exported_names() | {r["record"] for r in rules() if "record" in r}
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, rule["expr"]
        assert set() == names - known, rule.get("alert") or rule.get("record")


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    path = Path(str(monitoring.__file__)).parent / monitoring.ALERTS
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert 0 == done.returncode, done.stdout + done.stderr


@needs_promtool
def test_promtool_unit_tests_prove_each_threshold() -> None:
    path = Path(str(monitoring.__file__)).parent / monitoring.ALERTS_TEST
    done = subprocess.run(
        [PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert 0 == done.returncode, done.stdout + done.stderr


# -- dashboard ---------------------------------------------------------------------------------


def test_dashboard_is_importable_grafana_json() -> None:
    dash = dashboard()
    assert "llm-proxy" == dash["uid"]
    assert [{"name": "DS_PROMETHEUS", "type": "datasource", "pluginId": "prometheus"}] == [
        {k: i[k] for k in ("name", "type", "pluginId")} for i in dash["__inputs"]
    ]
    ids = [panel["id"] for panel in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert {"type", "title", "gridPos"} <= set(panel)
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert "${DS_PROMETHEUS}" == panel["datasource"]["uid"]


def test_dashboard_queries_use_only_exported_metrics() -> None:
    exported = exported_names()
    exprs = dashboard_exprs()
    assert len(exprs) > 20
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        assert set() == names - exported, expr


def test_dashboard_shows_every_metric_the_proxy_exports() -> None:
    """The proxy's own metrics; ``process_*`` are prometheus-client's standard ones."""
    used = set().union(*(metric_names(e) for e in dashboard_exprs()))
    families = {n.removesuffix("_total").removesuffix("_bucket") for n in used}
    ours = {f.name for f in Metrics().registry.collect() if not f.name.startswith("process_")}
    assert set() == ours - families


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Grafana's variables replaced by plain values, each query checked as a recording rule."""
    exprs = [
        e.replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$route", ".*")
        for e in dashboard_exprs()
    ]
    rules_file = tmp_path / "dashboard_rules.yml"
    rules_file.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "dashboard",
                        "rules": [
                            {"record": f"dashboard:query:{i}", "expr": e}
                            for i, e in enumerate(exprs)
                        ],
                    }
                ]
            }
        )
    )
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert 0 == done.returncode, done.stdout + done.stderr
