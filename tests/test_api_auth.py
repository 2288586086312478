"""The tenant API's bearer tokens (rater/shell/api_auth.py): the file, the checks, and a
real worker that answers 401, 403 and 200 by them; without a file, loopback only."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rater.shell.api_auth import Auth, Tokens, TokensError, is_loopback
from tests.support import Worker, create_topics
from tests.test_api import assert_problem, http_get, wait_ready
from tests.test_api_authorize import http_post
from tests.test_scenarios import Tenant, tenant_id

ADMIN = "admin-token-0123456789abcdef"
ACME = "acme-token-0123456789abcdef"


def _tokens(tmp_path: Path, table: dict[str, object], name: str = "tokens.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"tokens": table}))
    return path


def test_a_token_reads_the_tenants_it_names(tmp_path: Path) -> None:
    auth = Auth(Tokens.load(_tokens(tmp_path, {ADMIN: "*", ACME: ["acme", "acme-eu"]})), "0.0.0.0")
    assert auth.check(f"Bearer {ADMIN}", "anyone").status == 200
    assert auth.check(f"bearer {ACME}", "acme-eu").status == 200  # the scheme is case-insensitive
    assert auth.check(f"Bearer {ACME}", "other").slug == "tenant-not-allowed"
    assert auth.check(f"Bearer {ACME}x", "acme").slug == "invalid-token"
    assert auth.check(f"Bearer {ACME[:-1]}", "acme").slug == "invalid-token"
    assert auth.check(None, "acme").slug == "unauthenticated"
    assert auth.check(f"Basic {ACME}", "acme").slug == "unauthenticated"
    assert auth.check("Bearer ", "acme").slug == "unauthenticated"


def test_a_toml_file_works_too(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(f'[tokens]\n"{ACME}" = ["acme"]\n')
    assert Tokens.load(path).grant(ACME) is not None


@pytest.mark.parametrize(("text", "says"), [
    ("{", "not valid JSON"),
    ('{"tokens": {}}', "non-empty"),
    ('{"tokens": {"short": "*"}}', "16 or more"),
    (json.dumps({"tokens": {ADMIN: ["bad\n"]}}), '"*" or a list of tenant ids'),
    (json.dumps({"tokens": {ADMIN: "acme"}}), '"*" or a list of tenant ids'),
])
def test_a_bad_token_file_says_what_is_wrong(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(text)
    with pytest.raises(TokensError, match=says):
        Tokens.load(path)
    with pytest.raises(TokensError, match="cannot read"):
        Tokens.load(tmp_path / "missing.json")


def test_without_tokens_only_loopback_is_served() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("10.1.2.3")
    assert Auth(None, "127.0.0.1").check(None, "acme").status == 200
    assert Auth(None, "0.0.0.0").check(f"Bearer {ADMIN}", "acme").slug == "api-not-configured"


@pytest.fixture(scope="module")
def guarded(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    workdir = tmp_path_factory.mktemp("auth")
    prefix = f"auth{uuid.uuid4().hex[:8]}."
    create_topics(kafka_bootstrap, prefix)
    tokens = _tokens(workdir, {ADMIN: "*", ACME: ["acme-0"]})
    started = Worker(kafka_bootstrap, prefix, workdir, extra_env={"RATER_API_TOKENS": str(tokens)}).start()
    wait_ready(started)
    yield started
    started.stop()


@pytest.mark.kafka
def test_a_worker_with_tokens_answers_by_them(guarded: Worker) -> None:
    t = Tenant(guarded, tenant_id("auth", (0, 1, 2, 3)))
    t.open(funds="5.00", users={})
    url = f"{guarded.url}/v1/tenants/{t.id}/balance"
    status, _, body = http_get(url, {"Authorization": f"Bearer {ADMIN}"})
    assert (status, body["balance"]) == (200, "5.00")
    answer = http_get(url)
    assert_problem(answer, 401, "unauthenticated")
    assert answer[1]["WWW-Authenticate"] == 'Bearer realm="rater"'
    answer = http_get(url, {"Authorization": "Bearer not-a-token-of-this-deployment"})
    assert_problem(answer, 401, "invalid-token")
    assert answer[1]["WWW-Authenticate"] == 'Bearer realm="rater", error="invalid_token"'
    assert_problem(http_get(url, {"Authorization": f"Bearer {ACME}"}), 403, "tenant-not-allowed")
    assert_problem(http_get(f"{guarded.url}/v1/tenants/acme-0/pools", {"Authorization": f"Bearer {ACME}"}),
                   404, "unknown-tenant")  # allowed, and not there
    assert "the tenant API under /v1 takes the 2 bearer token(s)" in guarded.log.read_text()


@pytest.mark.kafka
def test_authorize_takes_the_token_of_the_bodys_tenant(guarded: Worker) -> None:
    t = Tenant(guarded, tenant_id("authz", (0, 1, 2, 3)))
    t.open(funds="5.00", users={})
    url = guarded.url + "/v1/authorize"
    body = {"tenant_id": t.id, "user_id": None, "call_type": "ucap_out", "number_type": "geographic",
            "destination": "+12125550123", "user_location": "US"}
    status, _, answer = http_post(url, body, {"Authorization": f"Bearer {ADMIN}"})
    assert (status, answer["allowed"], answer["balance"]) == (200, True, "5.00")
    answer = http_post(url, body)
    assert_problem(answer, 401, "unauthenticated")
    assert answer[1]["WWW-Authenticate"] == 'Bearer realm="rater"'
    assert_problem(http_post(url, body, {"Authorization": f"Bearer {ACME}"}), 403, "tenant-not-allowed")
    assert_problem(http_post(url, {**body, "tenant_id": "acme-0"}, {"Authorization": f"Bearer {ACME}"}),
                   404, "unknown-tenant")


@pytest.mark.kafka
def test_a_worker_on_every_address_without_tokens_refuses_the_api(kafka_bootstrap: str, tmp_path: Path) -> None:
    worker = Worker(kafka_bootstrap, f"open{uuid.uuid4().hex[:8]}.", tmp_path, extra_env={"RATER_WEB_HOST": "0.0.0.0"})
    create_topics(kafka_bootstrap, worker.prefix)
    worker.start()
    try:
        wait_ready(worker)  # it runs: metrics and probes are served
        assert_problem(http_get(f"{worker.url}/v1/tenants/acme/balance"), 403, "api-not-configured")
    finally:
        worker.stop()
    warnings = [line for line in worker.log.read_text().splitlines() if "refuses every request" in line]
    assert len(warnings) == 1
    assert "WARN" in warnings[0]


@pytest.mark.kafka
def test_a_worker_with_a_bad_token_file_stops_saying_why(kafka_bootstrap: str, tmp_path: Path) -> None:
    worker = Worker(kafka_bootstrap, "badtokens.", tmp_path,
                    extra_env={"RATER_API_TOKENS": str(tmp_path / "missing.toml")}).start()
    assert worker.proc.wait(timeout=60) == 1
    log = worker.log.read_text()
    assert "RATER_API_TOKENS=" in log
    assert "cannot read it" in log
    assert "Traceback" not in log
