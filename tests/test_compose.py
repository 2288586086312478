"""docker-compose.yml: valid Compose, and wired the way docs/deploying.md says."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from jsonschema import Draft201909Validator

from rater.shell.api_auth import Tokens
from rater.shell.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
SPEC_SCHEMA = ROOT / ".cache" / "compose-spec" / "compose-spec.json"
WORKERS = ("rater-worker-1", "rater-worker-2")
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def _bind_mounts() -> list[tuple[str, str]]:
    """(service, host path relative to the repository) of every bind mount."""
    found = []
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                found.append((name, source))
    return found


def _worker_port(service: dict[str, Any]) -> int:
    """The port the worker listens on: what its settings read from its environment."""
    return Settings.from_env(service["environment"]).web_port


def _compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0


def test_compose_file_is_valid_compose() -> None:
    """Against the Compose Specification's JSON Schema (fetched by ``make test``), and with
    ``docker compose config`` too wherever the Docker client has its compose plugin (this
    CI machine kind has the client but neither engine nor plugin)."""
    assert SPEC_SCHEMA.exists(), "run tests/fetch-compose-schema.sh (make test does)"
    schema = orjson.loads(SPEC_SCHEMA.read_bytes())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in Draft201909Validator(schema).iter_errors(yaml.safe_load(COMPOSE.read_text()))]
    assert errors == []
    if _compose_plugin():
        done = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
                              capture_output=True, text=True, check=False, cwd=ROOT)
        assert done.returncode == 0, done.stderr


def test_compose_runs_an_apache_kraft_broker_and_two_workers_built_here() -> None:
    services = _services()
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert (ROOT / "Dockerfile").exists()
    assert services["topics"]["command"] == ["topics", "create"]
    assert services["topics"]["build"] == "."
    assert [name for name in services if name.startswith("rater-worker")] == list(WORKERS)
    for name in WORKERS:
        worker = services[name]
        assert worker["build"] == "."
        assert worker["image"] == services["topics"]["image"], "one image, built once"
        assert worker["command"] == ["worker"]
        assert worker["environment"]["RATER_BOOTSTRAP"] == "kafka:9092"
        assert worker["environment"]["RATER_WEB_HOST"] == "0.0.0.0"  # reachable by Prometheus
        assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    # one consumer group: the two share the partitions
    assert len({Settings.from_env(services[n]["environment"]).app_id for n in WORKERS}) == 1


def test_workers_have_distinct_data_volumes_on_their_data_dir() -> None:
    services = _services()
    declared = yaml.safe_load(COMPOSE.read_text())["volumes"]
    volumes = []
    for name in WORKERS:
        data_dir = str(Settings.from_env(services[name]["environment"]).data_dir)
        mounted = [v.split(":") for v in services[name]["volumes"]]
        sources = [source for source, target, *_ in mounted if target == data_dir]
        assert len(sources) == 1, f"{name}: one volume on RATER_DATA_DIR {data_dir}"
        assert sources[0] in declared, f"{name}: a named volume"
        volumes.append(sources[0])
    assert len(set(volumes)) == len(WORKERS), "each worker its own RocksDB store"
    host_ports = [port.split(":")[0] for n in WORKERS for port in services[n].get("ports", [])]
    assert len(set(host_ports)) == len(host_ports), "distinct host ports"


def test_worker_ports_map_to_the_port_the_worker_listens_on() -> None:
    for name in WORKERS:
        worker = _services()[name]
        port = _worker_port(worker)
        assert [int(p.split(":")[1]) for p in worker["ports"]] == [port]


def test_each_worker_advertises_its_service_name_and_web_port() -> None:
    """The other worker forwards API requests to this URL on the compose network."""
    for name in WORKERS:
        settings = Settings.from_env(_services()[name]["environment"])
        assert settings.advertised_url == f"http://{name}:{settings.web_port}"


def test_workers_read_the_mounted_token_file() -> None:
    for name in WORKERS:
        service = _services()[name]
        tokens = Settings.from_env(service["environment"]).api_tokens
        assert tokens is not None
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"] if v.startswith(".")}
        assert str(tokens) in mounts, f"{name} does not mount {tokens}"
        assert (ROOT / mounts[str(tokens)]).is_file()
        assert len(Tokens.load(ROOT / mounts[str(tokens)])) >= 1
        assert "DEVELOPMENT" in (ROOT / mounts[str(tokens)]).read_text()


@pytest.mark.parametrize(("service", "source"), _bind_mounts())
def test_every_bind_mounted_path_exists(service: str, source: str) -> None:
    path = (ROOT / source).resolve()
    assert path.exists(), f"{service} mounts {source}, which is not in the repository"


def test_prometheus_and_grafana_mount_the_deploy_folders_where_they_read_them() -> None:
    services = _services()
    assert services["prometheus"]["image"].startswith("prom/prometheus:v")
    assert services["grafana"]["image"].split(":")[1][0].isdigit(), "a pinned Grafana version"
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    grafana = services["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana
    assert services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_prometheus_scrapes_both_workers_on_their_web_port_and_loads_the_rules() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == "rater"]
    assert len(jobs) == 1
    targets = {t for static in jobs[0].get("static_configs", []) for t in static["targets"]}
    services = _services()
    assert targets == {f"{name}:{_worker_port(services[name])}" for name in WORKERS}
    rules = [Path(r).name for r in config.get("rule_files", [])]
    assert "rules.yml" in rules, "the alert rules beside prometheus.yml are loaded"


def _provisioning(kind: str) -> list[dict[str, Any]]:
    """The Grafana provisioning files of ``kind`` (datasources, dashboards)."""
    folder = ROOT / "deploy" / "grafana" / "provisioning" / kind
    files = sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")])
    assert files, f"no Grafana {kind} provisioning in {folder}"
    return [yaml.safe_load(f.read_text()) for f in files]


def test_grafana_reads_prometheus_by_its_service_name_and_the_mounted_dashboards() -> None:
    services = _services()
    urls = {d["url"] for config in _provisioning("datasources") for d in config.get("datasources", [])}
    port = services["prometheus"]["ports"][0].split(":")[1]
    assert f"http://prometheus:{port}" in urls
    mounted = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    paths = {p["options"]["path"] for config in _provisioning("dashboards") for p in config.get("providers", [])}
    assert paths, "a dashboards provider"
    assert paths <= mounted, "it reads the folder compose mounts"


class _Readyz(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def readyz() -> Iterator[tuple[http.server.HTTPServer, type[_Readyz]]]:
    handler = type("Handler", (_Readyz,), {})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, handler
    finally:
        server.shutdown()
        server.server_close()


def test_the_worker_healthcheck_passes_on_200_and_fails_on_503(readyz: tuple[Any, Any]) -> None:
    """The command as compose runs it in the container (python + the standard library
    only: the slim image has no curl), against a stand-in /readyz."""
    server, handler = readyz
    test = _services()["rater-worker-1"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    env = dict(os.environ, RATER_WEB_PORT=str(server.server_address[1]))
    run = [sys.executable, "-I", "-c", test[3]]
    assert subprocess.run(run, env=env, capture_output=True, check=False, timeout=30).returncode == 0
    handler.status = 503
    failed = subprocess.run(run, env=env, capture_output=True, text=True, check=False, timeout=30)
    assert failed.returncode != 0
    assert "503" in failed.stderr


def test_the_schema_check_rejects_a_broken_compose_file() -> None:
    schema = orjson.loads(SPEC_SCHEMA.read_bytes())
    broken = {"services": {"kafka": {"image": "apache/kafka:4.1.1", "depends_on": {"x": {"condition": "bogus"}}}}}
    assert list(Draft201909Validator(schema).iter_errors(broken))


def test_the_notifier_mails_the_catcher_and_prometheus_scrapes_it_as_a_job_of_its_own() -> None:
    from rater.notifier.settings import NotifySettings  # noqa: PLC0415 - one test's import

    services = _services()
    notifier = services["notifier"]
    assert (notifier["build"], notifier["image"], notifier["command"]) == (".", services["topics"]["image"],
                                                                          ["notify"])
    settings = NotifySettings.from_env(notifier["environment"])  # every value one the notifier takes
    assert settings.smtp_host in services, "the mail server is a compose service"
    assert services[settings.smtp_host]["image"].startswith("axllent/mailpit:")
    assert f"{settings.web_port}:{settings.web_port}" in notifier["ports"]
    assert notifier["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert any(v.endswith(":" + str(settings.data_dir)) for v in notifier["volumes"])
    assert "--notify-domain" in services["traffic"]["command"]  # its tenants have admins to tell
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "rater-notify"]
    assert [t for s in job["static_configs"] for t in s["targets"]] == [f"notifier:{settings.web_port}"]
