"""schemas/: one valid draft 2020-12 schema per event of SPEC §2, in and out."""

from __future__ import annotations

from typing import Any

import pytest

from rater import schemas

SPEC_EVENTS = {
    "cdr", "tenant_upserted", "licenses_assigned", "user_removed", "funds_added", "auto_recharge_configured",
    "recharge_result", "rated_cdr", "balance", "low_balance", "recharge_request", "recharge_succeeded",
    "recharge_failed", "balance_depleted", "credits_expired", "pool_exhausted", "dead_letter",
}


NOTIFIER_RECORDS = {"notification_failed", "notification_retry"}
"""What ``rater notify`` writes (docs/notifications.md): not events of the rater's contract."""


def _envelope(kind: str) -> dict[str, Any]:
    return {"type": kind, "schema_version": 1, "event_id": "e1", "tenant_id": "t1",
            "occurred_at": "2026-11-02T10:00:00Z"}


def test_every_event_of_the_wire_contract_has_a_schema_and_each_schema_is_valid() -> None:
    assert set(schemas.schema_names()) == SPEC_EVENTS | NOTIFIER_RECORDS
    for name in SPEC_EVENTS | NOTIFIER_RECORDS:
        schemas.validator(name)  # compiles; _registry() ran check_schema on every file


@pytest.mark.parametrize(("kind", "fields"), [
    ("low_balance", {"balance": "4.99", "threshold": "5.00", "currency": "USD"}),
    ("recharge_request", {"request_id": "t1/recharge/1", "amount": "20.00", "currency": "USD",
                          "balance": "4.99", "trigger_amount": "5.00"}),
    ("recharge_failed", {"request_id": "t1/recharge/1", "reason": "card_expired",
                         "retry_after": "2026-11-02T11:00:00Z"}),
    ("pool_exhausted", {"capability": "MCOMEETADD", "location": "*", "scope": "international", "month": "2026-11"}),
])
def test_output_examples_validate_and_an_extra_or_float_field_does_not(kind: str, fields: dict[str, Any]) -> None:
    event = _envelope(kind) | fields
    assert schemas.first_error(kind, event) is None
    assert schemas.first_error(kind, event | {"surprise": 1}) is not None
    money_field = next((k for k, v in fields.items() if isinstance(v, str) and v.replace(".", "").isdigit()), None)
    if money_field is not None:
        assert schemas.first_error(kind, event | {money_field: 4.99}) is not None


def test_inputs_tolerate_unknown_fields_but_not_a_missing_one() -> None:
    event = _envelope("funds_added") | {"command_id": "c1", "amount": "5.00", "currency": "USD",
                                        "purchased_at": "2026-11-01T00:00:00+01:00"}
    assert schemas.first_error("funds_added", event | {"note": "gift"}) is None
    del event["amount"]
    assert schemas.first_error("funds_added", event) is not None


def _arrays(node: Any) -> list[dict[str, Any]]:
    """Every subschema of ``node`` that is an object with ``uniqueItems`` or ``items``."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if "uniqueItems" in node or "items" in node:
            found.append(node)
        for value in node.values():
            found.extend(_arrays(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_arrays(value))
    return found


def test_input_arrays_are_bounded_before_their_items_are_looked_at() -> None:
    # the schema path's cost must not grow with a hostile array: maxItems first (the
    # validator yields its errors in the schema's order, and only the first few are read),
    # and uniqueness is checked only below UNIQUE_ITEMS_CHECKED
    for name in schemas.INPUT_TYPES.values():
        for kind in name:
            for array in _arrays(schemas._registry()[1][kind]):
                assert array.get("maxItems", 10**9) <= schemas.UNIQUE_ITEMS_CHECKED, (kind, array)
                assert list(array).index("maxItems") < list(array).index("items"), (kind, array)


@pytest.mark.parametrize("items", [
    [*range(12_000), {}],  # unsortable: jsonschema's own uniqueItems compares every pair
    [[[1]]] * 6_000,
    ["A"] * 16_000,
])
def test_a_hostile_array_costs_the_schema_path_milliseconds(items: list[Any]) -> None:
    import time  # noqa: PLC0415 - only here

    payload = {**_envelope("licenses_assigned"), "command_id": "c", "user_id": "u", "usage_location": "US",
               "capabilities": items}
    schemas.first_error("licenses_assigned", payload)  # validators compiled
    began = time.process_time()
    error = schemas.first_error("licenses_assigned", payload)
    assert error is not None
    assert "capabilities" in error
    assert time.process_time() - began < 0.2  # 28 s before (uniqueItems over every pair)


# -- the notifier's records (issue 14) -------------------------------------------------------


def test_the_notifier_records_are_registered_with_topics_the_topic_file_declares() -> None:
    from rater.notifier.settings import FAILURES, RETRY_TOPICS  # noqa: PLC0415 - the notifier's only here
    from rater.topics import load_topics  # noqa: PLC0415

    declared = load_topics()
    assert set(schemas.NOTIFIER_TYPES) == {FAILURES, *RETRY_TOPICS}
    for topic, kinds in schemas.NOTIFIER_TYPES.items():
        assert topic in declared, topic
        assert set(kinds) <= NOTIFIER_RECORDS
    assert {kind for kinds in schemas.NOTIFIER_TYPES.values() for kind in kinds} == NOTIFIER_RECORDS


def _low_balance() -> dict[str, Any]:
    return _envelope("low_balance") | {"balance": "4.99", "threshold": "5.00", "currency": "USD"}


def _failed() -> dict[str, Any]:
    return {"type": "notification_failed", "schema_version": 1, "reason": "exhausted", "channel": "webhook",
            "target": "https://hooks.acme.example/rater", "locale": "pt-BR", "attempts": 8,
            "last_error": "webhook: HTTP 503", "failed_at": "2026-11-02T18:00:00.123456Z", "event": _low_balance()}


def _retry() -> dict[str, Any]:
    return {"type": "notification_retry", "schema_version": 1, "channel": "email", "target": "a@acme.test",
            "locale": None, "attempts": 1, "last_error": "smtp: ConnectionRefusedError: [Errno 111]",
            "due_at": 1796000000.25, "event": _low_balance()}


@pytest.mark.parametrize(("kind", "record"), [("notification_failed", _failed()), ("notification_retry", _retry())])
def test_a_notifier_record_validates_and_a_broken_one_does_not(kind: str, record: dict[str, Any]) -> None:
    assert schemas.first_error(kind, record) is None
    assert schemas.first_error(kind, record | {"surprise": 1}) is not None
    assert schemas.first_error(kind, record | {"channel": "sms"}) is not None
    assert schemas.first_error(kind, record | {"attempts": 0}) is not None
    for field in record:
        assert schemas.first_error(kind, {k: v for k, v in record.items() if k != field}) is not None, field
    # the event is one of the four the notifier delivers, valid by its own schema
    assert schemas.first_error(kind, record | {"event": _envelope("pool_exhausted") | {
        "capability": "MCOMEETADD", "location": "*", "scope": "international", "month": "2026-11"}}) is not None
    assert schemas.first_error(kind, record | {"event": _low_balance() | {"balance": 4.99}}) is not None


def test_a_failure_reason_is_one_of_three() -> None:
    for reason in ("permanent", "refused", "exhausted"):
        assert schemas.first_error("notification_failed", _failed() | {"reason": reason}) is None
    assert schemas.first_error("notification_failed", _failed() | {"reason": "gave_up"}) is not None
    assert schemas.first_error("notification_failed", _failed() | {"failed_at": "2026-11-02 18:00"}) is not None
