"""Grafana dashboards are generated from code and current; every query and alert names real metrics."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import yaml

from tests.support.telemetry import exercised_metrics

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
RULES = GRAFANA / "alerts" / "batchgate.rules.yml"
METRIC_NAME = re.compile(r"\bbatchgate_[a-z_]+")


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def dashboard_queries() -> list[str]:
    queries = []
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            queries += [target["expr"] for target in panel.get("targets", [])]
    return queries


def alert_rules() -> list[dict[str, object]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_committed_dashboards_are_current() -> None:
    generator = load_generator()
    outputs = generator.outputs()
    assert {path.name for path in outputs} == {"batchgate-savings.json", "batchgate-operations.json"}
    for path, text in outputs.items():
        assert path.exists(), f"{path} missing: run python grafana/generate.py"
        assert path.read_text() == text, f"{path} is stale: run python grafana/generate.py"


def test_dashboards_have_unique_panel_ids_and_a_datasource_variable() -> None:
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), path
        assert board["templating"]["list"][0]["type"] == "datasource"
        for panel in board["panels"]:
            if panel["type"] != "row":
                assert panel["targets"], panel["title"]
                assert [t["refId"] for t in panel["targets"]] == [chr(65 + i) for i in range(len(panel["targets"]))]


def test_every_query_and_alert_names_metrics_batchgate_exposes() -> None:
    exposed = exercised_metrics()
    expressions = dashboard_queries() + [str(rule["expr"]) for rule in alert_rules()]
    assert len(expressions) > 20
    for expression in expressions:
        names = METRIC_NAME.findall(expression)
        assert names, expression
        for name in names:
            assert name in exposed, f"{name} in {expression!r} is not a metric batchgate exposes"


def test_alert_rules_carry_summary_description_and_runbook() -> None:
    rules = alert_rules()
    anchors = {
        "deadline-misses",
        "stuck-batches",
        "webhook-dead-letters",
        "upstream-errors",
        "queue-age",
        "provider-account-problems",
    }
    found = set()
    for rule in rules:
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert annotations["summary"]
        assert annotations["description"]
        assert str(annotations["runbook"]).startswith("docs/operations.md#")
        found.add(str(annotations["runbook"]).split("#", 1)[1])
    assert anchors <= found


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed (Debian package prometheus)"
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_provisioning_points_grafana_at_prometheus_and_the_dashboards() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "batchgate.yaml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
