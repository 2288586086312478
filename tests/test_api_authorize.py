"""``POST /v1/authorize`` (rater/shell/api.py) on a real worker and the real broker: the
core's authorize of the tenant's committed state, with the API's auth and problems, and
an authorized duration that rating then pays in full — one second more, not."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest

from tests import openapi_support
from tests.support import Worker, fresh_worker
from tests.test_api import assert_problem, wait_ready
from tests.test_scenarios import NEW_YORK, Tenant, tenant_id

pytestmark = pytest.mark.kafka


def http_post(url: str, body: Any, headers: dict[str, str] | None = None,
              raw: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    """POST ``body`` as JSON (or ``raw`` bytes): status, headers and the JSON answer,
    held to the OpenAPI document."""
    data = raw if raw is not None else orjson.dumps(body)
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, head, answer = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, head, answer = exc.code, dict(exc.headers), exc.read()
    parsed = orjson.loads(answer)
    openapi_support.check("POST", url, status, head, parsed)
    return status, head, parsed


def call(t: Tenant, user: str | None = "alice", **fields: Any) -> dict[str, Any]:
    return {"tenant_id": t.id, "user_id": user, "call_type": "user_out", "number_type": "geographic",
            "destination": NEW_YORK, "user_location": "US", **fields}


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    started = fresh_worker(kafka_bootstrap, "authz", tmp_path_factory.mktemp("authz"))
    wait_ready(started)
    yield started
    started.stop()


def test_authorized_seconds_are_paid_in_full_and_one_more_is_not(worker: Worker) -> None:
    """A prepaid tenant with little credit: the call authorized for D s, sent as a CDR of
    D s from the authorized start, is ``rated`` with nothing uncollected; the same call
    of D + 1 s (on a tenant funded alike) is not fully paid."""
    url = worker.url + "/v1/authorize"
    exact, over = (Tenant(worker, tenant_id(name, (0, 1, 2, 3))) for name in ("authz-d", "authz-d1"))
    for t in (exact, over):
        t.open(funds="0.10", users={"alice": ("US", ["MCOPSTNPP"])})
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())  # now, in whole seconds (a CDR's form)
    status, headers, answer = http_post(url, call(exact, start_time=start))
    assert status == 200, answer
    assert answer["allowed"] is True, answer
    assert answer["reason"] is None
    assert answer["limited_by"] == "no_funds"
    duration = answer["max_duration_seconds"]
    assert isinstance(duration, int)
    assert duration > 1
    assert (answer["balance"], answer["currency"]) == ("0.10", "USD")
    assert answer["credits"]["paid_as"] == "MCOPSTNPP"
    assert answer["as_of"]["changelog_offset"] > 0
    assert headers["Rater-Answered-By"] == worker.url
    assert answer["start_time"] == start
    assert http_post(url, call(over, start_time=start))[2]["max_duration_seconds"] == duration  # funded alike

    exact.send(exact.call("d", duration, start=start))
    rated = exact.rated(exact.wait(exact.all_rated("d")), "d")
    assert rated["status"] == "rated", rated
    assert Decimal(rated["uncollected"]) == 0, rated

    over.send(over.call("d1", duration + 1, start=start))
    rated = over.rated(over.wait(over.all_rated("d1")), "d1")
    assert (rated["status"], rated["reason"]) == ("partially_funded", "no_funds"), rated
    assert Decimal(rated["uncollected"]) > 0, rated


def test_refusals_are_answers_and_an_unknown_tenant_is_404(worker: Worker) -> None:
    url = worker.url + "/v1/authorize"
    t = Tenant(worker, tenant_id("authz-no", (0, 1, 2, 3)))
    t.open(funds=None, users={"alice": ("US", ["MCOPSTNPP"]), "bob": ("US", [])})
    status, _, broke = http_post(url, call(t))
    assert status == 200, broke
    assert (broke["allowed"], broke["reason"], broke["max_duration_seconds"]) == (False, "no_funds", None)
    assert broke["message"]
    unlicensed = http_post(url, call(t, "bob"))[2]
    assert (unlicensed["allowed"], unlicensed["reason"]) == (False, "no_license")
    free = http_post(url, call(t, "alice", call_type="user_in"))[2]  # geographic inbound: free
    assert (free["allowed"], free["max_duration_seconds"], free["limited_by"]) == (True, None, None)
    odd = http_post(url, call(t, call_type="telepathy"))[2]
    assert (odd["allowed"], odd["reason"]) == (False, "schema")
    later = http_post(url, call(t, start_time="2099-01-01T00:00:00Z"))[2]
    assert (later["allowed"], later["reason"]) == (False, "future")
    assert_problem(http_post(url, call(Tenant(worker, "nobody-authz"))), 404, "unknown-tenant")


def test_bad_bodies_are_problems_naming_the_field(worker: Worker) -> None:
    url = worker.url + "/v1/authorize"
    t = Tenant(worker, "acme-authz")
    assert_problem(http_post(url, None, raw=b"{not json"), 400, "invalid-json")
    assert_problem(http_post(url, None, raw=b""), 400, "invalid-json")
    assert "object" in assert_problem(http_post(url, [1]), 422, "invalid-body")["detail"]
    body = call(t)
    del body["destination"]
    assert "destination" in assert_problem(http_post(url, body), 422, "invalid-body")["detail"]
    assert "call_type" in assert_problem(http_post(url, call(t, call_type=7)), 422, "invalid-body")["detail"]
    assert "start_time" in assert_problem(http_post(url, call(t, start_time="yesterday")), 422,
                                          "invalid-body")["detail"]
    assert "colour" in assert_problem(http_post(url, call(t, colour="red")), 422, "invalid-body")["detail"]
    assert_problem(http_post(url, call(t, tenant_id="a b")), 400, "invalid-tenant-id")
    assert_problem(http_post(url, None, raw=b"{" + b" " * 5000 + b"}"), 413, "body-too-large")
