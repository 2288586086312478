"""docker-compose.yml: valid Compose, and wired the way the README says."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import yaml
from jsonschema import Draft201909Validator

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
SPEC_SCHEMA = ROOT / ".cache" / "compose-spec" / "compose-spec.json"


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


def test_compose_runs_an_apache_kraft_broker_and_a_worker_built_here() -> None:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    worker = services["rater-worker"]
    assert worker["build"] == "."
    assert (ROOT / "Dockerfile").exists()
    assert worker["environment"]["RATER_BOOTSTRAP"] == "kafka:9092"
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["topics"]["command"] == ["topics", "create"]


def test_the_schema_check_rejects_a_broken_compose_file() -> None:
    schema = orjson.loads(SPEC_SCHEMA.read_bytes())
    broken = {"services": {"kafka": {"image": "apache/kafka:4.1.1", "depends_on": {"x": {"condition": "bogus"}}}}}
    assert list(Draft201909Validator(schema).iter_errors(broken))
