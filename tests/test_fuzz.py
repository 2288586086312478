"""Hostile documents through edge + core + partition task: nothing raises (issue 11).

Each example is a batch of records on every input topic — valid inputs of three tenants
with one or two fields replaced by hostile values (arbitrary JSON, deep nesting, numbers
past 64 bits, times at and past the ends of the range, extreme offsets, whitespace and
newlines, huge strings, ids of the rater's own form), fields removed, extra fields added,
arbitrary bytes, bad keys — applied by a :class:`PartitionTask` on top of a store that
already holds the tenants. Whatever the documents, the task returns a unit: no exception,
no ``internal_error`` dead letter (containment would hide a bug there: this test is what
finds it), every output matching its schema, every tenant state within its invariants and
readable back.
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from typing import Any

import msgspec
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rater import edge
from rater.core.state import check_invariants
from rater.core.times import parse_time_us
from rater.schemas import first_error
from rater.shell.task import TICKS, MemoryStore, PartitionTask, decode_state, tick_value

from .support import cdr, event
from .test_task import CTX

TENANTS = ("t1", "t2", "t3")


def _setup() -> list[tuple[str, dict[str, Any]]]:
    items: list[tuple[str, dict[str, Any]]] = []
    for tenant, currency, model in (("t1", "USD", "prepaid_credits"), ("t2", "EUR", "postpaid_overage"),
                                    ("t3", "JPY", "prepaid_credits")):
        items += [
            ("account-commands", event("tenant_upserted", tenant, f"{tenant}-e1", command_id=f"{tenant}-up",
                                       country="US", currency=currency, billing_model=model)),
            ("account-commands", event("licenses_assigned", tenant, f"{tenant}-e2", command_id=f"{tenant}-lic",
                                       user_id="alice", usage_location="US",
                                       capabilities=["MCOPSTN1", "MCOPSTNPP", "MCOMEETADD"])),
            ("account-commands", event("funds_added", tenant, f"{tenant}-e3", command_id=f"{tenant}-buy",
                                       amount="5" if currency == "JPY" else "5.00", currency=currency,
                                       purchased_at="2026-11-01T00:00:00Z")),
            ("account-commands", event("auto_recharge_configured", tenant, f"{tenant}-e4",
                                       command_id=f"{tenant}-ar", enabled=True,
                                       trigger_amount="4" if currency == "JPY" else "4.00",
                                       recharge_amount="10" if currency == "JPY" else "10.00")),
        ]
    return items


@cache
def _base() -> tuple[dict[bytes, bytes], dict[str, int]]:
    """The store after the setup batch (and the offsets it reached)."""
    store = MemoryStore()
    records = [edge.Record(topic, 0, n, item["tenant_id"].encode(), orjson.dumps(item), 1_790_000_000_000)
               for n, (topic, item) in enumerate(_setup())]
    batch = PartitionTask(0, CTX, store).process(records)
    store.write(batch)
    return dict(store.records), {"account-commands": len(records)}


def _templates(tenant: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("cdrs", cdr(tenant, "u1", 90)),
        ("cdrs", cdr(tenant, "u2", 30, call_type="conf_out", destination="+442071234567")),
        ("cdrs", cdr(tenant, "u3", 60, call_type="ucap_in", number_type="toll_free", user_id=None,
                     destination="+18005550100")),
        ("cdrs", cdr(tenant, "u4", 5, destination="911")),
        ("account-commands", event("funds_added", tenant, "f", command_id="more", amount="1.00", currency="USD",
                                   purchased_at="2026-11-02T00:00:00Z")),
        ("account-commands", event("licenses_assigned", tenant, "l", command_id="lic2", user_id="bob",
                                   usage_location="GB", capabilities=["MCOPSTN2"])),
        ("account-commands", event("user_removed", tenant, "r", command_id="rm", user_id="alice")),
        ("account-commands", event("auto_recharge_configured", tenant, "a", command_id="ar2", enabled=True,
                                   trigger_amount="1.00", recharge_amount="2.00")),
        ("account-commands", event("tenant_upserted", tenant, "t", command_id="up2", country="GB", currency="USD",
                                   billing_model="prepaid_credits", low_balance_threshold="3.00")),
        ("recharge-results", event("recharge_result", tenant, "rr", request_id=f"{tenant}/recharge/1",
                                   status="succeeded", amount="10.00", currency="USD", reason=None,
                                   processed_at="2026-11-03T00:00:00Z")),
    ]


TIMES = ["0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01", "9999-12-31T00:00:00Z", "8999-12-31T23:59:59Z",
         "1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "2026-11-02T10:00:00Z\n", "2026-02-29T00:00:00Z",
         "2028-02-29T23:59:59.999999999-23:59", "2026-11-02T10:00:00+23:59", "2026-12-31T23:59:60Z",
         "2026-11-02T24:00:00Z", "2026-11-02 10:00:00Z", "2027-11-02T10:00:00Z", "2026-10-01T00:00:00Z"]
STRINGS = ["", " ", "\n", "5.00\n", "US\n", "t1\n", "+12125550123\n", "t1/recharge/1", "t1/recharge/999",
           "x" * 201, "x" * 70_000, "\u0000", "\ud7ff", "٥", "9" * 30, "999999999999999999.9999", "0.001",
           "MCOPSTN1", "PAYG", "ZZ", "+999", "112", "000", "+1900555", "prepaid_credits", "succeeded", "failed"]
MONEY = ["500000000000000000.00", "184467440737095516.16", "99999999999999999.99", "0", "0.00", "0.01",
         "5.00\n", "5.001", "1e3", "-1.00", "01.00", "5"]
IDS = ["t1/recharge/1", "t2/recharge/1", "t1/recharge/", "x" * 200, "x" * 201, "u1", "more", "a\nb", "alice",
       "bob", "nobody", "é"]
KINDS = {
    1: ({"start_time", "end_time", "occurred_at", "purchased_at", "processed_at"}, TIMES),
    2: ({"amount", "trigger_amount", "recharge_amount", "low_balance_threshold"}, MONEY),
    3: ({"usage_id", "command_id", "request_id", "user_id", "call_id", "conference_id"}, IDS),
}
SCALARS = st.one_of(
    st.none(), st.booleans(), st.sampled_from([0, -1, 1, 604_800, 604_801, 2**63 - 1, 2**63, 2**64, -(2**70)]),
    st.floats(allow_nan=False), st.sampled_from(TIMES + STRINGS), st.text(max_size=20),
)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                         max_size=3), max_leaves=8)


@st.composite
def hostile(draw: st.DrawFn) -> tuple[str, bytes | None, bytes | None]:
    tenant = draw(st.sampled_from([*TENANTS, "nobody"]))
    topic = draw(st.sampled_from(["cdrs", "account-commands", "recharge-results"]))  # thousands each
    topic, doc = draw(st.sampled_from([(t, d) for t, d in _templates(tenant) if t == topic]))
    doc = dict(doc)
    doc["usage_id" if topic == "cdrs" else "event_id"] = draw(st.sampled_from(["u1", "u2", "u9", "more", "x"]))
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):
        choice = draw(st.integers(0, 5))
        if choice == 0:
            doc.pop(draw(st.sampled_from(sorted(doc))), None)
        elif choice in {1, 2, 3}:  # a value aimed at the field's own kind: what gets past the schema
            fields_of_kind = sorted(set(doc) & KINDS[choice][0]) or ["x_extra"]
            doc[draw(st.sampled_from(fields_of_kind))] = draw(st.sampled_from(KINDS[choice][1]))
        else:
            doc[draw(st.sampled_from([*doc, "x_extra"]))] = draw(JSON)
    value: bytes | None = msgspec.json.encode(doc)  # orjson refuses integers past 64 bits
    shape = draw(st.integers(0, 14))
    if shape == 0:  # nested past any limit, in an extra field or in place of a known one
        depth = draw(st.sampled_from([31, 33, 1000, 5000]))
        field_name = draw(st.sampled_from(["x_extra", "usage_id", "amount", "capabilities"]))
        value = value[:-1] + f',"{field_name}":'.encode() + b"[" * depth + b"]" * depth + b"}"
    elif shape == 1:
        value = draw(st.binary(max_size=40))
    elif shape == 2:
        value = None
    elif shape == 3:
        value = value[: draw(st.integers(0, len(value)))]
    elif shape == 5:  # deep and not JSON: never closed
        value = value[:-1] + b',"x_extra":' + b"[" * draw(st.sampled_from([40, 1000, 1010, 3000]))
    elif shape == 4:  # any JSON at all: a list, a string, an object of anything
        value = msgspec.json.encode(draw(JSON))
    key = tenant.encode() if draw(st.integers(0, 5)) else draw(st.sampled_from([b"t1\n", b"\xff", b"", None, b"t2"]))
    return topic, key, value


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(hostile(), min_size=1, max_size=10), st.lists(st.sampled_from(
    ["2026-11-02T11:00:00Z", "2027-11-02T00:00:00Z", "2026-12-09T00:00:00Z", "8999-12-31T23:59:59Z"]), max_size=2))
def test_no_document_raises_or_reaches_internal_error_and_every_output_and_state_holds(
        docs: list[tuple[str, bytes | None, bytes | None]], ticks: list[str]) -> None:
    records_base, offsets = _base()
    store = MemoryStore()
    store.records = dict(records_base)
    task = PartitionTask(0, CTX, store)
    counters = dict(offsets)
    records = []
    items = [*docs, *((TICKS, None, tick_value(parse_time_us(at))) for at in ticks)]
    for topic, key, value in items:
        offset = counters[topic] = counters.get(topic, -1) + 1
        records.append(edge.Record(topic, 0, offset, key, value, 1_790_000_000_000))
    batch = task.process(records)
    for out in batch.outputs:
        payload = orjson.loads(out.value)
        assert first_error(payload["type"], payload) is None, payload
        if out.topic == "dead-letters":
            assert payload["reason"] != "internal_error", payload["message"]
    for raw in batch.states.values():
        check_invariants(decode_state(raw))
    store.write(batch)
    PartitionTask(0, CTX, store)  # the unit it wrote reads back
    TOPICS.update(topic for topic, _key, _value in docs)
    OUTCOMES.update(f"{o.topic}:{orjson.loads(o.value).get('reason') or orjson.loads(o.value).get('status')}"
                    for o in batch.outputs if o.topic in {"dead-letters", "rated-cdrs"})


OUTCOMES: Counter[str] = Counter()
TOPICS: Counter[str] = Counter()
"""What the examples came to (printed by the coverage test below)."""


def test_the_hostile_documents_reach_the_core_and_every_kind_of_outcome() -> None:
    # runs after the fuzz test (file order): the documents were not all refused at the edge
    if not OUTCOMES:
        return  # run alone
    print(dict(OUTCOMES), dict(TOPICS))
    assert min(TOPICS.values()) >= 2000, TOPICS  # thousands of hostile documents per input topic
    for wanted in ("rated-cdrs:rated", "rated-cdrs:duplicate", "dead-letters:schema", "dead-letters:invalid_json",
                   "dead-letters:bad_key", "dead-letters:key_mismatch", "dead-letters:unknown_tenant"):
        assert OUTCOMES[wanted] > 0, (wanted, OUTCOMES)
