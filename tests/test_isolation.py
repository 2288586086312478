"""One tenant cannot stop or stall the worker for the others (SPEC §4, "Bad input"):
a real broker, one real ``rater worker`` process.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from tests.support import TEST_PARTITIONS, Out, collect, event, fresh_worker

pytestmark = pytest.mark.kafka


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

        def all_licensed(seen: list[Out]) -> bool:
            rated = {o.event["usage_id"] for o in seen if o.topic == "rated-cdrs"}
            return {"small-call", "big-call-first"} <= rated and any(
                o.topic == "balances" and o.event["caused_by"] == last for o in seen)

        collect(kafka_bootstrap, worker.prefix, all_licensed, worker, timeout_s=60)
        # every licence applied (inside the state, this many users were past 8 MiB): calls
        # of the other tenant and of the last user licensed
        asyncio.run(_produce_all(kafka_bootstrap, worker.prefix, [
            ("cdrs", _cdr(small, "small-call-after", "alice")), ("cdrs", _cdr(big, "big-call-last", users[-1]))]))
        after = {"small-call-after", "big-call-last"}
        seen = collect(kafka_bootstrap, worker.prefix,
                       lambda seen: after <= {o.event.get("usage_id") for o in seen}, worker, timeout_s=30)
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
