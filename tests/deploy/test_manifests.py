"""The Kubernetes manifests: rendered by `kubectl kustomize`, every object schema-validated, wired to the app.

kubernetes-validate carries the schemas of the built-in kinds. The PodMonitor is a CRD
(monitoring.coreos.com/v1) whose schema it does not have: it is checked against the subset of the Prometheus
Operator's CRD schema that the manifest uses, and against the pods it must select.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # installed with kubernetes-validate
import kubernetes_validate
import pytest
import yaml

from proxy.settings import load_config
from tests.deploy.tools import K8S, require_tool, run_tool

Manifest = dict[str, Any]

# The oldest Kubernetes we support (autoscaling/v2 and policy/v1 are GA there) and the newest schema we ship.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
BATCHGATE_CONTAINERS = {"api", "worker"}
SECRET_LOOKING = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|REDIS_URL)")

# The fields of monitoring.coreos.com/v1 PodMonitor this repository uses, typed as in the Operator's CRD;
# anything else is refused so that a typo cannot pass unnoticed.
POD_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
                },
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^(0|(([0-9]+)(y|w|d|h|m|s|ms))+)$"},
                        },
                    },
                },
            },
        },
    },
}


def render(directory: Path) -> list[Manifest]:
    kubectl = require_tool("kubectl")
    output = run_tool([kubectl, "kustomize", str(directory)]).stdout
    return [document for document in yaml.safe_load_all(output) if document]


@pytest.fixture(scope="module")
def base() -> list[Manifest]:
    return render(K8S / "base")


@pytest.fixture(scope="module")
def example() -> list[Manifest]:
    return render(K8S / "overlays" / "example")


def one(manifests: list[Manifest], kind: str, name_prefix: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].startswith(name_prefix)]
    assert len(found) == 1, f"expected one {kind} named {name_prefix}*, found {len(found)}"
    return found[0]


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container(workload: Manifest, name: str) -> dict[str, Any]:
    matches: list[dict[str, Any]] = [c for c in pod_spec(workload)["containers"] if c["name"] == name]
    assert len(matches) == 1
    return matches[0]


def workloads(manifests: list[Manifest]) -> Iterator[Manifest]:
    yield from (m for m in manifests if m["kind"] in {"Deployment", "StatefulSet"})


def env_of(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in item.get("env", [])}


def env_references(config: Any) -> set[str]:
    """The NAME of every `os.environ/NAME` value in a parsed config file."""
    if isinstance(config, dict):
        return set().union(*(env_references(value) for value in config.values()))
    if isinstance(config, list):
        return set().union(*(env_references(value) for value in config))
    if isinstance(config, str) and config.startswith("os.environ/"):
        return {config.removeprefix("os.environ/")}
    return set()


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_both_kustomizations_render_the_expected_objects(base: list[Manifest], example: list[Manifest]) -> None:
    kinds = {(m["kind"], m["metadata"]["name"].split("-")[0]) for m in base}
    assert {
        ("Deployment", "batchgate"),
        ("Service", "batchgate"),
        ("HorizontalPodAutoscaler", "batchgate"),
    } <= kinds
    expected = {
        "Namespace", "ServiceAccount", "ConfigMap", "Secret", "Service", "Deployment", "StatefulSet",
        "PodDisruptionBudget", "HorizontalPodAutoscaler", "PodMonitor",
    }  # fmt: skip
    assert {m["kind"] for m in example} == expected
    assert all(m["metadata"].get("namespace") == "batchgate" for m in example if m["kind"] != "Namespace")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_built_in_object_is_valid_for_kubernetes(version: str, example: list[Manifest]) -> None:
    without_schema = []
    for manifest in example:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            without_schema.append(manifest["kind"])
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']} at {list(error.path)}: {error.message}")
    assert without_schema == ["PodMonitor"], "only the CRD may lack a built-in schema"


def test_the_validator_rejects_a_misspelt_field(example: list[Manifest]) -> None:
    broken = copy.deepcopy(one(example, "Deployment", "batchgate-api"))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_pod_monitor_is_well_formed_and_scrapes_every_batchgate_pod(example: list[Manifest]) -> None:
    monitor = one(example, "PodMonitor", "batchgate")
    jsonschema.validate(monitor, POD_MONITOR_SCHEMA)
    endpoint_ports = {endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]}
    selector = monitor["spec"]["selector"]["matchLabels"]
    for name, port_name in (("batchgate-api", "http"), ("batchgate-worker", "metrics")):
        workload = one(example, "Deployment", name)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selects(selector, labels)
        assert labels[monitor["spec"]["jobLabel"]] == name, "the job label names the alert rules use"
        ports = {p["name"] for c in pod_spec(workload)["containers"] for p in c.get("ports", [])}
        assert port_name in ports & endpoint_ports


def test_api_runs_serve_without_worker_with_probes_on_health_endpoints(example: list[Manifest]) -> None:
    api = container(one(example, "Deployment", "batchgate-api"), "api")
    assert api["args"] == ["serve", "--no-worker"]
    assert api["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    env = env_of(api)
    assert env["BATCHGATE_HOST"]["value"] == "0.0.0.0"
    assert env["BATCHGATE_PORT"]["value"] == "8080"
    assert "BATCHGATE_REDIS_URL" in env, "without it the API would start an embedded Redis per pod"


def test_worker_runs_the_worker_command_and_exposes_metrics(example: list[Manifest]) -> None:
    worker = container(one(example, "Deployment", "batchgate-worker"), "worker")
    assert worker["args"] == ["worker"]
    assert worker["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    assert env_of(worker)["BATCHGATE_METRICS_PORT"]["value"] == "9090"
    assert worker["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert "BATCHGATE_REDIS_URL" in env_of(worker)


def test_scrape_annotations_point_at_a_declared_port(example: list[Manifest]) -> None:
    for workload in workloads(example):
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true", workload["metadata"]["name"]
        ports = {p["containerPort"] for c in pod_spec(workload)["containers"] for p in c.get("ports", [])}
        assert int(annotations["prometheus.io/port"]) in ports
        assert annotations["prometheus.io/path"] == "/metrics"


def test_every_container_is_locked_down_and_sized(example: list[Manifest]) -> None:
    for workload in workloads(example):
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["automountServiceAccountToken"] is False
        for item in pod["containers"]:
            where = f"{workload['metadata']['name']}/{item['name']}"
            assert item["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert item["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert item["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            assert {"cpu", "memory"} <= set(item["resources"]["requests"]), where
            assert {"cpu", "memory"} <= set(item["resources"]["limits"]), where
            assert ":" in item["image"], where
            assert not item["image"].endswith(":latest"), where


def test_batchgate_pods_get_a_writable_tmp_and_the_config_map(example: list[Manifest]) -> None:
    config_map = one(example, "ConfigMap", "batchgate-config")
    for name in ("batchgate-api", "batchgate-worker"):
        workload = one(example, "Deployment", name)
        volumes = {volume["name"]: volume for volume in pod_spec(workload)["volumes"]}
        item = container(workload, name.removeprefix("batchgate-"))
        mounts = {mount["mountPath"]: mount for mount in item["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
        assert volumes[mounts["/etc/batchgate"]["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
        assert env_of(item)["BATCHGATE_CONFIG"]["value"] == "/etc/batchgate/config.yaml"
        assert item["image"] == "registry.example.com/batchgate:0.1.0"


def test_the_config_map_is_a_valid_batchgate_config(example: list[Manifest], tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(one(example, "ConfigMap", "batchgate-config")["data"]["config.yaml"], encoding="utf-8")
    config = load_config(config_file)
    assert config.model_list


def test_secrets_come_from_the_secret_and_cover_every_env_reference_in_the_config(
    example: list[Manifest],
) -> None:
    secret = one(example, "Secret", "batchgate-secrets")
    referenced = env_references(yaml.safe_load(one(example, "ConfigMap", "batchgate-config")["data"]["config.yaml"]))
    assert "OPENAI_API_KEY" in referenced
    for name in ("batchgate-api", "batchgate-worker"):
        item = container(one(example, "Deployment", name), name.removeprefix("batchgate-"))
        env = env_of(item)
        assert referenced <= set(env), f"{name} lacks {sorted(referenced - set(env))}"
        for variable_name, variable in env.items():
            if not SECRET_LOOKING.search(variable_name):
                continue
            assert "value" not in variable, f"{variable_name} must not be a literal"
            reference = variable["valueFrom"]["secretKeyRef"]
            assert reference["name"] == secret["metadata"]["name"]
            assert reference.get("optional") or reference["key"] in secret["data"], reference["key"]


def test_example_redis_is_persistent_and_is_what_the_url_points_at(example: list[Manifest]) -> None:
    statefulset = one(example, "StatefulSet", "redis")
    args = container(statefulset, "redis")["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    claim = statefulset["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"
    assert {"name": "data", "mountPath": "/data"} in container(statefulset, "redis")["volumeMounts"]
    service = one(example, "Service", "redis")
    assert selects(service["spec"]["selector"], statefulset["spec"]["template"]["metadata"]["labels"])
    url = base64.b64decode(one(example, "Secret", "batchgate-secrets")["data"]["BATCHGATE_REDIS_URL"]).decode()
    assert url == f"redis://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/0"


def test_service_hpa_and_budgets_select_the_right_pods(example: list[Manifest]) -> None:
    api = one(example, "Deployment", "batchgate-api")
    worker = one(example, "Deployment", "batchgate-worker")
    service = one(example, "Service", "batchgate-api")
    assert selects(service["spec"]["selector"], api["spec"]["template"]["metadata"]["labels"])
    assert not selects(service["spec"]["selector"], worker["spec"]["template"]["metadata"]["labels"])
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]

    hpa = one(example, "HorizontalPodAutoscaler", "batchgate-api")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "batchgate-api",
    }
    assert hpa["spec"]["minReplicas"] >= 2

    for workload in (api, worker):
        budgets = [
            pdb
            for pdb in example
            if pdb["kind"] == "PodDisruptionBudget"
            and selects(pdb["spec"]["selector"]["matchLabels"], workload["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(budgets) == 1, workload["metadata"]["name"]
