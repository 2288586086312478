"""The tenant API (rater/shell/api.py) on a real worker and the real broker: what it
answers is what the worker committed — the balance snapshot on the ``balances`` topic,
the pools of a month — and its errors are RFC 9457 problems."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from rater.core.money import parse_decimal
from rater.shell.api import TENANT_ID
from rater.shell.task import decode_state
from tests import openapi_support
from tests.support import TEST_PARTITIONS, Worker, fresh_worker
from tests.test_scenarios import LONDON, NEW_YORK, PARIS, Tenant, pool_seconds, tenant_id

pytestmark = pytest.mark.kafka


def http_get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict[str, str], Any]:
    """GET ``url``: status, headers and the JSON body (raw text when not JSON)."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, head, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, head, raw = exc.code, dict(exc.headers), exc.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = raw.decode(errors="replace")
    if "/v1" in url:  # every answer of the API is held to its OpenAPI document
        openapi_support.check(method, url, status, head, body)
    return status, head, body


def wait_ready(worker: Worker, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        worker.check_alive()
        try:
            if http_get(worker.url + "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{worker.url} never became ready")


def assert_problem(answer: tuple[int, dict[str, str], Any], status: int, slug: str) -> dict[str, Any]:
    got, headers, body = answer
    assert got == status, body
    assert headers["Content-Type"].startswith("application/problem+json")
    assert isinstance(body, dict)
    assert body["status"] == status
    assert body["type"].endswith("/" + slug)
    assert body["title"]
    assert body["detail"]
    return body


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    started = fresh_worker(kafka_bootstrap, "api", tmp_path_factory.mktemp("api"))
    wait_ready(started)
    yield started
    started.stop()


def test_tenant_ids_are_matched_whole() -> None:
    assert TENANT_ID.fullmatch("acme.eu_1-x")
    assert not TENANT_ID.fullmatch("acme\n")  # what `^...$` with re.match would let through
    assert not TENANT_ID.fullmatch("a" * 65)
    assert not TENANT_ID.fullmatch("")


def stored(worker: Worker, tenant: str, until: Any, headers: dict[str, str] | None = None) -> None:
    """Wait until the API's balance of ``tenant`` satisfies ``until``: the worker writes a
    unit to its store once the unit is committed, a moment after its outputs can be read."""
    deadline = time.monotonic() + 10
    while not until(body := http_get(f"{worker.url}/v1/tenants/{tenant}/balance", headers)[2]):
        assert time.monotonic() < deadline, f"the committed unit never reached the store: {body}"
        time.sleep(0.05)


def us_pool_used(body: Any) -> int:
    """Seconds used of the US domestic MCOPSTN1 pool of the current month in a balance answer."""
    return next((p["used_seconds"] for p in body.get("pools", []) if (p["capability"], p["location"], p["scope"])
                 == ("MCOPSTN1", "US", "domestic")), -1)


def test_balance_and_pools_are_the_committed_state(worker: Worker) -> None:
    t = Tenant(worker, tenant_id("bal", (0, 1, 2, 3)))
    t.open(funds="10.00", users={"alice": ("US", ["MCOPSTN1"])})
    t.send(t.call("a", 600, destination=NEW_YORK))
    outs = t.wait(t.all_rated("a"), t.has("balance", caused_by=t.uid("a")))
    snapshot = t.balance(outs, t.uid("a"))
    stored(worker, t.id, lambda body: us_pool_used(body) == 600)  # "a"'s unit, whole (one write)

    status, headers, body = http_get(f"{worker.url}/v1/tenants/{t.id}/balance")
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    for name in ("balance", "currency", "status", "lots", "auto_recharge", "pools"):
        assert body[name] == snapshot[name], name  # the core's snapshot, as the topic has it
    assert body["tenant_id"] == t.id
    assert body["billing_model"] == "prepaid_credits"
    as_of = body["as_of"]
    assert as_of["changelog_offset"] > 0
    assert as_of["clock"] == "2026-11-02T10:10:00Z"  # the partition's now: the CDR's end (ticks are off)
    assert as_of["tick"] is None

    status, _, pools = http_get(f"{worker.url}/v1/tenants/{t.id}/pools")
    assert status == 200, pools
    assert pools["month"] == "2026-11"  # the partition's current month
    [us] = [p for p in pools["pools"] if p["location"] == "US"]
    assert us == {"capability": "MCOPSTN1", "location": "US", "scope": "domestic",
                  "size_seconds": pool_seconds("MCOPSTN1", "US"), "used_seconds": 600,
                  "available_seconds": pool_seconds("MCOPSTN1", "US") - 600}
    assert pools["as_of"] == as_of

    status, _, december = http_get(f"{worker.url}/v1/tenants/{t.id}/pools?month=2026-12")
    assert status == 200
    [us] = [p for p in december["pools"] if p["location"] == "US"]
    assert (us["used_seconds"], us["available_seconds"]) == (0, pool_seconds("MCOPSTN1", "US"))
    status, _, long_ago = http_get(f"{worker.url}/v1/tenants/{t.id}/pools?month=2020-01")
    assert (status, long_ago["pools"]) == (200, [])


def test_usage_is_the_sum_of_the_month_s_rated_cdrs_by_capability_scope_and_country(worker: Worker) -> None:
    t = Tenant(worker, tenant_id("use", (0, 1, 2, 3)))
    t.open(funds="1.00", users={"alice": ("US", ["MCOPSTN1", "MCOPSTNPP"]), "bob": ("US", ["PAYG"])})
    t.send(t.call("a", 600, destination=NEW_YORK),  # the domestic pool pays
           t.call("b", 125, start="2026-11-02T11:00:00Z", destination=LONDON),  # credits pay
           t.call("c", 61, start="2026-11-02T11:10:00Z", destination=PARIS, user_id="bob"),
           t.call("a", 600, destination=NEW_YORK),  # sent again: a duplicate counts nothing
           t.call("d", 300, start="2026-11-02T12:00:00Z", destination=NEW_YORK, call_type="user_in",
                  user_id=None),  # inbound to a geographic number: free
           t.call("e", 9000, start="2026-11-02T13:00:00Z", destination=PARIS, user_id="bob"),  # runs out of money
           t.call("z", 60, start="2026-10-30T10:00:00Z", destination=NEW_YORK))  # October, in its grace
    outs = t.wait(t.all_rated("a", "b", "c", "d", "e", "z"), t.has("rated_cdr", 1, status="duplicate"))
    deadline = time.monotonic() + 10  # committed: the store follows in a moment
    while http_get(f"{worker.url}/v1/tenants/{t.id}/usage?month=2026-10")[2]["totals"]["calls"] < 1:
        assert time.monotonic() < deadline, "the last unit never reached the store"
        time.sleep(0.05)
    summed: dict[str, dict[tuple[Any, ...], list[int]]] = {}
    for rated in t.events(outs, "rated_cdr"):
        if rated["status"] == "duplicate":
            continue
        row = summed.setdefault(rated["billing_month"], {}).setdefault(
            (rated["capability"], rated["scope"], rated["destination_country"]), [0] * 7)
        for n, value in enumerate((1, rated["duration_seconds"], sum(p["seconds"] for p in rated["pool_usage"]),
                                   rated["credit_seconds"], rated["charged_seconds"],
                                   parse_decimal(rated["charge"], 2), parse_decimal(rated["uncollected"], 2))):
            row[n] += value
    assert set(summed["2026-11"]) == {("MCOPSTN1", "domestic", "US"), ("MCOPSTNPP", "international", "GB"),
                                      ("MCOPSTNPP", "international", "FR"), (None, "domestic", "US")}
    names = ("calls", "seconds", "pool_seconds", "credit_seconds", "charged_seconds", "charge", "uncollected")
    for month in ("2026-11", "2026-10"):
        status, _, body = http_get(f"{worker.url}/v1/tenants/{t.id}/usage?month={month}")
        assert status == 200, body
        assert (body["tenant_id"], body["month"], body["currency"]) == (t.id, month, "USD")
        got = {(row["capability"], row["scope"], row["destination_country"]):
               [parse_decimal(row[n], 2) if n in ("charge", "uncollected") else row[n] for n in names]
               for row in body["usage"]}
        assert got == summed[month], month
        assert [parse_decimal(body["totals"][n], 2) if n in ("charge", "uncollected") else body["totals"][n]
                for n in names] == [sum(column) for column in zip(*summed[month].values(), strict=True)]
    assert body["totals"]["calls"] == 1
    november = http_get(f"{worker.url}/v1/tenants/{t.id}/usage")[2]  # by default the partition's month
    assert november["month"] == "2026-11"
    assert november["totals"]["calls"] == 5
    assert parse_decimal(november["totals"]["uncollected"], 2) > 0  # e ran out of money
    status, _, none = http_get(f"{worker.url}/v1/tenants/{t.id}/usage?month=2025-01")
    assert (status, none["usage"], none["totals"]["calls"], none["totals"]["charge"]) == (200, [], 0, "0.00")
    assert_problem(http_get(f"{worker.url}/v1/tenants/{t.id}/usage?month=2026-13"), 400, "invalid-month")
    assert_problem(http_get(f"{worker.url}/v1/tenants/{t.id}x/usage"), 404, "unknown-tenant")


def test_an_answer_is_a_committed_unit_never_one_in_flight(worker: Worker) -> None:
    """While calls are rated, unit after unit, the API is read without a pause: every
    balance it shows is one a unit published on the ``balances`` topic, ``as_of`` never
    goes back, and it is exact — the balance is the tenant's state in the last committed
    changelog record below ``as_of.changelog_offset`` (an answer from the task's memory,
    ahead of its unit's commit, or a store half written, would break that)."""
    t = Tenant(worker, tenant_id("flight", (0, 1, 2, 3)))
    t.open(funds="500.00", users={"alice": ("US", ["MCOPSTNPP"])})
    url = f"{worker.url}/v1/tenants/{t.id}/balance"
    seen: list[tuple[int, str]] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            status, _, body = http_get(url)
            assert status == 200, body
            seen.append((body["as_of"]["changelog_offset"], body["balance"]))

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        calls = [t.call(f"c{n}", 61 + n % 37, start=f"2026-11-02T{10 + n // 60:02d}:{n % 60:02d}:00Z")
                 for n in range(300)]
        t.send(*calls)
        outs = t.wait(t.all_rated(*(f"c{n}" for n in range(300))), t.has("balance", caused_by=t.uid("c299")))
    finally:
        done.set()
        poller.join()
    published = {b["balance"] for b in t.events(outs, "balance")}
    assert len(published) > 2  # several units
    assert len(seen) > 10
    shown = [balance for _offset, balance in seen]
    assert set(shown) <= published, sorted(set(shown) - published)[:5]
    offsets = [offset for offset, _balance in seen]
    assert offsets == sorted(offsets)
    assert [Decimal(b) for b in shown] == sorted((Decimal(b) for b in shown), reverse=True)  # only calls: it falls
    # as_of is exact: the balance shown is the tenant's state in the last changelog record
    # below as_of.changelog_offset
    states = asyncio.run(_changelog(worker, t.id))
    for offset, balance in seen:
        below = [minor for at, minor in states if at < offset]
        assert below, offset
        assert Decimal(balance) * 100 == below[-1], (offset, balance)


async def _changelog(worker: Worker, tenant: str) -> list[tuple[int, int]]:
    """(offset, balance in minor units) of each committed state record of ``tenant`` on
    the state changelog."""
    tp = TopicPartition(worker.prefix + "rater-state", (murmur2(tenant.encode()) & 0x7FFFFFFF) % TEST_PARTITIONS)
    consumer = AIOKafkaConsumer(bootstrap_servers=worker.bootstrap, isolation_level="read_committed",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        found = []
        while await consumer.position(tp) < end:
            for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                if record.key == tenant.encode():
                    found.append((record.offset, decode_state(record.value).balance_minor))
        return found
    finally:
        await consumer.stop()


def test_errors_are_problems(worker: Worker) -> None:
    url = worker.url + "/v1/tenants"
    assert_problem(http_get(f"{url}/nobody-{time.time_ns()}/balance"), 404, "unknown-tenant")
    assert_problem(http_get(f"{url}/nobody/pools?month=2026-13"), 400, "invalid-month")
    assert_problem(http_get(f"{url}/nobody/pools?month=2026-1"), 400, "invalid-month")
    assert_problem(http_get(f"{url}/acme%0A/balance"), 400, "invalid-tenant-id")
    assert_problem(http_get(f"{url}/{'a' * 65}/balance"), 400, "invalid-tenant-id")
    assert_problem(http_get(f"{url}/a%20b/balance"), 400, "invalid-tenant-id")
    assert_problem(http_get(worker.url + "/v1/nothing-here"), 404, "http-404")
    assert_problem(posted := http_get(f"{url}/x/balance", method="POST"), 405, "http-405")
    assert posted[1]["Allow"] == "GET,HEAD"
    assert http_get(worker.url + "/healthz")[0] == 200  # the rest of the server is not the API's


def test_without_tokens_on_loopback_the_worker_says_once_that_the_api_is_open(worker: Worker) -> None:
    said = [line for line in worker.log.read_text().splitlines() if "unauthenticated" in line]
    assert len(said) == 1
    assert " INFO " in said[0]
    assert "loopback address 127.0.0.1" in said[0]


def test_the_openapi_document_is_served_as_kept(worker: Worker) -> None:
    status, headers, body = http_get(worker.url + "/v1/openapi.json")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert body == openapi_support.DOC
    assert body["openapi"].startswith("3.1")
