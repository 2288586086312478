"""deploy/k8s/: valid Kubernetes 1.30 objects (strict), listed by the kustomization, and
wired to what the worker really does and to the numbers docs/deploying.md records."""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from rater.shell.settings import Settings
from rater.topics import input_partitions, load_topics
from tests.prometheus_support import JOB

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
MONITOR = K8S / "servicemonitor"
DOCS = ROOT / "docs" / "deploying.md"
KUBERNETES = "1.30.0"
"""The oldest Kubernetes the manifests are for (kubernetes-validate bundles its schemas)."""


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifests(folder: Path = K8S) -> list[Path]:
    return sorted(p for p in folder.glob("*.yaml") if p.name != "kustomization.yaml")


def _objects() -> dict[str, dict[str, Any]]:
    """The base's objects by kind (one of each)."""
    found: dict[str, dict[str, Any]] = {}
    for path in _manifests():
        for doc in _documents(path):
            assert doc["kind"] not in found, f"one {doc['kind']} expected"
            found[doc["kind"]] = doc
    return found


def _worker() -> dict[str, Any]:
    containers = _objects()["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["worker"]
    worker: dict[str, Any] = containers[0]
    return worker


def _worker_settings() -> Settings:
    """The settings the worker container reads: the ConfigMap it loads, then its own env."""
    worker = _worker()
    assert worker["envFrom"] == [{"configMapRef": {"name": _objects()["ConfigMap"]["metadata"]["name"]}}]
    env = {**_objects()["ConfigMap"]["data"], **{e["name"]: e["value"] for e in worker.get("env", []) if "value" in e}}
    # Kubernetes expands $(POD_NAME) (downward API) before the worker reads its environment
    env = {name: value.replace("$(POD_NAME)", "rater-worker-0") for name, value in env.items()}
    return Settings.from_env(env)


def _container_port(name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in _worker()["ports"]}
    return ports[name]


def _sizing_table() -> list[dict[str, str]]:
    """The rows of docs/deploying.md's measured sizing table (the one whose header names
    ``peak RSS under load``), by column header."""
    lines = [line.strip() for line in DOCS.read_text().splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("|") and "peak RSS under load" in line)
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True)))
    assert rows, "the sizing table has measured rows"
    return rows


def _number(cell: str) -> float:
    found = re.search(r"[\d,]+(?:\.\d+)?", cell)
    assert found, cell
    return float(found.group().replace(",", ""))


def _mebibytes(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


@pytest.mark.parametrize("path", [*_manifests(), *_manifests(MONITOR)], ids=lambda p: p.name)
def test_every_manifest_is_valid_kubernetes_strict(path: Path) -> None:
    """Every object against Kubernetes' own schemas (strict: an unknown field fails).
    The ServiceMonitor is a prometheus-operator CRD the validator has no schema for: its
    fields are checked by the test on its wiring."""
    for doc in _documents(path):
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            assert doc["kind"] == "ServiceMonitor"
            continue
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_validator_rejects_what_kubernetes_would() -> None:
    statefulset = _objects()["StatefulSet"]
    broken = {**statefulset, "spec": {**statefulset["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


@pytest.mark.parametrize("folder", [K8S, MONITOR], ids=["base", "servicemonitor"])
def test_the_kustomization_lists_every_manifest(folder: Path) -> None:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == [p.name for p in _manifests(folder)]


def test_no_servicemonitor_in_the_base() -> None:
    """The base applies on any cluster: the CRD-dependent object lives in servicemonitor/."""
    assert "ServiceMonitor" not in _objects()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_base_into_valid_objects() -> None:
    built = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True).stdout
    objects = [doc for doc in yaml.safe_load_all(built) if doc]
    assert sorted(o["kind"] for o in objects) == sorted(_objects())
    for doc in objects:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_probes_ask_the_worker_on_the_port_its_settings_listen_on() -> None:
    settings = _worker_settings()
    worker = _worker()
    assert settings.web_host == "0.0.0.0"  # the kubelet and Prometheus reach it from outside the pod
    assert _container_port("web") == settings.web_port
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "web"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "web"}

def test_the_startup_probe_waits_for_the_web_server_not_for_restores() -> None:
    """On /readyz a restore longer than the startup budget got the pod killed, restarted
    and restoring again. /healthz answers once the web server is up — after the data files
    load, before the broker and topics waits, the group join and the restores — so the
    budget only covers that start (measured under a second)."""
    startup = _worker()["startupProbe"]
    assert startup["httpGet"] == {"path": "/healthz", "port": "web"}
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert 30 <= budget <= 120, budget
    assert startup["timeoutSeconds"] < startup["periodSeconds"]
    documented = f"every {startup['periodSeconds']} s, {startup['failureThreshold']} failures = {budget} s"
    assert documented in DOCS.read_text()


def test_the_data_dir_is_the_claimed_volume_and_tmp_is_writable() -> None:
    settings = _worker_settings()
    statefulset = _objects()["StatefulSet"]
    mounts = {m["name"]: m["mountPath"] for m in _worker()["volumeMounts"]}
    assert mounts["data"] == str(settings.data_dir)
    assert [t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]] == ["data"]
    assert mounts["tmp"] == "/tmp"
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["tmp"]


def test_workers_run_as_the_images_non_root_user_on_a_read_only_root() -> None:
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert user, "the Dockerfile's USER is numeric"
    for kind in ("StatefulSet", "Job"):
        pod = _objects()[kind]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == int(user.group(1))
        assert pod["securityContext"]["runAsGroup"] == int(user.group(2))
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert _objects()["StatefulSet"]["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == int(user.group(2))


def test_the_topics_job_creates_the_topics_with_the_workers_settings() -> None:
    job = _objects()["Job"]["spec"]["template"]["spec"]
    assert job["containers"][0]["args"] == ["topics", "create"]
    assert job["containers"][0]["image"] == _worker()["image"]
    assert job["containers"][0]["envFrom"] == _worker()["envFrom"]
    assert job["restartPolicy"] == "OnFailure"


def test_services_budget_and_monitor_select_the_workers() -> None:
    objects = _objects()
    pod_labels = objects["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    service = objects["Service"]
    assert objects["StatefulSet"]["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True, "a restoring worker is scraped too"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [("web", "web")]
    budget = objects["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["maxUnavailable"] == 1
    replicas = objects["StatefulSet"]["spec"]["replicas"]
    assert 1 < replicas <= input_partitions(load_topics()), "scaling is bounded by the partitions"
    (monitor,) = _documents(MONITOR / "servicemonitor.yaml")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("web", "/metrics")]


def test_grace_period_and_resources_are_the_documented_ones_and_fit_the_measurements() -> None:
    pod = _objects()["StatefulSet"]["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    resources = _worker()["resources"]
    docs = DOCS.read_text()
    assert f"terminationGracePeriodSeconds: {grace}" in docs
    assert f"requests: cpu {resources['requests']['cpu']}, memory {resources['requests']['memory']}" in docs
    assert f"limits: memory {resources['limits']['memory']}" in docs
    rows = _sizing_table()
    shutdown_s = max(_number(row["SIGTERM → exit under load"]) for row in rows)
    peak_mib = max(_number(row["peak RSS under load"]) for row in rows)
    cores = max(_number(row["CPU cores busy"]) for row in rows)
    assert grace >= 10 * shutdown_s, "the grace period is well above the measured stop time"
    assert _mebibytes(resources["requests"]["memory"]) >= 1.1 * peak_mib, "requests cover the measured peak"
    assert _mebibytes(resources["limits"]["memory"]) >= 1.5 * peak_mib, "headroom over the peak"
    cpu = resources["requests"]["cpu"]
    assert (float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)) >= cores


def _monitored_service() -> tuple[dict[str, Any], dict[str, Any]]:
    """The ServiceMonitor and the one Service of the base it selects."""
    (monitor,) = _documents(MONITOR / "servicemonitor.yaml")
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [o for o in _objects().values()
                if o["kind"] == "Service" and selector.items() <= o["metadata"].get("labels", {}).items()]
    assert len(services) == 1, "the ServiceMonitor selects the workers' Service"
    return monitor, services[0]


def test_the_servicemonitor_scrapes_the_workers_as_the_job_the_rules_select() -> None:
    """prometheus-operator names the job after the Service (``rater-worker``) unless
    ``jobLabel`` names one of the Service's labels: then the job is that label's value."""
    monitor, service = _monitored_service()
    job_label = monitor["spec"].get("jobLabel")
    job = service["metadata"]["labels"][job_label] if job_label else service["metadata"]["name"]
    assert job == JOB
    rules = (ROOT / "deploy" / "prometheus" / "rules.yml").read_text()
    assert f'up{{job="{JOB}"}}' in rules


def _scrape_job_of_the_docs() -> dict[str, Any]:
    """The scrape job docs/deploying.md gives a Prometheus without the operator."""
    section = DOCS.read_text().split("### Prometheus", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block, "docs/deploying.md, Prometheus: a scrape job"
    (job,) = yaml.safe_load(textwrap.dedent(block.group(1)))["scrape_configs"]
    assert isinstance(job, dict)
    return job


def test_the_documented_scrape_job_selects_the_workers_once_as_job_rater() -> None:
    job = _scrape_job_of_the_docs()
    assert job["job_name"] == JOB
    pod_labels = _objects()["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    (discovery,) = job["kubernetes_sd_configs"]
    assert discovery["role"] == "pod"
    (selector,) = discovery["selectors"]
    wanted = dict(pair.split("=") for pair in selector["label"].split(","))
    assert wanted == _objects()["Service"]["spec"]["selector"], "the pods the Service (and ServiceMonitor) reach"
    assert wanted.items() <= pod_labels.items()
    [keep] = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert keep["source_labels"] == ["__meta_kubernetes_pod_container_port_name"]
    assert keep["regex"] in {p["name"] for p in _worker()["ports"]}


def test_the_pods_carry_no_scrape_annotations() -> None:
    """A Prometheus honouring both the annotations and the ServiceMonitor would scrape each
    worker twice (every sum doubled), under a job that is not ``rater``."""
    metadata = _objects()["StatefulSet"]["spec"]["template"]["metadata"]
    assert not [k for k in metadata.get("annotations", {}) if k.startswith("prometheus.io/")]


def test_the_configmap_leaves_the_app_id_to_follow_the_topic_prefix() -> None:
    """RATER_APP_ID pinned in the ConfigMap would give two prefixed deployments one
    consumer group and the same transactional ids: they would fence each other."""
    data = _objects()["ConfigMap"]["data"]
    assert "RATER_APP_ID" not in data
    assert "RATER_TOPIC_PREFIX" in data
    ids = {Settings.from_env({**data, "RATER_TOPIC_PREFIX": prefix}).app_id for prefix in ("", "a.", "b.")}
    assert len(ids) == 3


def test_each_pod_advertises_its_dns_name_under_the_headless_service_and_the_web_port() -> None:
    """The other workers forward API requests there (docs/api.md, "Routing")."""
    objects = _objects()
    service, statefulset = objects["Service"], objects["StatefulSet"]
    assert service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    env = _worker()["env"]
    names = [e["name"] for e in env]
    pod_name = env[names.index("POD_NAME")]
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert names.index("POD_NAME") < names.index("RATER_ADVERTISED_URL")  # $(VAR) sees only earlier ones
    advertised = env[names.index("RATER_ADVERTISED_URL")]["value"]
    port = _container_port("web")
    assert advertised == f"http://$(POD_NAME).{service['metadata']['name']}:{port}"
    assert [p["port"] for p in service["spec"]["ports"]] == [port]
    assert _worker_settings().advertised_url == f"http://rater-worker-0.{service['metadata']['name']}:{port}"


def test_the_api_tokens_are_a_mounted_secret_file() -> None:
    settings = _worker_settings()
    assert settings.api_tokens is not None
    mounts = {m["name"]: m for m in _worker()["volumeMounts"]}
    volumes = {v["name"]: v for v in _objects()["StatefulSet"]["spec"]["template"]["spec"]["volumes"]}
    [(name, mount)] = [(n, m) for n, m in mounts.items() if str(settings.api_tokens.parent) == m["mountPath"]]
    assert mount["readOnly"] is True
    secret = volumes[name]["secret"]
    assert [item["path"] for item in secret["items"]] == [settings.api_tokens.name]
    # the docs say how to create that Secret, with that key
    assert re.search(rf"kubectl (-n \S+ )?create secret generic {secret['secretName']} ", DOCS.read_text())
    assert f"--from-file={secret['items'][0]['key']}=" in DOCS.read_text()
