"""A real Prometheus (Debian package) for tests: started on loopback, scraping the given targets, with the
alert rules loaded; and helpers to read the dashboards' queries and the rules and to evaluate them."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.servers import free_port
from tests.support.waiting import wait_until_sync

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "grafana" / "alerts" / "batchgate.rules.yml"
DASHBOARDS = ROOT / "grafana" / "dashboards"


@contextlib.contextmanager
def prometheus_server(directory: Path, targets: list[str], *, interval: str = "1s") -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is needed (Debian package prometheus)"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "batchgate", "static_configs": [{"targets": targets}]}],
    }
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={directory / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_sync(lambda: _ready(url), timeout=20, what="prometheus ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


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


def dashboard_queries(variables: Mapping[str, str]) -> list[tuple[str, str]]:
    """(dashboard: panel title, PromQL) of every panel target, Grafana's variables replaced by `variables`."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expression = target["expr"]
                for variable, value in variables.items():
                    expression = expression.replace(variable, value)
                found.append((f"{path.stem}: {panel['title']}", expression))
    return found


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]
