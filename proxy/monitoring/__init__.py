"""Prometheus alert rules and a Grafana dashboard over the proxy's metrics, shipped as data.

``alerts.yml`` holds the brief's thresholds (``promtool check rules``), ``alerts_test.yml``
proves each threshold fires and stays quiet (``promtool test rules``), and
``grafana-dashboard.json`` imports into Grafana with a Prometheus data source.
"""

from __future__ import annotations

from importlib import resources

ALERTS = "alerts.yml"
ALERTS_TEST = "alerts_test.yml"
DASHBOARD = "grafana-dashboard.json"


def read(name: str) -> str:
    """The text of one shipped file (``ALERTS``, ``ALERTS_TEST`` or ``DASHBOARD``)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
