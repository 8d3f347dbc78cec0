"""The Compose stack and Prometheus, checked without an engine: `docker-compose config`, promtool, yamllint.

Compose resolves `env_file` and `${VAR}` from deploy/.env, which is never committed; the test validates a copy
of deploy/ in which .env is the committed .env.example.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.settings import load_config
from tests.deploy.test_manifests import env_references
from tests.deploy.tools import DEPLOY, REPO_ROOT, require_tool, run_tool

Service = dict[str, Any]
BATCHGATE_RULES = REPO_ROOT / "grafana" / "alerts" / "batchgate.rules.yml"


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The stack as `docker-compose config` resolves it (schema-validated, anchors and variables expanded)."""
    docker_compose = require_tool("docker-compose")
    copy = tmp_path_factory.mktemp("compose") / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns(".env"))
    shutil.copy(copy / ".env.example", copy / ".env")
    output = run_tool([docker_compose, "-f", str(copy / "docker-compose.yml"), "config"], cwd=copy).stdout
    resolved: dict[str, Any] = yaml.safe_load(output)
    return resolved


def services(compose: dict[str, Any]) -> dict[str, Service]:
    result: dict[str, Service] = compose["services"]
    return result


def mounts(service: Service) -> dict[str, str]:
    """Mount target -> source (docker-compose v1 prints `source:target:mode`, v2 the long form)."""
    result = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            result[target] = source
        else:
            result[volume["target"]] = volume["source"]
    return result


def healthcheck_url(service: Service) -> str:
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "/usr/local/lib/batchgate/healthcheck.py"]
    url: str = test[3]
    return url


def test_api_replicas_run_serve_without_worker(compose: dict[str, Any]) -> None:
    api = services(compose)["api"]
    assert api["command"] == ["serve", "--no-worker"]
    assert api["deploy"]["replicas"] == 2
    assert [port["target"] for port in api["ports"]] == [8080]
    assert healthcheck_url(api) == "http://127.0.0.1:8080/readyz"
    assert api["environment"]["BATCHGATE_PORT"] == "8080"
    assert api["environment"]["BATCHGATE_HOST"] == "0.0.0.0"


def test_worker_runs_the_worker_command_with_its_metrics_port(compose: dict[str, Any]) -> None:
    worker = services(compose)["worker"]
    assert worker["command"] == ["worker"]
    assert worker["environment"]["BATCHGATE_METRICS_PORT"] == "9090"
    assert healthcheck_url(worker) == "http://127.0.0.1:9090/metrics"
    assert "ports" not in worker, "the worker takes no traffic"


def test_batchgate_processes_share_redis_config_and_secrets(compose: dict[str, Any]) -> None:
    config_refs = env_references(yaml.safe_load((DEPLOY / "config.yaml").read_text(encoding="utf-8")))
    for name in ("api", "worker"):
        service = services(compose)[name]
        assert service["image"] == services(compose)["api"]["image"], "one image for both processes"
        environment = service["environment"]
        assert environment["BATCHGATE_REDIS_URL"] == "redis://redis:6379/0"
        assert environment["BATCHGATE_CONFIG"] == "/etc/batchgate/config.yaml"
        assert config_refs <= set(environment), f"deploy/.env.example lacks {sorted(config_refs - set(environment))}"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["read_only"] is True
        assert Path(mounts(service)["/etc/batchgate/config.yaml"]).parts[-2:] == ("deploy", "config.yaml")


def test_compose_config_file_is_a_valid_batchgate_config() -> None:
    assert load_config(DEPLOY / "config.yaml").model_list


def test_redis_is_append_only_on_a_volume(compose: dict[str, Any]) -> None:
    redis = services(compose)["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert mounts(redis) == {"/data": "redis-data"}
    assert "redis-data" in compose["volumes"]


def test_every_service_restarts_and_pins_its_image(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        assert service["restart"] == "unless-stopped", name
        image = service["image"]
        assert ":" in image, name
        assert not image.endswith(":latest"), name
        if name != "redis-exporter":
            assert "healthcheck" in service, name


def test_grafana_provisions_the_datasource_and_dashboards_from_the_repository(
    compose: dict[str, Any],
) -> None:
    grafana = services(compose)["grafana"]
    expected = {
        "/etc/grafana/provisioning/datasources": "grafana/provisioning/datasources",
        "/etc/grafana/provisioning/dashboards": "grafana/provisioning/dashboards",
        "/var/lib/grafana/dashboards": "grafana/dashboards",
    }
    for target, source in expected.items():
        assert Path(mounts(grafana)[target]).parts[-len(Path(source).parts) :] == Path(source).parts
        assert (REPO_ROOT / source).is_dir(), f"{source} is mounted into Grafana but missing from the repository"
    assert list((REPO_ROOT / "grafana" / "dashboards").glob("*.json")), "no dashboards to provision"


def test_grafana_provisioning_files_match_the_compose_paths() -> None:
    datasources = [
        source
        for path in sorted((REPO_ROOT / "grafana" / "provisioning" / "datasources").glob("*.y*ml"))
        for source in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]
    ]
    assert any(s["type"] == "prometheus" and s["url"] == "http://prometheus:9090" for s in datasources)
    providers = [
        provider
        for path in sorted((REPO_ROOT / "grafana" / "provisioning" / "dashboards").glob("*.y*ml"))
        for provider in yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]
    ]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards"]


def test_prometheus_config_and_rules_pass_promtool(compose: dict[str, Any], tmp_path: Path) -> None:
    """Lay the files out as the prometheus container sees them, then let promtool load config and rules."""
    promtool = require_tool("promtool")
    prometheus = services(compose)["prometheus"]
    assert Path(mounts(prometheus)["/etc/prometheus/rules/batchgate"]).parts[-2:] == ("grafana", "alerts")
    assert Path(mounts(prometheus)["/etc/prometheus/rules/infrastructure"]).parts[-2:] == (
        "prometheus",
        "rules",
    )
    assert BATCHGATE_RULES.is_file(), f"{BATCHGATE_RULES.relative_to(REPO_ROOT)} is loaded by Prometheus but missing"
    root = tmp_path / "etc-prometheus"
    root.mkdir()
    shutil.copy(DEPLOY / "prometheus" / "prometheus.yml", root / "prometheus.yml")
    shutil.copytree(REPO_ROOT / "grafana" / "alerts", root / "rules" / "batchgate")
    shutil.copytree(DEPLOY / "prometheus" / "rules", root / "rules" / "infrastructure")
    output = run_tool([promtool, "check", "config", "prometheus.yml"], cwd=root).stdout
    assert "SUCCESS: 2 rule files found" in output
    assert output.count("rules found") == 2


def test_prometheus_scrapes_every_api_replica_and_worker(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job_name, service_name, port in (
        ("batchgate-api", "api", 8080),
        ("batchgate-worker", "worker", 9090),
    ):
        discovery = jobs[job_name]["dns_sd_configs"]
        assert discovery == [{"names": [service_name], "type": "A", "port": port, "refresh_interval": "15s"}]
        assert service_name in services(compose)
        assert jobs[job_name]["metrics_path"] == "/metrics"
    assert jobs["redis"]["static_configs"] == [{"targets": ["redis-exporter:9121"]}]


def test_yaml_under_deploy_passes_yamllint() -> None:
    yamllint = require_tool("yamllint")
    run_tool([yamllint, "--strict", "-c", str(DEPLOY / ".yamllint"), str(DEPLOY)])


def test_every_alert_has_a_runbook_section_in_the_operations_guide() -> None:
    guide = (REPO_ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in guide.splitlines()
        if line.startswith("#")
    }
    rule_files = [BATCHGATE_RULES, *sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))]
    alerts = [
        rule
        for path in rule_files
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert len(alerts) >= 9
    for alert in alerts:
        link = alert["annotations"]["runbook"]
        assert link.startswith("docs/operations.md#"), alert["alert"]
        assert link.partition("#")[2] in anchors, f"{alert['alert']}: no section for {link}"
