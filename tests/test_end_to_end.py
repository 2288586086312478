"""One CDR rated end to end: a real broker, a real worker process, the real topics.

The expected charges are computed here from the tariff file with ``decimal`` — an
arithmetic independent of the rater's integer core — so a worker that charges a wrong
amount fails these tests.
"""

from __future__ import annotations

import asyncio
import base64
import tomllib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from rater.catalog import DEFAULT_TARIFF
from rater.core.times import parse_time_us
from rater.shell.keys import key_partition
from tests.support import (
    TEST_PARTITIONS,
    Worker,
    cdr,
    collect,
    create_topics,
    event,
    fresh_worker,
    produce,
    send_events,
)

pytestmark = pytest.mark.kafka


def expected_charge(tariff: Path, currency: str, call_class: str, seconds: int, *,
                    destination: str = "+12125550123", start: str = "2026-11-02T10:00:00Z") -> Decimal:
    """Charge of a call by ``tariff`` (SPEC §1.3), in Decimal: the version in force at
    ``start`` (RFC 3339 strings in UTC compare as times), the longest matching prefix."""
    versions = [v for v in tomllib.loads(tariff.read_text())["version"] if str(v["effective_from"]) <= start]
    version = max(versions, key=lambda v: str(v["effective_from"]))
    digits = destination.removeprefix("+")
    rate = max((r for r in version["rate"] if r["class"] == call_class and digits.startswith(r["prefix"])),
               key=lambda r: len(r["prefix"]))
    first, nxt = (int(x) for x in rate["increment"].split("/"))
    billed = first if seconds <= first else first + int(
        (Decimal(seconds - first) / nxt).to_integral_value(ROUND_CEILING)) * nxt
    usage = Decimal(rate["rate_per_min"][currency]) * billed / 60
    fee = Decimal(rate.get("connection_fee", {}).get(currency, "0"))
    return (usage + fee).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def open_account(tenant: str, funds: str) -> list[tuple[str, dict[str, object]]]:
    return [
        ("account-commands", event("tenant_upserted", tenant, "e1", command_id=f"{tenant}-c1", country="US",
                                   currency="USD", billing_model="prepaid_credits")),
        # PAYG: every outbound minute is paid from credits (SPEC §1.1), so charges follow the tariff
        ("account-commands", event("licenses_assigned", tenant, "e1b", command_id=f"{tenant}-lic", user_id="alice",
                                   usage_location="US", capabilities=["PAYG"])),
        ("account-commands", event("funds_added", tenant, "e2", command_id=f"{tenant}-lot1", amount=funds,
                                   currency="USD", purchased_at="2026-11-01T00:00:00Z")),
    ]


def funded(tenant: str):  # type: ignore[no-untyped-def]
    return lambda outs: caused(outs, f"{tenant}-lot1")


def caused(outs, input_id: str) -> bool:  # type: ignore[no-untyped-def]
    return any(o.topic == "balances" and o.event["caused_by"] == input_id for o in outs)


def has(outs, tenant: str, kind: str) -> bool:  # type: ignore[no-untyped-def]
    return any(o.event["type"] == kind and o.event.get("tenant_id") == tenant for o in outs)


def rated(tenant: str, count: int):  # type: ignore[no-untyped-def]
    return lambda outs: sum(o.topic == "rated-cdrs" and o.event["tenant_id"] == tenant for o in outs) >= count


@pytest.fixture(scope="module")
def rater_worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    worker = fresh_worker(kafka_bootstrap, "e2e", tmp_path_factory.mktemp("worker"))
    yield worker
    worker.stop()


def test_funded_outbound_call_is_charged_from_credits_and_balance_follows(rater_worker: Worker) -> None:
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    bootstrap, prefix = rater_worker.bootstrap, rater_worker.prefix
    send_events(bootstrap, prefix, open_account(tenant, "10.00"))
    collect(bootstrap, prefix, funded(tenant), rater_worker)
    send_events(bootstrap, prefix, [("cdrs", cdr(tenant, f"{tenant}-u1", 125))])
    outs = collect(bootstrap, prefix, lambda o: rated(tenant, 1)(o) and caused(o, f"{tenant}-u1"), rater_worker)

    charge = expected_charge(DEFAULT_TARIFF, "USD", "outbound", 125)
    assert charge > 0
    [rated_cdr] = [o.event for o in outs if o.topic == "rated-cdrs" and o.event["tenant_id"] == tenant]
    assert rated_cdr["status"] == "rated"
    assert Decimal(rated_cdr["charge"]) == charge
    assert rated_cdr["lot_debits"] == [{"lot_id": f"{tenant}-lot1", "amount": rated_cdr["charge"]}]
    assert Decimal(rated_cdr["balance_after"]) == Decimal("10.00") - charge
    assert rated_cdr["uncollected"] == "0.00"
    assert rated_cdr["billing_month"] == "2026-11"
    assert (rated_cdr["destination_country"], rated_cdr["scope"]) == ("US", "domestic")
    assert rated_cdr["occurred_at"] == "2026-11-02T10:30:00Z"  # the CDR's end, never the wall clock

    balances = [o for o in outs if o.topic == "balances" and o.event["caused_by"] == f"{tenant}-u1"]
    assert len(balances) == 1
    assert balances[0].key == tenant.encode()
    assert Decimal(balances[0].event["balance"]) == Decimal("10.00") - charge
    assert balances[0].event["lots"][0]["expires_at"] == "2027-11-01T00:00:00Z"


def test_call_beyond_the_balance_is_partially_funded_and_a_replayed_cdr_is_a_duplicate(rater_worker: Worker) -> None:
    tenant = f"tiny-{uuid.uuid4().hex[:6]}"
    bootstrap, prefix = rater_worker.bootstrap, rater_worker.prefix
    send_events(bootstrap, prefix, open_account(tenant, "0.05"))
    collect(bootstrap, prefix, funded(tenant), rater_worker)
    call = cdr(tenant, f"{tenant}-u1", 600)
    send_events(bootstrap, prefix, [("cdrs", call), ("cdrs", call)])
    outs = collect(bootstrap, prefix, lambda o: rated(tenant, 2)(o) and caused(o, f"{tenant}-u1"), rater_worker)

    charge = expected_charge(DEFAULT_TARIFF, "USD", "outbound", 600)
    first, second = [o.event for o in outs if o.topic == "rated-cdrs" and o.event["tenant_id"] == tenant]
    assert first["status"] == "partially_funded"
    assert first["reason"] == "no_funds"
    assert Decimal(first["charge"]) == charge
    assert first["lot_debits"] == [{"lot_id": f"{tenant}-lot1", "amount": "0.05"}]
    assert Decimal(first["uncollected"]) == charge - Decimal("0.05")
    assert first["balance_after"] == "0.00"
    assert second["status"] == "duplicate"
    assert second["charge"] == "0.00"
    assert second["lot_debits"] == []
    assert second["event_id"] != first["event_id"]
    # the tenant's last snapshot: both calls' units are committed (both rated), and
    # collect read on to the end of every partition after them
    depleted = [o.event for o in outs if o.topic == "balances" and o.event["tenant_id"] == tenant][-1]
    assert depleted["status"] == "depleted"


def test_bad_messages_become_dead_letters_with_their_original_bytes(rater_worker: Worker) -> None:
    tenant = f"bad-{uuid.uuid4().hex[:6]}"
    bootstrap, prefix = rater_worker.bootstrap, rater_worker.prefix
    not_json = b'{"type": "cdr", oops'
    mismatched = orjson.dumps(cdr("someone-else", f"{tenant}-u1", 60))
    unknown = orjson.dumps(cdr(tenant, f"{tenant}-u2", 60))
    asyncio.run(produce(bootstrap, prefix, [
        ("cdrs", tenant.encode(), not_json),
        ("cdrs", tenant.encode(), mismatched),
        ("cdrs", b"\xff\xfe", unknown),
        ("cdrs", tenant.encode(), unknown),
    ]))

    def four_letters(outs):  # type: ignore[no-untyped-def]
        return sum(o.topic == "dead-letters" and o.event["value_b64"] in wanted for o in outs) >= 4

    wanted = {base64.b64encode(v).decode() for v in (not_json, mismatched, unknown)}
    outs = collect(bootstrap, prefix, four_letters, rater_worker)
    letters = [o.event for o in outs if o.topic == "dead-letters" and o.event["value_b64"] in wanted]
    by_reason = {letter["reason"]: letter for letter in letters}
    assert set(by_reason) == {"invalid_json", "key_mismatch", "bad_key", "unknown_tenant"}
    assert base64.b64decode(by_reason["invalid_json"]["value_b64"]) == not_json
    assert base64.b64decode(by_reason["bad_key"]["key_b64"]) == b"\xff\xfe"
    assert by_reason["unknown_tenant"]["tenant_id"] == tenant
    assert all(letter["source_topic"] == f"{prefix}cdrs" for letter in letters)


def test_worker_rates_with_the_operators_own_tariff_file(kafka_bootstrap: str, tmp_path: Path,
                                                         topic_prefix: str) -> None:
    tariff = tmp_path / "tariff.toml"
    tariff.write_text(
        'format = 1\n[[version]]\nid = "test-1"\neffective_from = "2020-01-01T00:00:00Z"\n'
        '[[version.rate]]\nclass = "outbound"\nprefix = "1"\nincrement = "1/1"\n'
        'rate_per_min = { USD = "0.437000" }\nconnection_fee = { USD = "0.15" }\n'
    )
    create_topics(kafka_bootstrap, topic_prefix)
    worker = Worker(kafka_bootstrap, topic_prefix, tmp_path / "w", {"RATER_TARIFF": str(tariff)}).start()
    try:
        tenant = "own-tariff"
        send_events(kafka_bootstrap, topic_prefix, open_account(tenant, "10.00"))
        collect(kafka_bootstrap, topic_prefix, funded(tenant), worker)
        send_events(kafka_bootstrap, topic_prefix, [("cdrs", cdr(tenant, "u1", 125))])
        outs = collect(kafka_bootstrap, topic_prefix, rated(tenant, 1), worker)
    finally:
        worker.stop()
    [rated_cdr] = [o.event for o in outs if o.topic == "rated-cdrs"]
    assert Decimal(rated_cdr["charge"]) == expected_charge(tariff, "USD", "outbound", 125)
    assert rated_cdr["connection_fee"] == "0.15"
    assert rated_cdr["charged_seconds"] == 125


def test_tenant_state_lives_in_rocksdb_and_survives_a_worker_restart(kafka_bootstrap: str, tmp_path: Path,
                                                                      topic_prefix: str) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    tenant = "restarts"
    worker = Worker(kafka_bootstrap, topic_prefix, tmp_path / "w").start()
    try:
        send_events(kafka_bootstrap, topic_prefix, open_account(tenant, "1.00"))
        collect(kafka_bootstrap, topic_prefix, funded(tenant), worker)
        send_events(kafka_bootstrap, topic_prefix, [("cdrs", cdr(tenant, "u1", 60))])
        collect(kafka_bootstrap, topic_prefix, lambda o: caused(o, "u1"), worker)
    finally:
        worker.stop()
    assert worker.proc.returncode == 0, "the worker did not stop cleanly on SIGTERM"
    assert sorted(p.name for p in (tmp_path / "w" / "data").rglob("tenants-*.db"))  # RocksDB partitions

    worker = Worker(kafka_bootstrap, topic_prefix, tmp_path / "w").start()  # same RocksDB folder
    try:
        send_events(kafka_bootstrap, topic_prefix, [("cdrs", cdr(tenant, "u2", 60))])
        outs = collect(kafka_bootstrap, topic_prefix, lambda o: caused(o, "u2") and any(
            x.topic == "rated-cdrs" and x.event["usage_id"] == "u2" for x in o), worker)
    finally:
        worker.stop()
    per_call = expected_charge(DEFAULT_TARIFF, "USD", "outbound", 60)
    [after] = [o.event for o in outs if o.topic == "balances" and o.event["caused_by"] == "u2"]
    assert Decimal(after["balance"]) == Decimal("1.00") - 2 * per_call
    assert [o.event["usage_id"] for o in outs if o.topic == "rated-cdrs"] == ["u1", "u2"]


def test_wall_clock_ticks_expire_a_lot_while_no_input_arrives(kafka_bootstrap: str, tmp_path: Path,
                                                              topic_prefix: str) -> None:
    """The worker carries the wall clock into its partitions (SPEC §1.5): a lot whose
    12 months end a few seconds from now is forfeited with no further input."""
    create_topics(kafka_bootstrap, topic_prefix)
    tenant = "ticking"
    now = datetime.now(UTC)
    bought = (now.replace(year=now.year - 1) + timedelta(seconds=4)).isoformat(timespec="seconds").replace(
        "+00:00", "Z")
    worker = Worker(kafka_bootstrap, topic_prefix, tmp_path / "w", {"RATER_TICK_INTERVAL": "0.2"}).start()
    try:
        send_events(kafka_bootstrap, topic_prefix, [
            ("account-commands", event("tenant_upserted", tenant, "e1", command_id="c1", country="US",
                                       currency="USD", billing_model="prepaid_credits")),
            ("account-commands", event("funds_added", tenant, "e2", command_id="old-lot", amount="2.50",
                                       currency="USD", purchased_at=bought)),
        ])
        outs = collect(kafka_bootstrap, topic_prefix,
                       lambda o: any(x.event.get("type") == "credits_expired" for x in o), worker, timeout_s=60)
    finally:
        worker.stop()
    [expired] = [o.event for o in outs if o.event.get("type") == "credits_expired"]
    assert (expired["lot_id"], expired["amount"], expired["balance"]) == ("old-lot", "2.50", "0.00")
    expires = parse_time_us(bought.replace(str(now.year - 1), str(now.year), 1))
    assert parse_time_us(expired["occurred_at"]) >= expires  # the tick's wall-clock time, not an input's
    assert worker.proc.returncode == 0


async def _produce_to(bootstrap: str, topic: str, partition: int, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


def test_every_dead_letter_reason_of_the_wire_contract_through_the_worker(rater_worker: Worker) -> None:
    """SPEC §2's dead-letter reasons, each from a real message; the worker goes on."""
    tenant = f"dl-{uuid.uuid4().hex[:6]}"
    bootstrap, prefix = rater_worker.bootstrap, rater_worker.prefix
    send_events(bootstrap, prefix, open_account(tenant, "10.00"))
    collect(bootstrap, prefix, funded(tenant), rater_worker)
    send_events(bootstrap, prefix, [("cdrs", cdr(tenant, f"{tenant}-ok", 60))])  # now = 2026-11-02T10:30Z
    collect(bootstrap, prefix, lambda o: caused(o, f"{tenant}-ok"), rater_worker)
    key = tenant.encode()
    bad: dict[str, bytes] = {
        "schema": orjson.dumps(cdr(tenant, f"{tenant}-neg", -5)),
        "unknown_type": orjson.dumps({**cdr(tenant, f"{tenant}-t", 60), "type": "cdr_v2"}),
        "unknown_user": orjson.dumps(cdr(tenant, f"{tenant}-who", 60, user_id="nobody")),
        "no_rate": orjson.dumps(cdr(tenant, f"{tenant}-nr", 60, destination="+8821234567")),
        "late": orjson.dumps(cdr(tenant, f"{tenant}-late", 60, start="2026-09-10T10:00:00Z",
                                 end="2026-09-10T10:01:00Z")),
        "id_conflict": orjson.dumps(cdr(tenant, f"{tenant}-ok", 61)),
        "too_large": orjson.dumps({**cdr(tenant, f"{tenant}-big", 60), "padding": "x" * 70_000}),
        "currency_mismatch": orjson.dumps(event("funds_added", tenant, "e9", command_id=f"{tenant}-eur",
                                                amount="1.00", currency="EUR", purchased_at="2026-11-01T00:00:00Z")),
    }
    topic_of = {"currency_mismatch": "account-commands"}
    messages: list[tuple[str, bytes | None, bytes | None]] = [
        (topic_of.get(reason, "cdrs"), key, value) for reason, value in bad.items()]
    # a tick carries wall-clock time 2026-11-03: a CDR ending two days later is from the future
    messages.append(("rater-ticks", key, orjson.dumps({"type": "tick", "now": "2026-11-03T00:00:00Z"})))
    future = orjson.dumps(cdr(tenant, f"{tenant}-fut", 60, start="2026-11-05T00:00:00Z", end="2026-11-05T00:01:00Z"))
    messages.append(("cdrs", key, future))
    bad["future"] = future
    asyncio.run(produce(bootstrap, prefix, messages))
    # a producer whose partitioner is not Kafka's default puts the tenant's CDR elsewhere
    wrong = orjson.dumps(cdr(tenant, f"{tenant}-wp", 60))
    asyncio.run(_produce_to(bootstrap, prefix + "cdrs", (key_partition(key, TEST_PARTITIONS) + 1) % TEST_PARTITIONS,
                            key, wrong))
    bad["wrong_partition"] = wrong
    values = {base64.b64encode(v[:64 * 1024]).decode(): reason for reason, v in bad.items()}

    def all_letters(outs):  # type: ignore[no-untyped-def]
        return {values.get(o.event.get("value_b64")) for o in outs if o.topic == "dead-letters"} >= set(bad)

    outs = collect(bootstrap, prefix, all_letters, rater_worker)
    letters = {values[o.event["value_b64"]]: o.event for o in outs
               if o.topic == "dead-letters" and o.event.get("value_b64") in values}
    assert {reason: letter["reason"] for reason, letter in letters.items()} == {r: r for r in bad}
    assert letters["too_large"]["value_size"] == len(bad["too_large"])
    assert not [o for o in outs if o.topic == "rated-cdrs" and o.event["usage_id"] in {
        f"{tenant}-{s}" for s in ("neg", "t", "who", "nr", "late", "big", "fut", "wp")}]
    home = key_partition(key, TEST_PARTITIONS)
    assert f"partition {home} of {TEST_PARTITIONS}" in letters["wrong_partition"]["message"]
    rater_worker.check_alive()


def test_auto_recharge_round_trip_and_low_balance_once_through_the_topics(rater_worker: Worker) -> None:
    """SPEC §1.4: a debit below the trigger emits low_balance once and one
    recharge_request; the payment service's succeeded result adds a lot."""
    tenant = f"ar-{uuid.uuid4().hex[:6]}"
    bootstrap, prefix = rater_worker.bootstrap, rater_worker.prefix
    send_events(bootstrap, prefix, [
        *open_account(tenant, "6.00"),
        ("account-commands", event("auto_recharge_configured", tenant, "e5", command_id=f"{tenant}-ar",
                                   enabled=True, trigger_amount="5.00", recharge_amount="20.00")),
    ])
    collect(bootstrap, prefix, lambda o: caused(o, f"{tenant}-ar"), rater_worker)
    send_events(bootstrap, prefix, [("cdrs", cdr(tenant, f"{tenant}-long", 7200, end="2026-11-02T12:00:00Z")),
                                    ("cdrs", cdr(tenant, f"{tenant}-more", 60, start="2026-11-02T12:00:00Z",
                                                 end="2026-11-02T12:01:00Z"))])
    outs = collect(bootstrap, prefix, lambda o: caused(o, f"{tenant}-more") and has(o, tenant, "low_balance")
                   and has(o, tenant, "recharge_request"), rater_worker)
    mine = [o.event for o in outs if o.event.get("tenant_id") == tenant]
    [low] = [e for e in mine if e["type"] == "low_balance"]  # once per crossing, not per debit
    assert (low["threshold"], low["currency"]) == ("5.00", "USD")
    assert Decimal(low["balance"]) == Decimal("6.00") - expected_charge(DEFAULT_TARIFF, "USD", "outbound", 7200)
    [request] = [e for e in mine if e["type"] == "recharge_request"]  # one outstanding request
    assert (request["request_id"], request["amount"]) == (f"{tenant}/recharge/1", "20.00")

    send_events(bootstrap, prefix, [("recharge-results", event(
        "recharge_result", tenant, "e6", request_id=request["request_id"], status="succeeded", amount="20.00",
        currency="USD", reason=None, processed_at="2026-11-02T12:05:00Z"))])
    outs = collect(bootstrap, prefix, lambda o: caused(o, request["request_id"])
                   and has(o, tenant, "recharge_succeeded"), rater_worker)
    [succeeded] = [o.event for o in outs if o.event.get("type") == "recharge_succeeded"
                   and o.event["tenant_id"] == tenant]
    [balance] = [o.event for o in outs if o.topic == "balances" and o.event["caused_by"] == request["request_id"]]
    assert Decimal(balance["balance"]) == Decimal(succeeded["balance"]) > Decimal("20.00")
    assert request["request_id"] in [lot["lot_id"] for lot in balance["lots"]]
    assert balance["auto_recharge"]["pending_request_id"] is None
