"""``rater tenant …``: bad options refused before anything is sent, commands produced to
the real broker keyed by tenant, and a real worker applying them."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2
from click.testing import CliRunner, Result

from rater import schemas
from rater.admin import BILLING_MODELS
from rater.catalog import load_catalog
from rater.cli import main
from tests.support import TEST_PARTITIONS, collect, create_topics, fresh_worker


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def dry(*args: str) -> dict[str, object]:
    result = run(*args, "--dry-run")
    assert result.exit_code == 0, result.output
    event: dict[str, object] = orjson.loads(result.stdout)
    assert schemas.first_error(str(event["type"]), event) is None
    return event


def test_the_billing_models_offered_are_the_schemas() -> None:
    assert list(BILLING_MODELS) == schemas.enum("tenant_upserted", "billing_model")


def test_every_command_builds_its_schema_valid_event() -> None:
    upsert = dry("tenant", "upsert", "--tenant", "acme", "--country", "US", "--currency", "USD",
                 "--low-balance-threshold", "5.00", "--command-id", "c1")
    assert upsert | {"occurred_at": None} == {
        "type": "tenant_upserted", "schema_version": 1, "event_id": "c1", "tenant_id": "acme", "occurred_at": None,
        "command_id": "c1", "country": "US", "currency": "USD", "billing_model": "prepaid_credits",
        "low_balance_threshold": "5.00"}
    contacts = dry("tenant", "upsert", "--tenant", "acme", "--country", "BR", "--currency", "BRL",
                   "--email", "ana@acme.example", "--email", "ti@acme.example", "--webhook-url",
                   "https://hooks.acme.example/rater", "--locale", "pt-BR")
    assert contacts["notify"] == {"emails": ["ana@acme.example", "ti@acme.example"],
                                  "webhook_url": "https://hooks.acme.example/rater", "locale": "pt-BR"}
    assert dry("tenant", "upsert", "--tenant", "acme", "--country", "US", "--currency", "USD",
               "--email", "a@acme.example")["notify"] == {"emails": ["a@acme.example"], "webhook_url": None,
                                                          "locale": "en"}
    assert "notify" not in upsert  # no contacts given: none (a full upsert)
    licences = dry("tenant", "licences", "--tenant", "acme", "--user", "alice", "--location", "GB",
                   "--capability", "MCOPSTN1", "--capability", "MCOPSTNPP")
    assert (licences["user_id"], licences["usage_location"], licences["capabilities"]) == (
        "alice", "GB", ["MCOPSTN1", "MCOPSTNPP"])
    assert uuid.UUID(str(licences["command_id"])).version == 4
    assert licences["event_id"] == licences["command_id"]
    assert dry("tenant", "licences", "--tenant", "acme", "--user", "alice", "--location", "GB",
               "--none")["capabilities"] == []
    assert dry("tenant", "remove-user", "--tenant", "acme", "--user", "bob")["user_id"] == "bob"
    funds = dry("tenant", "funds", "--tenant", "acme", "--amount", "1000", "--currency", "JPY",
                "--command-id", "lot-7", "--purchased-at", "2026-11-02T09:00:00+01:00")
    assert (funds["amount"], funds["purchased_at"], funds["command_id"]) == ("1000", "2026-11-02T09:00:00+01:00",
                                                                               "lot-7")
    recharge = dry("tenant", "auto-recharge", "--tenant", "acme", "--enabled", "--trigger", "5", "--recharge", "20.00")
    assert (recharge["enabled"], recharge["trigger_amount"], recharge["recharge_amount"]) == (True, "5", "20.00")
    off = dry("tenant", "auto-recharge", "--tenant", "acme", "--disabled")
    assert (off["enabled"], off["trigger_amount"], off["recharge_amount"]) == (False, "0", "0")


@pytest.mark.parametrize(("args", "line"), [
    (["upsert", "--tenant", "acme", "--country", "usa", "--currency", "USD"],
     "Error: --country 'usa': must be an ISO 3166-1 alpha-2 code in capitals, e.g. US"),
    (["upsert", "--tenant", "a b", "--country", "US", "--currency", "USD"],
     "Error: --tenant 'a b': must be 1–64 characters of A-Z a-z 0-9 . _ -"),
    (["upsert", "--tenant", "acme", "--country", "US", "--currency", "XYZ"],
     "Error: --currency 'XYZ': not an ISO 4217 currency with a minor unit"),
    (["upsert", "--tenant", "acme", "--country", "US", "--currency", "USD", "--low-balance-threshold", "-1"],
     "Error: --low-balance-threshold '-1': must be a decimal amount such as 12.50 (no sign, no exponent,"
     " at most 4 decimals)"),
    (["upsert", "--tenant", "acme", "--country", "US", "--currency", "USD", "--email", "a@acme.example",
      "--email", "admin at acme"],
     "Error: --email: must be at most 10 e-mail addresses (name@domain, no spaces, up to 254 characters)"),
    (["upsert", "--tenant", "acme", "--country", "US", "--currency", "USD", "--webhook-url", "ftp://acme.example"],
     "Error: --webhook-url: must be an https:// (or http://) URL without spaces, up to 2048 characters"),
    (["upsert", "--tenant", "acme", "--country", "US", "--currency", "USD", "--locale", "pt BR"],
     "Error: --locale: must be a BCP 47 tag such as en, pt-BR, es, ru, zh-CN, it (others fall back to en)"),
    (["funds", "--tenant", "acme", "--amount", "1.234", "--currency", "USD"],
     "Error: --amount '1.234': USD amounts have at most 2 decimal(s)"),
    (["funds", "--tenant", "acme", "--amount", "1.5", "--currency", "JPY"],
     "Error: --amount '1.5': JPY amounts have at most 0 decimal(s)"),
    (["funds", "--tenant", "acme", "--amount", "1e3", "--currency", "USD"],
     "Error: --amount '1e3': must be a decimal amount such as 12.50 (no sign, no exponent, at most 4 decimals)"),
    (["funds", "--tenant", "acme", "--amount", "1", "--currency", "USD", "--purchased-at", "yesterday"],
     "Error: --purchased-at 'yesterday': must be an RFC 3339 time with an offset, e.g. 2026-11-02T09:00:00Z"),
    (["funds", "--tenant", "acme", "--amount", "1", "--currency", "USD", "--command-id", "lot-1"],
     "Error: --purchased-at: required with --command-id (a retry must repeat the purchase time, or the rater"
     " refuses it as an id_conflict)"),
    (["licences", "--tenant", "acme", "--user", "alice", "--location", "US"],
     "Error: --capability: give at least one (the list replaces the user's set), or --none to take every"
     " licence away"),
    (["licences", "--tenant", "acme", "--user", "alice", "--location", "US", "--capability", "pstn"],
     "Error: --capability: must be at most 32 distinct capability ids of A-Z 0-9 _ (up to 32 characters),"
     " e.g. MCOPSTN1"),
    (["licences", "--tenant", "acme", "--user", "alice", "--location", "US", "--capability", "A", "--capability",
      "A"], "Error: --capability: must be at most 32 distinct capability ids of A-Z 0-9 _ (up to 32 characters),"
            " e.g. MCOPSTN1"),
    (["licences", "--tenant", "acme", "--user", "alice", "--location", "US", "--capability", "MCOPSTN9"],
     f"Error: --capability 'MCOPSTN9': not in catalog {load_catalog().version} (it has"
     f" {', '.join(load_catalog().by_id)})"),
    (["licences", "--tenant", "acme", "--user", "alice", "--location", "US", "--capability", "PAYG",
      "--catalog", "/nonexistent/catalog.toml"], "Error: --catalog: /nonexistent/catalog.toml: catalog file not found"),
    (["remove-user", "--tenant", "acme", "--user", ""], "Error: --user '': must be 1–200 characters"),
    (["auto-recharge", "--tenant", "acme", "--enabled", "--trigger", "5"],
     "Error: --recharge: required with --enabled"),
    (["auto-recharge", "--tenant", "acme", "--enabled", "--trigger", "5.", "--recharge", "1"],
     "Error: --trigger '5.': must be a decimal amount such as 12.50 (no sign, no exponent, at most 4 decimals)"),
])
def test_a_bad_value_is_one_line_naming_the_option_and_exit_2_before_any_broker(args: list[str], line: str) -> None:
    # the bootstrap is unreachable: had anything been sent, the exit would be 1
    result = run("tenant", *args, "--bootstrap", "127.0.0.1:1")
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines() == [line]


def test_an_unreachable_broker_is_one_line_and_exit_1() -> None:
    result = run("tenant", "remove-user", "--tenant", "acme", "--user", "bob", env={"RATER_BOOTSTRAP": "127.0.0.1:1"})
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "Error: cannot reach the Kafka broker at 127.0.0.1:1 (--bootstrap, RATER_BOOTSTRAP)"]


pytestmark_kafka = pytest.mark.kafka  # the tests above need no broker


@pytestmark_kafka
def test_a_missing_topic_is_one_line_and_exit_1(kafka_bootstrap: str, topic_prefix: str) -> None:
    result = run("tenant", "remove-user", "--tenant", "acme", "--user", "bob",
                 env={"RATER_BOOTSTRAP": kafka_bootstrap, "RATER_TOPIC_PREFIX": topic_prefix})
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: topic {topic_prefix}account-commands does not exist on {kafka_bootstrap};"
        " `rater topics create` makes it"]


async def _read_commands(bootstrap: str, topic: str, count: int) -> list[tuple[int, bytes, dict[str, object]]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
                                isolation_level="read_committed")
    await consumer.start()
    found: list[tuple[int, bytes, dict[str, object]]] = []
    try:
        async with asyncio.timeout(30):
            while len(found) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found += [(r.partition, r.key, orjson.loads(r.value)) for r in records]
        return found
    finally:
        await consumer.stop()


@pytestmark_kafka
def test_commands_go_to_account_commands_keyed_by_tenant_on_its_partition(kafka_bootstrap: str,
                                                                         topic_prefix: str) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    env = {"RATER_BOOTSTRAP": kafka_bootstrap, "RATER_TOPIC_PREFIX": topic_prefix}
    ids = []
    for tenant in ("acme", "globex", "initech"):
        result = run("tenant", "upsert", "--tenant", tenant, "--country", "US", "--currency", "USD", env=env)
        assert result.exit_code == 0, result.output
        ids.append(result.stdout.strip())
    again = run("tenant", "upsert", "--tenant", "acme", "--country", "US", "--currency", "USD",
                "--command-id", ids[0], env=env)
    assert again.stdout.strip() == ids[0]

    found = asyncio.run(_read_commands(kafka_bootstrap, topic_prefix + "account-commands", 4))
    assert [event["command_id"] for _, _, event in found if event["tenant_id"] == "acme"] == [ids[0], ids[0]]
    for partition, key, event in found:
        assert key == str(event["tenant_id"]).encode()
        assert partition == (murmur2(key) & 0x7FFFFFFF) % TEST_PARTITIONS
        assert schemas.first_error("tenant_upserted", event) is None


@pytestmark_kafka
def test_a_worker_applies_the_cli_commands_and_a_retry_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    worker = fresh_worker(kafka_bootstrap, "cli", tmp_path)
    try:
        env = {"RATER_BOOTSTRAP": kafka_bootstrap, "RATER_TOPIC_PREFIX": worker.prefix}
        tenant = f"cli-{uuid.uuid4().hex[:6]}"
        steps = [
            ["upsert", "--tenant", tenant, "--country", "US", "--currency", "USD"],
            ["licences", "--tenant", tenant, "--user", "alice", "--location", "US", "--capability", "PAYG"],
            ["auto-recharge", "--tenant", tenant, "--enabled", "--trigger", "2.00", "--recharge", "10.00"],
            ["funds", "--tenant", tenant, "--amount", "12.50", "--currency", "USD", "--command-id", "lot-1",
             "--purchased-at", "2026-11-01T00:00:00Z"],
            ["funds", "--tenant", tenant, "--amount", "12.50", "--currency", "USD", "--command-id", "lot-1",
             "--purchased-at", "2026-11-01T00:00:00Z"],  # a retry: applied once
            ["upsert", "--tenant", tenant, "--country", "US", "--currency", "USD", "--command-id", "last"],
        ]
        for step in steps:
            result = run("tenant", *step, env=env)
            assert result.exit_code == 0, result.output

        def settled(outs: list) -> bool:  # type: ignore[type-arg]
            return any(o.topic == "balances" and o.event["caused_by"] == "last" for o in outs)

        outs = collect(kafka_bootstrap, worker.prefix, settled, worker)
        [balance] = [o.event for o in outs if o.topic == "balances" and o.event["caused_by"] == "last"]
        assert Decimal(balance["balance"]) == Decimal("12.50")  # the retried lot counted once
        assert [lot["lot_id"] for lot in balance["lots"]] == ["lot-1"]
        assert balance["auto_recharge"]["enabled"] is True
        assert balance["auto_recharge"]["trigger_amount"] == "2.00"
        assert not [o for o in outs if o.topic == "dead-letters"]
    finally:
        worker.stop()


@pytest.mark.parametrize("path", [["tenant"], ["tenant", "upsert"], ["tenant", "licences"], ["tenant", "remove-user"],
                                  ["tenant", "funds"], ["tenant", "auto-recharge"], ["export"], ["export", "usage"]])
def test_every_operator_command_has_help(path: list[str]) -> None:
    result = run(*path, "--help")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Usage: main {' '.join(path)} [OPTIONS]")
    assert "--help" in result.stdout
