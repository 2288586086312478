"""The partition task (rater/shell/task.py): batches in, one writable unit out — no Kafka.

What the Kafka driver relies on: a batch's unit (outputs, tenant states, partition
record) is complete; restarting from any stored unit gives the same events and money as
running straight through; a record below the stored offsets is never applied twice.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Generator
from typing import Any, TypeVar, cast

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rater import edge
from rater.catalog import rating_context
from rater.core import usage
from rater.core.context import RatingContext
from rater.core.money import parse_decimal
from rater.core.state import TenantState, check_invariants
from rater.core.times import parse_time_us
from rater.schemas import first_error
from rater.shell.task import (
    PARTITION_KEY,
    PURGE_PREFIX,
    TICKS,
    Batch,
    MemoryStore,
    PartitionTask,
    Produced,
    id_key,
    month_usage,
    purge_key,
    tick_value,
    usage_of_record,
    usage_record_key,
    usage_value,
    user_key,
)
from rater.workload import Workload

from .support import cdr, event

CTX: RatingContext = rating_context()
T = TypeVar("T")


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


class Store(MemoryStore):
    """What the driver keeps (the latest record per changelog key), and every output."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: list[Produced] = []

    def write(self, batch: Batch) -> None:
        super().write(batch)
        self.outputs.extend(batch.outputs)

    def task(self) -> PartitionTask:
        return PartitionTask(0, CTX, self, topic_prefix="p-")


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
    store = Store()
    task = store.task()
    store.write(task.process(_records([*_setup(), ("cdrs", cdr("t1", "c1", 60, end="2026-11-02T10:01:00Z"))])))
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
    while [k for k in store.records if k.startswith(PURGE_PREFIX)]:  # forgotten months: until they are gone
        store.write(task.process([]))
    return store


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 1000), max_size=6), restart=st.booleans())
def test_batches_and_restarts_anywhere_give_the_same_events_and_money(stream: list[edge.Record], cuts: list[int],
                                                                      restart: bool) -> None:
    straight = _run(stream, [], restart=False)
    split = _run(stream, [c % (len(stream) + 1) for c in cuts], restart)
    not_balances = [(o.topic, o.key, o.value) for o in straight.outputs if o.topic != "balances"]
    assert [(o.topic, o.key, o.value) for o in split.outputs if o.topic != "balances"] == not_balances
    assert split.records == straight.records  # tenant states, id records, partition record
    # the latest balance snapshot of each tenant is the same (the topic is compacted)
    latest = {o.key: orjson.loads(o.value)["balance"] for o in split.outputs if o.topic == "balances"}
    assert latest == {o.key: orjson.loads(o.value)["balance"] for o in straight.outputs if o.topic == "balances"}


def test_a_batch_made_in_slices_is_the_batch_made_at_once(stream: list[edge.Record]) -> None:
    records = stream[:300]
    expected = Store().task().process(records)
    work = Store().task().slices(records, 0.0)  # a slice of no time: it yields before every record and tenant
    turns = 0

    def count() -> None:
        nonlocal turns
        turns += 1

    batch = _run_slices(work, count)
    assert turns >= len(records)
    assert batch == expected


def _run_slices(work: Generator[None, None, T], between: Callable[[], None]) -> T:
    """Run ``work`` to its end, calling ``between`` at each of its yields (where the
    driver's event loop would run other work)."""
    while True:
        try:
            next(work)
        except StopIteration as done:
            return cast(T, done.value)
        between()


def test_a_tick_that_makes_many_tenants_due_yields_between_them_and_makes_the_same_batch() -> None:
    """Lots bought at one moment expire together: the tick past that moment is every such
    tenant's time work. It is cut into slices (the driver's event loop — heartbeats, the
    API — runs between them), and makes the batch made at once."""
    workload = Workload(40, 80, seed=11)  # every tenant's lot bought at one instant
    setup = _records(list(workload.setup()))
    far_us = parse_time_us("2028-01-01T00:00:00Z")  # past every lot's expiry
    far = [(TICKS, tick_value(far_us))]
    stores = Store(), Store()
    for store in stores:
        store.write(store.task().process(setup))
    expected = stores[0].task().process(_records(far, start=1))
    assert len(_payloads(expected.outputs, "balances")) == 40  # every tenant did its time work
    task = stores[1].task()
    work = task.slices(_records(far, start=1), 0.0)
    mid_tick = 0  # yields with the tick applied and tenants still due

    def count() -> None:
        nonlocal mid_tick
        mid_tick += task.clock.now_us == far_us and bool(task._due) and task._due[0][0] <= far_us

    batch = _run_slices(work, count)
    assert mid_tick >= 39  # a slice a tenant
    assert batch == expected


def _tenant_records(store: Store) -> dict[bytes, bytes]:
    return {k: v for k, v in store.records.items() if not k.startswith(b"!") and k != PARTITION_KEY}


def test_ids_are_records_of_their_own_so_a_state_write_does_not_grow_with_the_calls() -> None:
    store = Store()
    task = store.task()
    store.write(task.process(_records(_setup())))
    store.write(task.process(_records([("cdrs", cdr("t1", "c0", 60))])))
    small = len(store.records[b"t1"])
    many = [("cdrs", cdr("t1", f"c{n}", 60)) for n in range(1, 2001)]
    batch = task.process(_records(many, start=1))
    store.write(batch)
    assert len(batch.states["t1"]) <= small + 20  # the pools' counters grew a digit or two
    assert {k for k in batch.ids if k.startswith(b"!")} == {id_key("t1", f"u/2026-11/c{n}") for n in range(1, 2001)}
    assert sum(k.startswith(b"!t1/u/") for k in store.records) == 2001


def test_a_cdr_sent_again_after_a_restart_finds_its_id_in_the_store_not_in_the_state() -> None:
    store = Store()
    store.write(store.task().process(_records([*_setup(), ("cdrs", cdr("t1", "c1", 60))])))
    assert b"c1" not in store.records[b"t1"]
    task = store.task()  # a new worker: the id is only in the store
    batch = task.process(_records([("cdrs", cdr("t1", "c1", 60)), ("cdrs", cdr("t1", "c1", 61)),
                                   ("account-commands", _setup()[2][1])], start=1))
    assert [p["status"] for p in _payloads(batch.outputs, "rated-cdrs")] == ["duplicate"]
    assert [p["reason"] for p in _payloads(batch.outputs, "dead-letters")] == ["id_conflict"]
    assert _payloads(batch.outputs, "balances") == []  # the funds command repeated: nothing moved
    state = TenantState.from_dict(orjson.loads(store.records[b"t1"]))
    assert state.balance_minor == 500 - int(_payloads(store.outputs, "rated-cdrs")[0]["charge"].replace(".", ""))
    assert not [k for k in batch.ids if k.startswith(b"!")]  # no id written


def test_a_month_past_its_grace_loses_its_ids_by_tombstones_a_bounded_number_per_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rater.shell.task.PURGE_PER_BATCH", 8)  # 7 ids and the month itself
    store = Store()
    store.write(store.task().process(_records(_setup())))
    store.write(store.task().process(_records([("cdrs", cdr("t1", f"c{n:02}", 60)) for n in range(20)])))
    november = sorted(k for k in store.records if k.startswith(b"!t1/u/2026-11/"))
    assert len(november) == 20
    # November's grace ends 7 days after it: the tenant's first input after that forgets November
    december = cdr("t1", "d1", 60, start="2026-12-08T00:00:00Z", end="2026-12-08T00:01:00Z")
    batch = store.task().process(_records([(TICKS, tick_value(parse_time_us("2026-12-08T00:00:00Z"))),
                                           ("cdrs", december)], start=20))
    assert batch.ids[purge_key("t1", "2026-11")] == b""  # queued; deleting starts with the next batch
    assert not [k for k, v in batch.ids.items() if v is None and k.startswith(b"!")]
    store.write(batch)
    deleted: list[bytes] = []
    while [k for k in store.records if k.startswith(PURGE_PREFIX)]:
        batch = store.task().process([])  # every batch, even an empty one, purges (a restart between)
        gone = [k for k, v in batch.ids.items() if v is None and k.startswith(b"!")]
        assert len(gone) <= 7
        deleted += gone
        store.write(batch)
    assert sorted(deleted) == november  # each id once, none of another month
    assert [k for k in store.records if k.startswith(b"!t1/u/")] == [id_key("t1", "u/2026-12/d1")]
    assert store.records.get(id_key("t1", "a/t1-buy")) is not None  # command ids are kept


def test_the_purge_goes_on_from_its_cursor_and_looks_at_many_empty_months_within_its_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rater.shell.task.PURGE_PER_BATCH", 10)
    store = Store()
    for n in range(30):  # thirty tenants' forgotten months with no ids left, one with ids
        store.records[purge_key(f"t{n:02}", "2026-10")] = b""
    store.records.update({id_key("zz", f"u/2026-10/c{n}"): b"d" for n in range(5)})
    store.records[purge_key("zz", "2026-10")] = id_key("zz", "u/2026-10/c1")  # c0 and c1 are gone already
    del store.records[id_key("zz", "u/2026-10/c0")], store.records[id_key("zz", "u/2026-10/c1")]
    batches = 0
    while [k for k in store.records if k.startswith(PURGE_PREFIX)]:
        batch = store.task().process([])
        assert sum(1 for _ in batch.ids) <= 10
        store.write(batch)
        batches += 1
    assert batches == 4
    assert not [k for k in store.records if k.startswith(b"!zz/")]


def test_a_forgotten_month_without_stored_ids_queues_no_purge() -> None:
    store = Store()
    # a tenant made before any tick: its clock's months (1969-12, 1970-01) are forgotten
    # at its first call, and they hold no ids
    store.write(store.task().process(_records(_setup())))
    batch = store.task().process(_records([("cdrs", cdr("t1", "c1", 60))]))
    assert not [k for k in batch.ids if k.startswith(PURGE_PREFIX)]
    store.write(batch)
    # November's ids written and forgotten in one batch never reach the store
    december = cdr("t1", "d1", 60, start="2026-12-08T00:00:00Z", end="2026-12-08T00:01:00Z")
    batch = store.task().process(_records([("cdrs", cdr("t1", "c2", 60)),
                                           (TICKS, tick_value(parse_time_us("2026-12-08T00:00:00Z"))),
                                           ("cdrs", december)], start=1))
    assert purge_key("t1", "2026-11") in batch.ids  # c1 is in the store
    assert id_key("t1", "u/2026-11/c2") not in batch.ids
    store.write(batch)
    while [k for k in store.records if k.startswith(PURGE_PREFIX)]:
        store.write(store.task().process([]))
    assert [k for k in store.records if k.startswith(b"!t1/u/")] == [id_key("t1", "u/2026-12/d1")]


def test_a_version_2_partition_record_s_months_to_purge_become_purge_records() -> None:
    store = Store()
    store.write(store.task().process(_records([*_setup(), ("cdrs", cdr("t1", "c1", 60))])))
    record = orjson.loads(store.records[PARTITION_KEY])
    assert record["v"] == 3
    # what the previous version wrote: the months still to purge inside the partition record
    store.records[PARTITION_KEY] = orjson.dumps({**record, "v": 2, "purging": [["t1", "2026-11"]]})
    batch = store.task().process([])
    assert batch.ids == {purge_key("t1", "2026-11"): b""}
    assert orjson.loads(batch.partition_record)["v"] == 3
    store.write(batch)
    while [k for k in store.records if k.startswith(PURGE_PREFIX)]:
        store.write(store.task().process([]))
    assert not [k for k in store.records if k.startswith(b"!t1/u/")]


def test_before_its_first_tick_a_partition_applies_commands_at_their_occurred_at_never_at_1970() -> None:
    # issue 11, finding 7: a recharge requested "at 1970" timed out at the next input
    # with a real time and was requested again — a card charged twice
    store = Store()
    items = [
        ("account-commands", event("tenant_upserted", "t1", "e1", at="2026-11-05T09:00:00Z", command_id="up",
                                   country="US", currency="USD", billing_model="prepaid_credits")),
        ("account-commands", event("licenses_assigned", "t1", "e2", at="2026-11-05T09:01:00Z", command_id="lic",
                                   user_id="alice", usage_location="US", capabilities=["PAYG"])),
        ("account-commands", event("funds_added", "t1", "e3", at="2026-11-05T09:02:00Z", command_id="buy",
                                   amount="1.00", currency="USD", purchased_at="2026-11-05T09:02:00Z")),
        ("account-commands", event("auto_recharge_configured", "t1", "e4", at="2026-11-05T09:05:00Z",
                                   command_id="ar", enabled=True, trigger_amount="5.00", recharge_amount="10.00")),
    ]
    sent_ms = parse_time_us("2026-11-05T09:06:00Z") // 1000  # the producer's clock (the records' Kafka timestamps)
    first = store.task().process([dataclasses.replace(r, timestamp_ms=sent_ms) for r in _records(items)])
    store.write(first)
    (request,) = _payloads(first.outputs, "recharge-requests")
    (balance,) = _payloads(first.outputs, "balances")
    assert request["occurred_at"] == balance["occurred_at"] == "2026-11-05T09:05:00Z"
    state = TenantState.from_dict(orjson.loads(first.states["t1"]))
    requested_at = parse_time_us("2026-11-05T09:05:00Z")
    assert (state.open_month, state.auto_recharge.pending_since_us) == ("2026-11", requested_at)
    assert orjson.loads(first.partition_record)["now_us"] == 0  # the partition's clock is not moved by commands
    call = cdr("t1", "c1", 60, start="2026-11-05T10:00:00Z", end="2026-11-05T10:01:00Z")
    later = store.task().process(_records([("cdrs", call)]))
    assert [p["type"] for p in _payloads(later.outputs, "notifications")] == []  # no time-out, no second request
    assert _payloads(later.outputs, "recharge-requests") == []
    # a re-sent command with another occurred_at is the same command: counted, nothing changes
    resent = {**items[2][1], "occurred_at": "2026-11-06T00:00:00Z"}
    again = store.task().process(_records([("account-commands", resent)], start=4))
    assert (again.applied, _payloads(again.outputs)) == (1, [])  # no id_conflict dead letter, no balance
    # a command claiming to come from the year 8999 counts at most a day past its record's
    # Kafka timestamp (the broker keeps those within an hour of its clock): no lot expires
    bogus = event("tenant_upserted", "t1", "e9", at="8999-12-31T00:00:00Z", command_id="up-9", country="US",
                  currency="USD", billing_model="prepaid_credits")
    (record,) = _records([("account-commands", bogus)], start=5)
    future = store.task().process([dataclasses.replace(record, timestamp_ms=sent_ms)])
    # a day passed (the request made at 09:05 the day before times out), no more: no lot expired
    assert [p["type"] for p in _payloads(future.outputs)] == ["recharge_failed", "balance"]
    (snapshot,) = _payloads(future.outputs, "balances")
    assert snapshot["occurred_at"] == "2026-11-06T09:06:00Z"


# --- users as records of their own ----------------------------------------------------------------


def _licence(tenant: str, command_id: str, user: str, location: str, *caps: str) -> tuple[str, dict[str, Any]]:
    return ("account-commands", event("licenses_assigned", tenant, f"e-{command_id}", command_id=command_id,
                                      user_id=user, usage_location=location, capabilities=list(caps)))


def _removal(tenant: str, command_id: str, user: str) -> tuple[str, dict[str, Any]]:
    return ("account-commands", event("user_removed", tenant, f"e-{command_id}", command_id=command_id,
                                      user_id=user))


def _stored_users(store: Store, tenant: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    prefix = user_key(tenant, "")
    return {k[len(prefix):].decode(): (v_loc, tuple(v_caps)) for k, v in store.records.items()
            if k.startswith(prefix) for v_loc, v_caps in [orjson.loads(v)]}


def _counts(users: dict[str, tuple[str, tuple[str, ...]]]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for location, caps in users.values():
        for cap in caps:
            counts[(cap, location)] = counts.get((cap, location), 0) + 1
    return counts


def test_a_user_is_a_record_of_its_own_written_once_when_assigned_and_the_state_does_not_grow_with_users() -> None:
    store = Store()
    task = store.task()
    batch = task.process(_records([*_setup(), _licence("t1", "lic", "user-0", "US", "MCOPSTN1", "MCOPSTNPP")]))
    assert batch.users == {user_key("t1", "alice"): b'["US",["PAYG"]]',
                           user_key("t1", "user-0"): b'["US",["MCOPSTN1","MCOPSTNPP"]]'}
    assert (user_key("t1", "alice"), b'["US",["PAYG"]]') in batch.changelog()
    store.write(batch)
    assert b"alice" not in store.records[b"t1"]
    batch = task.process(_records([("cdrs", cdr("t1", "c1", 60)), ("cdrs", cdr("t1", "c2", 60))]))
    assert batch.users == {}  # calls read the user; nothing to write
    store.write(batch)
    small = len(store.records[b"t1"])
    many = [_licence("t1", f"lic{n}", f"user-{n}", "US", "MCOPSTN1", "MCOPSTNPP") for n in range(1, 2001)]
    batch = task.process(_records(many, start=4))
    assert len(batch.users) == 2000
    store.write(batch)
    assert len(store.records[b"t1"]) <= small + 10  # two counts grew to four digits
    state = TenantState.from_dict(orjson.loads(store.records[b"t1"]))
    assert state.licences == {("PAYG", "US"): 1, ("MCOPSTN1", "US"): 2001, ("MCOPSTNPP", "US"): 2001}
    assert _counts(_stored_users(store, "t1")) == state.licences


def test_a_restart_between_batches_reads_users_back_from_the_store() -> None:
    store = Store()
    store.write(store.task().process(_records([*_setup(), _licence("t1", "lic-bob", "bob", "US", "MCOPSTN1")])))
    task = store.task()  # a new worker: the users are only in the store
    batch = task.process(_records([("cdrs", cdr("t1", "c1", 60)), ("cdrs", cdr("t1", "c2", 60, user_id="bob")),
                                   ("cdrs", cdr("t1", "c3", 60, user_id="carol"))]))
    assert [(p["usage_id"], p["status"]) for p in _payloads(batch.outputs, "rated-cdrs")] == [
        ("c1", "rated"), ("c2", "rated")]
    assert [p["reason"] for p in _payloads(batch.outputs, "dead-letters")] == ["unknown_user"]
    (alice, bob) = _payloads(batch.outputs, "rated-cdrs")
    assert (alice["capability"], bob["capability"]) == ("MCOPSTNPP", "MCOPSTN1")  # PAYG: credits paid
    store.write(batch)
    del store.records[user_key("t1", "bob")]  # the record is what the rater knows of bob
    batch = store.task().process(_records([("cdrs", cdr("t1", "c4", 60, user_id="bob"))], start=3))
    assert [p["reason"] for p in _payloads(batch.outputs, "dead-letters")] == ["unknown_user"]


def test_a_removed_user_stays_known_with_no_licences() -> None:
    store = Store()
    store.write(store.task().process(_records(_setup())))
    batch = store.task().process(_records([_removal("t1", "rm1", "alice"), _removal("t1", "rm2", "nobody")], start=3))
    assert batch.users == {user_key("t1", "alice"): b'["US",[]]'}  # never licensed: stays unknown
    store.write(batch)
    assert TenantState.from_dict(orjson.loads(store.records[b"t1"])).licences == {}
    batch = store.task().process(_records([("cdrs", cdr("t1", "c1", 60)),
                                           ("cdrs", cdr("t1", "c2", 60, user_id="nobody"))]))
    assert [(p["status"], p["reason"]) for p in _payloads(batch.outputs, "rated-cdrs")] == [("blocked", "no_license")]
    assert [p["reason"] for p in _payloads(batch.outputs, "dead-letters")] == ["unknown_user"]


def test_a_forgotten_month_s_purge_never_touches_user_records() -> None:
    store = Store()
    store.write(store.task().process(_records([*_setup(), _licence("t1", "l2", "2026-11", "US", "PAYG"),
                                               ("cdrs", cdr("t1", "c1", 60))])))
    december = cdr("t1", "d1", 60, start="2026-12-08T00:00:00Z", end="2026-12-08T00:01:00Z")
    store.write(store.task().process(_records([(TICKS, tick_value(parse_time_us("2026-12-08T00:00:00Z"))),
                                               ("cdrs", december)], start=1)))
    while [k for k in store.records if k.startswith(PURGE_PREFIX)]:
        store.write(store.task().process([]))
    assert id_key("t1", "u/2026-11/c1") not in store.records
    assert set(_stored_users(store, "t1")) == {"alice", "2026-11"}


@settings(max_examples=20, deadline=None)
@given(commands=st.lists(st.tuples(st.sampled_from(("u1", "u2", "u3", "u4", "u5")),
                                   st.sampled_from(("US", "GB", "DE")),
                                   st.lists(st.sampled_from(("MCOPSTN1", "MCOPSTN2", "PAYG", "MCOPSTNPP")),
                                            max_size=3, unique=True),
                                   st.booleans()), min_size=1, max_size=60),
       cuts=st.lists(st.integers(0, 60), max_size=6))
def test_licence_counts_stay_right_across_assigns_reassigns_removals_and_restarts(
        commands: list[tuple[str, str, list[str], bool]], cuts: list[int]) -> None:
    items = [_licence("t1", f"c{n}", user, location, *caps) if not remove else _removal("t1", f"c{n}", user)
             for n, (user, location, caps, remove) in enumerate(commands)]
    records = _records([*_setup(), *items])
    store = Store()
    bounds = [0, *sorted({c % len(records) + 1 for c in cuts}), len(records)]  # the tenant is in the first
    for lo, hi in itertools.pairwise(bounds):
        store.write(store.task().process(records[lo:hi]))  # a restart between every two batches
        state = TenantState.from_dict(orjson.loads(store.records[b"t1"]))
        assert state.licences == _counts(_stored_users(store, "t1"))
    expected: dict[str, tuple[str, tuple[str, ...]]] = {"alice": ("US", ("PAYG",))}
    for user, location, caps, remove in commands:
        if not remove:
            expected[user] = (location, tuple(dict.fromkeys(caps)))
        elif user in expected:
            expected[user] = (expected[user][0], ())
    assert _stored_users(store, "t1") == expected


def test_a_version_3_state_s_users_become_records_at_the_tenant_s_next_write() -> None:
    store = Store()
    store.write(store.task().process(_records([*_setup(), _licence("t1", "l2", "bob", "GB", "MCOPSTN1"),
                                               ("cdrs", cdr("t1", "c1", 60))])))
    # what version 3 wrote: the users inside the state, no licence counts, no user records
    current = orjson.loads(store.records[b"t1"])
    users = {uid: [loc, list(caps)] for uid, (loc, caps) in _stored_users(store, "t1").items()}
    old = {k: v for k, v in current.items() if k != "licences"} | {"v": 3, "users": users}
    for key in [k for k in store.records if k.startswith(user_key("t1", ""))]:
        del store.records[key]
    store.records[b"t1"] = orjson.dumps(old)
    task = store.task()
    loaded = task._state_of("t1")  # decoded from the store (a task starting keeps no state)
    assert loaded is not None
    assert loaded.licences == {("PAYG", "US"): 1, ("MCOPSTN1", "GB"): 1}
    batch = task.process(_records([("cdrs", cdr("t1", "c2", 60))], start=1))
    assert [p["status"] for p in _payloads(batch.outputs, "rated-cdrs")] == ["rated"]
    assert batch.users == {user_key("t1", "alice"): b'["US",["PAYG"]]',
                           user_key("t1", "bob"): b'["GB",["MCOPSTN1"]]'}
    store.write(batch)
    written = orjson.loads(store.records[b"t1"])
    assert (written["v"], written["licences"], "users" in written) == (4, current["licences"], False)
    batch = store.task().process(_records([("cdrs", cdr("t1", "c3", 60, user_id="bob", user_location="GB",
                                                                  destination="+442071234567"))], start=2))
    assert [p["status"] for p in _payloads(batch.outputs, "rated-cdrs")] == ["rated"]
    assert batch.users == {}


def test_the_deadline_heap_does_not_grow_with_deadlines_that_moved() -> None:
    # review finding: a lot bought "earlier" moves the tenant's deadline forward, the call
    # that empties it moves it back; each move used to leave an entry for up to a year
    store = Store()
    store.write(store.task().process(_records(_setup())))
    items: list[tuple[str, dict[str, Any] | bytes]] = []
    for n in range(1_500):
        items.append(("account-commands", event("funds_added", "t1", f"f{n}", command_id=f"early-{n}",
                                                amount="0.01", currency="USD",
                                                purchased_at=f"2026-10-{1 + n % 28:02d}T00:00:00Z")))
        items.append(("cdrs", cdr("t1", f"c{n}", 60)))
    task = store.task()
    commands = _records([i for i in items if i[0] == "account-commands"], start=3)
    calls = _records([i for i in items if i[0] == "cdrs"])
    batch = task.process([r for pair in zip(commands, calls, strict=True) for r in pair])
    assert len(_payloads(batch.outputs, "rated-cdrs")) == 1_500
    assert len(task._due) <= 2 * len(task._scheduled) + 1_001


def _summed(outputs: list[Produced]) -> dict[tuple[str, str], usage.MonthUsage]:
    """What the rated CDRs (less duplicates) add up to, per tenant and month."""
    sums: dict[tuple[str, str], usage.MonthUsage] = {}
    for rated in _payloads(outputs, "rated-cdrs"):
        if rated["status"] == "duplicate":
            continue
        bucket = usage.bucket_key(rated["capability"], rated["scope"], rated["destination_country"])
        month = sums.setdefault((rated["tenant_id"], rated["billing_month"]), {})
        month[bucket] = usage.add(month.get(bucket), (
            1, rated["duration_seconds"], sum(p["seconds"] for p in rated["pool_usage"]), rated["credit_seconds"],
            rated["charged_seconds"], parse_decimal(rated["charge"], 2), parse_decimal(rated["uncollected"], 2)))
    return sums


@settings(max_examples=10, deadline=None)
@given(cuts=st.lists(st.integers(0, 1000), max_size=6), restart=st.booleans())
def test_usage_is_a_record_per_tenant_month_summing_its_rated_cdrs_however_batches_fall(
        cuts: list[int], restart: bool) -> None:
    workload = Workload(6, 40, seed=7)
    calls = list(workload.cdrs(400))
    items: list[tuple[str, dict[str, Any] | bytes]] = [*workload.setup(), *(("cdrs", e) for e in calls),
                                                       *(("cdrs", e) for e in calls[::40])]  # sent again
    records = _records(items)
    store = _run(records, [c % (len(records) + 1) for c in cuts], restart)
    sums = _summed(store.outputs)
    assert sum(totals[0] for month in sums.values() for totals in month.values()) > 300  # the workload's calls
    assert any(rated["status"] == "duplicate" for rated in _payloads(store.outputs, "rated-cdrs"))
    for (tenant, month), buckets in sums.items():
        assert month_usage(store.get, tenant, month) == buckets, (tenant, month)
    assert {k for k in store.records if b"/g/" in k} == {usage_record_key(t, m) for t, m in sums}
    for tenant in {t for t, _ in sums}:  # the state record holds none of it
        assert b"pool_seconds" not in store.records[tenant.encode()]


def test_a_month_written_by_one_batch_is_added_to_by_the_next_and_a_duplicate_adds_nothing() -> None:
    store = Store()
    store.write(store.task().process(_records([*_setup(), ("cdrs", cdr("t1", "c1", 60))])))
    batch = store.task().process(_records([("cdrs", cdr("t1", "c2", 125)), ("cdrs", cdr("t1", "c1", 60)),
                                           ("cdrs", cdr("t1", "c3", 60, destination="+442071838750"))], start=1))
    ((key, value),) = batch.usage.items()
    assert key == usage_record_key("t1", "2026-11")
    assert value is not None
    month, buckets = usage_of_record(value)
    assert (month, set(buckets)) == ("2026-11", {"MCOPSTNPP/domestic/US", "MCOPSTNPP/international/GB"})
    us = buckets["MCOPSTNPP/domestic/US"]
    assert us[:2] == (2, 185)  # c1 and c2, not c1 again
    charges = {p["usage_id"]: parse_decimal(p["charge"], 2) for p in _payloads(store.outputs + batch.outputs,
                                                                                "rated-cdrs")
               if p["status"] != "duplicate"}
    assert us[5] == charges["c1"] + charges["c2"]
    assert buckets["MCOPSTNPP/international/GB"][:2] == (1, 60)


def test_usage_is_kept_for_the_month_and_the_12_before_it_older_months_are_deleted() -> None:
    store = Store()
    store.write(store.task().process(_records([*_setup(), ("cdrs", cdr("t1", "c1", 60))])))
    old = {"MCOPSTNPP/domestic/US": (1, 60, 0, 60, 60, 1, 0)}
    for month in ("2025-10", "2025-11", "2025-12"):  # what calls of a year ago left
        store.records[usage_record_key("t1", month)] = usage_value(month, old)
    store.records[usage_record_key("t2", "2025-10")] = usage_value("2025-10", old)
    # November 2026 is forgotten (its grace ended): December is open, and with it kept
    # are the 12 months before it, back to December 2025
    december = cdr("t1", "d1", 60, start="2026-12-08T00:00:00Z", end="2026-12-08T00:01:00Z")
    batch = store.task().process(_records([(TICKS, tick_value(parse_time_us("2026-12-08T00:00:00Z"))),
                                           ("cdrs", december)], start=1))
    assert {k for k, v in batch.usage.items() if v is None} == {
        usage_record_key("t1", "2025-10"), usage_record_key("t1", "2025-11")}
    store.write(batch)
    assert sorted(usage_of_record(v)[0] for k, v in store.records.items() if k.startswith(b"!t1/g/")) == [
        "2025-12", "2026-11", "2026-12"]
    assert month_usage(store.get, "t1", "2025-12") == old
    assert store.records.get(usage_record_key("t2", "2025-10")) is not None  # another tenant's
    # time jumps two years (ticks were off, a worker was down): the months before March
    # 2028 go at once, not one forgotten month at a time
    march = cdr("t1", "m1", 60, start="2029-03-09T00:00:00Z", end="2029-03-09T00:01:00Z")
    batch = store.task().process(_records([(TICKS, tick_value(parse_time_us("2029-03-09T00:00:00Z"))),
                                           ("cdrs", march)], start=3))
    store.write(batch)
    assert sorted(usage_of_record(v)[0] for k, v in store.records.items() if k.startswith(b"!t1/g/")) == ["2029-03"]
    assert usage.first_kept("2026-12") == "2025-12"
    assert usage.first_kept("2026-01") == "2025-01"
    assert usage.first_kept("2027-12") == "2026-12"


def test_the_usage_kept_between_batches_is_bounded_by_buckets_and_evicting_changes_no_record(
        monkeypatch: pytest.MonkeyPatch) -> None:
    workload = Workload(6, 40, seed=7)
    items: list[tuple[str, dict[str, Any] | bytes]] = [*workload.setup(), *(("cdrs", e) for e in workload.cdrs(400))]
    records = _records(items)
    roomy = _run(records, list(range(0, len(records), 37)), restart=False)
    monkeypatch.setattr("rater.shell.task.USAGE_CACHE_BUCKETS", 12)  # fewer than some months hold
    store = Store()
    task = store.task()
    for lo in range(0, len(records), 37):
        store.write(task.process(records[lo:lo + 37]))
        assert task._cached_buckets == sum(len(m.parts) for m in task._months.values()) <= 12
    assert {k: v for k, v in store.records.items() if b"/g/" in k} == {
        k: v for k, v in roomy.records.items() if b"/g/" in k}


def test_the_states_kept_between_batches_are_bounded_and_forgetting_them_changes_no_outcome(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 15: every state a task ever read stayed in memory (3 GiB at a million tenants)
    workload = Workload(6, 40, seed=7)
    items: list[tuple[str, dict[str, Any] | bytes]] = [*workload.setup(), *(("cdrs", e) for e in workload.cdrs(400))]
    items += [(TICKS, tick_value(parse_time_us(at))) for at in ("2026-12-01T00:00:01Z", "2027-01-05T00:00:00Z")]
    records = _records(items)
    roomy = _run(records, list(range(0, len(records), 37)), restart=False)
    monkeypatch.setattr("rater.shell.task.STATE_CACHE_TENANTS", 2)
    store = Store()
    task = store.task()
    batches = 0
    for lo in range(0, len(records), 37):
        work = task.process(records[lo:lo + 37])
        assert len(task.states) <= 2 + len(work.states)  # the batch's own tenants on top of the bound
        store.write(work)
        batches += 1
    while [k for k in store.records if k.startswith(PURGE_PREFIX)]:
        store.write(task.process([]))
    store.write(task.process([]))  # a batch starts by forgetting: the last one's states go too
    assert len(task.states) <= 2
    assert [(o.topic, o.key, o.value) for o in store.outputs] == [(o.topic, o.key, o.value) for o in roomy.outputs]
    assert store.records == roomy.records
    assert batches > 6


def test_a_task_starting_on_a_store_decodes_every_state_for_its_deadline_but_keeps_none() -> None:
    workload = Workload(6, 40, seed=7)
    store = Store()
    store.write(store.task().process(_records(list(workload.setup()))))
    task = store.task()
    assert task.states == {}
    assert sorted(task._scheduled) == sorted(t.tenant_id for t in workload.tenants)  # each with a deadline
    # the driver reads them in slices, its event loop (the consumer's heartbeats) running between
    sliced = PartitionTask(0, CTX, store, schedule=False)
    assert sliced._scheduled == {}
    turns = sum(1 for _ in sliced.scheduling(0.0))  # a slice of no time: it yields before every tenant
    assert turns == len(workload.tenants)
    assert (sliced._scheduled, sorted(sliced._due)) == (task._scheduled, sorted(task._due))


def test_a_mistyped_contact_never_costs_the_tenant_its_upsert() -> None:
    store = Store()
    upsert = event("tenant_upserted", "t1", "e1", command_id="t1-up", country="US", currency="USD",
                   billing_model="prepaid_credits",
                   notify={"emails": ["ops at acme", "ana@acme.example"], "locale": "pt_BR", "sms": "+1555"})
    batch = store.task().process(_records([("account-commands", upsert), *_setup()[1:],
                                           ("cdrs", cdr("t1", "c1", 60))]))
    assert _payloads(batch.outputs, "dead-letters") == []
    assert [p["status"] for p in _payloads(batch.outputs, "rated-cdrs")] == ["rated"]
    assert b"notify" not in batch.states["t1"]  # rating keeps nothing of it
