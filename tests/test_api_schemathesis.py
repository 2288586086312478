"""Schemathesis against a live worker (with bearer tokens) on the real broker: requests
made from the OpenAPI document — valid and invalid tenant ids and months, other methods,
no token — never get a 5xx, and every answer conforms to the document."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.openapi import from_dict

from tests.openapi_support import DOC
from tests.support import Worker, create_topics
from tests.test_api import wait_ready
from tests.test_scenarios import Tenant, tenant_id

pytestmark = pytest.mark.kafka

TOKEN = "schemathesis-token-0123456789"


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    workdir = tmp_path_factory.mktemp("schemathesis")
    tokens = workdir / "tokens.json"
    tokens.write_text(json.dumps({"tokens": {TOKEN: "*"}}))
    prefix = f"st{uuid.uuid4().hex[:8]}."
    create_topics(kafka_bootstrap, prefix)
    worker = Worker(kafka_bootstrap, prefix, workdir, extra_env={"RATER_API_TOKENS": str(tokens)}).start()
    wait_ready(worker)
    Tenant(worker, "acme").open(funds="3.00", users={"alice": ("US", ["MCOPSTN1"])})  # one that exists
    Tenant(worker, tenant_id("st", (0, 1, 2, 3))).open(funds=None, users={})
    yield worker
    worker.stop()


@pytest.mark.parametrize("mode", list(GenerationMode))
def test_the_api_conforms_to_its_document(live: Worker, mode: GenerationMode) -> None:
    """Every operation of the document, with data that fits it (``positive``) and data that
    does not (``negative``: a 4xx is expected, never a 5xx); schemathesis's checks hold each
    answer to the document (status, content type, headers, body) and send requests without
    the token (401 expected: the document declares bearer security)."""
    api = from_dict(DOC)
    for operation in (result.ok() for result in api.get_all_operations()):
        if mode == GenerationMode.NEGATIVE and not (operation.path_parameters or operation.query or operation.body):
            continue  # nothing in the request could break the document (the OpenAPI document's own path)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: Case) -> None:
            case.call_and_validate(base_url=live.url, headers={"Authorization": f"Bearer {TOKEN}"})

        run()
