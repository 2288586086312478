"""The partition task (rater/shell/task.py): batches in, one writable unit out — no Kafka.

What the Kafka driver relies on: a batch's unit (outputs, tenant states, partition
record) is complete; restarting from any stored unit gives the same events and money as
running straight through; a record below the stored offsets is never applied twice.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rater import edge
from rater.catalog import rating_context
from rater.core.context import RatingContext
from rater.core.state import TenantState, check_invariants
from rater.core.times import parse_time_us
from rater.schemas import first_error
from rater.shell.task import TICKS, Batch, PartitionTask, Produced, tick_value
from rater.workload import Workload

from .support import cdr, event

CTX: RatingContext = rating_context()


def _records(items: list[tuple[str, dict[str, Any] | bytes]], start: int = 0) -> list[edge.Record]:
    """Records of one partition, each topic's offsets counting from ``start``."""
    offsets: dict[str, int] = {}
    out = []
    for topic, value in items:
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        key = None if topic == TICKS else (orjson.loads(raw).get("tenant_id") or "").encode()
        offset = offsets[topic] = offsets.get(topic, start - 1) + 1
        out.append(edge.Record(topic, 0, offset, key, raw, 1_790_000_000_000))
    return out


class Store:
    """What the driver keeps: the latest state per tenant and the partition record."""

    def __init__(self) -> None:
        self.states: dict[str, bytes] = {}
        self.partition_record: bytes | None = None
        self.outputs: list[Produced] = []

    def write(self, batch: Batch) -> None:
        self.states.update(batch.states)
        self.partition_record = batch.partition_record
        self.outputs.extend(batch.outputs)

    def task(self) -> PartitionTask:
        return PartitionTask(0, CTX, self.states.get, partition_record=self.partition_record,
                             tenants=list(self.states.items()), topic_prefix="p-")


def _payloads(outputs: list[Produced], topic: str | None = None) -> list[dict[str, Any]]:
    return [orjson.loads(o.value) for o in outputs if topic is None or o.topic == topic]


def _setup(tenant: str = "t1") -> list[tuple[str, dict[str, Any]]]:
    return [
        ("account-commands", event("tenant_upserted", tenant, "e1", command_id=f"{tenant}-up", country="US",
                                   currency="USD", billing_model="prepaid_credits")),
        ("account-commands", event("licenses_assigned", tenant, "e2", command_id=f"{tenant}-lic", user_id="alice",
                                   usage_location="US", capabilities=["PAYG"])),
        ("account-commands", event("funds_added", tenant, "e3", command_id=f"{tenant}-buy", amount="5.00",
                                   currency="USD", purchased_at="2026-11-01T00:00:00Z")),
    ]


def test_a_batch_is_one_unit_outputs_in_order_one_balance_per_tenant_states_and_offsets() -> None:
    store = Store()
    items = [*_setup(), ("cdrs", cdr("t1", "c1", 60)), ("cdrs", cdr("t1", "c2", 120))]
    batch = store.task().process(_records(items))
    assert (batch.applied, batch.skipped) == (5, 0)
    kinds = [p["type"] for p in _payloads(batch.outputs)]
    assert kinds == ["rated_cdr", "rated_cdr", "balance"]  # one snapshot per tenant per batch, last
    for payload in _payloads(batch.outputs):
        assert first_error(payload["type"], payload) is None
    (balance,) = _payloads(batch.outputs, "balances")
    assert balance["caused_by"] == "c2"
    state = TenantState.from_dict(orjson.loads(batch.states["t1"]))
    check_invariants(state)
    assert state.balance_minor == 500 - sum(
        int(p["charge"].replace(".", "")) for p in _payloads(batch.outputs, "rated-cdrs"))
    record = orjson.loads(batch.partition_record)
    assert record["offsets"] == {"account-commands": 3, "cdrs": 2}
    assert record["now_us"] == parse_time_us("2026-11-02T10:30:00Z")  # the CDRs' end time


def test_records_below_the_stored_offsets_are_never_applied_again() -> None:
    store = Store()
    records = _records([*_setup(), ("cdrs", cdr("t1", "c1", 60))])
    store.write(store.task().process(records))
    again = store.task().process(records)  # the consumer's committed offset lagged: a replay
    assert (again.applied, again.skipped, again.outputs, again.states) == (0, 4, [], {})


def test_only_an_accepted_cdr_moves_the_partition_clock() -> None:
    task = Store().task()
    task.process(_records([*_setup(), ("cdrs", cdr("t1", "c1", 60, end="2026-11-02T10:01:00Z"))]))
    before = task.clock.now_us
    stranger = cdr("t1", "c2", 60, start="2026-11-03T10:00:00Z", end="2026-11-03T10:01:00Z", user_id="bob")
    duplicate = cdr("t1", "c1", 60, end="2026-11-02T10:01:00Z")
    batch = task.process(_records([("cdrs", stranger), ("cdrs", duplicate)], start=1))
    assert [p["reason"] for p in _payloads(batch.outputs, "dead-letters")] == ["unknown_user"]
    assert [p["status"] for p in _payloads(batch.outputs, "rated-cdrs")] == ["duplicate"]
    assert task.clock.now_us == before


def test_ticks_bring_due_work_lot_expiry_and_a_cdr_far_past_the_tick_is_future() -> None:
    store = Store()
    old = event("funds_added", "t1", "e9", command_id="old-lot", amount="1.00", currency="USD",
                purchased_at="2025-11-20T00:00:00Z")
    store.write(store.task().process(_records([*_setup(), ("account-commands", old),
                                               (TICKS, tick_value(parse_time_us("2026-11-19T00:00:00Z")))])))
    assert _payloads(store.outputs, "notifications") == []
    task = store.task()
    batch = task.process(_records([(TICKS, tick_value(parse_time_us("2026-11-20T00:00:00Z")))], start=1))
    (expired,) = _payloads(batch.outputs, "notifications")
    assert (expired["type"], expired["lot_id"], expired["amount"]) == ("credits_expired", "old-lot", "1.00")
    assert "t1" in batch.states
    far = cdr("t1", "c9", 60, start="2026-11-22T00:00:00Z", end="2026-11-22T00:01:00Z")
    batch = task.process(_records([("cdrs", far)]))
    (dead,) = _payloads(batch.outputs, "dead-letters")
    assert (dead["reason"], dead["source_topic"]) == ("future", "p-cdrs")
    assert first_error("dead_letter", dead) is None


def test_a_bad_tick_is_a_dead_letter_and_the_partition_goes_on() -> None:
    task = Store().task()
    batch = task.process(_records([(TICKS, b"{nope"), *_setup()]))
    (dead,) = _payloads(batch.outputs, "dead-letters")
    assert (dead["reason"], dead["source_topic"]) == ("schema", "p-rater-ticks")
    assert "t1" in batch.states


@pytest.fixture(scope="module")
def stream() -> list[edge.Record]:
    workload = Workload(6, 40, seed=7)
    items: list[tuple[str, dict[str, Any] | bytes]] = [*workload.setup(), *(("cdrs", e) for e in workload.cdrs(400))]
    return _records(items)


def _run(records: list[edge.Record], cuts: list[int], restart: bool) -> Store:
    store = Store()
    task = store.task()
    bounds = [0, *sorted(set(cuts)), len(records)]
    for lo, hi in itertools.pairwise(bounds):
        if restart:
            task = store.task()  # a new worker from the stored unit only
        store.write(task.process(records[lo:hi]))
    return store


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 1000), max_size=6), restart=st.booleans())
def test_batches_and_restarts_anywhere_give_the_same_events_and_money(stream: list[edge.Record], cuts: list[int],
                                                                      restart: bool) -> None:
    straight = _run(stream, [], restart=False)
    split = _run(stream, [c % (len(stream) + 1) for c in cuts], restart)
    not_balances = [(o.topic, o.key, o.value) for o in straight.outputs if o.topic != "balances"]
    assert [(o.topic, o.key, o.value) for o in split.outputs if o.topic != "balances"] == not_balances
    assert split.states == straight.states
    # the latest balance snapshot of each tenant is the same (the topic is compacted)
    latest = {o.key: orjson.loads(o.value)["balance"] for o in split.outputs if o.topic == "balances"}
    assert latest == {o.key: orjson.loads(o.value)["balance"] for o in straight.outputs if o.topic == "balances"}
