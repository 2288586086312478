"""Containment (issue 11): an exception while deciding one input — a bug, never bad
input — becomes that input's ``internal_error`` dead letter with its bytes; the tenant's
state and outputs from it are discarded, and everything else in the batch is decided
as if the input had been refused. No Kafka here: the partition task alone (the worker
test is in tests/test_isolation.py).

The bugs are injected by wrapping the core's entry points as the task calls them, after
the real core ran and changed the state: the worst case for a roll-back.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from rater import edge
from rater.core import engine
from rater.core.state import check_invariants
from rater.core.steps import Step
from rater.shell import task as task_module
from rater.shell.task import TICKS, decode_state, tick_value

from .support import cdr, event
from .test_task import Store, _payloads, _records, _setup


def _traffic() -> list[tuple[str, dict[str, Any] | bytes]]:
    return [
        *_setup("t1"), *_setup("t2"),
        ("cdrs", cdr("t1", "c1", 60)), ("cdrs", cdr("t2", "d1", 60)),
        ("cdrs", cdr("t1", "boom", 600, start="2026-11-02T10:01:00Z", end="2026-11-02T10:31:00Z")),
        ("cdrs", cdr("t1", "c2", 120, start="2026-11-02T10:02:00Z", end="2026-11-02T10:32:00Z")),
        ("cdrs", cdr("t1", "c1", 60)),  # a duplicate of c1: its id must still be known
        ("cdrs", cdr("t2", "d2", 60, start="2026-11-02T10:03:00Z")),
    ]


def _refused_instead(items: list[tuple[str, dict[str, Any] | bytes]]) -> list[edge.Record]:
    """The same records with the poisoned one's value not JSON: at the same offsets, a
    refusal — what the batch must be like besides that one dead letter."""
    return [edge.Record(r.topic, r.partition, r.offset, r.key,
                        b"not json" if b'"boom"' in (r.value or b"") else r.value, r.timestamp_ms)
            for r in _records(items)]


def _without_dead_letters(outputs: list[task_module.Produced]) -> list[bytes]:
    return [o.value for o in outputs if o.topic != "dead-letters"]


def _raising_after(real: Callable[..., Step], when: Callable[[Any], bool]) -> Callable[..., Step]:
    def wrapper(state: Any, inp: Any, *args: Any) -> Step:
        step = real(state, inp, *args)  # the state is changed already
        if when(inp):
            raise ZeroDivisionError("an injected bug")
        return step
    return wrapper


def _check(batch: task_module.Batch, expected: task_module.Batch, poisoned: edge.Record) -> None:
    assert _without_dead_letters(batch.outputs) == _without_dead_letters(expected.outputs)
    assert batch.states == expected.states
    assert batch.ids == expected.ids
    assert batch.usage == expected.usage  # the poisoned call adds to no usage
    assert batch.usage
    assert batch.partition_record == expected.partition_record
    letters = _payloads(batch.outputs, "dead-letters")
    assert [(d["reason"], d["offset"], d["tenant_id"]) for d in letters] == [
        ("internal_error", poisoned.offset, "t1")]
    assert base64.b64decode(letters[0]["value_b64"]) == poisoned.value  # the input's bytes kept
    assert "ZeroDivisionError" in letters[0]["message"]
    for raw in batch.states.values():
        check_invariants(decode_state(raw))


def test_a_bug_in_the_core_is_the_inputs_dead_letter_and_its_tenant_is_as_if_it_never_came(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    items = _traffic()
    expected = Store().task().process(_refused_instead(items))
    records = _records(items)
    monkeypatch.setattr(task_module, "apply", _raising_after(
        engine.apply, lambda inp: getattr(inp, "usage_id", None) == "boom"))
    batch = Store().task().process(records)
    _check(batch, expected, next(r for r in records if b'"boom"' in (r.value or b"")))
    statuses = [(p["usage_id"], p["status"]) for p in _payloads(batch.outputs, "rated-cdrs")]
    assert statuses == [("c1", "rated"), ("d1", "rated"), ("c2", "rated"), ("c1", "duplicate"), ("d2", "rated")]
    assert [r.levelname for r in caplog.records if "internal_error" in r.getMessage()] == ["ERROR"]


def test_a_bug_formatting_an_output_is_contained_like_one_deciding_it(monkeypatch: pytest.MonkeyPatch) -> None:
    items = _traffic()
    expected = Store().task().process(_refused_instead(items))
    records = _records(items)
    real_encode = edge.encode

    def encode(payload: dict[str, Any]) -> bytes:
        if payload.get("usage_id") == "boom":
            raise ZeroDivisionError("an injected bug")
        return real_encode(payload)

    monkeypatch.setattr(edge, "encode", encode)
    batch = Store().task().process(records)
    _check(batch, expected, next(r for r in records if b'"boom"' in (r.value or b"")))


def test_a_bug_decoding_an_input_is_its_dead_letter_without_a_tenant(monkeypatch: pytest.MonkeyPatch) -> None:
    items = _traffic()
    expected = Store().task().process(_refused_instead(items))
    records = _records(items)
    real_decode = edge.decode

    def decode(record: edge.Record) -> Any:
        if b'"boom"' in (record.value or b""):
            raise RecursionError("an injected bug")
        return real_decode(record)

    monkeypatch.setattr(edge, "decode", decode)
    batch = Store().task().process(records)
    assert _without_dead_letters(batch.outputs) == _without_dead_letters(expected.outputs)
    assert batch.states == expected.states
    (letter,) = _payloads(batch.outputs, "dead-letters")
    assert (letter["reason"], letter["tenant_id"]) == ("internal_error", None)


def test_a_bug_in_one_tenants_time_work_leaves_the_others_and_it_is_tried_again_with_its_next_input(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store()
    # two tenants whose lots expire on 2027-11-01; a tick after that expires both
    store.write(store.task().process(_records([*_setup("t1"), *_setup("t2")])))
    real_on_time = engine.on_time
    failing = {"t1"}

    def on_time(state: Any, *args: Any) -> Step:
        step = real_on_time(state, *args)
        if state.tenant_id in failing:
            raise ZeroDivisionError("an injected bug")
        return step

    monkeypatch.setattr(task_module, "on_time", on_time)
    ticks = [(TICKS, tick_value(1_826_000_000_000_000)), (TICKS, tick_value(1_826_000_001_000_000))]
    worker = store.task()  # one task throughout, as in a worker: what it keeps in memory counts
    batch = worker.process(_records(ticks, start=0))
    store.write(batch)
    expired = [p["tenant_id"] for p in _payloads(batch.outputs, "notifications") if p["type"] == "credits_expired"]
    assert expired == ["t2"]  # t1's time work failed once (not at every tick), t2's was done
    letters = _payloads(batch.outputs, "dead-letters")
    assert [(d["reason"], d["tenant_id"], d["source_topic"]) for d in letters] == [
        ("internal_error", "t1", f"p-{TICKS}")]
    assert decode_state(store.records[b"t1"]).balance_minor == 500  # rolled back: nothing expired
    failing.clear()  # the bug is fixed (a new release): t1's next input does its time work first
    later = worker.process(_records([("account-commands", event(
        "funds_added", "t1", "e9", command_id="t1-buy-2", amount="1.00", currency="USD",
        purchased_at="2027-12-01T00:00:00Z"))], start=6))
    kinds = [p["type"] for p in _payloads(later.outputs)]
    assert kinds[0] == "credits_expired"
    assert decode_state(later.states["t1"]).balance_minor == 100


def test_state_records_keep_ledger_totals_past_64_bits_exactly() -> None:
    # a CLF tenant (4 minor-unit digits) may hold 18 integer digits: 22 digits of minor
    # units, past what orjson writes (and what it reads back is a float)
    store = Store()
    items = [
        ("account-commands", event("tenant_upserted", "t1", "e1", command_id="up", country="CL",
                                   currency="CLF", billing_model="prepaid_credits")),
        ("account-commands", event("funds_added", "t1", "e2", command_id="big", amount="999999999999999999.9999",
                                   currency="CLF", purchased_at="2026-11-01T00:00:00Z")),
    ]
    batch = store.task().process(_records(items))
    assert not _payloads(batch.outputs, "dead-letters")
    state = decode_state(batch.states["t1"])
    assert state.funded_minor == state.balance_minor == 9_999_999_999_999_999_999_999
    assert b"9999999999999999999999" in batch.states["t1"]
    (balance,) = _payloads(batch.outputs, "balances")
    assert balance["balance"] == "999999999999999999.9999"
    assert orjson.loads(batch.states["t1"])["funded_minor"] != state.funded_minor  # why not orjson


def test_a_store_that_cannot_be_read_stops_the_worker_instead_of_dead_lettering_every_input() -> None:
    # infrastructure, not one input: a state record of a version this worker does not know
    # (a newer release rolled back, say) must stop it, not turn a tenant's traffic into
    # internal_error dead letters
    store = Store()
    store.write(store.task().process(_records(_setup("t1"))))
    store.records[b"t1"] = orjson.dumps({**orjson.loads(store.records[b"t1"]), "v": 99})
    with pytest.raises(ValueError, match="tenant state version 99"):
        store.task().process(_records([("cdrs", cdr("t1", "c1", 60))]))
