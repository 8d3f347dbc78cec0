"""A real Prometheus scrapes batchgate's /metrics; every dashboard query and alert expression evaluates."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

from proxy.routes import metrics as metrics_route
from proxy.runtime import build_runtime
from proxy.settings import Config, Settings
from tests.support.servers import ServerThread, free_port
from tests.support.telemetry import catalogue, exercise

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "grafana" / "alerts" / "batchgate.rules.yml"
# Grafana's variables, as Prometheus needs them spelled: windows long enough for several 1 s scrapes.
GRAFANA_VARIABLES = {"$__rate_interval": "10s", "$__range": "1m", "$team": ".*"}
CONFIG = Config.model_validate(
    {"model_list": [{"model_name": "mini", "litellm_params": {"model": "openai/gpt-4o-mini"}}]}
)


@pytest.fixture
def batchgate_metrics(redis_url: str) -> Iterator[str]:
    """An app serving the real /metrics route from a Runtime, fed with traffic every 200 ms."""
    metrics = catalogue()
    app = FastAPI()
    app.include_router(metrics_route.router)
    runtime = build_runtime(Settings(redis_url=redis_url), CONFIG)
    runtime.metrics = metrics
    app.state.runtime = runtime
    stop = threading.Event()

    def feed() -> None:
        round_number = 0
        while not stop.is_set():
            exercise(metrics, round_number=round_number)
            round_number += 1
            stop.wait(0.2)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        with ServerThread(app) as server:
            yield f"127.0.0.1:{server.port}"
    finally:
        stop.set()
        feeder.join(timeout=5)


@pytest.fixture
def prometheus(tmp_path: Path, batchgate_metrics: str) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is needed (Debian package prometheus)"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "batchgate", "static_configs": [{"targets": [batchgate_metrics]}]}],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), timeout=20, what="prometheus ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(check: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def query(prometheus: str, expression: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expression}, timeout=10)
    body = response.json()
    assert response.status_code == 200, (expression, body)
    assert body["status"] == "success", (expression, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    values = [float(series["value"][1]) for series in result]
    return [value for value in values if math.isfinite(value)]


def dashboard_queries() -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expression = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expression = expression.replace(variable, value)
                found.append((f"{path.stem}: {panel['title']}", expression))
    return found


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_dashboard_query_and_alert_evaluates_with_data(prometheus: str) -> None:
    wait_until(
        lambda: bool(finite_values(query(prometheus, "sum(rate(batchgate_saved_usd_total[10s]))"))),
        timeout=20,
        what="scraped samples",
    )
    queries = dashboard_queries()
    assert len(queries) > 20
    empty = [title for title, expression in queries if not finite_values(query(prometheus, expression))]
    assert not empty, f"panels without data: {empty}"

    savings_percent = next(e for title, e in queries if title == "batchgate-savings: Savings, % of list")
    # each round: sync saves 0 of 0.004, batch and flex 0.002 each: 0.004 of 0.012 list
    assert finite_values(query(prometheus, savings_percent))[0] == pytest.approx(100 / 3, abs=0.01)

    for rule in alert_rules():
        query(prometheus, rule["expr"])
    firing_expected = {"BatchgateDeadlineMissed", "BatchgateWebhookDeadLetters", "BatchgateBatchStuck"}
    for rule in alert_rules():
        if rule["alert"] in firing_expected:
            assert query(prometheus, rule["expr"]), rule["alert"]


def test_prometheus_loads_the_alert_rules_healthy(prometheus: str) -> None:
    def rules_evaluated() -> bool:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return bool(rules) and all(
            rule.get("lastEvaluation", "").startswith("2") and rule["health"] != "unknown" for rule in rules
        )

    wait_until(rules_evaluated, timeout=20, what="rules evaluated")
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) == {rule["alert"] for rule in alert_rules()}
    assert all(rule["health"] == "ok" for rule in rules.values()), {n: r.get("lastError") for n, r in rules.items()}
    wait_until(
        lambda: any(
            alert["labels"]["alertname"] == "BatchgateDeadlineMissed"
            for alert in httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        ),
        timeout=15,
        what="the deadline-miss alert",
    )
