"""contrib/: the alert rules pass promtool and its rule unit tests, and the Grafana dashboard
(and every rule) asks only for metrics the hub exposes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from aiorch.hub.services import metrics
from edge_agent.contract.telemetry import METRICS
from tests.test_metrics_exposition import promtool

CONTRIB = Path(__file__).resolve().parents[1] / "contrib"
RULES = CONTRIB / "prometheus" / "aiorch-alerts.yml"
DASHBOARD = CONTRIB / "grafana" / "aiorch-fleet.json"
ALERTS = {
    "AiorchAgentOffline",
    "AiorchGpuXidError",
    "AiorchGpuEccUncorrectedErrors",
    "AiorchGpuThermalThrottle",
    "AiorchRolloutFailed",
    "AiorchHostDrifted",
    "AiorchOutboxDrops",
    "AiorchGpuBudgetNearlySpent",
}
# PromQL's own words: aggregations, functions, keywords used in contrib/.
PROMQL = {
    "sum", "count", "avg", "max", "min", "by", "on", "or", "and", "unless", "offset", "bool",
    "rate", "increase", "floor", "time", "vector", "label_replace",
}  # fmt: skip


def _promtool(*args: str) -> None:
    done = subprocess.run(
        [promtool(), *args], cwd=RULES.parent, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_pass_promtool_check_and_their_unit_tests():
    _promtool("check", "rules", RULES.name)
    _promtool("test", "rules", "aiorch-alerts.test.yml")
    names = {
        r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
        if "alert" in r
    }  # fmt: skip
    assert names >= ALERTS, ALERTS - names


def _exposed(make_context) -> set[str]:
    """Sample names `/metrics` can carry: the hub's own, and `aiorch_` + every agent series."""
    names = {f"aiorch_{m}" for m in METRICS}
    for family in text_string_to_metric_families(metrics.render(make_context()).decode()):
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def _metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression (without label matchers, ranges, strings), or
    in a Grafana `label_values(metric, label)`."""
    expr = re.sub(r"label_values\(([^,]*),[^)]*\)", r"\1", expr)
    bare = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]|\$\w+', " ", expr)
    bare = re.sub(r"\b(by|on|without|ignoring)\s*\([^)]*\)", " ", bare)
    words = set(re.findall(r"(?<![\w.])[a-zA-Z_:][\w:]*", bare))
    return words - PROMQL


def test_dashboard_is_valid_json_with_datasource_variable_on_aiorch_series(make_context):
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    exposed = _exposed(make_context)
    targets = [t for p in dashboard["panels"] for t in p["targets"]]
    assert len(targets) >= 10
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    for expr in [t["expr"] for t in targets] + [
        v["definition"] for v in variables.values() if "definition" in v
    ]:
        used = _metric_names(expr)
        assert used and used <= exposed, (expr, used - exposed)
        assert all(name.startswith("aiorch_") for name in used), expr


def test_every_alert_rule_names_metrics_the_hub_exposes(make_context):
    exposed = _exposed(make_context) | {"up"}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        recorded = {r["record"] for r in group["rules"] if "record" in r}
        for rule in group["rules"]:
            used = (
                _metric_names(rule["expr"]) - recorded - {"aiorch:project_gpu_budget_seconds:24h"}
            )
            assert used <= exposed, (rule.get("alert"), used - exposed)


@pytest.mark.parametrize("bad", ["aiorch_gpu_utilisation_percent", "host_cpu_utilization_percent"])
def test_the_name_check_catches_a_misspelt_or_unprefixed_metric(make_context, bad: str):
    assert not _metric_names(f"avg by (host) (rate({bad}[5m]))") <= _exposed(make_context)
