"""Any worker answers for any tenant (rater/shell/routing.py): the group's assignment
carries every partition's URL, and a worker forwards a request for another's tenant to
it, once. Two real workers on the real broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from rater.shell.routing import ANSWERED, FORWARDED, UrlRangeAssignor, advertised_url, routes_of
from rater.shell.settings import Settings, SettingsError
from tests.support import TEST_PARTITIONS, Worker, create_topics
from tests.test_api import assert_problem, http_get
from tests.test_api_authorize import http_post
from tests.test_scenarios import Tenant, tenant_id

INPUTS = ("p.account-commands", "p.cdrs", "p.rater-ticks", "p.recharge-results")


class _Topics:
    """Cluster metadata as an assignor reads it: the partitions of each topic."""

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(6)) if topic in INPUTS else set()


def test_the_assignment_is_range_with_every_partitions_url() -> None:
    members = {f"m{n}": ConsumerProtocolMemberMetadata(0, list(INPUTS), UrlRangeAssignor(f"http://w{n}:1").metadata(
        INPUTS).user_data) for n in range(4)}
    members["old"] = ConsumerProtocolMemberMetadata(0, list(INPUTS), b"")  # sent no URL
    ours = UrlRangeAssignor("http://w0:1").assign(_Topics(), members)
    ranged = RangePartitionAssignor.assign(_Topics(), members)
    assert {m: a.assignment for m, a in ours.items()} == {m: a.assignment for m, a in ranged.items()}
    [shared] = {a.user_data for a in ours.values()}  # every member gets the same map
    urls = routes_of(shared)
    for member, assignment in ours.items():
        partitions = {p for _topic, ps in assignment.assignment for p in ps}
        for _topic, ps in assignment.assignment:
            assert set(ps) == partitions  # co-partitioned: the same numbers of every input topic
        for p in partitions:
            assert urls.get(p) == (None if member == "old" else f"http://{member.replace('m', 'w')}:1")
    receiver = UrlRangeAssignor()
    receiver.on_assignment(ours["m1"])
    assert receiver.urls == urls
    receiver.forget()
    assert receiver.urls == {}
    assert routes_of(b"not json") == {}
    assert routes_of(b'{"v": 2, "urls": {"0": "x"}}') == {}


def test_the_advertised_url() -> None:
    assert advertised_url("http://rater-0.rater:6066/", "0.0.0.0", 1) == "http://rater-0.rater:6066"
    assert advertised_url(None, "127.0.0.1", 6066) == "http://127.0.0.1:6066"
    assert advertised_url(None, "::1", 6066) == "http://[::1]:6066"
    assert not advertised_url(None, "0.0.0.0", 6066).startswith("http://0.0.0.0")
    assert Settings.from_env({"RATER_ADVERTISED_URL": "https://r:1/"}).advertised_url == "https://r:1"
    for bad in ("r:6066", "ftp://r", "http://", "http://r/?a"):
        with pytest.raises(SettingsError, match="RATER_ADVERTISED_URL"):
            Settings.from_env({"RATER_ADVERTISED_URL": bad})


def _settled(workers: list[Worker], timeout_s: float = 90) -> dict[int, Worker]:
    """partition → its worker, once every worker is ready and they share all partitions."""
    deadline = time.monotonic() + timeout_s
    seen: list[object] = []
    while time.monotonic() < deadline:
        owners: dict[int, Worker] = {}
        seen = []
        for worker in workers:
            worker.check_alive()
            try:
                status, _, body = http_get(worker.url + "/readyz")
            except OSError:
                status, body = 0, {}
            seen.append(body)
            if status != 200 or not body.get("partitions"):
                break
            for p in body["partitions"]:
                owners[p] = worker
        else:
            if sorted(owners) == list(range(TEST_PARTITIONS)) and sum(
                    len(b["partitions"]) for b in seen if isinstance(b, dict)) == TEST_PARTITIONS:
                return owners
        time.sleep(0.2)
    raise AssertionError(f"the workers never shared the partitions: {seen}")


@pytest.fixture(scope="module")
def pair(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Worker]]:
    workdir: Path = tmp_path_factory.mktemp("routing")
    prefix = f"route{uuid.uuid4().hex[:8]}."
    create_topics(kafka_bootstrap, prefix)
    workers = [Worker(kafka_bootstrap, prefix, workdir / name).start() for name in ("a", "b")]
    try:
        yield workers
    finally:
        for worker in workers:
            worker.stop()


@pytest.fixture(scope="module")
def tenants(pair: list[Worker]) -> dict[int, Tenant]:
    """One tenant on each partition, funded with p + 1 dollars."""
    found = {p: Tenant(pair[0], tenant_id(f"route{p}", (p,))) for p in range(TEST_PARTITIONS)}
    for p, t in found.items():
        t.open(funds=f"{p + 1}.00", users={"alice": ("US", ["MCOPSTN1"])})
    return found


@pytest.mark.kafka
def test_every_tenant_is_answered_through_either_worker(pair: list[Worker], tenants: dict[int, Tenant]) -> None:
    owners = _settled(pair)
    for p, t in tenants.items():
        owner = owners[p]
        for worker in pair:
            for what in ("balance", "pools", "usage"):
                status, headers, body = http_get(f"{worker.url}/v1/tenants/{t.id}/{what}")
                assert status == 200, (worker.url, p, body)
                assert headers[ANSWERED] == owner.url  # read by the owner, whoever was asked
                assert body["tenant_id"] == t.id
                assert body["as_of"]["partition"] == p
                if what == "balance":
                    assert body["balance"] == f"{p + 1}.00"
                if what == "usage":
                    assert (body["currency"], body["totals"]["calls"]) == ("USD", 0)
        other = next(w for w in pair if w is not owner)
        assert_problem(http_get(f"{other.url}/v1/tenants/nobody{p}-{uuid.uuid4().hex[:6]}/balance"), 404,
                       "unknown-tenant")
        # a request that was forwarded once is never forwarded again
        answer = http_get(f"{other.url}/v1/tenants/{t.id}/balance", {FORWARDED: owner.url})
        assert_problem(answer, 503, "unavailable")
        assert answer[1]["Retry-After"].isdigit()
        assert http_get(f"{owner.url}/v1/tenants/{t.id}/balance", {FORWARDED: other.url})[0] == 200


@pytest.mark.kafka
def test_authorize_is_answered_by_the_owner_through_either_worker(
        pair: list[Worker], tenants: dict[int, Tenant]) -> None:
    """POST /v1/authorize goes to the tenant's owner once, with its body."""
    owners = _settled(pair)
    for p, t in tenants.items():
        owner = owners[p]
        body = {"tenant_id": t.id, "user_id": "alice", "call_type": "user_out", "number_type": "geographic",
                "destination": "+12125550123", "user_location": "US"}
        for worker in pair:
            status, headers, answer = http_post(worker.url + "/v1/authorize", body)
            assert status == 200, (worker.url, p, answer)
            assert headers[ANSWERED] == owner.url
            assert (answer["tenant_id"], answer["allowed"], answer["balance"]) == (t.id, True, f"{p + 1}.00")
            assert answer["as_of"]["partition"] == p
        other = next(w for w in pair if w is not owner)
        answer = http_post(other.url + "/v1/authorize", body, {FORWARDED: owner.url})
        assert_problem(answer, 503, "unavailable")
        assert answer[1]["Retry-After"].isdigit()

@pytest.mark.kafka
def test_when_an_owner_leaves_its_tenants_are_503_then_answered_by_the_next(
        pair: list[Worker], tenants: dict[int, Tenant]) -> None:
    """The worker that stays answers 503 with Retry-After while the group moves the
    partitions (or forwards to an owner that is leaving), never anything else, then
    answers every tenant itself."""
    stays = _settled(pair)[0]
    leaves = next(w for w in pair if w is not stays)
    leaves.stop()
    statuses: list[int] = []
    deadline = time.monotonic() + 90
    pending = dict(tenants)
    while pending:
        assert time.monotonic() < deadline, f"never answered: {sorted(pending)}; statuses {statuses}"
        for p, t in list(pending.items()):
            status, headers, body = http_get(f"{stays.url}/v1/tenants/{t.id}/balance")
            statuses.append(status)
            if status == 503:
                assert headers["Retry-After"].isdigit()
            else:
                assert status == 200, body
                if headers[ANSWERED] == stays.url:
                    assert body["balance"] == f"{p + 1}.00"  # restored from the changelog
                    del pending[p]
        time.sleep(0.1)

