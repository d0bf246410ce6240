"""deploy/: the Helm chart renders, lints and validates against Kubernetes' schemas; the
compose stack, Prometheus and Grafana point at each other; images keep vLLM's pin in
pyproject.toml; every metric the Grafana dashboard reads exists on a live server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "vsteer"
CI_VALUES = ROOT / "deploy" / "helm" / "ci-values.yaml"
COMPOSE = ROOT / "deploy" / "compose"
DASHBOARD = COMPOSE / "grafana" / "dashboards" / "vsteer.json"
K8S_VERSION = "1.30.0"
CRD_KINDS = {"ServiceMonitor"}  # the Prometheus Operator's; not in Kubernetes' schemas


def _tool(name: str) -> str:
    """A command-line tool from the test venv (installed by scripts/install.sh)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is missing: run scripts/install.sh (make test runs it)"
    return found


def _render(*args: str) -> dict[str, dict]:
    out = subprocess.run([_tool("helm"), "template", "rel", str(CHART), *args], check=True,
                         capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    return {d["kind"]: d for d in docs}


@pytest.fixture(scope="module")
def full() -> dict[str, dict]:
    return _render("-f", str(CI_VALUES))


def test_chart_lints_with_every_option_on():
    run = subprocess.run([_tool("helm"), "lint", "--strict", str(CHART), "-f", str(CI_VALUES)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_rendered_manifest_validates_against_kubernetes_schemas(full):
    import kubernetes_validate

    assert set(full) == {"Deployment", "Service", "ConfigMap", "Secret",
                         "PersistentVolumeClaim", "HorizontalPodAutoscaler", "ServiceMonitor"}
    for kind, doc in full.items():
        if kind in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises if invalid


def test_validator_rejects_a_broken_manifest(full):
    import kubernetes_validate

    broken = json.loads(json.dumps(full["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_deployment_wires_probes_gpus_keys_policy_and_shared_artifacts(full):
    dep = full["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    gpus = 4 * 1  # tensor x pipeline in ci-values
    assert c["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert c["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert "--tensor-parallel-size=4" in c["args"]
    assert not any(a.startswith("--pipeline-parallel-size") for a in c["args"])
    assert "--rate-limit=5:20" in c["args"] and "--policy=/etc/vsteer/policy.yaml" in c["args"]
    assert "--max-private-slots=256" in c["args"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]}
    secret = full["Secret"]
    assert env["VSTEER_API_KEYS"] == {"name": secret["metadata"]["name"], "key": "api-keys"}
    assert env["VSTEER_ADMIN_KEY"] == {"name": secret["metadata"]["name"], "key": "admin-key"}
    assert secret["stringData"] == {"api-keys": "ci-client-key", "admin-key": "ci-admin-key"}
    drain = next(int(a.split("=")[1]) for a in c["args"] if a.startswith("--drain-timeout="))
    assert pod["terminationGracePeriodSeconds"] > drain
    volumes = {v["name"]: v for v in pod["volumes"]}
    pvc = full["PersistentVolumeClaim"]
    assert volumes["artifacts"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # one store for all replicas
    assert volumes["policy"]["configMap"]["name"] == full["ConfigMap"]["metadata"]["name"]


def test_configmap_policy_is_one_the_server_accepts(full):
    from vsteer.server.policy import Policy

    policy = Policy.parse(full["ConfigMap"]["data"]["policy.yaml"])
    acme = policy.doc.tenants["acme"]
    assert acme.locked == ["refusal"] and acme.rate_limit.rps == 2


def test_service_hpa_and_servicemonitor_point_at_the_deployment(full):
    dep, svc = full["Deployment"], full["Service"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert full["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == \
        dep["metadata"]["name"]
    sm = full["ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"] == [{"port": svc["spec"]["ports"][0]["name"],
                                        "path": "/metrics", "interval": "15s"}]


def test_chart_refuses_to_render_without_keys():
    run = subprocess.run([_tool("helm"), "template", "rel", str(CHART)], capture_output=True,
                         text=True)
    assert run.returncode != 0 and "auth.adminKey" in run.stderr


def test_chart_refuses_pipeline_parallelism():
    """vsteer serve refuses PP at startup; the chart refuses it at render time."""
    run = subprocess.run([_tool("helm"), "template", "rel", str(CHART), "--set",
                          "auth.adminKey=k", "--set", "parallel.pipeline=2"],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "pipeline parallelism" in run.stderr


def test_defaults_render_without_optional_parts():
    kinds = _render("--set", "auth.adminKey=k")
    assert "HorizontalPodAutoscaler" not in kinds and "ServiceMonitor" not in kinds
    assert "replicas" in kinds["Deployment"]["spec"]  # no HPA: the chart sets replicas
    (c,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert not any(a.startswith("--max-private-slots") for a in c["args"])  # the server's


def test_compose_prometheus_and_grafana_point_at_each_other():
    compose = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"vsteer", "prometheus", "grafana"} <= set(services)
    prom = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    (job,) = prom["scrape_configs"]
    port = services["vsteer"]["ports"][0].split(":")[-1]
    assert job["static_configs"][0]["targets"] == [f"vsteer:{port}"]
    assert job["metrics_path"] == "/metrics"
    mounts = dict(m.split(":")[:2] for m in services["grafana"]["volumes"])
    provider = yaml.safe_load(
        (COMPOSE / "grafana/provisioning/dashboards/vsteer.yml").read_text())["providers"][0]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    ds = yaml.safe_load((COMPOSE / "grafana/provisioning/datasources/prometheus.yml")
                        .read_text())["datasources"][0]
    uids = {t["datasource"]["uid"] for p in json.loads(DASHBOARD.read_text())["panels"]
            for t in p["targets"]}
    assert uids == {ds["uid"]}
    from vsteer.server.policy import Policy

    Policy.parse((COMPOSE / "policy.yaml").read_text())


def test_compose_file_validates_against_the_compose_spec(tmp_path):
    def check(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([_tool("check-jsonschema"), "--builtin-schema",
                               "vendor.compose-spec", str(path)], capture_output=True,
                              text=True)

    run = check(COMPOSE / "docker-compose.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    bad = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    bad["services"]["vsteer"]["ports"] = {"http": 8000}
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(bad))
    assert check(tmp_path / "bad.yml").returncode != 0


def test_dockerfiles_pass_hadolint(tmp_path):
    config = ROOT / "deploy" / "docker" / "hadolint.yaml"

    def lint(*paths: Path) -> subprocess.CompletedProcess:
        return subprocess.run([_tool("hadolint"), "--no-color", "--config", str(config),
                               *map(str, paths)], capture_output=True, text=True)

    run = lint(*sorted((ROOT / "deploy" / "docker").glob("Dockerfile.*")))
    assert run.returncode == 0, run.stdout + run.stderr
    (tmp_path / "Dockerfile").write_text("FROM python:3.11\nRUN cd /tmp && ls\n")
    assert "DL3003" in lint(tmp_path / "Dockerfile").stdout  # the linter does lint


def dashboard_metric_names() -> set[str]:
    """Metric names the dashboard's queries read (PromQL identifiers with a known prefix)."""
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"]
             for t in p["targets"]]
    return {m for e in exprs for m in re.findall(r"\b(?:vsteer_|vllm:)[A-Za-z0-9_:]+", e)}


@pytest.mark.engine
def test_dashboard_reads_only_metrics_the_server_exports(server):
    import httpx

    text = httpx.get(server.base_url + "/metrics").text
    exported = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    wanted = dashboard_metric_names()
    assert len(wanted) >= 15

    def found(name: str) -> bool:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        return name in exported or base in exported

    assert sorted(m for m in wanted if not found(m)) == []


def test_images_take_vllm_version_from_the_one_pin():
    pyproject = (ROOT / "pyproject.toml").read_text()
    pin = re.search(r'gpu = \["vllm==([^"]+)"\]', pyproject).group(1)
    gpu = (ROOT / "deploy/docker/Dockerfile.gpu").read_text()
    assert "FROM vllm/vllm-openai:v${VLLM_VERSION}" in gpu
    assert pin not in gpu  # no second copy of the pin
    printed = subprocess.run(["make", "-s", "-C", str(ROOT), "vllm-version"], check=True,
                             capture_output=True, text=True).stdout.strip()
    assert printed == pin
