"""Issue 11 through real worker processes: nothing one message or one tenant sends can
stop, stall or corrupt the worker. Each test here failed on the code before the fix (the
worker exited, stalled its partition, or money moved that should not have); each now
ends with the worker alive and a good input after the hostile ones rated.

The unit-level proofs are in tests/test_wire.py (the two validation paths),
tests/test_containment.py (internal errors), tests/test_fuzz.py (hostile documents
through edge + core + task) and tests/core/test_wire_limits.py.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from tests.support import TEST_PARTITIONS, Out, Worker, cdr, collect, create_topics, event, fresh_worker, produce
from tests.test_fuzz import IDS, MONEY, STRINGS, TIMES, _setup, _templates
from tests.test_scenarios import Tenant, tenant_id

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    started = fresh_worker(kafka_bootstrap, "iso", tmp_path_factory.mktemp("isolation"))
    yield started
    started.stop()


def _letters(outs: list[Out], values: dict[bytes, str]) -> dict[str, dict[str, Any]]:
    """The dead letters of the given original values, by their names."""
    wanted = {base64.b64encode(v).decode(): name for v, name in values.items()}
    return {wanted[o.event["value_b64"]]: o.event for o in outs
            if o.topic == "dead-letters" and o.event.get("value_b64") in wanted}


def _hostile_then_good(t: Tenant, cases: dict[str, tuple[str, str, bytes, bytes]]) -> list[Out]:
    """Send ``cases`` (name → (reason, topic, key, value)), then a good call; wait for a
    dead letter per case, the call rated and its balance snapshot; check reasons and kept bytes."""
    t.send_raw([(topic, key, value) for _reason, topic, key, value in cases.values()])
    t.send(t.call("after", 60, start="2026-11-02T11:00:00Z"))
    values = {value: name for name, (_r, _t, _k, value) in cases.items()}
    outs = t.wait(lambda o: len(_letters(o, values)) == len(cases), t.all_rated("after"),
                  t.has("balance", caused_by=t.uid("after")))
    found = _letters(outs, values)
    assert {name: letter["reason"] for name, letter in found.items()} == {
        name: reason for name, (reason, _t, _k, _v) in cases.items()}
    assert t.rated(outs, "after")["status"] == "rated"
    t.worker.check_alive()
    return outs


def test_finding_1_deep_nesting_is_a_schema_dead_letter_and_the_worker_goes_on(worker: Worker) -> None:
    t = Tenant(worker, tenant_id("deep"))
    t.open(funds="10.00", users={"alice": ("US", ["PAYG"])})
    key = t.id.encode()

    def nested(item: dict[str, Any], field_name: str, depth: int) -> bytes:
        item = {k: v for k, v in item.items() if k != field_name}
        return orjson.dumps(item)[:-1] + f',"{field_name}":'.encode() + b"[" * depth + b"]" * depth + b"}"

    funds = event("funds_added", t.id, "e-f", command_id=f"{t.id}-deep-funds", amount="1.00", currency="USD",
                  purchased_at="2026-11-01T00:00:00Z")
    result = event("recharge_result", t.id, "e-r", request_id=f"{t.id}/recharge/1", status="succeeded",
                   amount="1.00", currency="USD", reason=None, processed_at="2026-11-01T00:00:00Z")
    cases = {
        "cdr-extra": ("schema", "cdrs", key, nested(t.call("x1", 60)[1], "x_extra", 2000)),
        "cdr-usage-id": ("schema", "cdrs", key, nested(t.call("x2", 60)[1], "usage_id", 1000)),
        "funds-extra": ("schema", "account-commands", key, nested(funds, "x_extra", 2000)),
        "result-extra": ("schema", "recharge-results", key, nested(result, "x_extra", 5000)),
    }
    outs = _hostile_then_good(t, cases)
    letters = _letters(outs, {v: n for n, (_r, _t, _k, v) in cases.items()})
    assert all("nested deeper than 32" in letter["message"] for letter in letters.values())


def test_finding_2_instants_past_the_range_are_schema_dead_letters_and_the_worker_goes_on(worker: Worker) -> None:
    t = Tenant(worker, tenant_id("range"))
    t.open(funds="10.00", users={"alice": ("US", ["PAYG"])})
    key = t.id.encode()
    ahead = t.call("early", 60)[1] | {"start_time": "0001-01-01T00:00:00+00:01"}
    beyond = t.call("late", 60)[1] | {"end_time": "9999-12-31T23:59:59-00:01"}
    funds = event("funds_added", t.id, "e-f", command_id=f"{t.id}-far", amount="1.00", currency="USD",
                  purchased_at="9999-12-31T00:00:00Z")
    result = event("recharge_result", t.id, "e-r", request_id=f"{t.id}/recharge/9", status="succeeded",
                   amount="1.00", currency="USD", reason=None, processed_at="9999-12-31T00:00:00Z")
    cases = {name: ("schema", topic, key, orjson.dumps(item)) for name, topic, item in (
        ("start-year-0", "cdrs", ahead), ("end-year-10000", "cdrs", beyond),
        ("purchase-9999", "account-commands", funds), ("processed-9999", "recharge-results", result))}
    outs = _hostile_then_good(t, cases)
    assert t.balance(outs, t.uid("after"))["balance"] == "9.99"  # neither lot landed; the good call paid 0.01


def test_finding_3_a_final_newline_moves_no_money_and_makes_no_second_tenant(worker: Worker) -> None:
    t = Tenant(worker, tenant_id("newline"))
    t.open(funds="10.00", users={"alice": ("US", ["PAYG"])})
    key = t.id.encode()
    funds = event("funds_added", t.id, "e-f", command_id=f"{t.id}-nl", amount="5.00\n", currency="USD",
                  purchased_at="2026-11-01T00:00:00Z")
    twin = event("tenant_upserted", f"{t.id}\n", "e-twin", command_id=f"{t.id}-twin", country="US",
                 currency="USD", billing_model="prepaid_credits")
    cases = {
        "amount": ("schema", "account-commands", key, orjson.dumps(funds)),
        "time": ("schema", "cdrs", key, orjson.dumps(t.call("t", 60)[1] | {"end_time": "2026-11-02T10:01:00Z\n"})),
        "destination": ("schema", "cdrs", key, orjson.dumps(t.call("d", 60, destination="+12125550123\n")[1])),
        "location": ("schema", "cdrs", key, orjson.dumps(t.call("l", 60)[1] | {"user_location": "US\n"})),
        "twin-tenant": ("bad_key", "account-commands", key + b"\n", orjson.dumps(twin)),
        "twin-payload": ("schema", "account-commands", key, orjson.dumps(twin | {"event_id": "e-twin-2"})),
    }
    outs = _hostile_then_good(t, cases)
    assert t.balance(outs, t.uid("after"))["balance"] == "9.99"  # the 5.00 never landed
    assert not [o for o in outs if o.event.get("tenant_id") == f"{t.id}\n"]
    assert not [o for o in outs if o.topic == "rated-cdrs" and o.event["tenant_id"] == t.id
                and o.event["usage_id"] in {t.uid("t"), t.uid("d"), t.uid("l")}]


def test_finding_4_a_command_id_of_the_request_form_is_refused_and_the_recharge_lands(worker: Worker) -> None:
    t = Tenant(worker, tenant_id("ids"))
    t.open(funds="1.00", users={"alice": ("US", ["PAYG"])})
    squatter = event("funds_added", t.id, "e-sq", command_id=f"{t.id}/recharge/1", amount="2.00", currency="USD",
                     purchased_at="2026-11-01T00:00:00Z")
    configure = event("auto_recharge_configured", t.id, "e-ar", command_id=f"{t.id}-ar", enabled=True,
                      trigger_amount="5.00", recharge_amount="10.00")
    t.send(("account-commands", squatter), ("account-commands", configure))
    outs = t.wait(t.has("recharge_request"), lambda o: bool(_letters(o, {orjson.dumps(squatter): "sq"})))
    assert _letters(outs, {orjson.dumps(squatter): "sq"})["sq"]["reason"] == "schema"
    (request,) = t.events(outs, "recharge_request")
    assert request["request_id"] == f"{t.id}/recharge/1"
    t.send(("recharge-results", event("recharge_result", t.id, "e-res", request_id=request["request_id"],
                                      status="succeeded", amount="10.00", currency="USD", reason=None,
                                      processed_at="2026-11-02T09:30:00Z")))
    outs = t.wait(t.has("recharge_succeeded"), t.has("balance", caused_by=request["request_id"]))
    assert t.balance(outs, request["request_id"])["balance"] == "11.00"
    assert not [o for o in outs if o.topic == "dead-letters" and o.event["tenant_id"] == t.id
                and o.event["reason"] == "id_conflict"]


def test_finding_7_commands_before_the_first_tick_are_timed_at_their_occurred_at(worker: Worker) -> None:
    # the module's worker has no ticks at all: every command comes "before the first tick";
    # a partition of its own, where no CDR moved the clock yet (the other tests keep to 0, 1)
    t = Tenant(worker, tenant_id("clock", partitions=(3,)))
    t.open(funds="1.00", users={"alice": ("US", ["PAYG"])})
    configure = event("auto_recharge_configured", t.id, "e-ar", at="2026-11-02T09:10:00Z", command_id=f"{t.id}-ar",
                      enabled=True, trigger_amount="5.00", recharge_amount="10.00")
    t.send(("account-commands", configure))
    outs = t.wait(t.has("recharge_request"))
    (request,) = t.events(outs, "recharge_request")
    assert request["occurred_at"] == "2026-11-02T09:10:00Z"  # not 1970-01-01T00:00:00Z
    t.send(t.call("next-day", 60, start="2026-11-02T23:00:00Z"))  # 14 h later: within the 24 h time-out
    outs = t.wait(t.all_rated("next-day"))
    assert t.events(outs, "recharge_failed") == []
    assert len(t.events(outs, "recharge_request")) == 1  # asked once: the card is charged once
    worker.check_alive()


def _corpus(tenants: list[str], n: int, seed: int) -> list[tuple[str, bytes | None, bytes | None]]:
    """``n`` hostile records drawn like tests/test_fuzz.py's, from a seeded generator."""
    rng = random.Random(seed)
    kinds = {"start_time": TIMES, "end_time": TIMES, "occurred_at": TIMES, "purchased_at": TIMES,
             "processed_at": TIMES, "amount": MONEY, "trigger_amount": MONEY, "usage_id": IDS, "command_id": IDS,
             "request_id": IDS, "user_id": IDS, "destination_number": STRINGS, "user_location": STRINGS}
    scalars = [None, True, 0, -1, 2**64, 1.5, "", "\n", *STRINGS[:12]]
    out: list[tuple[str, bytes | None, bytes | None]] = []
    for _ in range(n):
        tenant = rng.choice(tenants)
        topic, doc = rng.choice(_templates(tenant))
        doc = dict(doc)
        if topic == "cdrs":
            doc["usage_id"] = f"{tenant}-{rng.randrange(n)}"
        for _ in range(rng.choice([0, 0, 1, 1, 2])):
            name = rng.choice(sorted(doc))
            doc[name] = rng.choice(kinds[name]) if name in kinds and rng.random() < 0.7 else rng.choice(scalars)
        value: bytes | None = msgspec.json.encode(doc)
        shape = rng.randrange(12)
        if shape == 0:
            depth = rng.choice([33, 1000, 5000])
            value = value[:-1] + b',"x":' + b"[" * depth + b"]" * depth + b"}"
        elif shape == 1:
            value = rng.randbytes(rng.randrange(40))
        elif shape == 2:
            value = None
        key = tenant.encode() if rng.random() < 0.9 else rng.choice([b"\xff", b"", None, tenant.encode() + b"\n"])
        if key is None and value is None:
            key = b""  # Kafka takes neither missing
        out.append((topic, key, value))
    return out


def test_no_input_stops_the_worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The README's promise: 2,000 hostile records (every input topic, the fuzz test's
    values) through a real worker; it stays up, every CDR record gets exactly one
    outcome (a rated CDR or a dead letter), none is an internal error, and a good call
    sent after them is rated. Its own worker: the corpus moves its partitions' clocks to
    the year 8999."""
    worker = fresh_worker(kafka_bootstrap, "hostile", tmp_path_factory.mktemp("hostile"))
    try:
        tenants = ["t1", "t2", "t3"]
        setup = _setup()
        asyncio.run(produce(worker.bootstrap, worker.prefix, [
            (topic, item["tenant_id"].encode(), orjson.dumps(item)) for topic, item in setup]))
        corpus = _corpus(tenants, 2000, seed=11)
        asyncio.run(produce(worker.bootstrap, worker.prefix, corpus))
        good = cdr("t9", "sentinel", 60, start="8999-12-31T23:00:00Z", end="8999-12-31T23:01:00Z")  # never late
        asyncio.run(produce(worker.bootstrap, worker.prefix, [
            ("account-commands", b"t9", orjson.dumps(event("tenant_upserted", "t9", "e", command_id="t9-up",
                                                           country="US", currency="USD",
                                                           billing_model="postpaid_overage"))),
            ("account-commands", b"t9", orjson.dumps(event("licenses_assigned", "t9", "e2", command_id="t9-lic",
                                                           user_id="alice", usage_location="US",
                                                           capabilities=["PAYG"]))),
            ("cdrs", b"t9", orjson.dumps(good))]))
        cdr_records = sum(1 for topic, _k, _v in corpus if topic == "cdrs") + 1
        # then one record no worker can read on every partition of every topic the corpus
        # used: its dead letter says everything before it there was applied and committed
        topics = sorted({topic for topic, _k, _v in corpus})
        markers = {base64.b64encode(f"marker {topic} {p}".encode()).decode() for topic in topics
                   for p in range(TEST_PARTITIONS)}
        asyncio.run(_produce_to_partitions(worker.bootstrap, [
            (worker.prefix + topic, p, f"marker {topic} {p}".encode()) for topic in topics
            for p in range(TEST_PARTITIONS)]))

        def accounted(outs: list[Out]) -> bool:
            rated = sum(1 for o in outs if o.topic == "rated-cdrs")
            lettered = sum(1 for o in outs if o.topic == "dead-letters" and o.event["source_topic"].endswith("cdrs")
                           and o.event["value_b64"] not in markers)
            marked = {o.event["value_b64"] for o in outs if o.topic == "dead-letters"} >= markers
            return rated + lettered >= cdr_records and marked

        outs = collect(worker.bootstrap, worker.prefix, accounted, worker, timeout_s=120)
        rated = [o.event for o in outs if o.topic == "rated-cdrs"]
        letters = [o.event for o in outs if o.topic == "dead-letters" and o.event["value_b64"] not in markers]
        assert len(rated) + sum(1 for d in letters if d["source_topic"].endswith("cdrs")) == cdr_records
        assert [d for d in letters if d["reason"] == "internal_error"] == []
        assert any(r["usage_id"] == "sentinel" and r["status"] == "rated" for r in rated)
        worker.check_alive()
        log = worker.log.read_text()
        assert " ERROR " not in log, log[-3000:]
    finally:
        worker.stop()


async def _produce_to_partitions(bootstrap: str, records: list[tuple[str, int, bytes]]) -> None:
    """Send (topic, partition, value) records with no key, each to its partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for topic, partition, value in records:
            await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()


# --- finding 5: one big tenant ------------------------------------------------------------


def _partition(tenant: str) -> int:
    return (murmur2(tenant.encode()) & 0x7FFFFFFF) % TEST_PARTITIONS


async def _produce_all(bootstrap: str, prefix: str, items: list[tuple[str, dict[str, Any]]]) -> None:
    """Send JSON events keyed by their tenant, in order, without a round trip each."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20)
    await producer.start()
    try:
        sent = [await producer.send(prefix + topic, orjson.dumps(item), key=item["tenant_id"].encode())
                for topic, item in items]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def _cdr(tenant: str, usage_id: str, user: str) -> dict[str, Any]:
    return event("cdr", tenant, f"evt-{usage_id}", at="2026-11-02T10:01:00Z", usage_id=usage_id,
                 call_id=f"call-{usage_id}", conference_id=None, user_id=user, user_location="US",
                 call_type="user_out", number_type="geographic", caller_number="+14155550100",
                 destination_number="+12125550123", start_time="2026-11-02T10:00:00Z",
                 end_time="2026-11-02T10:01:00Z", duration_seconds=60)


class _Applied:
    """How far the worker got in a tenant's numbered commands (``{stem}{n}``), from the
    balances it made (one a unit, at most every ~2,000 commands); ``check`` fails when no
    further command was applied for ``stall_s``."""

    def __init__(self, stem: str, stall_s: float) -> None:
        self.stem, self.stall_s = stem, stall_s
        self.furthest, self.since, self.looked = -1, time.monotonic(), 0

    def check(self, seen: list[Out]) -> None:
        for out in seen[self.looked:]:
            caused_by = out.event.get("caused_by", "") if out.topic == "balances" else ""
            if caused_by.startswith(self.stem) and int(caused_by.removeprefix(self.stem)) > self.furthest:
                self.furthest, self.since = int(caused_by.removeprefix(self.stem)), time.monotonic()
        self.looked = len(seen)
        stalled = time.monotonic() - self.since
        assert stalled <= self.stall_s, (f"no {self.stem}… command applied for {stalled:.1f}s; the last one"
                                         f" applied: {self.stem}{self.furthest}")


def test_a_tenant_with_40000_users_of_200_character_ids_neither_stops_nor_stalls_its_partition(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """Users are records of their own: the big tenant's state stays small (inside it,
    40,000 users of 200-character ids passed 8 MiB and stopped the worker) and a licence
    command costs the same at its 40,000th user as at its first, so another tenant on
    the same partition, and the big tenant's own users, are rated."""
    big = "big"
    small = next(f"small{n}" for n in range(1000) if _partition(f"small{n}") == _partition(big))
    users = [f"{n:06d}-".ljust(200, "x") for n in range(40_000)]
    caps = ["MCOPSTN1", "MCOPSTN2", "MCOPSTNPP", "MCOMEETADD"]

    def upsert(tenant: str) -> tuple[str, dict[str, Any]]:
        return ("account-commands", event("tenant_upserted", tenant, f"e-{tenant}", command_id=f"{tenant}-up",
                                          country="US", currency="USD", billing_model="prepaid_credits"))

    def licence(tenant: str, n: int, user: str) -> tuple[str, dict[str, Any]]:
        return ("account-commands", event("licenses_assigned", tenant, f"e-{tenant}-{n}", command_id=f"{tenant}-lic{n}",
                                          user_id=user, usage_location="US", capabilities=caps))

    worker = fresh_worker(kafka_bootstrap, "iso", tmp_path / "w")
    try:
        commands = [upsert(small), licence(small, 0, "alice"), upsert(big),
                    *(licence(big, n, user) for n, user in enumerate(users))]
        asyncio.run(_produce_all(kafka_bootstrap, worker.prefix, commands))
        # sent right after them: a call of the other tenant, and one of the big tenant's
        # first user
        asyncio.run(_produce_all(kafka_bootstrap, worker.prefix, [
            ("cdrs", _cdr(small, "small-call", "alice")), ("cdrs", _cdr(big, "big-call-first", users[0]))]))
        last = f"{big}-lic{len(users) - 1}"
        applied = _Applied(f"{big}-lic", stall_s=60)

        def all_licensed(seen: list[Out]) -> bool:
            applied.check(seen)
            rated = {o.event["usage_id"] for o in seen if o.topic == "rated-cdrs"}
            return {"small-call", "big-call-first"} <= rated and any(
                o.topic == "balances" and o.event["caused_by"] == last for o in seen)

        # a deadline for a loaded 2-core machine (alone, the worker applies them in ~5 s); the
        # partition stalling is what fails it first
        collect(kafka_bootstrap, worker.prefix, all_licensed, worker, timeout_s=300)
        # every licence applied (inside the state, this many users were past 8 MiB): calls
        # of the other tenant and of the last user licensed
        asyncio.run(_produce_all(kafka_bootstrap, worker.prefix, [
            ("cdrs", _cdr(small, "small-call-after", "alice")), ("cdrs", _cdr(big, "big-call-last", users[-1]))]))
        after = {"small-call-after", "big-call-last"}
        seen = collect(kafka_bootstrap, worker.prefix, lambda seen: after <= {o.event.get("usage_id") for o in seen}
                       and any(o.topic == "balances" and o.event["caused_by"] == last for o in seen),
                       worker, timeout_s=30)
        worker.check_alive()
    finally:
        worker.stop()
    rated = {o.event["usage_id"]: o.event for o in seen if o.topic == "rated-cdrs"}
    calls = ("small-call", "big-call-first", "small-call-after", "big-call-last")
    assert {k: (v["status"], v["capability"]) for k, v in rated.items()} == dict.fromkeys(calls, ("rated", "MCOPSTN1"))
    assert [o.event for o in seen if o.topic == "dead-letters"] == []
    snapshot = next(o.event for o in seen if o.topic == "balances" and o.event["caused_by"] == last)
    sizes = {p["size_seconds"] for p in snapshot["pools"] if (p["capability"], p["scope"]) == ("MCOPSTN1", "domestic")}
    assert sizes == {len(users) * 3000 * 60}  # every user counted once


# --- review finding: inputs waiting before a partition's first tick --------------------------


def test_a_backlog_is_applied_after_a_tick_so_no_date_in_it_can_move_a_partition_to_8999(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """Inputs already on the topics when a worker starts used to be applied before the
    partition's first tick: at no wall clock at all, so a command with ``occurred_at`` in
    8999 expired its tenant's lots, and a CDR ending in 8999 moved the whole partition
    there (another tenant's lots expired, every later call ``late``). Now a partition's
    first unit begins with a tick of the broker's clock."""
    prefix = f"backlog{uuid.uuid4().hex[:8]}."
    create_topics(kafka_bootstrap, prefix)
    victim = "victim"
    attacker = next(f"attacker{n}" for n in range(1000) if _partition(f"attacker{n}") == _partition(victim))
    setup = []
    for tenant in (victim, attacker):
        setup += [
            ("account-commands", event("tenant_upserted", tenant, f"{tenant}-e1", command_id=f"{tenant}-up",
                                       country="US", currency="USD", billing_model="prepaid_credits")),
            ("account-commands", event("licenses_assigned", tenant, f"{tenant}-e2", command_id=f"{tenant}-lic",
                                       user_id="alice", usage_location="US", capabilities=["PAYG"])),
            ("account-commands", event("funds_added", tenant, f"{tenant}-e3", command_id=f"{tenant}-buy",
                                       amount="50.00", currency="USD", purchased_at="2026-11-01T00:00:00Z")),
        ]
    bogus_command = event("funds_added", attacker, "a-e4", at="8999-12-31T00:00:00Z", command_id="late-buy",
                          amount="1.00", currency="USD", purchased_at="2026-11-02T00:00:00Z")
    bogus_call = cdr(attacker, "to-8999", 60, start="8999-12-31T23:00:00Z", end="8999-12-31T23:01:00Z")
    asyncio.run(_produce_all(kafka_bootstrap, prefix, [*setup, ("account-commands", bogus_command),
                                                       ("cdrs", bogus_call)]))
    worker = Worker(kafka_bootstrap, prefix, tmp_path / "w", extra_env={"RATER_TICK_INTERVAL": "1"}).start()
    try:
        now = datetime.now(UTC)
        start = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        end = (now - timedelta(minutes=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
        asyncio.run(_produce_all(kafka_bootstrap, prefix, [("cdrs", cdr(victim, "today", 60, start=start, end=end))]))
        seen = collect(kafka_bootstrap, prefix, lambda outs: any(
            o.topic == "rated-cdrs" and o.event["usage_id"] == "today" for o in outs) and any(
            o.topic == "dead-letters" and o.event["reason"] == "future" for o in outs), worker, timeout_s=60)
        worker.check_alive()
    finally:
        worker.stop()
    letters = {(o.event["reason"], o.event["source_topic"]) for o in seen if o.topic == "dead-letters"}
    assert letters == {("future", f"{prefix}cdrs")}  # the call ending in 8999, nothing else
    assert [o.event for o in seen if o.event["type"] == "credits_expired"] == []
    (today,) = [o.event for o in seen if o.topic == "rated-cdrs" and o.event["usage_id"] == "today"]
    assert today["status"] == "rated"
    assert Decimal(today["balance_after"]) == Decimal("50.00") - Decimal(today["charge"]) > 0  # the lot is alive
