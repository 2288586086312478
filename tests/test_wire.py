"""The fast edge (msgspec, rater/wire.py) decides like the JSON Schema path, and where
they disagree the stricter one wins.

Documents are generated field by field from valid values and nasty ones (wrong types,
boundary lengths, final and embedded newlines and other whitespace, floats for integers,
times at and past the ends of the range the rater takes, extreme offsets, deep nesting,
missing and extra fields); for each, ``edge.decode`` (fast path first) must give the
same input, or the same refusal reason, as ``edge.decode_with_schema`` alone — except
that what the fast path refuses is never applied, even when the schema path would take
it (a ``schema`` refusal). Valid documents must take the fast path.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rater import edge, wire
from rater.core.inputs import Cdr

TOPIC_OF = {
    "cdr": "cdrs", "tenant_upserted": "account-commands", "licenses_assigned": "account-commands",
    "user_removed": "account-commands", "funds_added": "account-commands",
    "auto_recharge_configured": "account-commands", "recharge_result": "recharge-results",
}

NASTY = st.sampled_from([None, 0, 1, 1.0, -1, True, "", " ", "x" * 201, "US\n", "us", "+", [], {}, "1e3",
                         [[[["deep"]]]], {"a": {"b": {"c": [1]}}}, 2**64, -(2**63), "\u00a0", "\u2028"])
IDS = st.one_of(st.sampled_from(["a", "x" * 200, "id-1", "é/ü", "t1", "a\n", "\n", " ", "a b", "t1/recharge/1"]),
                st.text(min_size=1, max_size=12))
TIMES = st.sampled_from(["2026-11-01T10:00:00Z", "2026-11-01T10:01:00.5Z", "2026-11-01t10:02:00+01:00",
                         "2026-11-01T10:00:00", "2026-13-01T10:00:00Z", "2026-11-01T10:00:00Z\n",
                         "2026-11-01T10:00:00.1234567890Z", "2026-02-30T00:00:00Z",
                         # the ends of the range (1970 to 8999) and of datetime's, with extreme offsets
                         "0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01", "9999-12-31T00:00:00Z",
                         "8999-12-31T23:59:59.999999Z", "9000-01-01T00:00:00Z", "8999-12-31T23:00:00-23:59",
                         "1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "1970-01-01T00:30:00+01:00",
                         "0000-01-01T00:00:00Z", "2026-11-01T10:00:00+99:99", "2026-11-01T10:00:00-23:59",
                         # whitespace around and inside
                         " 2026-11-01T10:00:00Z", "2026-11-01T10:00:00Z ", "2026-11-01T10:00:00\nZ",
                         "2026-11-01T10:00:00Z\r\n", "2026-11-01 10:00:00Z", "２０２６-11-01T10:00:00Z"])
MONEY = st.sampled_from(["0", "1", "12.34", "0.001", "1.2345", "1.23456", "01", "1.", "-1", "999999999999999999",
                         "1000000000000000000", "5.00", "5.00\n", " 5.00", "5.00 ", "5\n.00", "5.00\t", "٥.00"])
DEPTHS = st.sampled_from([2, 31, 32, 33, 200, 1000, 1100, 3000])
FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "cdr": {
        "usage_id": IDS, "call_id": IDS, "conference_id": st.one_of(st.none(), IDS),
        "user_id": st.one_of(st.none(), IDS), "user_location": st.sampled_from(["US", "GB", "U", "USA"]),
        "call_type": st.sampled_from(["user_out", "conf_out", "ucap_in", "user_in", "bogus"]),
        "number_type": st.sampled_from(["geographic", "toll_free", "service", "mobile"]),
        "caller_number": st.sampled_from(["+14155550100", "911", "+0123", "1", "+1234567890123456"]),
        "destination_number": st.sampled_from(["+12125550123", "+447700900123", "112", "+1", "12345678"]),
        "start_time": TIMES, "end_time": TIMES,
        "duration_seconds": st.one_of(st.integers(-2, 604_801), st.sampled_from([60.0, 60.5, 604_800])),
    },
    "tenant_upserted": {
        "command_id": IDS, "country": st.sampled_from(["US", "DE", "de"]),
        "currency": st.sampled_from(["USD", "JPY", "US"]),
        "billing_model": st.sampled_from(["prepaid_credits", "postpaid_overage", "free"]),
        "low_balance_threshold": st.one_of(st.none(), MONEY),
        "notify": st.one_of(st.none(), st.just({}), st.fixed_dictionaries({}, optional={
            "emails": st.lists(st.sampled_from(["admin@acme.example", "a@b", "no-at", "a@b\n", "a b@c", "@x",
                                                "a@b@c", "x" * 250 + "@b.c", "é@ü.example", "a\x00@b"]), max_size=11),
            "webhook_url": st.one_of(st.none(), st.sampled_from([
                "https://hooks.acme.example/rater", "http://127.0.0.1:8080/x", "ftp://x", "https://", "https://a b",
                "HTTPS://x.example", "https://x.example\n", "https://" + "x" * 2040])),
            "locale": st.sampled_from(["en", "pt-BR", "zh-CN", "zh-Hans-CN", "x", "en_US", "pt-BR\n", "", "de"]),
            "extra": st.just(1),
        })),
    },
    "licenses_assigned": {
        "command_id": IDS, "user_id": IDS, "usage_location": st.sampled_from(["US", "GB"]),
        "capabilities": st.lists(st.sampled_from(["MCOPSTN1", "PAYG", "MCOPSTN1", "bad cap", ""]), max_size=4),
    },
    "user_removed": {"command_id": IDS, "user_id": IDS},
    "funds_added": {"command_id": IDS, "amount": MONEY, "currency": st.sampled_from(["USD", "EUR"]),
                    "purchased_at": TIMES},
    "auto_recharge_configured": {"command_id": IDS, "enabled": st.one_of(st.booleans(), st.just(1)),
                                 "trigger_amount": MONEY, "recharge_amount": MONEY},
    "recharge_result": {"request_id": IDS, "status": st.sampled_from(["succeeded", "failed", "pending"]),
                        "amount": MONEY, "currency": st.sampled_from(["USD"]),
                        "reason": st.one_of(st.none(), st.sampled_from(["card_expired", "r" * 501])),
                        "processed_at": TIMES},
}


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, bytes, bytes]:
    kind = draw(st.sampled_from(sorted(FIELDS)))
    doc: dict[str, Any] = {
        "type": draw(st.sampled_from([kind, kind, kind, kind, "cdr", "nope"])),
        "schema_version": draw(st.sampled_from([1, 1, 1, 1.0, 2, "1"])),
        "event_id": draw(IDS),
        "tenant_id": draw(st.sampled_from(["t1", "t1", "t1", "t2", "t1\n", "bad id"])),
        "occurred_at": draw(TIMES),
    }
    for name, values in FIELDS[kind].items():
        doc[name] = draw(values)
    for name in list(doc):
        if draw(st.integers(0, 40)) == 0:
            del doc[name]  # a missing field
        elif draw(st.integers(0, 40)) == 0:
            doc[name] = draw(NASTY)  # a wrong type or value
    if draw(st.booleans()):
        doc["extra_field"] = draw(NASTY)  # the schemas allow unknown fields
    value = msgspec.json.encode(doc)  # orjson refuses integers past 64 bits
    if draw(st.integers(0, 8)) == 0:  # nested arrays: in an extra field, or in place of a known one
        depth = draw(DEPTHS)
        nested = b"[" * depth + b"]" * depth
        field_name = draw(st.sampled_from(["x_extra", *FIELDS[kind]])).encode()
        doc.pop(field_name.decode(), None)
        value = msgspec.json.encode(doc)[:-1] + b',"' + field_name + b'":' + nested + b"}"
    if draw(st.integers(0, 30)) == 0:
        value = value[: draw(st.integers(0, len(value)))]  # truncated JSON
    return TOPIC_OF[kind], b"t1", value


def _record(topic: str, key: bytes, value: bytes) -> edge.Record:
    return edge.Record(topic, 0, 7, key, value, 1_790_000_000_000)


def _verdict(result: object) -> object:
    return result.reason if isinstance(result, edge.Refusal) else result


def _fast_refuses(topic: str, value: bytes) -> bool:
    try:
        message = wire.DECODERS[topic].decode(value)
    except (msgspec.MsgspecError, RecursionError):
        return True
    return type(message) not in edge._FROM_WIRE


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_the_fast_path_decides_like_the_json_schema_and_the_stricter_one_wins(doc: tuple[str, bytes, bytes]) -> None:
    topic, key, value = doc
    fast = edge.decode(_record(topic, key, value))
    if isinstance(fast, edge.Refusal) and fast.message.startswith("nested deeper"):
        assert fast.reason == "schema"
        return  # refused before either path looked: nothing deeper than MAX_DEPTH gets in
    reference = edge.decode_with_schema(_record(topic, key, value), key.decode(), value)
    if isinstance(reference, edge.Refusal) or not _fast_refuses(topic, value):
        assert _verdict(fast) == _verdict(reference), (value, fast, reference)
    else:  # the schema path takes what the fast path refused: the stricter one wins
        assert isinstance(fast, edge.Refusal), (value, fast, reference)
        assert fast.reason == "schema", (value, fast)


def test_nothing_nested_past_the_limit_is_taken_and_the_decision_is_the_same_at_any_stack_depth() -> None:
    base = orjson.dumps({"type": "cdr", "schema_version": 1, "event_id": "e1", "tenant_id": "t1",
                         "occurred_at": "2026-11-01T10:01:00Z", "usage_id": "u1", "call_id": "c1",
                         "conference_id": None, "user_id": "alice", "user_location": "US", "call_type": "user_out",
                         "number_type": "geographic", "caller_number": "+14155550100",
                         "destination_number": "+12125550123", "start_time": "2026-11-01T10:00:00Z",
                         "end_time": "2026-11-01T10:01:00Z", "duration_seconds": 60})

    def with_extra(depth: int) -> bytes:
        return base[:-1] + b',"x_extra":' + b"[" * depth + b"]" * depth + b"}"

    def decide_at_stack_depth(frames: int, value: bytes) -> object:
        if frames:
            return decide_at_stack_depth(frames - 1, value)
        return _verdict(edge.decode(_record("cdrs", b"t1", value)))

    assert isinstance(edge.decode(_record("cdrs", b"t1", with_extra(edge.MAX_DEPTH - 1))), Cdr)
    for depth in (edge.MAX_DEPTH, 1000, 2000, 30_000):  # 30,000 levels: 60 KB, under the size limit
        for frames in (0, 600):
            assert decide_at_stack_depth(frames, with_extra(depth)) == "schema", depth
    usage_id_nested = base.replace(b'"usage_id":"u1"', b'"usage_id":' + b"[" * 1000 + b"]" * 1000)
    assert _verdict(edge.decode(_record("cdrs", b"t1", usage_id_nested))) == "schema"
    # not JSON, and deep: msgspec runs out of stack before it sees the end (review finding)
    for broken in (base[:-1] + b',"x_extra":' + b"[" * 1000, base[:-1] + b',"x":' + b"[" * 1010 + b"}",
                   b"[" * 20_000, b'{"a":' * 5000):
        verdicts = {decide_at_stack_depth(frames, broken) for frames in (0, 600)}
        assert len(verdicts) == 1, verdicts  # the same whatever the stack
        assert verdicts <= {"invalid_json", "schema"}  # not JSON, or past the nesting limit before its end


def test_a_final_newline_passes_no_pattern_on_either_path() -> None:
    funds = {"type": "funds_added", "schema_version": 1, "event_id": "e1", "tenant_id": "t1",
             "occurred_at": "2026-11-01T10:01:00Z", "command_id": "c1", "amount": "5.00", "currency": "USD",
             "purchased_at": "2026-11-01T10:00:00Z"}
    for field_name in ("amount", "currency", "purchased_at", "occurred_at", "tenant_id"):
        value = orjson.dumps({**funds, field_name: funds[field_name] + "\n"})
        key = b"t1\n" if field_name == "tenant_id" else b"t1"
        for decided in (edge.decode(_record("account-commands", key, value)),
                        edge.decode_with_schema(_record("account-commands", key, value), key.decode(), value)):
            assert isinstance(decided, edge.Refusal), (field_name, decided)
    assert _verdict(edge.decode(_record("account-commands", b"t1\n", orjson.dumps(funds)))) == "bad_key"


def test_valid_inputs_take_the_fast_path() -> None:
    cdr = {"type": "cdr", "schema_version": 1, "event_id": "e1", "tenant_id": "t1",
           "occurred_at": "2026-11-01T10:01:00Z", "usage_id": "u1", "call_id": "c1", "conference_id": None,
           "user_id": "alice", "user_location": "US", "call_type": "user_out", "number_type": "geographic",
           "caller_number": "+14155550100", "destination_number": "+12125550123",
           "start_time": "2026-11-01T10:00:00Z", "end_time": "2026-11-01T10:01:00Z", "duration_seconds": 60}
    value = orjson.dumps(cdr)
    assert isinstance(wire.DECODERS["cdrs"].decode(value), wire.CdrIn)
    decoded = edge.decode(_record("cdrs", b"t1", value))
    assert isinstance(decoded, Cdr)
    assert decoded == edge.decode_with_schema(_record("cdrs", b"t1", value), "t1", value)


def test_a_whole_number_duration_written_as_a_float_is_refused_as_the_fast_path_refuses_it() -> None:
    base = {"type": "cdr", "schema_version": 1, "event_id": "e1", "tenant_id": "t1",
            "occurred_at": "2026-11-01T10:01:00Z", "usage_id": "u1", "call_id": "c1", "conference_id": None,
            "user_id": "alice", "user_location": "US", "call_type": "user_out", "number_type": "geographic",
            "caller_number": "+14155550100", "destination_number": "+12125550123",
            "start_time": "2026-11-01T10:00:00Z", "end_time": "2026-11-01T10:01:00Z"}
    # JSON Schema's "integer" takes 60.0, msgspec's int does not: the stricter one wins
    whole = edge.decode(_record("cdrs", b"t1", orjson.dumps({**base, "duration_seconds": 60.0})))
    assert isinstance(whole, edge.Refusal)
    assert whole.reason == "schema"
    assert "duration_seconds" in whole.message
    assert isinstance(edge.decode(_record("cdrs", b"t1", orjson.dumps({**base, "duration_seconds": 60}))), Cdr)
    refused = edge.decode(_record("cdrs", b"t1", orjson.dumps({**base, "duration_seconds": 60.5})))
    assert isinstance(refused, edge.Refusal)
    assert refused.reason == "schema"


def test_a_document_without_its_type_or_with_the_internal_tag_takes_the_schema_path() -> None:
    # msgspec lets a lone tagged struct decode without its tag; the decoders are unions
    for doc in ({"schema_version": 1, "tenant_id": "t1"}, {"type": "\x00absent", "schema_version": 1,
                "event_id": "e", "tenant_id": "t1", "occurred_at": "2026-11-01T10:00:00Z"}):
        for topic in ("cdrs", "recharge-results", "account-commands"):
            value = orjson.dumps(doc)
            refused = edge.decode(_record(topic, b"t1", value))
            assert isinstance(refused, edge.Refusal)
            assert refused.reason == "unknown_type"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=500)
@given(_JSON)
def test_outputs_encode_to_the_same_bytes_as_orjson(payload: Any) -> None:
    # every output event is str/int/bool/None in lists and dicts: the encoder may change,
    # the bytes on the wire may not (control characters, non-ASCII, escapes included)
    assert edge.encode(payload) == orjson.dumps(payload)
